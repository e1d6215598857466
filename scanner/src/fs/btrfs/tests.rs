//! Tests over real images: `mkfs.btrfs --rootdir` for a planted tree (compared file by file
//! with the host tree), a loop-mounted kernel-written image with an fsync'ed file left in the
//! tree log (compared with the kernel's own view after recovery), and mutated metadata.
//! A machine without `mkfs.btrfs` or loop mounts fails these tests with a clear message.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{BtrfsVolume, OpenOptions};
use crate::block::{FileSource, MemSource, SharedSource};
use crate::fs::{read_all, EntryKind, Filesystem, WalkEvent};

type Listing = BTreeMap<String, (EntryKind, Option<u64>, Option<String>)>;

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (btrfs-progs / util-linux needed)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn listing(fs: &dyn Filesystem) -> (Listing, Vec<String>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    fs.walk(&mut |ev| match ev {
        WalkEvent::Entry(e) => entries.push(e),
        WalkEvent::Error { path, error } => errors.push(format!("{path}: {error}")),
    })
    .unwrap();
    let mut out = Listing::new();
    for e in entries {
        let (size, hash) = match e.kind {
            EntryKind::File => {
                let mut h = Sha256::new();
                let mut r = fs.open(&e).unwrap();
                read_all(r.as_mut(), &e.path, &mut |b| h.update(b)).unwrap();
                (Some(e.size), Some(hex::encode(h.finalize())))
            }
            EntryKind::Dir => (None, None),
            _ => (Some(e.size), None),
        };
        out.insert(e.path, (e.kind, size, hash));
    }
    (out, errors)
}

fn host_listing(root: &Path) -> Listing {
    let mut out = Listing::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = format!("/{}", e.path().strip_prefix(root).unwrap().display());
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        let v = if m.file_type().is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            (EntryKind::Symlink, Some(t.as_os_str().len() as u64), None)
        } else if m.is_dir() {
            (EntryKind::Dir, None, None)
        } else {
            let data = std::fs::read(e.path()).unwrap();
            (
                EntryKind::File,
                Some(data.len() as u64),
                Some(hex::encode(Sha256::digest(&data))),
            )
        };
        out.insert(rel, v);
    }
    out
}

fn open(path: &Path) -> BtrfsVolume {
    let src: SharedSource = Arc::new(FileSource::open(path).unwrap());
    BtrfsVolume::open(src).unwrap()
}

fn plant(root: &Path) {
    let w = |p: &str, d: &[u8]| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, d).unwrap();
    };
    w("small.txt", b"inline content\n");
    w("unicode/日本語 ファイル.txt", "こんにちは\n".as_bytes());
    w(
        "bin/random.bin",
        &(0..300_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<_>>(),
    );
    w("bin/4097.bin", &[7u8; 4097]);
    let mut deep = String::from("deep");
    for i in 0..20 {
        deep.push_str(&format!("/l{i}"));
    }
    w(&format!("{deep}/bottom.txt"), b"bottom\n");
    for i in 0..2000 {
        w(&format!("many/f{i:05}"), format!("{i}\n").as_bytes());
    }
    let sparse = std::fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(3 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&sparse, b"middle", 1 << 20).unwrap();
    std::fs::hard_link(root.join("small.txt"), root.join("bin/hard.txt")).unwrap();
    std::os::unix::fs::symlink("../small.txt", root.join("bin/link")).unwrap();
}

#[test]
fn mkfs_rootdir_image_lists_and_reads_exactly_the_planted_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    plant(&root);
    let img = tmp.path().join("img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    run(Command::new("mkfs.btrfs")
        .arg("-q")
        .arg("-r")
        .arg(&root)
        .arg(&img));
    let fs = open(&img);
    let (ours, errors) = listing(&fs);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ours, host_listing(&root));
    // Hard links share one content id; lookup finds a nested path.
    let e = fs.lookup("/bin/hard.txt").unwrap();
    assert_eq!(e.id, fs.lookup("/small.txt").unwrap().id);
    assert_eq!(fs.lookup("/many/f01999").unwrap().size, 5);
}

#[test]
fn mutated_metadata_gives_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    plant(&root);
    let img = tmp.path().join("img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(128 << 20)
        .unwrap();
    run(Command::new("mkfs.btrfs")
        .args(["-q", "-m", "single"])
        .arg("-r")
        .arg(&root)
        .arg(&img));
    let base = std::fs::read(&img).unwrap();
    // Metadata blocks: those carrying the fsid at byte 32 of a 16 KiB-aligned block.
    let fsid = &base[0x10020..0x10030];
    let blocks: Vec<usize> = (0x10_0000..base.len())
        .step_by(16384)
        .filter(|&o| &base[o + 32..o + 48] == fsid)
        .collect();
    assert!(!blocks.is_empty());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..64 {
        let mut data = base.clone();
        for _ in 0..8 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let b = blocks[(seed as usize) % blocks.len()];
            let at = b + 101 + (seed >> 20) as usize % (16384 - 101);
            data[at] ^= (seed >> 8) as u8 | 1;
        }
        let src: SharedSource = Arc::new(MemSource::new(data, format!("mutant {round}")));
        let opts = OpenOptions {
            verify_checksums: false,
            replay_log: true,
        };
        if let Ok(fs) = BtrfsVolume::open_with(src, opts) {
            let mut n = 0usize;
            let _ = fs.walk(&mut |ev| {
                if let WalkEvent::Entry(e) = ev {
                    n += 1;
                    if e.kind == EntryKind::File {
                        // A mutated size may claim terabytes of holes: read a bounded prefix.
                        if let Ok(mut r) = fs.open(&e) {
                            let mut buf = vec![0u8; 64 * 1024];
                            let mut pos = 0u64;
                            while pos < r.size().min(1 << 20) {
                                match r.read_at(pos, &mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => pos += n as u64,
                                }
                            }
                        }
                    }
                }
            });
            assert!(n < 100_000);
        }
    }
}

/// Loop-mounts a fresh image, leaves changes only in the tree log (fsync, no commit), copies
/// the image, and compares coldscan's view with the kernel's after its own log recovery.
#[test]
fn fsynced_files_in_the_tree_log_are_seen_as_the_kernel_sees_them() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("img");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(200 << 20)
        .unwrap();
    run(Command::new("mkfs.btrfs").arg("-q").arg(&img));
    let script = format!(
        r#"set -e
cleanup() {{ umount "$M" 2>/dev/null || true; [ -n "$L" ] && losetup -d "$L" 2>/dev/null || true; }}
L=""; M="{mnt}"; trap cleanup EXIT
L=$(losetup -f --show "{img}") || {{ echo "loop devices are needed for this test (run as root)" >&2; exit 1; }}
mount -o commit=600 "$L" "$M"
mkdir "$M/d"; for i in $(seq 1 40); do echo base$i > "$M/d/b$i"; done
sync
for i in $(seq 1 50); do echo churn$i > "$M/d/c$i"; done
rm "$M/d/b3"; mv "$M/d/b5" "$M/d/b5-renamed"
printf 'planted after the last commit' > "$M/d/planted.txt"
python3 -c 'import os,sys; [os.fsync(os.open(p, os.O_RDONLY)) for p in sys.argv[1:]]' "$M/d/planted.txt" "$M/d" "$M/d/c7"
cp "{img}" "{img}.copy"
umount "$M"; losetup -d "$L"; L=""
cp "{img}.copy" "{img}.kernel"
L=$(losetup -f --show "{img}.kernel"); mount "$L" "$M"
"#,
        mnt = mnt.display(),
        img = img.display()
    );
    // The kernel view is taken inside the same script, before the trap unmounts.
    let host = tmp.path().join("host");
    let script = format!("{script}cp -a \"$M\" \"{}\"\n", host.display());
    run(Command::new("sh").arg("-c").arg(&script));
    let copy = tmp.path().join("img.copy");
    let fs = open(&copy);
    assert!(
        fs.notes()
            .iter()
            .any(|n| n.starts_with("tree log replayed")),
        "{:?}",
        fs.notes()
    );
    let (ours, errors) = listing(&fs);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(ours, host_listing(&host));
    assert!(ours.contains_key("/d/planted.txt"));
    // Without replay the planted file is missing: the log mattered.
    let src: SharedSource = Arc::new(FileSource::open(&copy).unwrap());
    let raw = BtrfsVolume::open_with(
        src,
        OpenOptions {
            verify_checksums: true,
            replay_log: false,
        },
    )
    .unwrap();
    assert!(!listing(&raw).0.contains_key("/d/planted.txt"));
}
