//! Short-form directories (`xfs_dir2_sf_hdr`, `xfs_dir2_sf_entry`), stored in the inode's data
//! fork. "XFS Algorithms & Data Structures", section "Short Form Directories".

use crate::block::be;
use crate::error::{Error, Result};

use super::RawEntry;

/// Parses a short-form directory held in `fork` (the data fork bytes, of which `size` are in
/// use). `ftype` says whether entries carry a file type byte.
pub fn parse(fork: &[u8], size: u64, ftype: bool, at: u64, object: &str) -> Result<Vec<RawEntry>> {
    let bad = |pos: usize, d: &str| {
        Error::corrupt(
            object,
            at.saturating_add(pos as u64),
            format!("short-form directory: {d}"),
        )
    };
    let used = usize::try_from(size).unwrap_or(usize::MAX);
    if used > fork.len() {
        return Err(bad(
            0,
            &format!("size {size} exceeds the {}-byte data fork", fork.len()),
        ));
    }
    let b = &fork[..used];
    let count = usize::from(*b.first().ok_or_else(|| bad(0, "empty"))?);
    let i8count = *b.get(1).ok_or_else(|| bad(1, "truncated header"))?;
    let ino_len = if i8count == 0 { 4 } else { 8 };
    let mut pos = 2 + ino_len; // past the parent inode number
    if pos > b.len() {
        return Err(bad(0, "truncated header"));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let namelen = usize::from(*b.get(pos).ok_or_else(|| bad(pos, "entry past the end"))?);
        if namelen == 0 {
            return Err(bad(pos, "zero-length name"));
        }
        let name_at = pos + 3; // namelen, then a 2-byte offset tag
        let name = b
            .get(name_at..name_at + namelen)
            .ok_or_else(|| bad(pos, "name past the end"))?;
        let ino_at = name_at + namelen + usize::from(ftype);
        let ino = if ino_len == 4 {
            be::u32(b, ino_at).map(u64::from)
        } else {
            be::u64(b, ino_at)
        }
        .ok_or_else(|| bad(pos, "inode number past the end"))?;
        out.push(RawEntry {
            name: name.to_vec(),
            ino,
        });
        pos = ino_at + ino_len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_with_ftype_and_rejects_overruns() {
        // count 2, i8count 0, parent 128; "a" -> 131 (ftype 1); "bc" -> 132.
        let mut b = vec![2, 0, 0, 0, 0, 128];
        b.extend_from_slice(&[1, 0, 0x60, b'a', 1, 0, 0, 0, 131]);
        b.extend_from_slice(&[2, 0, 0x70, b'b', b'c', 2, 0, 0, 0, 132]);
        let e = parse(&b, b.len() as u64, true, 0, "t").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!((e[1].name.as_slice(), e[1].ino), (&b"bc"[..], 132));
        b[0] = 3;
        assert!(parse(&b, b.len() as u64, true, 0, "t").is_err());
        assert!(parse(&b, 1000, true, 0, "t").is_err());
    }
}
