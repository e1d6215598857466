//! Tree blocks and range searches (btrfs on-disk format documentation, "Tree blocks":
//! `struct btrfs_header`, `struct btrfs_key_ptr`, `struct btrfs_item`; kernel
//! `fs/btrfs/tree-checker.c` for the sanity rules).
//!
//! Every block read is checked before use: its checksum (crc32c; optional), its own logical
//! address, the filesystem's metadata UUID, its level (exactly one below its parent, below
//! [`MAX_LEVEL`]), the generation its parent expects, item counts and item data within the
//! block, and keys in strictly increasing order. Because levels strictly decrease, a descent is
//! at most [`MAX_LEVEL`] deep and cannot loop; a block reached twice in one search is refused,
//! and each search reads at most [`MAX_NODES_PER_SEARCH`] blocks.

use std::sync::Arc;

use super::chunk::ChunkMap;
use super::superblock::{checksum, CSUM_SIZE};
use crate::block::{le, SharedSource};
use crate::disk::lru::Lru;
use crate::error::{Error, Result};

/// Bytes of `struct btrfs_header`.
pub const HEADER_SIZE: usize = 101;
/// Bytes of `struct btrfs_item` (key, data offset, data size).
pub const ITEM_SIZE: usize = 25;
/// Bytes of `struct btrfs_key_ptr` (key, block pointer, generation).
pub const KEY_PTR_SIZE: usize = 33;
/// Levels of a tree (`BTRFS_MAX_LEVEL`): a root at level 7 at most.
pub const MAX_LEVEL: u8 = 8;
/// Most tree blocks read by one range search.
pub const MAX_NODES_PER_SEARCH: usize = 1 << 20;
/// Tree blocks kept decoded in memory.
pub const NODE_CACHE: usize = 512;

/// A key (`struct btrfs_disk_key`): items are sorted by (objectid, type, offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Object id (inode number, tree id...).
    pub objectid: u64,
    /// Item type.
    pub ty: u8,
    /// Type-specific offset (file offset, directory index, hash...).
    pub offset: u64,
}

impl Key {
    /// A key.
    pub const fn new(objectid: u64, ty: u8, offset: u64) -> Self {
        Key {
            objectid,
            ty,
            offset,
        }
    }

    fn parse(b: &[u8], at: usize) -> Option<Self> {
        Some(Key {
            objectid: le::u64(b, at)?,
            ty: *b.get(at + 8)?,
            offset: le::u64(b, at + 9)?,
        })
    }
}

/// One leaf item with its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its key.
    pub key: Key,
    /// Its data.
    pub data: Vec<u8>,
    /// Logical address of the data (for errors).
    pub logical: u64,
}

/// Where a tree's root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootRef {
    /// Logical address of the root block.
    pub bytenr: u64,
    /// Its level.
    pub level: u8,
    /// Its generation, when known (0: not checked).
    pub generation: u64,
}

/// A decoded tree block.
#[derive(Debug)]
pub struct Node {
    /// Logical address.
    pub logical: u64,
    /// Level (0 = leaf).
    pub level: u8,
    /// Generation.
    pub generation: u64,
    /// Owner tree id.
    pub owner: u64,
    /// Leaf items: key, data start, data length (within `data`).
    pub items: Vec<(Key, usize, usize)>,
    /// Internal node pointers: key, child logical address, child generation.
    pub ptrs: Vec<(Key, u64, u64)>,
    /// The raw block.
    pub data: Vec<u8>,
}

/// Reads and searches trees; shared by all threads.
#[derive(Debug)]
pub struct TreeReader {
    /// The device.
    pub src: SharedSource,
    /// The chunk map.
    pub chunks: ChunkMap,
    /// Tree block size.
    pub nodesize: u32,
    /// UUID every tree block carries.
    pub metadata_uuid: [u8; 16],
    /// Checksum algorithm.
    pub csum_type: u16,
    /// Whether block checksums are verified.
    pub verify_csums: bool,
    /// Name for errors.
    pub name: String,
    cache: Lru<u64, Node>,
}

impl TreeReader {
    /// A reader over `src` with a complete chunk map.
    pub fn new(
        src: SharedSource,
        chunks: ChunkMap,
        nodesize: u32,
        metadata_uuid: [u8; 16],
        csum_type: u16,
        verify_csums: bool,
    ) -> Self {
        let name = src.name().to_string();
        TreeReader {
            src,
            chunks,
            nodesize,
            metadata_uuid,
            csum_type,
            verify_csums,
            name,
            cache: Lru::new(NODE_CACHE),
        }
    }

    /// Reads `buf.len()` bytes at a logical address, following the chunk map.
    pub fn read_logical(&self, logical: u64, buf: &mut [u8]) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = logical
                .checked_add(done as u64)
                .ok_or_else(|| Error::corrupt(&self.name, logical, "logical address overflows"))?;
            let (phys, left) = self.chunks.map(at, &self.name)?;
            let n = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            self.src.read_exact_at(phys, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn bad(&self, logical: u64, detail: String) -> Error {
        let phys = self
            .chunks
            .map(logical, &self.name)
            .map(|(p, _)| format!(" (device byte {p:#x})"))
            .unwrap_or_default();
        Error::corrupt(
            format!("{} btrfs tree block", self.name),
            logical,
            format!("logical {logical:#x}{phys}: {detail}"),
        )
    }

    /// Reads and checks the tree block at `logical`, expected at `level` with `generation`
    /// (0: any).
    pub fn node(&self, logical: u64, level: u8, generation: u64) -> Result<Arc<Node>> {
        let n = self
            .cache
            .get_or_load(logical, || self.load(logical).map(Arc::new))?;
        if n.level != level {
            return Err(self.bad(
                logical,
                format!("level {} where {level} was expected", n.level),
            ));
        }
        if generation != 0 && n.generation != generation {
            return Err(self.bad(
                logical,
                format!(
                    "generation {} where its parent expects {generation}",
                    n.generation
                ),
            ));
        }
        Ok(n)
    }

    fn load(&self, logical: u64) -> Result<Node> {
        let ns = self.nodesize as usize;
        if logical % u64::from(self.nodesize.min(4096)) != 0 {
            return Err(self.bad(logical, "tree block address is not aligned".into()));
        }
        let mut data = vec![0u8; ns];
        self.read_logical(logical, &mut data)?;
        if self.verify_csums {
            if let Some(c) = checksum(self.csum_type, &data[CSUM_SIZE..]) {
                if data[..4] != c {
                    return Err(self.bad(logical, "checksum mismatch".into()));
                }
            }
        }
        let bytenr = le::u64(&data, 48).unwrap_or(0);
        if bytenr != logical {
            return Err(self.bad(logical, format!("header says it is block {bytenr:#x}")));
        }
        if data[32..48] != self.metadata_uuid {
            return Err(self.bad(logical, "belongs to another filesystem (fsid)".into()));
        }
        let generation = le::u64(&data, 80).unwrap_or(0);
        let owner = le::u64(&data, 88).unwrap_or(0);
        let nritems = le::u32(&data, 96).unwrap_or(0) as usize;
        let level = data[100];
        if level >= MAX_LEVEL {
            return Err(self.bad(logical, format!("level {level} is too high")));
        }
        let per = if level == 0 { ITEM_SIZE } else { KEY_PTR_SIZE };
        let table_end = nritems
            .checked_mul(per)
            .and_then(|t| t.checked_add(HEADER_SIZE))
            .filter(|&e| e <= ns)
            .ok_or_else(|| self.bad(logical, format!("{nritems} items do not fit the block")))?;
        let mut node = Node {
            logical,
            level,
            generation,
            owner,
            items: Vec::new(),
            ptrs: Vec::new(),
            data: Vec::new(),
        };
        let mut prev: Option<Key> = None;
        for i in 0..nritems {
            let at = HEADER_SIZE + i * per;
            let key = Key::parse(&data, at).unwrap_or(Key::new(0, 0, 0));
            if let Some(p) = prev {
                if key <= p {
                    return Err(self.bad(
                        logical,
                        format!("key {i} {key:?} is not after key {p:?} (keys out of order)"),
                    ));
                }
            }
            prev = Some(key);
            if level == 0 {
                let off = le::u32(&data, at + 17).unwrap_or(0) as usize;
                let size = le::u32(&data, at + 21).unwrap_or(0) as usize;
                let start = off.checked_add(HEADER_SIZE);
                let end = start.and_then(|s| s.checked_add(size));
                match (start, end) {
                    (Some(s), Some(e)) if s >= table_end && e <= ns => {
                        node.items.push((key, s, size));
                    }
                    _ => {
                        return Err(self.bad(
                            logical,
                            format!(
                                "item {i} data ({size} bytes at {off:#x}) lies outside the block"
                            ),
                        ))
                    }
                }
            } else {
                let ptr = le::u64(&data, at + 17).unwrap_or(0);
                let gen = le::u64(&data, at + 25).unwrap_or(0);
                node.ptrs.push((key, ptr, gen));
            }
        }
        node.data = data;
        Ok(node)
    }

    /// Every item with `min <= key <= max` in the tree at `root`, plus the errors of subtrees
    /// that could not be read (their items are missing). Fails only if the root is unreadable.
    pub fn range(&self, root: RootRef, min: Key, max: Key) -> Result<(Vec<Item>, Vec<Error>)> {
        let mut items = Vec::new();
        let mut errors = Vec::new();
        let top = self.node(root.bytenr, root.level, root.generation)?;
        let mut seen = std::collections::HashSet::new();
        seen.insert(root.bytenr);
        // Explicit stack of (node, lower bound of its keys, upper bound exclusive).
        let mut stack: Vec<Arc<Node>> = vec![top];
        let mut budget = MAX_NODES_PER_SEARCH;
        while let Some(n) = stack.pop() {
            if n.level == 0 {
                for &(key, s, len) in &n.items {
                    if key >= min && key <= max {
                        items.push(Item {
                            key,
                            data: n.data[s..s + len].to_vec(),
                            logical: n.logical.saturating_add(s as u64),
                        });
                    }
                }
                continue;
            }
            // Children whose key span [key_i, key_{i+1}) meets [min, max], pushed in reverse so
            // that items come out in key order.
            let mut children = Vec::new();
            for (i, &(key, ptr, gen)) in n.ptrs.iter().enumerate() {
                if key > max {
                    break;
                }
                if let Some(&(next, _, _)) = n.ptrs.get(i + 1) {
                    if next <= min {
                        continue;
                    }
                }
                children.push((ptr, gen));
            }
            for (ptr, gen) in children.into_iter().rev() {
                if !seen.insert(ptr) {
                    errors.push(self.bad(
                        ptr,
                        format!(
                            "reached a second time from block {:#x} (a cycle or shared child); skipped",
                            n.logical
                        ),
                    ));
                    continue;
                }
                if budget == 0 {
                    errors.push(Error::limit(
                        &self.name,
                        format!("a tree search read more than {MAX_NODES_PER_SEARCH} blocks"),
                    ));
                    return Ok((items, errors));
                }
                budget -= 1;
                match self.node(ptr, n.level - 1, gen) {
                    Ok(c) => stack.push(c),
                    Err(e) => errors.push(e),
                }
            }
        }
        items.sort_by_key(|i| i.key);
        Ok((items, errors))
    }
}
