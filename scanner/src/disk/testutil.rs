//! Helpers for the disk format tests: deterministic guest content, the real `qemu-img` /
//! `qemu-io` tools, and whole-disk reads.

use std::path::Path;
use std::process::Command;

use crate::block::BlockSource;

/// Runs `cmd args` and returns its standard output, panicking with its output when it fails.
pub(crate) fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic guest content of `size` bytes: pseudo-random data with zero regions, a
/// repeated pattern and sector-sized islands, so that allocation, zero detection and
/// compression all have something to do.
pub(crate) fn guest_content(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let mib = 1 << 20;
    if size >= 4 * mib {
        v[mib..2 * mib].fill(0);
        v[3 * mib..3 * mib + 70_000].fill(0xab);
        for s in (2 * mib..3 * mib).step_by(4096) {
            v[s..s + 512].fill(0);
        }
    }
    v
}

/// Writes `data` as a raw image at `path`.
pub(crate) fn write_raw(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

/// `qemu-img convert -f FMT -O raw` of `img`, read back.
pub(crate) fn qemu_raw(img: &Path, fmt: &str) -> Vec<u8> {
    let out = img.with_extension("qemu-raw");
    run(
        "qemu-img",
        &["convert", "-f", fmt, "-O", "raw", p(img), p(&out)],
    );
    let v = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    v
}

/// The whole virtual disk, read in uneven chunks (so that reads straddle clusters and blocks).
pub(crate) fn read_all(src: &dyn BlockSource) -> Vec<u8> {
    let size = usize::try_from(src.size()).unwrap();
    let mut v = vec![0u8; size];
    let mut pos = 0usize;
    let mut step = 1usize << 20;
    while pos < size {
        let n = step.min(size - pos);
        src.read_exact_at(pos as u64, &mut v[pos..pos + n]).unwrap();
        pos += n;
        step = if step == 1 << 20 { 777_777 } else { 1 << 20 };
    }
    v
}

/// Compares reads of a few odd ranges with `expected`.
pub(crate) fn check_ranges(src: &dyn BlockSource, expected: &[u8]) {
    let size = expected.len() as u64;
    for (off, len) in [
        (0u64, 1usize),
        (511, 2),
        (65_535, 3),
        (1_048_000, 10_000),
        (size.saturating_sub(7), 7),
        (12_345, 300_000),
    ] {
        if off + len as u64 > size {
            continue;
        }
        let mut b = vec![0u8; len];
        src.read_exact_at(off, &mut b).unwrap();
        assert_eq!(
            b,
            expected[off as usize..off as usize + len],
            "range {off}+{len}"
        );
    }
    let mut b = [0u8; 2];
    assert!(
        src.read_exact_at(size - 1, &mut b).is_err(),
        "read past the end"
    );
}

/// A path as `&str` for command lines.
pub(crate) fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Patches `bytes` into the file at `offset`.
pub(crate) fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Two states of a small ext4 guest filesystem for chain tests at the filesystem level: v1
/// made with `mke2fs -d`, v2 from a copy of it changed with `debugfs` as a guest would change
/// it (a file added in a new directory, one rewritten, one deleted, a directory tree removed),
/// so that unchanged files keep their blocks.
pub(crate) struct FsHistory {
    /// The v1 image.
    pub v1: Vec<u8>,
    /// The v2 image (same size).
    pub v2: Vec<u8>,
    /// What v1 holds: path -> SHA-256 (hex) of the content, `None` for directories.
    pub v1_tree: std::collections::BTreeMap<String, Option<String>>,
    /// What v2 holds, likewise.
    pub v2_tree: std::collections::BTreeMap<String, Option<String>>,
}

/// Size of the [`FsHistory`] images.
pub(crate) const HISTORY_SIZE: usize = 8 << 20;

fn rand_bytes(len: usize, seed: u64) -> Vec<u8> {
    guest_content(len.max(1), seed)[..len].to_vec()
}

fn sha_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Makes the [`FsHistory`] in `dir` (a scratch directory).
pub(crate) fn ext4_history(dir: &Path) -> FsHistory {
    use std::collections::BTreeMap;
    let stage = dir.join("stage");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("keep.bin", rand_bytes(1_500_000, 1)),
        ("docs/readme.txt", b"state v1\n".to_vec()),
        ("change.bin", rand_bytes(200_000, 2)),
        ("delete.bin", rand_bytes(100_000, 3)),
        ("gone/sub/a.txt", b"removed with its directory\n".to_vec()),
    ];
    let mut tree: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (path, data) in &files {
        let host = stage.join(path);
        std::fs::create_dir_all(host.parent().unwrap()).unwrap();
        std::fs::write(&host, data).unwrap();
        tree.insert(format!("/{path}"), Some(sha_hex(data)));
    }
    for d in ["/docs", "/gone", "/gone/sub", "/lost+found"] {
        tree.insert(d.to_string(), None);
    }
    let v1_path = dir.join("v1.ext4");
    std::fs::File::create(&v1_path)
        .unwrap()
        .set_len(HISTORY_SIZE as u64)
        .unwrap();
    run(
        "mkfs.ext4",
        &[
            "-F",
            "-q",
            "-b",
            "4096",
            "-U",
            "0b5e55ed-c01d-4a11-9e55-0000000000c1",
            "-E",
            "hash_seed=0b5e55ed-c01d-4a11-9e55-0000000000c2",
            "-d",
            p(&stage),
            p(&v1_path),
        ],
    );
    let v1_tree = tree.clone();
    let v2_path = dir.join("v2.ext4");
    std::fs::copy(&v1_path, &v2_path).unwrap();
    let changed = rand_bytes(200_000, 4);
    let added = rand_bytes(700_000, 5);
    let changed_host = dir.join("changed.bin");
    let added_host = dir.join("added.bin");
    std::fs::write(&changed_host, &changed).unwrap();
    std::fs::write(&added_host, &added).unwrap();
    let script = format!(
        "rm /delete.bin\nrm /change.bin\nwrite {} /change.bin\nrm /gone/sub/a.txt\nrmdir /gone/sub\nrmdir /gone\nmkdir /added\nwrite {} /added/new.bin\n",
        p(&changed_host),
        p(&added_host)
    );
    let out = std::process::Command::new("debugfs")
        .args(["-w", "-f", "-", p(&v2_path)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "debugfs: {out:?}");
    for p in ["/delete.bin", "/gone", "/gone/sub", "/gone/sub/a.txt"] {
        tree.remove(p);
    }
    tree.insert("/change.bin".into(), Some(sha_hex(&changed)));
    tree.insert("/added".into(), None);
    tree.insert("/added/new.bin".into(), Some(sha_hex(&added)));
    let v1 = std::fs::read(&v1_path).unwrap();
    let v2 = std::fs::read(&v2_path).unwrap();
    assert_ne!(v1, v2);
    FsHistory {
        v1,
        v2,
        v1_tree,
        v2_tree: tree,
    }
}

/// Opens `image` as coldscan does (disk format, chain, partition table, filesystem) and
/// asserts that its one whole-disk volume lists exactly `want` (path -> content hash, `None`
/// for directories), reading every file through the chain.
pub(crate) fn assert_fs_lists(
    image: &Path,
    want: &std::collections::BTreeMap<String, Option<String>>,
) {
    use crate::fs::{EntryKind, WalkEvent};
    let target = crate::inventory::open_disk(p(image), &crate::disk::OpenOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", image.display()));
    assert_eq!(target.volumes.len(), 1, "{}", image.display());
    let fs = target.volumes[0]
        .filesystem
        .as_ref()
        .unwrap_or_else(|e| panic!("{}: {e}", image.display()))
        .clone();
    let mut entries = Vec::new();
    fs.walk(&mut |ev| match ev {
        WalkEvent::Entry(e) => entries.push(e),
        WalkEvent::Error { path, error } => panic!("walk error at {path}: {error}"),
    })
    .unwrap();
    let mut got = std::collections::BTreeMap::new();
    for e in &entries {
        let hash = match e.kind {
            EntryKind::Dir => None,
            EntryKind::File => {
                let mut r = fs.open(e).unwrap();
                let mut data = Vec::new();
                crate::fs::read_all(r.as_mut(), &e.path, &mut |b| data.extend_from_slice(b))
                    .unwrap();
                Some(sha_hex(&data))
            }
            ref k => panic!("{}: unexpected kind {k:?}", e.path),
        };
        got.insert(e.path.clone(), hash);
    }
    assert_eq!(&got, want, "{} lists another state", image.display());
}
