//! Version 2 directories (`xfs_dir2_*`, and the v5 `xfs_dir3_*` headers).
//!
//! Follows "XFS Algorithms & Data Structures", chapter "Directories": short form
//! ([`shortform`]) in the inode, and block, leaf, node and B+tree directories, whose names all
//! live in data blocks ([`data`]) in the first 32 GiB of the directory's address space. The
//! leaf, node (da btree) and free-index blocks above that only speed up lookups, so they are not
//! needed to enumerate: every data block is read once, in logical order, whatever the format.

pub mod data;
pub mod shortform;

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The name's bytes.
    pub name: Vec<u8>,
    /// The inode it names.
    pub ino: u64,
}

/// Byte offset in a directory's address space where the leaf blocks start
/// (`XFS_DIR2_LEAF_OFFSET`): data blocks lie below it.
pub const LEAF_OFFSET: u64 = 32 << 30;

/// Skips `.` and `..` (block forms store them; they are not names of new entries).
pub(crate) fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}
