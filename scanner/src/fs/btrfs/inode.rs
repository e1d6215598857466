//! Inode items and inode back references (btrfs on-disk format documentation, "Inode items":
//! `struct btrfs_inode_item`, `struct btrfs_inode_ref`, `struct btrfs_inode_extref`).

use crate::block::le;
use crate::fs::EntryKind;

/// Bytes of `struct btrfs_inode_item`.
pub const INODE_ITEM_SIZE: usize = 160;

/// Inode flags (`BTRFS_INODE_*`) that matter to reading.
pub mod flags {
    /// No data checksums.
    pub const NODATASUM: u64 = 1 << 0;
    /// Compression requested.
    pub const COMPRESS: u64 = 1 << 11;
}

/// The fields of an INODE_ITEM that reading needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeItem {
    /// Transaction that last changed it.
    pub generation: u64,
    /// Size in bytes.
    pub size: u64,
    /// Link count.
    pub nlink: u32,
    /// File mode (type and permissions).
    pub mode: u32,
    /// Flags.
    pub flags: u64,
}

impl InodeItem {
    /// Parses an INODE_ITEM's data.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < INODE_ITEM_SIZE {
            return None;
        }
        Some(InodeItem {
            generation: le::u64(b, 0)?,
            size: le::u64(b, 16)?,
            nlink: le::u32(b, 40)?,
            mode: le::u32(b, 52)?,
            flags: le::u64(b, 64)?,
        })
    }

    /// What the inode is, from its mode.
    pub fn kind(&self) -> EntryKind {
        match self.mode & 0o170000 {
            0o100000 => EntryKind::File,
            0o040000 => EntryKind::Dir,
            0o120000 => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }
}

/// One name of an inode in a parent directory (from INODE_REF or INODE_EXTREF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeRef {
    /// Parent directory inode.
    pub parent: u64,
    /// Directory index of the name.
    pub index: u64,
    /// The name.
    pub name: Vec<u8>,
}

/// Parses an INODE_REF item (key offset = parent): one or more (index, name) entries.
pub fn parse_refs(b: &[u8], parent: u64) -> Option<Vec<InodeRef>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < b.len() {
        let index = le::u64(b, at)?;
        let len = usize::from(le::u16(b, at + 8)?);
        let start = at + 10;
        let end = start.checked_add(len)?;
        out.push(InodeRef {
            parent,
            index,
            name: b.get(start..end)?.to_vec(),
        });
        at = end;
    }
    Some(out)
}

/// Parses an INODE_EXTREF item: one or more (parent, index, name) entries.
pub fn parse_extrefs(b: &[u8]) -> Option<Vec<InodeRef>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < b.len() {
        let parent = le::u64(b, at)?;
        let index = le::u64(b, at + 8)?;
        let len = usize::from(le::u16(b, at + 16)?);
        let start = at + 18;
        let end = start.checked_add(len)?;
        out.push(InodeRef {
            parent,
            index,
            name: b.get(start..end)?.to_vec(),
        });
        at = end;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_refs_and_refuses_names_past_the_item() {
        let mut b = Vec::new();
        b.extend_from_slice(&7u64.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(b"ab");
        b.extend_from_slice(&9u64.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(b"c");
        let r = parse_refs(&b, 256).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[1].index, r[1].name.as_slice()), (9, &b"c"[..]));
        assert!(parse_refs(&b[..b.len() - 1], 256).is_none());
    }
}
