//! Symbolic link targets: local (in the data fork) or remote (in blocks, each with an
//! `xfs_dsymlink_hdr` on v5). "XFS Algorithms & Data Structures", section "Symbolic Links".

use crate::block::{be, BlockSource};
use crate::error::{Error, Result};

use super::bmbt::ExtentMap;
use super::superblock::Superblock;

/// Longest symlink target (`XFS_SYMLINK_MAXLEN`).
pub const MAX_TARGET: u64 = 1024;
/// `XSLM`.
pub const SYMLINK_MAGIC: u32 = 0x5853_4c4d;
/// v5 remote symlink block header size.
const HDR_LEN: usize = 56;

/// Reads a remote symlink target of `size` bytes through `map`.
pub fn remote_target(
    src: &dyn BlockSource,
    sb: &Superblock,
    map: &ExtentMap,
    size: u64,
    object: &str,
) -> Result<Vec<u8>> {
    if size > MAX_TARGET {
        return Err(Error::corrupt(
            object,
            0,
            format!("symlink target of {size} bytes exceeds {MAX_TARGET}"),
        ));
    }
    let size = size as usize;
    let bs = sb.block_size as usize;
    let hdr = if sb.has_crc() { HDR_LEN } else { 0 };
    let mut out = Vec::with_capacity(size);
    let mut lblock = 0u64;
    let mut buf = vec![0u8; bs];
    while out.len() < size {
        let run = map.map(sb, lblock);
        let at = run.byte.ok_or_else(|| {
            Error::corrupt(object, 0, format!("symlink block {lblock} is a hole"))
        })?;
        src.read_exact_at(at, &mut buf)?;
        if hdr > 0 && be::u32(&buf, 0) != Some(SYMLINK_MAGIC) {
            return Err(Error::corrupt(
                object,
                at,
                "remote symlink block: bad magic",
            ));
        }
        let take = (size - out.len()).min(bs - hdr);
        out.extend_from_slice(&buf[hdr..hdr + take]);
        lblock += 1;
    }
    Ok(out)
}
