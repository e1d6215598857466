//! Helpers for the disk format tests: deterministic guest content, the real `qemu-img` /
//! `qemu-io` tools, and whole-disk reads.

use std::path::Path;
use std::process::Command;

use crate::block::BlockSource;

/// Runs `cmd args`, panicking with its output when it fails.
pub(crate) fn run(cmd: &str, args: &[&str]) {
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
