//! Directory entries, read linearly.
//!
//! Follows Documentation/filesystems/ext4, section 4.3 "Directory Entries": 4.3.1 "Linear
//! (Classic) Directories" (`ext4_dir_entry` / `ext4_dir_entry_2`, `rec_len` encoding for 64 KiB
//! blocks, the checksum tail `ext4_dir_entry_tail` which is a fake entry with inode 0) and 4.3.2
//! "Hash Tree Directories": htree leaves are ordinary entry blocks, the root block's `dx_root`
//! hides behind the `..` entry's `rec_len` and interior blocks are one fake entry with inode 0
//! spanning the block, so a linear read that skips inode-0 entries sees every name exactly once.

use crate::error::{Error, Result};

/// One live directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// Inode number (never 0).
    pub ino: u32,
    /// Name bytes (never `.` or `..`).
    pub name: Vec<u8>,
}

/// Decodes `rec_len` (`ext4_rec_len_from_disk`): 64 KiB blocks store 65536 as 65535 or 0 and
/// use the low two bits for the high bits of the length.
fn rec_len(raw: u16, block_len: usize) -> usize {
    let len = usize::from(raw);
    if block_len < 65536 {
        return len;
    }
    if raw == 65535 || raw == 0 {
        return 65536;
    }
    (len & 65532) | ((len & 3) << 16)
}

/// Parses one directory block (or inline area) `block` found at byte `offset` of the volume,
/// appending live entries to `out`. A malformed entry ends the block with an error (like the
/// kernel's `ext4_check_dir_entry`); entries before it are kept.
pub fn parse_block(
    block: &[u8],
    offset: u64,
    filetype: bool,
    object: &str,
    out: &mut Vec<RawEntry>,
) -> Result<()> {
    let mut at = 0usize;
    while at + 8 <= block.len() {
        let ino = crate::block::le::u32(block, at).unwrap_or(0);
        let len = rec_len(
            crate::block::le::u16(block, at + 4).unwrap_or(0),
            block.len(),
        );
        // Without the filetype feature the name length is 16 bits (ext2 rev 0 `ext2_dir_entry`).
        let name_len = if filetype {
            usize::from(block.get(at + 6).copied().unwrap_or(0))
        } else {
            usize::from(crate::block::le::u16(block, at + 6).unwrap_or(0))
        };
        let bad = |what: &str| {
            Error::corrupt(
                object,
                offset + at as u64,
                format!("directory entry {what} (rec_len {len}, name_len {name_len})"),
            )
        };
        if len < 8 || len % 4 != 0 {
            return Err(bad("with a bad record length"));
        }
        if at + len > block.len() {
            return Err(bad("runs past its block"));
        }
        if 8 + name_len > len {
            return Err(bad("name longer than its record"));
        }
        if ino != 0 && name_len > 0 {
            let name = &block[at + 8..at + 8 + name_len];
            if name != b"." && name != b".." {
                out.push(RawEntry {
                    ino,
                    name: name.to_vec(),
                });
            }
        }
        at += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ino: u32, name: &[u8], len: u16) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&ino.to_le_bytes());
        e.extend_from_slice(&len.to_le_bytes());
        e.push(name.len() as u8);
        e.push(1);
        e.extend_from_slice(name);
        e.resize(usize::from(len), 0);
        e
    }

    #[test]
    fn skips_dots_deleted_and_tail() {
        let mut b = entry(2, b".", 12);
        b.extend(entry(2, b"..", 12));
        b.extend(entry(0, b"gone", 16));
        b.extend(entry(12, b"file", 1024 - 40 - 12));
        b.extend(entry(0, b"", 12)); // checksum tail
        assert_eq!(b.len(), 1024);
        let mut out = Vec::new();
        parse_block(&b, 0, true, "v", &mut out).unwrap();
        assert_eq!(
            out,
            vec![RawEntry {
                ino: 12,
                name: b"file".to_vec()
            }]
        );
    }

    #[test]
    fn bad_rec_len_is_an_error_not_a_hang() {
        let mut b = entry(12, b"a", 12);
        b.extend(vec![0u8; 20]);
        let mut out = Vec::new();
        let err = parse_block(&b, 4096, true, "v", &mut out).unwrap_err();
        assert!(err.to_string().contains("bad record length"), "{err}");
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn rec_len_64k() {
        assert_eq!(rec_len(0, 65536), 65536);
        assert_eq!(rec_len(65535, 65536), 65536);
        assert_eq!(rec_len(12, 4096), 12);
    }
}
