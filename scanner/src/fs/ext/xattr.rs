//! In-inode extended attributes, as far as inline data needs them.
//!
//! Follows Documentation/filesystems/ext4, section 4.4 "Extended Attributes": after the
//! 128-byte base inode and `i_extra_isize` bytes comes a 4-byte magic (0xEA020000) and a list
//! of `ext4_xattr_entry` records ended by four zero bytes; values are addressed relative to the
//! first entry. Only the in-inode area is read: `system.data` (inline data) always lives there.

use crate::block::le;

/// `h_magic` of the in-inode attribute area.
const XATTR_MAGIC: u32 = 0xEA02_0000;
/// Size of `ext4_xattr_entry` before the name.
const ENTRY_HEADER: usize = 16;

/// What looking up an attribute found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// No such attribute (or no attribute area).
    Absent,
    /// The value bytes.
    Value(&'a [u8]),
    /// The attribute exists but is malformed (value outside the area, value in an EA inode).
    Bad(String),
}

/// Finds attribute `index`/`name` in the in-inode area of `raw` (a whole inode record).
pub fn find_in_inode<'a>(raw: &'a [u8], index: u8, name: &[u8]) -> Lookup<'a> {
    if raw.len() <= 128 {
        return Lookup::Absent;
    }
    let extra = usize::from(le::u16(raw, 0x80).unwrap_or(0));
    let Some(start) = 128usize.checked_add(extra) else {
        return Lookup::Absent;
    };
    if le::u32(raw, start) != Some(XATTR_MAGIC) {
        return Lookup::Absent;
    }
    let first = start + 4;
    let Some(area) = raw.get(first..) else {
        return Lookup::Absent;
    };
    let mut at = 0usize;
    // Every entry is at least 16 bytes, so this loop ends within area.len() / 16 rounds.
    while let Some(word) = le::u32(area, at) {
        if word == 0 {
            break;
        }
        let name_len = usize::from(area.get(at).copied().unwrap_or(0));
        let e_index = area.get(at + 1).copied().unwrap_or(0);
        let value_offs = usize::from(le::u16(area, at + 2).unwrap_or(0));
        let value_inum = le::u32(area, at + 4).unwrap_or(0);
        let value_size = le::u32(area, at + 8).unwrap_or(0) as usize;
        let Some(e_name) = area.get(at + ENTRY_HEADER..at + ENTRY_HEADER + name_len) else {
            return Lookup::Absent;
        };
        if e_index == index && e_name == name {
            if value_inum != 0 {
                return Lookup::Bad("attribute value stored in an EA inode".into());
            }
            return match area.get(value_offs..value_offs.saturating_add(value_size)) {
                Some(v) => Lookup::Value(v),
                None => Lookup::Bad(format!(
                    "attribute value of {value_size} bytes at {value_offs} outside the inode"
                )),
            };
        }
        at += (ENTRY_HEADER + name_len + 3) & !3;
    }
    Lookup::Absent
}
