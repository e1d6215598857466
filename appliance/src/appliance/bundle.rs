//! Reading the signature bundle a manager serves (`GET /api/v1/signatures/bundle`): a POSIX
//! ustar archive (POSIX.1-2001, `pax` utility, "ustar Interchange Format") of regular files
//! at the top level, each a signature database libclamav loads, ended by zero blocks.
//!
//! The bundle comes over the network, so nothing in it is trusted: every header's checksum is
//! checked, sizes are parsed as bounded octal and checked against what is left, names must be
//! plain database file names (no directories, no `..`, no links or device files), and the count
//! and total size are capped. Bad input is a [`BundleError`] naming the byte offset.
#![forbid(unsafe_code)]

use sha2::Digest;

/// A tar block.
const BLOCK: usize = 512;
/// Most files in a bundle.
pub const MAX_FILES: usize = 256;
/// Largest bundle accepted (bytes), headers included.
pub const MAX_BUNDLE_BYTES: u64 = (1 << 30) + (MAX_FILES as u64 + 2) * 2 * BLOCK as u64;

/// File name extensions libclamav loads from a database directory.
const DB_EXTENSIONS: &[&str] = &[
    "cvd", "cld", "cud", "hdb", "hsb", "hdu", "hsu", "mdb", "msb", "mdu", "msu", "ndb", "ndu",
    "ldb", "ldu", "idb", "cdb", "crb", "cat", "fp", "sfp", "ign", "ign2", "ftm", "pdb", "gdb",
    "wdb", "cbc", "info", "yar", "yara", "pwdb", "imp",
];

/// A bundle that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleError {
    /// Malformed archive.
    #[error("signature bundle at offset {offset:#x}: {detail}")]
    Malformed {
        /// Byte offset of the bad header or field.
        offset: usize,
        /// What is wrong.
        detail: String,
    },
}

fn bad(offset: usize, detail: impl Into<String>) -> BundleError {
    BundleError::Malformed {
        offset,
        detail: detail.into(),
    }
}

/// One file of a bundle: its name and where its bytes are in the bundle (not copied: a
/// database can be hundreds of megabytes, and the appliance keeps its files in memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// Its name (a plain database file name).
    pub name: String,
    /// Its bytes' range in the bundle.
    pub range: std::ops::Range<usize>,
}

impl BundleFile {
    /// Its bytes in `data` (the bundle it was read from).
    pub fn content<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        data.get(self.range.clone()).unwrap_or(&[])
    }
}

/// Whether `name` is a plain database file name: `A-Z a-z 0-9 . _ -`, not starting with a dot,
/// with an extension libclamav loads.
pub fn is_database_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name
            .rsplit_once('.')
            .is_some_and(|(_, e)| DB_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// A NUL- (or space-) terminated octal field.
fn octal(field: &[u8], offset: usize, what: &str) -> Result<u64, BundleError> {
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() || !text.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return Err(bad(offset, format!("{what} is not an octal number")));
    }
    let mut v: u64 = 0;
    for b in text {
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| bad(offset, format!("{what} overflows")))?;
    }
    Ok(v)
}

/// The files of `data`, in archive order.
pub fn read(data: &[u8]) -> Result<Vec<BundleFile>, BundleError> {
    if data.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(bad(0, format!("over {MAX_BUNDLE_BYTES} bytes")));
    }
    let mut files: Vec<BundleFile> = Vec::new();
    let mut at = 0usize;
    loop {
        let header = data
            .get(at..at.saturating_add(BLOCK))
            .ok_or_else(|| bad(at, "ends before its end-of-archive blocks"))?;
        if header.iter().all(|&b| b == 0) {
            // End of archive: whatever follows must be zero padding too.
            if data[at..].iter().any(|&b| b != 0) {
                return Err(bad(at, "data after the end-of-archive block"));
            }
            break;
        }
        let stored = octal(&header[148..156], at + 148, "header checksum")?;
        let sum: u64 = header
            .iter()
            .enumerate()
            .map(|(i, &b)| u64::from(if (148..156).contains(&i) { b' ' } else { b }))
            .sum();
        if sum != stored {
            return Err(bad(
                at,
                format!("header checksum {stored:o}, computed {sum:o}"),
            ));
        }
        if !matches!(header[156], b'0' | 0) {
            return Err(bad(
                at + 156,
                format!(
                    "entry type {:?}: only regular files belong in a bundle",
                    char::from(header[156])
                ),
            ));
        }
        let name_field = &header[..100];
        let name_len = name_field.iter().position(|&b| b == 0).unwrap_or(100);
        let name = std::str::from_utf8(&name_field[..name_len])
            .ok()
            .filter(|n| is_database_name(n))
            .ok_or_else(|| {
                bad(
                    at,
                    format!(
                        "file name {:?} is not a plain signature database name",
                        String::from_utf8_lossy(&name_field[..name_len])
                    ),
                )
            })?
            .to_string();
        if header[257..262] == *b"ustar" && header[345..500].iter().any(|&b| b != 0) {
            return Err(bad(at + 345, "a name prefix (a directory) in a bundle"));
        }
        if files.iter().any(|f| f.name == name) {
            return Err(bad(at, format!("{name} appears twice")));
        }
        if files.len() >= MAX_FILES {
            return Err(bad(at, format!("more than {MAX_FILES} files")));
        }
        let size = octal(&header[124..136], at + 124, "file size")?;
        let start = at + BLOCK;
        let left = (data.len() - start) as u64;
        if size > left {
            return Err(bad(
                at + 124,
                format!("{name}: size {size} but only {left} bytes follow"),
            ));
        }
        // size <= left <= data.len(), so it fits a usize.
        let size = size as usize;
        files.push(BundleFile {
            name,
            range: start..start + size,
        });
        let padded = size.div_ceil(BLOCK) * BLOCK;
        at = start
            .checked_add(padded)
            .filter(|&a| a <= data.len())
            .ok_or_else(|| bad(start, "the last file's padding is cut off"))?;
    }
    Ok(files)
}

/// The database digest of `files` (of bundle `data`) as the scanner computes it over a directory holding them
/// (`engine.db.sha256`): in byte order of names, each as name, NUL, length (8 bytes
/// little-endian), content.
pub fn digest(data: &[u8], files: &[BundleFile]) -> String {
    let mut sorted: Vec<&BundleFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut h = sha2::Sha256::new();
    for f in sorted {
        let content = f.content(data);
        h.update(f.name.as_bytes());
        h.update([0]);
        h.update((content.len() as u64).to_le_bytes());
        h.update(content);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A bundle made by GNU tar in ustar format, as an independent writer.
    fn gnu_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        for (n, c) in files {
            std::fs::write(dir.path().join(n), c).unwrap();
        }
        let out = Command::new("tar")
            .args(["--format=ustar", "-cf", "-", "-C"])
            .arg(dir.path())
            .args(files.iter().map(|(n, _)| *n))
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn reads_what_tar_writes() {
        let big = vec![0x41u8; 1500];
        let tar = gnu_tar(&[("eicar.ndb", b"E:0:*:41\n"), ("test.hdb", &big)]);
        let files = read(&tar).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].name, "eicar.ndb");
        assert_eq!(files[0].content(&tar), b"E:0:*:41\n");
        assert_eq!(files[1].content(&tar), big);
        assert_eq!(
            digest(&tar, &files),
            digest(&tar, &[files[1].clone(), files[0].clone()])
        );
    }

    #[test]
    fn refuses_what_does_not_belong() {
        // Not a database name, a directory entry.
        assert!(read(&gnu_tar(&[("notes.txt", b"x")])).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub.ndb")).unwrap();
        let out = Command::new("tar")
            .args(["--format=ustar", "-cf", "-", "-C"])
            .arg(dir.path())
            .arg("sub.ndb")
            .output()
            .unwrap();
        let e = read(&out.stdout).unwrap_err().to_string();
        assert!(e.contains("only regular files"), "{e}");
        // A symlink.
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("l.ndb")).unwrap();
        let out = Command::new("tar")
            .args(["--format=ustar", "-cf", "-", "-C"])
            .arg(dir.path())
            .arg("l.ndb")
            .output()
            .unwrap();
        assert!(read(&out.stdout).is_err());
    }

    #[test]
    fn damaged_bundles_are_errors_with_offsets() {
        let good = gnu_tar(&[("a.ndb", b"A:0:*:41\n"), ("b.ndb", b"B:0:*:42\n")]);
        // Cut short anywhere before its end-of-archive block (two headers, two data blocks):
        // an error, never a panic, never a partial set. (GNU tar pads the archive with zero
        // blocks beyond that; a cut there loses nothing.)
        for cut in (0..=4 * 512).step_by(37).chain([4 * 512]) {
            assert!(read(&good[..cut]).is_err(), "cut at {cut}");
        }
        // A flipped byte in a header: the checksum catches it.
        let mut name = good.clone();
        name[1] ^= 0x20;
        let e = read(&name).unwrap_err().to_string();
        assert!(e.contains("offset 0x0") && e.contains("checksum"), "{e}");
        // A size beyond the data.
        let mut huge = good.clone();
        huge[124..136].copy_from_slice(b"77777777777\0");
        let sum: u32 = huge[..512]
            .iter()
            .enumerate()
            .map(|(i, &b)| u32::from(if (148..156).contains(&i) { b' ' } else { b }))
            .sum();
        huge[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let e = read(&huge).unwrap_err().to_string();
        assert!(e.contains("offset 0x7c") && e.contains("only"), "{e}");
        // Garbage after the end.
        let mut trailing = good.clone();
        *trailing.last_mut().unwrap() = 1;
        assert!(read(&trailing).is_err());
        assert!(read(&[]).is_err());
    }

    #[test]
    fn any_bytes_are_an_error_or_a_bundle_never_a_panic() {
        let good = gnu_tar(&[("a.ndb", b"A:0:*:41\n")]);
        let mut seed = 0x9e3779b97f4a7c15u64;
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % b.len() as u64) as usize;
                b[at] = (seed >> 32) as u8;
            }
            if let Ok(files) = read(&b) {
                assert!(files.iter().all(|f| is_database_name(&f.name)));
            }
        }
    }
}
