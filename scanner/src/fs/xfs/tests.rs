//! Tests on images made by the real tool (`mkfs.xfs -p PROTOFILE`, no mounts), compared with
//! the planted content.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::block::FileSource;
use crate::fs::{read_all, Filesystem};

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Planted: path -> content (None for directories, Some(target) prefixed "->" for symlinks).
pub(super) fn build(
    dir: &Path,
    crc: bool,
    sector: u32,
) -> (std::path::PathBuf, BTreeMap<String, Vec<u8>>) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut want = BTreeMap::new();
    let mut proto = String::from("/dev/null\n0 0\nd--755 0 0\n");
    let mut file = |proto: &mut String, indent: &str, name: &str, path: &str, data: Vec<u8>| {
        let host = src.join(path.replace('/', "_"));
        std::fs::write(&host, &data).unwrap();
        writeln!(proto, "{indent}{name} ---644 0 0 {}", host.display()).unwrap();
        want.insert(path.to_string(), data);
    };
    file(
        &mut proto,
        "",
        "small.txt",
        "/small.txt",
        b"hello\n".to_vec(),
    );
    file(&mut proto, "", "empty", "/empty", Vec::new());
    file(
        &mut proto,
        "",
        "big.bin",
        "/big.bin",
        noise(3 * 1024 * 1024 + 7, 1),
    );
    file(
        &mut proto,
        "",
        "日本語.txt",
        "/日本語.txt",
        "ユニコード\n".as_bytes().to_vec(),
    );
    proto.push_str("short l--777 0 0 small.txt\n");
    let long_target = "x".repeat(300);
    writeln!(proto, "long l--777 0 0 {long_target}").unwrap();
    // Block directory (a few dozen names), leaf/node directory (thousands).
    for (dir_name, n) in [("block", 40), ("node", 1500)] {
        writeln!(proto, "{dir_name} d--755 0 0").unwrap();
        for i in 0..n {
            let name = format!("entry-with-a-longish-name-{i:05}");
            let path = format!("/{dir_name}/{name}");
            file(
                &mut proto,
                "  ",
                &name,
                &path,
                format!("{i}\n").into_bytes(),
            );
        }
        proto.push_str("$\n");
    }
    proto.push_str("$\n");
    let pf = dir.join("proto");
    std::fs::write(&pf, proto).unwrap();
    let img = dir.join("xfs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let out = Command::new("mkfs.xfs")
        .env("TEST_DIR", "/tmp")
        .env("TEST_DEV", "x")
        .env("QA_CHECK_FS", "1")
        .args(["-q", "-f", "-m", if crc { "crc=1" } else { "crc=0" }])
        .arg("-s")
        .arg(format!("size={sector}"))
        .arg("-p")
        .arg(&pf)
        .arg(&img)
        .output()
        .expect("mkfs.xfs (xfsprogs) is needed for these tests");
    assert!(
        out.status.success(),
        "mkfs.xfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    want.insert("/short".into(), b"small.txt".to_vec());
    want.insert("/long".into(), long_target.into_bytes());
    (img, want)
}

fn check(crc: bool, sector: u32) {
    let t = tempfile::tempdir().unwrap();
    let (img, want) = build(t.path(), crc, sector);
    let src: SharedSource = Arc::new(FileSource::open(&img).unwrap());
    assert_eq!(crate::fs::probe(&src).unwrap(), Some(FsKind::Xfs));
    let vol = XfsVolume::open(src).unwrap();
    assert!(vol.notes().is_empty(), "{:?}", vol.notes());
    let mut got = BTreeMap::new();
    let mut errors = Vec::new();
    let mut entries = Vec::new();
    vol.walk(&mut |ev| match ev {
        WalkEvent::Entry(e) => entries.push(e),
        WalkEvent::Error { path, error } => errors.push(format!("{path}: {error}")),
    })
    .unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    for e in entries {
        if e.kind == EntryKind::Dir {
            continue;
        }
        let mut r = vol.open(&e).unwrap();
        let mut data = Vec::new();
        read_all(r.as_mut(), &e.path, &mut |b| data.extend_from_slice(b)).unwrap();
        got.insert(e.path, data);
    }
    assert_eq!(got.len(), want.len());
    for (p, d) in &want {
        assert_eq!(got.get(p), Some(d), "{p}");
    }
    let e = vol.lookup("/node/entry-with-a-longish-name-01499").unwrap();
    assert_eq!(e.size, 5);
}

#[test]
fn v5_512_byte_sectors() {
    check(true, 512);
}

#[test]
fn v4_4096_byte_sectors() {
    check(false, 4096);
}
