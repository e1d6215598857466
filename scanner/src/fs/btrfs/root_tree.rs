//! The root tree: ROOT_ITEMs locate every tree, ROOT_REFs name subvolumes in their parents
//! (btrfs on-disk format documentation, "Root tree", `struct btrfs_root_item`,
//! `struct btrfs_root_ref`).

use crate::block::le;

/// Well-known tree ids (`BTRFS_*_OBJECTID`).
pub mod objectid {
    /// The root tree.
    pub const ROOT_TREE: u64 = 1;
    /// The chunk tree.
    pub const CHUNK_TREE: u64 = 3;
    /// The top-level subvolume (FS_TREE).
    pub const FS_TREE: u64 = 5;
    /// First id of subvolumes and snapshots, and of ordinary inodes.
    pub const FIRST_FREE: u64 = 256;
    /// Last id of subvolumes (`-256`).
    pub const LAST_FREE: u64 = u64::MAX - 255;
    /// Log trees (`-6`): key objectid of their ROOT_ITEMs in the log root tree.
    pub const TREE_LOG: u64 = u64::MAX - 5;
    /// The placeholder inode of a nested subvolume inside a snapshot.
    pub const EMPTY_SUBVOL_DIR: u64 = 2;
    /// First chunk item objectid in the chunk tree.
    pub const FIRST_CHUNK_TREE: u64 = 256;
}

/// Item key types (`BTRFS_*_KEY`).
pub mod key_type {
    /// Inode item.
    pub const INODE_ITEM: u8 = 1;
    /// Inode back reference (name in one parent directory).
    pub const INODE_REF: u8 = 12;
    /// Extended inode back reference.
    pub const INODE_EXTREF: u8 = 13;
    /// Directory log range (tree log only).
    pub const DIR_LOG_ITEM: u8 = 60;
    /// Directory index log range (tree log only).
    pub const DIR_LOG_INDEX: u8 = 72;
    /// Directory entry by name hash.
    pub const DIR_ITEM: u8 = 84;
    /// Directory entry by index (creation order).
    pub const DIR_INDEX: u8 = 96;
    /// File extent.
    pub const EXTENT_DATA: u8 = 108;
    /// Root item.
    pub const ROOT_ITEM: u8 = 132;
    /// Subvolume back reference (child -> parent).
    pub const ROOT_BACKREF: u8 = 144;
    /// Subvolume forward reference (parent -> child).
    pub const ROOT_REF: u8 = 156;
    /// Device item.
    pub const DEV_ITEM: u8 = 216;
    /// Chunk item.
    pub const CHUNK_ITEM: u8 = 228;
}

/// Bytes of the oldest `struct btrfs_root_item` (up to and including `level`).
pub const ROOT_ITEM_MIN: usize = 239;

/// The fields of a ROOT_ITEM that reading needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootItem {
    /// Generation of the tree's root block.
    pub generation: u64,
    /// Inode number of the tree's root directory (256).
    pub root_dirid: u64,
    /// Logical address of the root block.
    pub bytenr: u64,
    /// References; 0 means the subvolume is being deleted.
    pub refs: u32,
    /// Level of the root block.
    pub level: u8,
}

impl RootItem {
    /// Parses a ROOT_ITEM's data.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < ROOT_ITEM_MIN {
            return None;
        }
        Some(RootItem {
            generation: le::u64(b, 160)?,
            root_dirid: le::u64(b, 168)?,
            bytenr: le::u64(b, 176)?,
            refs: le::u32(b, 216)?,
            level: *b.get(238)?,
        })
    }
}

/// A ROOT_REF / ROOT_BACKREF: where a subvolume is linked in its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRef {
    /// Directory inode (in the parent subvolume) holding the link.
    pub dirid: u64,
    /// Directory index of the link.
    pub sequence: u64,
    /// The link's name.
    pub name: Vec<u8>,
}

impl RootRef {
    /// Parses a ROOT_REF / ROOT_BACKREF item's data.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let len = usize::from(le::u16(b, 16)?);
        Some(RootRef {
            dirid: le::u64(b, 0)?,
            sequence: le::u64(b, 8)?,
            name: b.get(18..18usize.checked_add(len)?)?.to_vec(),
        })
    }
}

/// Whether `id` names a subvolume tree (the top level or a created subvolume / snapshot).
pub fn is_subvolume(id: u64) -> bool {
    id == objectid::FS_TREE || (objectid::FIRST_FREE..=objectid::LAST_FREE).contains(&id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_root_refs_and_refuses_short_names() {
        let mut b = vec![0u8; 18];
        b[0] = 0x00;
        b[1] = 0x01; // dirid 256
        b[8] = 3;
        b[16] = 3;
        b.extend_from_slice(b"abc");
        let r = RootRef::parse(&b).unwrap();
        assert_eq!(
            (r.dirid, r.sequence, r.name.as_slice()),
            (256, 3, &b"abc"[..])
        );
        assert!(RootRef::parse(&b[..20]).is_none());
        assert!(RootItem::parse(&[0u8; 100]).is_none());
    }
}
