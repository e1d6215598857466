//! Directory entries (btrfs on-disk format documentation, "Directory items":
//! `struct btrfs_dir_item`, used by DIR_ITEM and DIR_INDEX).
//!
//! Enumeration uses DIR_INDEX items (one name each, in creation order); DIR_ITEMs (keyed by
//! name hash, possibly several names per item) matter only to log replay.

use super::tree::Key;
use crate::block::le;

/// Bytes of `struct btrfs_dir_item` before the name.
pub const DIR_ITEM_HEADER: usize = 30;
/// Longest name (`BTRFS_NAME_LEN`).
pub const NAME_MAX: usize = 255;

/// Directory entry file types (`BTRFS_FT_*`).
pub mod ft {
    /// Regular file.
    pub const REG_FILE: u8 = 1;
    /// Directory.
    pub const DIR: u8 = 2;
    /// Symbolic link.
    pub const SYMLINK: u8 = 7;
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// What it points to: an inode (INODE_ITEM key) or a subvolume (ROOT_ITEM key).
    pub location: Key,
    /// Its name.
    pub name: Vec<u8>,
    /// `BTRFS_FT_*`.
    pub file_type: u8,
    /// Directory index (the key offset of a DIR_INDEX item).
    pub index: u64,
}

/// Parses every entry of a DIR_ITEM or DIR_INDEX item's data; `index` is the key offset.
pub fn parse(b: &[u8], index: u64) -> Option<Vec<DirEntry>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < b.len() {
        let location = Key {
            objectid: le::u64(b, at)?,
            ty: *b.get(at + 8)?,
            offset: le::u64(b, at + 9)?,
        };
        let data_len = usize::from(le::u16(b, at + 25)?);
        let name_len = usize::from(le::u16(b, at + 27)?);
        if name_len == 0 || name_len > NAME_MAX {
            return None;
        }
        let file_type = *b.get(at + 29)?;
        let start = at + DIR_ITEM_HEADER;
        let end = start.checked_add(name_len)?;
        let name = b.get(start..end)?.to_vec();
        at = end.checked_add(data_len)?;
        if at > b.len() {
            return None;
        }
        out.push(DirEntry {
            location,
            name,
            file_type,
            index,
        });
    }
    Some(out)
}

/// The name hash of DIR_ITEM keys: crc32c seeded with `~1`, as `btrfs_name_hash`.
pub fn name_hash(name: &[u8]) -> u64 {
    // crc32c::crc32c_append applies the usual pre/post inversion; btrfs uses the raw
    // Castagnoli update seeded with ~1 and no final inversion.
    u64::from(!crc32c::crc32c_append(!(!1u32), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_entry_and_refuses_one_past_the_item() {
        let mut b = vec![0u8; DIR_ITEM_HEADER];
        b[0] = 1;
        b[1] = 1; // objectid 257
        b[8] = 1; // INODE_ITEM
        b[27] = 3;
        b[29] = ft::REG_FILE;
        b.extend_from_slice(b"foo");
        let e = parse(&b, 2).unwrap();
        assert_eq!(e[0].location.objectid, 257);
        assert_eq!(e[0].name, b"foo");
        assert!(parse(&b[..b.len() - 1], 2).is_none());
    }

    #[test]
    fn name_hash_matches_the_kernel() {
        // btrfs_name_hash("default") as seen in a real root tree's DIR_ITEM key.
        assert_eq!(name_hash(b"default"), 0x8dbf_c2d2);
    }
}
