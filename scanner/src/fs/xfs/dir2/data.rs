//! Directory data blocks: the single block of a block directory (`XD2B`/`XDB3`, with its leaf
//! array and tail) and the data blocks of leaf, node and B+tree directories (`XD2D`/`XDD3`).
//! "XFS Algorithms & Data Structures", sections "Block Directories" and "Leaf Directories":
//! `xfs_dir2_data_hdr` (v4, 16 bytes) and `xfs_dir3_data_hdr` (v5, 64 bytes), followed by
//! `xfs_dir2_data_entry` and `xfs_dir2_data_unused` records, each 8-byte aligned.

use crate::block::be;
use crate::error::{Error, Result};

use super::{is_dot, RawEntry};

/// `XD2B`: v4 single-block directory.
pub const BLOCK_MAGIC: u32 = 0x5844_3242;
/// `XD2D`: v4 data block.
pub const DATA_MAGIC: u32 = 0x5844_3244;
/// `XDB3`: v5 single-block directory.
pub const BLOCK3_MAGIC: u32 = 0x5844_4233;
/// `XDD3`: v5 data block.
pub const DATA3_MAGIC: u32 = 0x5844_4433;
/// Tag of an unused region.
const FREE_TAG: u16 = 0xffff;
/// Size of the block directory tail (`xfs_dir2_block_tail`: count, stale).
const BLOCK_TAIL: usize = 8;
/// Size of one leaf entry (`xfs_dir2_leaf_entry`: hashval, address).
const LEAF_ENTRY: usize = 8;

/// Parses one directory data block (`b` is one whole directory block read from byte `at`),
/// appending its names (without `.` and `..`) to `out`.
pub fn parse_block(
    b: &[u8],
    crc: bool,
    ftype: bool,
    at: u64,
    object: &str,
    out: &mut Vec<RawEntry>,
) -> Result<()> {
    let bad = |pos: usize, d: String| {
        Error::corrupt(
            object,
            at.saturating_add(pos as u64),
            format!("directory data block: {d}"),
        )
    };
    let magic = be::u32(b, 0).ok_or_else(|| bad(0, "truncated".into()))?;
    let (hdr, single) = match (magic, crc) {
        (BLOCK_MAGIC, false) => (16, true),
        (DATA_MAGIC, false) => (16, false),
        (BLOCK3_MAGIC, true) => (64, true),
        (DATA3_MAGIC, true) => (64, false),
        _ => return Err(bad(0, format!("bad magic {magic:#x}"))),
    };
    let end = if single {
        let tail = b
            .len()
            .checked_sub(BLOCK_TAIL)
            .ok_or_else(|| bad(0, "too small".into()))?;
        let count = be::u32(b, tail).unwrap_or(u32::MAX) as usize;
        count
            .checked_mul(LEAF_ENTRY)
            .and_then(|l| tail.checked_sub(l))
            .filter(|&e| e >= hdr)
            .ok_or_else(|| bad(tail, format!("leaf count {count} does not fit the block")))?
    } else {
        b.len()
    };
    let mut pos = hdr;
    while pos < end {
        let tag = be::u16(b, pos).ok_or_else(|| bad(pos, "truncated entry".into()))?;
        if tag == FREE_TAG {
            let len = usize::from(be::u16(b, pos + 2).unwrap_or(0));
            if len < 8 || len % 8 != 0 || pos + len > end {
                return Err(bad(pos, format!("unused region of length {len}")));
            }
            pos += len;
            continue;
        }
        let ino = be::u64(b, pos).ok_or_else(|| bad(pos, "truncated entry".into()))?;
        let namelen = usize::from(*b.get(pos + 8).ok_or_else(|| bad(pos, "truncated".into()))?);
        if namelen == 0 {
            return Err(bad(pos, "zero-length name".into()));
        }
        // inumber, namelen, name, [ftype], tag; rounded up to 8 bytes.
        let len = (8 + 1 + namelen + usize::from(ftype) + 2).next_multiple_of(8);
        if pos + len > end {
            return Err(bad(pos, format!("entry of {len} bytes runs past the data")));
        }
        let name = &b[pos + 9..pos + 9 + namelen];
        if !is_dot(name) {
            out.push(RawEntry {
                name: name.to_vec(),
                ino,
            });
        }
        pos += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_v5_data_block_and_rejects_overruns() {
        let mut b = vec![0u8; 4096];
        b[..4].copy_from_slice(&DATA3_MAGIC.to_be_bytes());
        let mut pos = 64;
        // entry "file" -> 133, ftype
        b[pos..pos + 8].copy_from_slice(&133u64.to_be_bytes());
        b[pos + 8] = 4;
        b[pos + 9..pos + 13].copy_from_slice(b"file");
        pos += 16;
        b[pos..pos + 2].copy_from_slice(&0xffffu16.to_be_bytes());
        b[pos + 2..pos + 4].copy_from_slice(&((4096 - pos) as u16).to_be_bytes());
        let mut out = Vec::new();
        parse_block(&b, true, true, 0, "t", &mut out).unwrap();
        assert_eq!(
            out,
            vec![RawEntry {
                name: b"file".to_vec(),
                ino: 133
            }]
        );
        b[pos + 2..pos + 4].copy_from_slice(&8000u16.to_be_bytes());
        assert!(parse_block(&b, true, true, 0, "t", &mut Vec::new()).is_err());
        assert!(parse_block(&b, false, true, 0, "t", &mut Vec::new()).is_err());
    }
}
