//! Extent trees: how ext4 maps a file's logical blocks to physical blocks.
//!
//! Follows Documentation/filesystems/ext4, section 4.2.3 "Extent Tree" (`ext4_extent_header`,
//! `ext4_extent_idx`, `ext4_extent`). The root node is the 60-byte `i_block`; interior nodes
//! point to blocks holding further nodes, each with its own header whose depth must be one less
//! than its parent's. Leaves with `ee_len > 32768` are unwritten (preallocated) extents that
//! read as zeros; gaps between extents are holes that read as zeros.

use super::inode::Inode;
use super::superblock::Superblock;
use super::Run;
use crate::block::{le, BlockSource};
use crate::error::{Error, Result};

/// `eh_magic`.
const EXTENT_MAGIC: u16 = 0xF30A;
/// Deepest tree accepted; the kernel's `EXT4_MAX_EXTENT_DEPTH` is 5.
pub const MAX_EXTENT_DEPTH: u16 = 5;
/// Most tree nodes read for one file, bounding the work on a hostile tree.
pub const MAX_EXTENT_NODES: usize = 1 << 16;
/// Most extents kept for one file (about 24 bytes each).
pub const MAX_EXTENTS: usize = 1 << 21;
/// `ee_len` above this marks an unwritten extent.
const EXT_INIT_MAX_LEN: u16 = 32768;

/// One leaf extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First logical block.
    pub logical: u64,
    /// Number of blocks.
    pub len: u64,
    /// First physical block.
    pub physical: u64,
    /// Preallocated but never written: reads as zeros.
    pub unwritten: bool,
}

/// A node to visit: where it is, which depth it must have, what points at it.
struct Pending {
    block: u64,
    depth: u16,
    from_offset: u64,
}

/// Reads every leaf extent of `inode`, sorted by logical block. Extents that point outside the
/// filesystem are [`Error::Corrupt`] naming the inode and the byte offset of the bad entry.
pub fn load(
    src: &dyn BlockSource,
    sb: &Superblock,
    inode: &Inode,
    object: &str,
) -> Result<Vec<Extent>> {
    let root_offset = inode.offset + 0x28;
    let root = inode.i_block();
    let root_depth = header(root, root_offset, object, inode.ino)?.depth;
    if root_depth > MAX_EXTENT_DEPTH {
        return Err(Error::corrupt(
            object,
            root_offset,
            format!(
                "inode {}: extent tree depth {root_depth} exceeds {MAX_EXTENT_DEPTH}",
                inode.ino
            ),
        ));
    }
    let mut out = Vec::new();
    let mut pending = Vec::new();
    parse_node(
        root,
        root_offset,
        root_depth,
        sb,
        inode.ino,
        object,
        &mut out,
        &mut pending,
    )?;
    let mut nodes = 1usize;
    let mut buf = vec![0u8; sb.block_size as usize];
    while let Some(p) = pending.pop() {
        nodes += 1;
        if nodes > MAX_EXTENT_NODES {
            return Err(Error::limit(
                object,
                format!(
                    "inode {}: more than {MAX_EXTENT_NODES} extent tree nodes",
                    inode.ino
                ),
            ));
        }
        let off = sb.block_offset(p.block).ok_or_else(|| {
            Error::corrupt(
                object,
                p.from_offset,
                format!("inode {}: extent node address overflows", inode.ino),
            )
        })?;
        src.read_exact_at(off, &mut buf)?;
        let h = header(&buf, off, object, inode.ino)?;
        if h.depth != p.depth {
            return Err(Error::corrupt(
                object,
                off,
                format!(
                    "inode {}: extent node depth {} where {} was expected",
                    inode.ino, h.depth, p.depth
                ),
            ));
        }
        parse_node(
            &buf,
            off,
            p.depth,
            sb,
            inode.ino,
            object,
            &mut out,
            &mut pending,
        )?;
        if out.len() > MAX_EXTENTS {
            return Err(Error::limit(
                object,
                format!("inode {}: more than {MAX_EXTENTS} extents", inode.ino),
            ));
        }
    }
    out.sort_by_key(|e| e.logical);
    Ok(out)
}

struct Header {
    entries: usize,
    depth: u16,
}

fn header(node: &[u8], offset: u64, object: &str, ino: u32) -> Result<Header> {
    let bad = |d: String| Error::corrupt(object, offset, format!("inode {ino}: {d}"));
    let magic = le::u16(node, 0).ok_or_else(|| bad("short extent node".into()))?;
    if magic != EXTENT_MAGIC {
        return Err(bad(format!("bad extent header magic {magic:#06x}")));
    }
    let entries = usize::from(le::u16(node, 2).unwrap_or(0));
    let max = usize::from(le::u16(node, 4).unwrap_or(0));
    let depth = le::u16(node, 6).unwrap_or(0);
    if entries > max || 12 + entries * 12 > node.len() {
        return Err(bad(format!(
            "extent node claims {entries} entries (max {max})"
        )));
    }
    Ok(Header { entries, depth })
}

#[allow(clippy::too_many_arguments)]
fn parse_node(
    node: &[u8],
    offset: u64,
    depth: u16,
    sb: &Superblock,
    ino: u32,
    object: &str,
    out: &mut Vec<Extent>,
    pending: &mut Vec<Pending>,
) -> Result<()> {
    let h = header(node, offset, object, ino)?;
    for i in 0..h.entries {
        let at = 12 + i * 12;
        let entry_offset = offset + at as u64;
        let logical = u64::from(le::u32(node, at).unwrap_or(0));
        if depth == 0 {
            let raw_len = le::u16(node, at + 4).unwrap_or(0);
            let hi = u64::from(le::u16(node, at + 6).unwrap_or(0));
            let lo = u64::from(le::u32(node, at + 8).unwrap_or(0));
            let (len, unwritten) = if raw_len > EXT_INIT_MAX_LEN {
                (raw_len - EXT_INIT_MAX_LEN, true)
            } else {
                (raw_len, false)
            };
            let physical = lo | (hi << 32);
            let len = u64::from(len);
            if len == 0 {
                return Err(Error::corrupt(
                    object,
                    entry_offset,
                    format!("inode {ino}: zero-length extent"),
                ));
            }
            if physical
                .checked_add(len)
                .is_none_or(|end| end > sb.blocks_count)
            {
                return Err(Error::corrupt(
                    object,
                    entry_offset,
                    format!(
                        "inode {ino}: extent at logical block {logical} maps blocks {physical}..{} past the end of the filesystem ({} blocks)",
                        physical.saturating_add(len),
                        sb.blocks_count
                    ),
                ));
            }
            out.push(Extent {
                logical,
                len,
                physical,
                unwritten,
            });
        } else {
            let lo = u64::from(le::u32(node, at + 4).unwrap_or(0));
            let hi = u64::from(le::u16(node, at + 8).unwrap_or(0));
            let block = lo | (hi << 32);
            if block < u64::from(sb.first_data_block) || block >= sb.blocks_count {
                return Err(Error::corrupt(
                    object,
                    entry_offset,
                    format!("inode {ino}: extent index points at block {block} outside the filesystem ({} blocks)", sb.blocks_count),
                ));
            }
            pending.push(Pending {
                block,
                depth: depth - 1,
                from_offset: entry_offset,
            });
        }
    }
    Ok(())
}

/// Maps logical block `lblock` through sorted `extents`: the physical block (or `None` for a
/// hole / unwritten extent) and how many blocks from `lblock` map the same way contiguously.
pub fn map(extents: &[Extent], lblock: u64) -> Run {
    // Index of the first extent starting after lblock.
    let next = extents.partition_point(|e| e.logical <= lblock);
    if let Some(e) = next.checked_sub(1).and_then(|i| extents.get(i)) {
        let within = lblock - e.logical;
        if within < e.len {
            let len = e.len - within;
            return if e.unwritten {
                Run {
                    physical: None,
                    len,
                }
            } else {
                Run {
                    physical: Some(e.physical + within),
                    len,
                }
            };
        }
    }
    let len = extents.get(next).map_or(u64::MAX, |n| n.logical - lblock);
    Run {
        physical: None,
        len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_handles_holes_and_unwritten() {
        let ex = [
            Extent {
                logical: 2,
                len: 3,
                physical: 100,
                unwritten: false,
            },
            Extent {
                logical: 5,
                len: 2,
                physical: 200,
                unwritten: true,
            },
            Extent {
                logical: 10,
                len: 1,
                physical: 300,
                unwritten: false,
            },
        ];
        assert_eq!(
            map(&ex, 0),
            Run {
                physical: None,
                len: 2
            }
        );
        assert_eq!(
            map(&ex, 3),
            Run {
                physical: Some(101),
                len: 2
            }
        );
        assert_eq!(
            map(&ex, 5),
            Run {
                physical: None,
                len: 2
            }
        );
        assert_eq!(
            map(&ex, 7),
            Run {
                physical: None,
                len: 3
            }
        );
        assert_eq!(
            map(&ex, 10),
            Run {
                physical: Some(300),
                len: 1
            }
        );
        assert_eq!(
            map(&ex, 11),
            Run {
                physical: None,
                len: u64::MAX
            }
        );
        assert_eq!(
            map(&[], 0),
            Run {
                physical: None,
                len: u64::MAX
            }
        );
    }
}
