//! The signature bundle an appliance downloads (`GET /api/v1/signatures/bundle`): a POSIX
//! ustar archive (POSIX.1-2001 `pax` specification, "ustar Interchange Format") holding the
//! set's files, in byte order of their names, as regular files at the top level, followed by
//! the two zero blocks that end an archive. Nothing else: no directories, links or extended
//! headers, fixed mode 0644, owner 0, modification time 0, so that one set always gives the
//! same bytes. Any `tar` lists and extracts it.

use crate::store::signatures::SignatureFile;

/// A tar block.
pub const BLOCK: usize = 512;

/// The archive of `files` (names already checked: at most 100 bytes of plain ASCII).
pub fn write(files: &[SignatureFile]) -> Vec<u8> {
    let mut sorted: Vec<&SignatureFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let size: usize = sorted
        .iter()
        .map(|f| BLOCK + f.content.len().div_ceil(BLOCK) * BLOCK)
        .sum::<usize>()
        + 2 * BLOCK;
    let mut out = Vec::with_capacity(size);
    for f in sorted {
        out.extend_from_slice(&header(&f.name, f.content.len() as u64));
        out.extend_from_slice(&f.content);
        let pad = (BLOCK - f.content.len() % BLOCK) % BLOCK;
        out.resize(out.len() + pad, 0);
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

/// A ustar header for a regular file.
fn header(name: &str, size: u64) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let put = |h: &mut [u8; BLOCK], at: usize, bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes);
    };
    let name = name.as_bytes();
    put(&mut h, 0, &name[..name.len().min(100)]);
    put(&mut h, 100, b"0000644\0"); // mode
    put(&mut h, 108, b"0000000\0"); // uid
    put(&mut h, 116, b"0000000\0"); // gid
    put(&mut h, 124, format!("{size:011o}\0").as_bytes()); // size (up to 8 GiB)
    put(&mut h, 136, b"00000000000\0"); // mtime
    put(&mut h, 148, b"        "); // checksum, counted as spaces
    h[156] = b'0'; // regular file
    put(&mut h, 257, b"ustar\0"); // magic
    put(&mut h, 263, b"00"); // version
    put(&mut h, 265, b"root"); // uname
    put(&mut h, 297, b"root"); // gname
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    put(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_tar_reads_it_back_exactly() {
        let files = vec![
            SignatureFile {
                name: "z.ndb".into(),
                content: b"Z:0:*:5a5a\n".to_vec(),
            },
            SignatureFile {
                name: "a.hdb".into(),
                content: vec![7u8; 1024],
            },
        ];
        let tar = write(&files);
        assert_eq!(tar.len(), 512 + 1024 + 512 + 512 + 1024);
        assert_eq!(tar, write(&files), "deterministic");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.tar");
        std::fs::write(&file, &tar).unwrap();
        let list = std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&file)
            .output()
            .unwrap();
        assert!(list.status.success(), "{list:?}");
        let text = String::from_utf8(list.stdout).unwrap();
        let names: Vec<_> = text
            .lines()
            .map(|l| l.split_whitespace().last().unwrap())
            .collect();
        assert_eq!(names, ["a.hdb", "z.ndb"], "{text}");
        assert!(text.starts_with("-rw-r--r-- root/root"), "{text}");
        let out = dir.path().join("x");
        std::fs::create_dir(&out).unwrap();
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&file)
            .arg("-C")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        for f in &files {
            assert_eq!(std::fs::read(out.join(&f.name)).unwrap(), f.content);
        }
    }
}
