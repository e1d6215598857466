//! Inline data: small files and directories stored inside the inode.
//!
//! Follows Documentation/filesystems/ext4, section 4.2.4 "Inline Data" (and 4.3 for inline
//! directories): the first 60 bytes live in `i_block`, the rest in the value of the in-inode
//! extended attribute `system.data` (name index 7, name `data`). An inline directory starts with
//! the 4-byte parent inode number in `i_block`, then directory entries fill the other 56 bytes;
//! the `system.data` value holds a second run of directory entries.

use super::inode::{Inode, I_BLOCK_LEN};
use super::xattr::{self, Lookup};
use crate::error::{Error, Result};

/// `EXT4_XATTR_INDEX_SYSTEM`.
const INDEX_SYSTEM: u8 = 7;

fn system_data<'a>(inode: &'a Inode, object: &str) -> Result<&'a [u8]> {
    match xattr::find_in_inode(&inode.raw, INDEX_SYSTEM, b"data") {
        Lookup::Absent => Ok(&[]),
        Lookup::Value(v) => Ok(v),
        Lookup::Bad(why) => Err(Error::corrupt(
            object,
            inode.offset,
            format!("inode {}: system.data: {why}", inode.ino),
        )),
    }
}

/// The content of an inline-data file: `i_size` bytes from `i_block` and `system.data`.
pub fn file_data(inode: &Inode, object: &str) -> Result<Vec<u8>> {
    let extra = system_data(inode, object)?;
    let mut data = Vec::with_capacity(I_BLOCK_LEN + extra.len());
    data.extend_from_slice(inode.i_block());
    data.extend_from_slice(extra);
    let size = usize::try_from(inode.size).unwrap_or(usize::MAX);
    if size > data.len() {
        return Err(Error::corrupt(
            object,
            inode.offset,
            format!(
                "inode {}: inline file of {} bytes holds only {} bytes",
                inode.ino,
                inode.size,
                data.len()
            ),
        ));
    }
    data.truncate(size);
    Ok(data)
}

/// The two directory-entry areas of an inline directory: the 56 bytes after the parent pointer
/// in `i_block`, and the `system.data` value.
pub fn dir_areas<'a>(inode: &'a Inode, object: &str) -> Result<[&'a [u8]; 2]> {
    let first = inode.i_block().get(4..).unwrap_or(&[]);
    Ok([first, system_data(inode, object)?])
}
