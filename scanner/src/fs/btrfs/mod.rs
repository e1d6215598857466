//! Btrfs, read natively (read-only), with the fsync tree log replayed in memory.
//!
//! Follows the btrfs on-disk format documentation (btrfs.readthedocs.io "On-disk format",
//! kernel `include/uapi/linux/btrfs_tree.h`), one file per structure: [`superblock`] (copies
//! and their choice), [`chunk`] (logical -> physical map), [`tree`] (tree blocks and range
//! searches), [`root_tree`] (subvolumes), [`inode`], [`dir`], [`extent`] (+ [`lzo`]),
//! [`log_tree`] (fsync log replay), [`subvol`] (one subvolume's view) and [`reader`].
//!
//! Every subvolume and snapshot is listed under the path where it is linked (a DIR_INDEX entry
//! pointing to a ROOT_ITEM, confirmed by the parent's ROOT_REF); the top-level subvolume (5) is
//! `/`. Entries are identified by [`FileId`] `{ node: inode number, stream: subvolume index }`
//! (the index of the subvolume in id order, 0 for the top level), so hard links are read once.
//! When the filesystem has snapshots, a regular file whose extents are identical to an
//! earlier file's (same disk extents, offsets, lengths, compression, size) gets that file's
//! id, so content shared between snapshots is scanned once.
//!
//! Tree-block checksums (crc32c) are verified by default; xxhash64, SHA-256 and BLAKE2b
//! checksums are not computed (a note says so). Data checksums are not verified.
//! Multi-device filesystems are read from the one device given: data or metadata on another
//! device fails naming that device's id and UUID.

pub mod chunk;
pub mod dir;
pub mod extent;
pub mod inode;
pub mod log_tree;
pub mod lzo;
pub mod reader;
pub mod root_tree;
pub mod subvol;
pub mod superblock;
pub mod tree;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};

use self::chunk::{parse_chunk, ChunkMap};
use self::dir::DirEntry;
use self::extent::{ExtentBody, FileExtent};
use self::inode::InodeItem;
use self::log_tree::LogReplay;
use self::root_tree::{is_subvolume, key_type, objectid, RootItem};
use self::subvol::{Subvol, SubvolView};
use self::superblock::{incompat, Superblock};
use self::tree::{Key, RootRef, TreeReader};
use crate::block::SharedSource;
use crate::error::{Error, Result};
use crate::fs::{EntryKind, FileEntry, FileId, FileReader, Filesystem, FsKind, WalkEvent};

pub use self::superblock::probe;

/// Deepest directory nesting walked (an explicit stack, never recursion).
pub const MAX_DEPTH: usize = 4096;
/// Most subvolumes read.
pub const MAX_SUBVOLUMES: usize = 1 << 16;

/// How to open a volume.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Verify tree-block checksums (crc32c), refusing blocks that fail.
    pub verify_checksums: bool,
    /// Replay the tree log.
    pub replay_log: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            verify_checksums: true,
            replay_log: true,
        }
    }
}

/// An opened Btrfs volume.
#[derive(Debug)]
pub struct BtrfsVolume {
    trees: TreeReader,
    sb: Superblock,
    subvols: Vec<Subvol>,
    /// ROOT_REFs: (parent subvolume, child subvolume) -> (directory, name).
    root_refs: HashMap<(u64, u64), (u64, Vec<u8>)>,
    log: Option<LogReplay>,
    notes: Vec<String>,
}

impl BtrfsVolume {
    /// Opens the filesystem on `volume`, replaying its tree log in memory.
    pub fn open(volume: SharedSource) -> Result<Self> {
        Self::open_with(volume, OpenOptions::default())
    }

    /// Opens with explicit options.
    pub fn open_with(volume: SharedSource, opts: OpenOptions) -> Result<Self> {
        let name = volume.name().to_string();
        let (sb, mut notes) = Superblock::read_best(volume.as_ref())?;
        let unknown = sb.incompat_flags & !incompat::SUPPORTED;
        if unknown != 0 {
            return Err(Error::unsupported(
                &name,
                format!("btrfs incompatible features {unknown:#x} (extent tree v2 or newer)"),
            ));
        }
        if superblock::checksum(sb.csum_type, &[]).is_none() {
            notes.push(format!(
                "checksums are {}; tree blocks are not verified",
                superblock::csum_name(sb.csum_type)
            ));
        }
        let mut sys = ChunkMap::new(sb.devid);
        sys.load_sys_array(
            &sb.sys_chunk_array,
            &format!("{name} btrfs superblock"),
            sb.offset,
        )?;
        let mut trees = TreeReader::new(
            volume,
            sys,
            sb.nodesize,
            sb.metadata_uuid,
            sb.csum_type,
            opts.verify_checksums,
        );
        let full = read_chunk_tree(&trees, &sb, &mut notes)?;
        trees.chunks = full;
        let mut vol = BtrfsVolume {
            trees,
            sb,
            subvols: Vec::new(),
            root_refs: HashMap::new(),
            log: None,
            notes,
        };
        vol.read_root_tree()?;
        if vol.sb.log_root != 0 {
            if opts.replay_log {
                let root = RootRef {
                    bytenr: vol.sb.log_root,
                    level: vol.sb.log_root_level,
                    generation: 0,
                };
                match LogReplay::read(&vol.trees, root) {
                    Ok(r) => {
                        vol.notes.push(format!(
                            "tree log replayed: {} subvolume(s), {} items",
                            r.subvols.len(),
                            r.items()
                        ));
                        vol.notes.extend(r.notes.iter().cloned());
                        for id in r.subvols.keys() {
                            if !vol.subvols.iter().any(|s| s.id == *id) {
                                vol.notes.push(format!(
                                    "tree log names subvolume {id}, which does not exist; ignored"
                                ));
                            }
                        }
                        vol.log = Some(r);
                    }
                    Err(e) => vol.notes.push(format!(
                        "tree log NOT replayed ({e}); recently fsync'ed changes may be missing"
                    )),
                }
            } else {
                vol.notes
                    .push("tree log present but not replayed (on-disk state read)".into());
            }
        }
        Ok(vol)
    }

    fn read_root_tree(&mut self) -> Result<()> {
        let root = RootRef {
            bytenr: self.sb.root,
            level: self.sb.root_level,
            generation: self.sb.generation,
        };
        let (items, errors) = self.trees.range(
            root,
            Key::new(objectid::FS_TREE, 0, 0),
            Key::new(objectid::LAST_FREE, u8::MAX, u64::MAX),
        )?;
        for e in errors {
            self.notes.push(format!("root tree: {e}"));
        }
        let mut latest: HashMap<u64, RootItem> = HashMap::new();
        for it in &items {
            if !is_subvolume(it.key.objectid) {
                continue;
            }
            match it.key.ty {
                key_type::ROOT_ITEM => match RootItem::parse(&it.data) {
                    Some(r) => {
                        latest.insert(it.key.objectid, r);
                    }
                    None => self.notes.push(format!(
                        "root item of subvolume {} at logical {:#x} is too short; skipped",
                        it.key.objectid, it.logical
                    )),
                },
                key_type::ROOT_REF => {
                    if let Some(r) = root_tree::RootRef::parse(&it.data) {
                        self.root_refs
                            .insert((it.key.objectid, it.key.offset), (r.dirid, r.name));
                    }
                }
                _ => {}
            }
        }
        let mut ids: Vec<u64> = latest.keys().copied().collect();
        ids.sort_unstable();
        if ids.len() > MAX_SUBVOLUMES {
            return Err(Error::limit(
                &self.trees.name,
                format!("more than {MAX_SUBVOLUMES} subvolumes"),
            ));
        }
        for id in ids {
            let r = latest[&id];
            if r.refs == 0 && id != objectid::FS_TREE {
                self.notes
                    .push(format!("subvolume {id} is being deleted; not listed"));
                continue;
            }
            self.subvols.push(Subvol {
                id,
                root: RootRef {
                    bytenr: r.bytenr,
                    level: r.level,
                    generation: r.generation,
                },
                root_dirid: r.root_dirid,
            });
        }
        if self
            .subvols
            .first()
            .is_none_or(|s| s.id != objectid::FS_TREE)
        {
            return Err(Error::corrupt(
                &self.trees.name,
                self.sb.root,
                "the root tree has no top-level subvolume (FS_TREE)",
            ));
        }
        Ok(())
    }

    fn view(&self, index: usize) -> SubvolView<'_> {
        let subvol = &self.subvols[index];
        SubvolView {
            trees: &self.trees,
            subvol,
            log: self.log.as_ref().and_then(|l| l.subvols.get(&subvol.id)),
            sectorsize: self.sb.sectorsize,
        }
    }

    fn subvol_index(&self, id: u64) -> Option<usize> {
        self.subvols.binary_search_by_key(&id, |s| s.id).ok()
    }

    /// Where a directory entry leads: a subvolume's root directory, the empty placeholder of
    /// a subvolume not linked here (a nested subvolume seen from a snapshot), or an inode.
    fn target(&self, sv: usize, dir: u64, e: &DirEntry) -> Target {
        if e.location.ty != key_type::ROOT_ITEM {
            return Target::Inode(sv, e.location.objectid);
        }
        let child = e.location.objectid;
        let linked = self
            .root_refs
            .get(&(self.subvols[sv].id, child))
            .is_some_and(|(d, n)| *d == dir && *n == e.name);
        match (linked, self.subvol_index(child)) {
            (true, Some(i)) => Target::Inode(i, self.subvols[i].root_dirid),
            _ => Target::EmptyDir,
        }
    }

    fn entry(&self, path: String, sv: usize, ino: u64, i: &InodeItem) -> FileEntry {
        FileEntry {
            path,
            stream: None,
            kind: i.kind(),
            size: i.size,
            id: FileId {
                node: ino,
                stream: sv as u32,
            },
            unreadable: None,
        }
    }

    /// A signature of a regular file's content location, equal for files sharing all their
    /// extents (snapshots, reflinks); `None` when it cannot be computed.
    fn content_signature(&self, sv: usize, ino: u64, size: u64) -> Option<Vec<u8>> {
        let extents = self.view(sv).extents(ino).ok()?;
        if extents.is_empty() {
            return None;
        }
        let mut sig = Vec::with_capacity(8 + extents.len() * 48);
        sig.extend_from_slice(&size.to_le_bytes());
        for e in &extents {
            sig.extend_from_slice(&e.file_offset.to_le_bytes());
            sig.push(e.compression);
            match &e.body {
                // Inline data lives in the tree: identical bytes are identical content.
                ExtentBody::Inline(d) => {
                    sig.push(0);
                    sig.extend_from_slice(&(d.len() as u64).to_le_bytes());
                    sig.extend_from_slice(d);
                }
                ExtentBody::Regular {
                    disk_bytenr,
                    disk_num_bytes,
                    offset,
                    num_bytes,
                } => {
                    sig.push(1);
                    for v in [disk_bytenr, disk_num_bytes, offset, num_bytes] {
                        sig.extend_from_slice(&v.to_le_bytes());
                    }
                }
                ExtentBody::Prealloc { num_bytes } => {
                    sig.push(2);
                    sig.extend_from_slice(&num_bytes.to_le_bytes());
                }
            }
        }
        Some(sig)
    }

    fn resolve(&self, path: &str) -> Result<(usize, u64, InodeItem)> {
        let not_found = || Error::NotFound {
            object: self.trees.name.clone(),
            detail: path.to_string(),
        };
        let mut sv = 0usize;
        let mut ino = self.subvols[0].root_dirid;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let (entries, _) = self.view(sv).dir_entries(ino)?;
            let e = entries
                .iter()
                .find(|e| component(&e.name) == part)
                .ok_or_else(not_found)?;
            match self.target(sv, ino, e) {
                Target::Inode(s, i) => {
                    sv = s;
                    ino = i;
                }
                Target::EmptyDir => return Err(not_found()),
            }
        }
        let item = self.view(sv).inode(ino)?.ok_or_else(not_found)?;
        Ok((sv, ino, item))
    }
}

enum Target {
    Inode(usize, u64),
    EmptyDir,
}

/// Turns a name's bytes into a path component (lossy UTF-8; `/` and NUL replaced).
fn component(name: &[u8]) -> String {
    String::from_utf8_lossy(name).replace(['/', '\0'], "\u{FFFD}")
}

/// Reads every CHUNK_ITEM of the chunk tree into a full map (the bootstrap chunks included).
fn read_chunk_tree(
    trees: &TreeReader,
    sb: &Superblock,
    notes: &mut Vec<String>,
) -> Result<ChunkMap> {
    let object = format!("{} btrfs chunk tree", trees.name);
    let root = RootRef {
        bytenr: sb.chunk_root,
        level: sb.chunk_root_level,
        generation: 0,
    };
    let (items, errors) = trees.range(
        root,
        Key::new(1, key_type::DEV_ITEM, 0),
        Key::new(objectid::FIRST_CHUNK_TREE, key_type::CHUNK_ITEM, u64::MAX),
    )?;
    for e in errors {
        notes.push(format!("chunk tree: {e}"));
    }
    let mut map = ChunkMap::new(sb.devid);
    for c in trees.chunks.chunks() {
        map.insert(c.clone(), &object, sb.offset)?;
    }
    let mut devices = Vec::new();
    for it in items {
        match it.key.ty {
            key_type::DEV_ITEM => devices.push(it.key.offset),
            key_type::CHUNK_ITEM => {
                let (c, _) = parse_chunk(&it.data, it.key.offset).ok_or_else(|| {
                    Error::corrupt(&object, it.logical, "chunk item is malformed")
                })?;
                if let Err(e) = map.insert(c, &object, it.logical) {
                    notes.push(format!("chunk tree: {e}"));
                }
            }
            _ => {}
        }
    }
    if sb.num_devices > 1 || devices.len() > 1 {
        notes.push(format!(
            "multi-device filesystem ({} devices); only device {} was given: data on the others cannot be read",
            sb.num_devices.max(devices.len() as u64),
            sb.devid
        ));
    }
    Ok(map)
}

impl Filesystem for BtrfsVolume {
    fn kind(&self) -> FsKind {
        FsKind::Btrfs
    }

    fn label(&self) -> Option<String> {
        (!self.sb.label.is_empty()).then(|| self.sb.label.clone())
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn walk(&self, visit: &mut dyn FnMut(WalkEvent)) -> Result<()> {
        struct Frame {
            path: String,
            sv: usize,
            dir: u64,
            entries: Vec<DirEntry>,
            next: usize,
        }
        let root_dir = self.subvols[0].root_dirid;
        let (entries, errors) = self.view(0).dir_entries(root_dir)?;
        for error in errors {
            visit(WalkEvent::Error {
                path: "/".into(),
                error,
            });
        }
        let mut visited: HashSet<(usize, u64)> = HashSet::from([(0, root_dir)]);
        let share = self.subvols.len() > 1;
        let mut shared: HashMap<Vec<u8>, FileId> = HashMap::new();
        let mut stack = vec![Frame {
            path: String::new(),
            sv: 0,
            dir: root_dir,
            entries,
            next: 0,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(e) = frame.entries.get(frame.next).cloned() else {
                stack.pop();
                continue;
            };
            frame.next += 1;
            let path = format!("{}/{}", frame.path, component(&e.name));
            let (sv, dir) = (frame.sv, frame.dir);
            let (sv, ino) = match self.target(sv, dir, &e) {
                Target::Inode(s, i) => (s, i),
                Target::EmptyDir => {
                    visit(WalkEvent::Entry(FileEntry {
                        path,
                        stream: None,
                        kind: EntryKind::Dir,
                        size: 0,
                        id: FileId {
                            node: objectid::EMPTY_SUBVOL_DIR,
                            stream: sv as u32,
                        },
                        unreadable: None,
                    }));
                    continue;
                }
            };
            let item = match self.view(sv).inode(ino) {
                Ok(Some(i)) => i,
                Ok(None) => {
                    visit(WalkEvent::Error {
                        path,
                        error: Error::corrupt(
                            &self.trees.name,
                            0,
                            format!(
                                "entry names inode {ino} of subvolume {}, which has no inode item",
                                self.subvols[sv].id
                            ),
                        ),
                    });
                    continue;
                }
                Err(error) => {
                    visit(WalkEvent::Error { path, error });
                    continue;
                }
            };
            let mut entry = self.entry(path.clone(), sv, ino, &item);
            if item.kind() != EntryKind::Dir {
                if share && entry.kind == EntryKind::File {
                    if let Some(sig) = self.content_signature(sv, ino, item.size) {
                        entry.id = *shared.entry(sig).or_insert(entry.id);
                    }
                }
                visit(WalkEvent::Entry(entry));
                continue;
            }
            if !visited.insert((sv, ino)) {
                visit(WalkEvent::Error {
                    path,
                    error: Error::corrupt(
                        &self.trees.name,
                        0,
                        format!("directory {ino} of subvolume {} is reached a second time (a loop); not descended", self.subvols[sv].id),
                    ),
                });
                continue;
            }
            visit(WalkEvent::Entry(entry));
            if stack.len() >= MAX_DEPTH {
                visit(WalkEvent::Error {
                    path,
                    error: Error::limit(
                        &self.trees.name,
                        format!("directories nested deeper than {MAX_DEPTH}; not descended"),
                    ),
                });
                continue;
            }
            match self.view(sv).dir_entries(ino) {
                Ok((entries, errors)) => {
                    for error in errors {
                        visit(WalkEvent::Error {
                            path: path.clone(),
                            error,
                        });
                    }
                    stack.push(Frame {
                        path,
                        sv,
                        dir: ino,
                        entries,
                        next: 0,
                    });
                }
                Err(error) => visit(WalkEvent::Error { path, error }),
            }
        }
        Ok(())
    }

    fn open(&self, entry: &FileEntry) -> Result<Box<dyn FileReader + '_>> {
        let sv = entry.id.stream as usize;
        let not_found = || Error::NotFound {
            object: self.trees.name.clone(),
            detail: format!("subvolume index {sv} inode {}", entry.id.node),
        };
        if sv >= self.subvols.len() {
            return Err(not_found());
        }
        let view = self.view(sv);
        let item = view.inode(entry.id.node)?.ok_or_else(not_found)?;
        if item.kind() == EntryKind::Dir {
            return Err(Error::unsupported(
                &entry.path,
                "a directory has no content to read",
            ));
        }
        let extents: Vec<FileExtent> = view.extents(entry.id.node)?;
        Ok(Box::new(reader::BtrfsFileReader::new(
            &self.trees,
            entry.path.clone(),
            item.size,
            self.sb.sectorsize,
            extents,
        )?))
    }

    fn lookup(&self, path: &str) -> Result<FileEntry> {
        let (sv, ino, item) = self.resolve(path)?;
        let built: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        Ok(self.entry(format!("/{}", built.join("/")), sv, ino, &item))
    }
}
