//! Tests on images made by the real tools (mke2fs -d, debugfs), compared with the planted tree
//! and with The Sleuth Kit.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use super::*;
use crate::block::{FileSource, MemSource};
use crate::fs::{read_all, Filesystem};

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes.
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

const DEEP: usize = 60;
const MANY: usize = 10_000;

/// The planted tree, made once per test run.
fn planted() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let w = |p: &str, data: &[u8]| std::fs::write(r.join(p), data).unwrap();
        w("empty", b"");
        w("small.txt", b"hello\n");
        w("inline59.txt", &[b'a'; 59]);
        w("inline100.txt", &noise(100, 1));
        w("big.bin", &noise(5 * 1024 * 1024 + 123, 2));
        // Sparse: data at 1 MiB, 30 MiB, 70 MiB (triple indirect with 1 KiB blocks), the end.
        let f = std::fs::File::create(r.join("sparse.bin")).unwrap();
        f.set_len(80 * 1024 * 1024).unwrap();
        for (i, at) in [1u64 << 20, 30 << 20, 70 << 20, (80 << 20) - 100]
            .iter()
            .enumerate()
        {
            f.write_all_at(
                &noise(5000.min(((80 << 20) - at) as usize), 10 + i as u64),
                *at,
            )
            .unwrap();
        }
        let f = std::fs::File::create(r.join("sparse_tail.bin")).unwrap();
        f.set_len(10 * 1024 * 1024).unwrap();
        f.write_all_at(b"only data", 9 * 1024 * 1024).unwrap();
        std::fs::create_dir(r.join("names")).unwrap();
        for n in [
            "héllo wörld ✓.txt",
            "with space",
            "new\nline",
            "日本語",
            "x".repeat(255).as_str(),
        ] {
            w(&format!("names/{n}"), n.as_bytes());
        }
        std::fs::create_dir_all(r.join("links/sub")).unwrap();
        w("links/target.txt", b"linked content\n");
        std::fs::hard_link(r.join("links/target.txt"), r.join("links/hard1")).unwrap();
        std::fs::hard_link(r.join("links/target.txt"), r.join("links/sub/hard2")).unwrap();
        std::os::unix::fs::symlink("target.txt", r.join("links/fast")).unwrap();
        std::os::unix::fs::symlink(
            "../".repeat(20) + "a/long/target/path",
            r.join("links/slow"),
        )
        .unwrap();
        run(Command::new("mkfifo").arg(r.join("fifo")));
        let mut deep = r.join("deep");
        for _ in 0..DEEP {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("bottom.txt"), b"bottom").unwrap();
        std::fs::create_dir(r.join("many")).unwrap();
        for i in 0..MANY {
            w(&format!("many/f{i:05}"), format!("{i}").as_bytes());
        }
        std::fs::create_dir(r.join("smalldir")).unwrap();
        w("smalldir/one", b"1");
        std::fs::create_dir(r.join("emptydir")).unwrap();
        t
    })
    .path()
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: EntryKind,
    size: u64,
    sha: Option<String>,
}

/// What the host sees in the planted tree.
fn truth() -> BTreeMap<String, Seen> {
    fn visit(root: &Path, dir: &Path, out: &mut BTreeMap<String, Seen>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = format!("/{}", p.strip_prefix(root).unwrap().to_str().unwrap());
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let seen = if ft.is_dir() {
                visit(root, &p, out);
                Seen {
                    kind: EntryKind::Dir,
                    size: 0,
                    sha: None,
                }
            } else if ft.is_file() {
                Seen {
                    kind: EntryKind::File,
                    size: m.len(),
                    sha: Some(sha(&std::fs::read(&p).unwrap())),
                }
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                Seen {
                    kind: EntryKind::Symlink,
                    size: t.as_os_str().len() as u64,
                    sha: Some(sha(t.as_os_str().as_encoded_bytes())),
                }
            } else {
                Seen {
                    kind: EntryKind::Other,
                    size: 0,
                    sha: None,
                }
            };
            out.insert(rel, seen);
        }
    }
    let mut out = BTreeMap::new();
    visit(planted(), planted(), &mut out);
    out
}

/// What our reader sees (directory sizes zeroed, `lost+found` kept), and the walk errors.
fn ours(
    fs: &dyn Filesystem,
) -> (
    BTreeMap<String, Seen>,
    Vec<String>,
    BTreeMap<String, FileId>,
) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    fs.walk(&mut |ev| match ev {
        WalkEvent::Entry(e) => entries.push(e),
        WalkEvent::Error { path, error } => errors.push(format!("{path}: {error}")),
    })
    .unwrap();
    let mut out = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for e in entries {
        let sha = match e.kind {
            EntryKind::File | EntryKind::Symlink => {
                let mut r = fs
                    .open(&e)
                    .unwrap_or_else(|err| panic!("{}: {err}", e.path));
                let mut h = Sha256::new();
                read_all(r.as_mut(), &e.path, &mut |c| h.update(c))
                    .unwrap_or_else(|err| panic!("{}: {err}", e.path));
                Some(hex::encode(h.finalize()))
            }
            _ => None,
        };
        let size = if e.kind == EntryKind::Dir { 0 } else { e.size };
        ids.insert(e.path.clone(), e.id);
        assert!(
            out.insert(
                e.path,
                Seen {
                    kind: e.kind,
                    size,
                    sha
                }
            )
            .is_none(),
            "path listed twice"
        );
    }
    (out, errors, ids)
}

fn make_image(dir: &Path, name: &str, mkfs: &str, args: &[&str], size: &str) -> PathBuf {
    let img = dir.join(name);
    run(Command::new(mkfs)
        .arg("-q")
        .arg("-F")
        .args(args)
        .arg("-d")
        .arg(planted())
        .arg(&img)
        .arg(size));
    img
}

fn open_image(img: &Path) -> ExtVolume {
    let src: SharedSource = Arc::new(FileSource::open(img).unwrap());
    ExtVolume::open(src).unwrap()
}

/// Compares a full walk + read of `img` with the planted tree and returns the volume.
fn check_image(img: &Path, kind: FsKind) -> ExtVolume {
    check_image_except(img, kind, &[], true)
}

/// Like [`check_image`], but the paths in `mkfs_bugs` are compared with what `debugfs` says is
/// in the image instead of with the planted tree (mke2fs -d does not always store what it read).
/// `tsk`: whether The Sleuth Kit can read this image (it cannot read `meta_bg`).
fn check_image_except(img: &Path, kind: FsKind, mkfs_bugs: &[&str], tsk: bool) -> ExtVolume {
    let fs = open_image(img);
    assert_eq!(fs.kind(), kind);
    let (mut seen, errors, ids) = ours(&fs);
    assert!(errors.is_empty(), "{errors:#?}");
    let lf = seen.remove("/lost+found").expect("lost+found is listed");
    assert_eq!(lf.kind, EntryKind::Dir);
    let want = truth();
    for (path, w) in &want {
        let got = seen.get(path).unwrap_or_else(|| panic!("{path:?} missing"));
        if mkfs_bugs.contains(&path.as_str()) {
            let stat = run(Command::new("debugfs")
                .arg("-R")
                .arg(format!("stat {path}"))
                .arg(img));
            let stat = String::from_utf8_lossy(&stat);
            let size = stat
                .split("Size: ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .unwrap();
            assert_eq!(got.size.to_string(), size, "{path:?} size per debugfs");
            continue;
        }
        assert_eq!(got, w, "{path:?}");
    }
    let extra: Vec<_> = seen.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "unexpected {extra:?}");
    // Hard links: one id for every name.
    assert_eq!(ids["/links/target.txt"], ids["/links/hard1"]);
    assert_eq!(ids["/links/target.txt"], ids["/links/sub/hard2"]);
    assert_ne!(ids["/links/target.txt"], ids["/small.txt"]);
    // Reads past the end and in the middle.
    let e = fs.lookup("/sparse.bin").unwrap();
    let mut r = fs.open(&e).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(r.read_at(80 << 20, &mut b).unwrap(), 0);
    assert_eq!(r.read_at((80 << 20) - 4, &mut b).unwrap(), 4);
    assert_eq!(r.read_at(5 << 20, &mut b).unwrap(), 16);
    assert_eq!(b, [0u8; 16], "hole reads as zeros");
    drop(r);
    if tsk {
        compare_with_tsk(img, &seen, &ids);
    }
    fs
}

/// `fls -r -p` must list the same paths and kinds, and `icat` the same content.
fn compare_with_tsk(img: &Path, seen: &BTreeMap<String, Seen>, ids: &BTreeMap<String, FileId>) {
    let out = run(Command::new("fls").arg("-r").arg("-p").arg(img));
    let mut tsk = BTreeMap::new();
    for line in String::from_utf8_lossy(&out).lines() {
        let Some((head, path)) = line.split_once(":\t") else {
            continue;
        };
        if head.starts_with("V/V") || head.contains('*') || path.contains("$OrphanFiles") {
            continue;
        }
        let kind = match &head[..3] {
            "r/r" => EntryKind::File,
            "d/d" => EntryKind::Dir,
            "l/l" => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        tsk.insert(format!("/{path}"), kind);
    }
    let mine: BTreeMap<String, EntryKind> = seen
        .iter()
        .filter(|(p, _)| !p.contains('\n'))
        .map(|(p, s)| (p.clone(), s.kind))
        .chain([("/lost+found".to_string(), EntryKind::Dir)])
        .collect();
    // TSK 4.12 fails on large extent-mapped directories ("ext2fs_dir_open_meta: Error reading
    // directory contents") and lists only part of their entries; ours were checked against the
    // planted tree already, and what TSK does list there must be ours too.
    for p in tsk.keys().filter(|p| p.starts_with("/many/")) {
        assert!(seen.contains_key(p), "fls lists {p}, we do not");
    }
    let keep = |p: &String| !p.contains("new") && !p.starts_with("/many/");
    let tsk: BTreeMap<String, EntryKind> = tsk.into_iter().filter(|(p, _)| keep(p)).collect();
    let mine: BTreeMap<String, EntryKind> = mine.into_iter().filter(|(p, _)| keep(p)).collect();
    let only_ours: Vec<_> = mine
        .iter()
        .filter(|(p, k)| tsk.get(*p) != Some(k))
        .collect();
    let only_tsk: Vec<_> = tsk
        .iter()
        .filter(|(p, k)| mine.get(*p) != Some(k))
        .collect();
    assert!(
        only_ours.is_empty() && only_tsk.is_empty(),
        "fls disagrees: ours {only_ours:?} tsk {only_tsk:?}"
    );
    for path in ["/big.bin", "/sparse.bin", "/many/f09999", "/small.txt"] {
        let ino = ids[path].node.to_string();
        let data = run(Command::new("icat").arg(img).arg(&ino));
        assert_eq!(Some(sha(&data)), seen[path].sha, "icat {path}");
    }
}

#[test]
fn ext4_default_matches_planted_tree_and_tsk() {
    let t = tempfile::tempdir().unwrap();
    let img = make_image(
        t.path(),
        "e4.img",
        "mkfs.ext4",
        &["-N", "20000", "-L", "coldlabel"],
        "160M",
    );
    let fs = check_image(&img, FsKind::Ext4);
    assert_eq!(fs.label().as_deref(), Some("coldlabel"));
    assert!(fs.notes().is_empty(), "{:?}", fs.notes());
    // Probing through fs::probe / fs::open.
    let src: SharedSource = Arc::new(FileSource::open(&img).unwrap());
    assert_eq!(crate::fs::probe(&src).unwrap(), Some(FsKind::Ext4));
    let opened = crate::fs::open(src, FsKind::Ext4).unwrap();
    assert_eq!(opened.lookup("/small.txt").unwrap().size, 6);
}

#[test]
fn ext2_1k_blocks_indirect_sparse_files() {
    let t = tempfile::tempdir().unwrap();
    let img = make_image(
        t.path(),
        "e2.img",
        "mkfs.ext2",
        &["-b", "1024", "-N", "20000"],
        "96M",
    );
    let fs = check_image(&img, FsKind::Ext2);
    // The sparse file really is sparse on disk (so holes were exercised): few blocks used.
    let e = fs.lookup("/sparse.bin").unwrap();
    let inode = fs.fs.inode(e.id.node as u32).unwrap();
    assert!(!inode.has_flag(inode::EXTENTS_FL));
    let blocks = crate::block::le::u32(&inode.raw, 0x1C).unwrap();
    assert!(
        blocks < 200,
        "{blocks} sectors: sparse file was not stored sparse"
    );
}

#[test]
fn ext3_4k_blocks() {
    let t = tempfile::tempdir().unwrap();
    let img = make_image(t.path(), "e3.img", "mkfs.ext3", &["-N", "20000"], "160M");
    check_image(&img, FsKind::Ext3);
}

#[test]
fn ext4_inline_data() {
    let t = tempfile::tempdir().unwrap();
    let img = make_image(
        t.path(),
        "inl.img",
        "mkfs.ext4",
        &["-O", "inline_data", "-I", "256", "-N", "20000"],
        "160M",
    );
    // mke2fs 1.47.0 -O inline_data stores sparse_tail.bin with a size ending at its data.
    let fs = check_image_except(&img, FsKind::Ext4, &["/sparse_tail.bin"], true);
    for p in ["/small.txt", "/inline100.txt", "/smalldir", "/many/f00001"] {
        let e = fs.lookup(p).unwrap();
        let inode = fs.fs.inode(e.id.node as u32).unwrap();
        assert!(inode.has_flag(inode::INLINE_DATA_FL), "{p} is not inline");
    }
}

#[test]
fn ext4_meta_bg_1k_blocks_many_groups() {
    let t = tempfile::tempdir().unwrap();
    let img = make_image(
        t.path(),
        "mbg.img",
        "mkfs.ext4",
        &[
            "-b",
            "1024",
            "-g",
            "1024",
            "-O",
            "meta_bg,^resize_inode,^64bit",
            "-N",
            "20000",
        ],
        "96M",
    );
    // TSK 4.12 reads group descriptors at the classic place only: no oracle for meta_bg.
    let fs = check_image_except(&img, FsKind::Ext4, &[], false);
    assert!(fs.fs.sb.has_incompat(incompat::META_BG));
    assert!(fs.fs.sb.group_count > 64);
}

#[test]
fn ext4_64k_blocks_64bit() {
    let t = tempfile::tempdir().unwrap();
    // inline_data keeps the 10,000 tiny files out of 64 KiB blocks (the image stays small).
    let img = make_image(
        t.path(),
        "b64k.img",
        "mkfs.ext4",
        &[
            "-b",
            "65536",
            "-O",
            "64bit,inline_data",
            "-I",
            "256",
            "-N",
            "20000",
        ],
        "1G",
    );
    let fs = check_image_except(&img, FsKind::Ext4, &["/sparse_tail.bin"], true);
    assert_eq!(fs.fs.sb.block_size, 65536);
}

#[test]
fn encrypted_inode_is_listed_unreadable() {
    let t = tempfile::tempdir().unwrap();
    let img = small_image(t.path(), &[]);
    run(Command::new("debugfs")
        .arg("-w")
        .arg(&img)
        .arg("-R")
        .arg("sif /data.bin flags 0x80800"));
    let fs = open_image(&img);
    let e = fs.lookup("/data.bin").unwrap();
    assert_eq!(
        e.unreadable.as_ref().map(|u| u.reason),
        Some(Reason::Encrypted)
    );
    assert!(matches!(fs.open(&e), Err(Error::Encrypted { .. })));
    let (seen, errors, _) = {
        let mut n = Vec::new();
        let mut errs = Vec::new();
        fs.walk(&mut |ev| match ev {
            WalkEvent::Entry(e) => n.push(e),
            WalkEvent::Error { path, .. } => errs.push(path),
        })
        .unwrap();
        (n, errs, ())
    };
    assert!(errors.is_empty());
    assert!(seen
        .iter()
        .any(|x| x.path == "/data.bin" && x.unreadable.is_some()));
}

#[test]
fn unknown_incompat_feature_is_unsupported_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let img = small_image(t.path(), &[]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&img)
        .unwrap();
    let mut w = [0u8; 4];
    f.read_exact_at(&mut w, 1024 + 0x60).unwrap();
    let v = u32::from_le_bytes(w) | 0x4000_0000;
    f.write_all_at(&v.to_le_bytes(), 1024 + 0x60).unwrap();
    drop(f);
    let src: SharedSource = Arc::new(FileSource::open(&img).unwrap());
    let kind = crate::fs::probe(&src)
        .unwrap()
        .expect("still an ext superblock");
    let err = crate::fs::open(src, kind).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("0x40000000"), "{err}");
}

#[test]
fn zeroed_superblock_is_not_detected() {
    let src: SharedSource = Arc::new(MemSource::new(vec![0u8; 1 << 20], "zero"));
    assert_eq!(crate::fs::probe(&src).unwrap(), None);
    let err = ExtVolume::open(src).unwrap_err();
    assert!(err.to_string().contains("bad ext magic"), "{err}");
}

fn small_image(dir: &Path, args: &[&str]) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("a/b/file"), b"in b").unwrap();
    std::fs::write(src.join("a/sibling"), b"sib").unwrap();
    std::fs::write(src.join("data.bin"), noise(300_000, 7)).unwrap();
    let img = dir.join("small.img");
    run(Command::new("mkfs.ext4")
        .arg("-q")
        .arg("-F")
        .args(args)
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg("16M"));
    img
}

#[test]
fn directory_loop_is_an_error_event_not_a_hang() {
    let t = tempfile::tempdir().unwrap();
    let img = small_image(t.path(), &[]);
    run(Command::new("debugfs")
        .arg("-w")
        .arg(&img)
        .arg("-R")
        .arg("link /a /a/b/loop"));
    let fs = open_image(&img);
    let (seen, errors, _) = ours(&fs);
    assert!(
        seen.contains_key("/a/b/file")
            && seen.contains_key("/a/sibling")
            && seen.contains_key("/data.bin")
    );
    assert!(!seen.contains_key("/a/b/loop"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("/a/b/loop: ") && errors[0].contains("directory loop"),
        "{errors:?}"
    );
}

#[test]
fn extent_past_the_end_is_corrupt_naming_inode_and_offset() {
    let t = tempfile::tempdir().unwrap();
    let img = small_image(t.path(), &[]);
    let fs = open_image(&img);
    let e = fs.lookup("/data.bin").unwrap();
    let inode = fs.fs.inode(e.id.node as u32).unwrap();
    assert!(inode.has_flag(inode::EXTENTS_FL));
    // First leaf extent of the root node: ee_start_hi at +6, ee_start_lo at +8.
    let at = inode.offset + 0x28 + 12;
    drop(fs);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&0x00FFu16.to_le_bytes(), at + 6).unwrap();
    drop(f);
    let fs = open_image(&img);
    let err = match fs.open(&e) {
        Err(err) => err,
        Ok(_) => panic!("open succeeded"),
    };
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Corrupt { offset, .. } if offset == at),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("inode {}", e.id.node)) && msg.contains("past the end"),
        "{msg}"
    );
    // The walk still lists it (its size is known); only its content is bad.
    let (mut entries, mut errs) = (0, 0);
    fs.walk(&mut |ev| match ev {
        WalkEvent::Entry(_) => entries += 1,
        WalkEvent::Error { .. } => errs += 1,
    })
    .unwrap();
    assert_eq!((entries, errs), (6, 0));
}

/// Makes a dirty journal whose only transaction creates `/newfile`: the blocks `debugfs write`
/// changes in a copy are logged into the original's journal (`jo`, `jw`, `jc`) without being
/// checkpointed.
fn dirty_journal_image(dir: &Path, mkfs_args: &[&str], jo: &str) -> (PathBuf, Vec<u8>) {
    let img = small_image(dir, mkfs_args);
    let copy = dir.join("copy.img");
    std::fs::copy(&img, &copy).unwrap();
    let content = noise(10_000, 99);
    std::fs::write(dir.join("newfile"), &content).unwrap();
    run(Command::new("debugfs")
        .arg("-w")
        .arg(&copy)
        .arg("-R")
        .arg(format!("write {} newfile", dir.join("newfile").display())));
    let a = std::fs::read(&img).unwrap();
    let b = std::fs::read(&copy).unwrap();
    let src: SharedSource = Arc::new(MemSource::new(a.clone(), "a"));
    let bs = ExtVolume::open_unreplayed(src).unwrap().fs.sb.block_size as usize;
    let changed: Vec<usize> = (1..a.len() / bs)
        .filter(|&i| a[i * bs..(i + 1) * bs] != b[i * bs..(i + 1) * bs])
        .collect();
    assert!(!changed.is_empty());
    let mut data = std::fs::File::create(dir.join("blocks")).unwrap();
    for &i in &changed {
        data.write_all(&b[i * bs..(i + 1) * bs]).unwrap();
    }
    let list: Vec<String> = changed.iter().map(|b| b.to_string()).collect();
    let script = dir.join("script");
    std::fs::write(
        &script,
        format!(
            "{jo}\njw -b {} {}\njc\n",
            list.join(","),
            dir.join("blocks").display()
        ),
    )
    .unwrap();
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(&img));
    (img, content)
}

fn check_replay(mkfs_args: &[&str], jo: &str) {
    let t = tempfile::tempdir().unwrap();
    let (img, content) = dirty_journal_image(t.path(), mkfs_args, jo);
    let before = sha(&std::fs::read(&img).unwrap());
    let src: SharedSource = Arc::new(FileSource::open(&img).unwrap());
    let raw = ExtVolume::open_unreplayed(src.clone()).unwrap();
    assert!(
        raw.fs.sb.has_incompat(incompat::RECOVER),
        "debugfs left the journal dirty"
    );
    assert!(
        raw.lookup("/newfile").is_err(),
        "raw view must not have the new file"
    );
    let fs = ExtVolume::open(src).unwrap();
    let notes = fs.notes();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("journal replayed: 1 transactions,")),
        "{notes:?}"
    );
    let e = fs.lookup("/newfile").unwrap();
    let mut r = fs.open(&e).unwrap();
    let mut got = Vec::new();
    read_all(r.as_mut(), "newfile", &mut |c| got.extend_from_slice(c)).unwrap();
    assert_eq!(got, content);
    let (seen, errors, _) = ours(&fs);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(seen.contains_key("/a/b/file") && seen.contains_key("/newfile"));
    assert_eq!(
        sha(&std::fs::read(&img).unwrap()),
        before,
        "the image was modified"
    );
}

#[test]
fn journal_replay_csum_v3_64bit() {
    check_replay(&[], "jo -c");
}

#[test]
fn journal_replay_without_checksums_32bit() {
    check_replay(&["-O", "^metadata_csum,^64bit"], "jo");
}

#[test]
fn journal_replay_ext3_indirect() {
    check_replay(
        &["-O", "^metadata_csum,^64bit,^extent,^flex_bg", "-t", "ext3"],
        "jo",
    );
}

#[test]
fn journal_revoked_blocks_are_not_replayed() {
    let t = tempfile::tempdir().unwrap();
    let (img, _) = dirty_journal_image(t.path(), &[], "jo -c");
    // A second transaction revokes every block the first one logged.
    let list = std::fs::read_to_string(t.path().join("script")).unwrap();
    let blocks = list
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    std::fs::write(
        t.path().join("script2"),
        format!("jo\njw -r {blocks}\njc\n"),
    )
    .unwrap();
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(t.path().join("script2"))
        .arg(&img));
    let fs = open_image(&img);
    assert!(
        fs.notes()
            .iter()
            .any(|n| n.starts_with("journal replayed: 2 transactions, 0 blocks")),
        "{:?}",
        fs.notes()
    );
    assert!(fs.lookup("/newfile").is_err());
}

#[test]
fn corrupt_commit_checksum_stops_replay() {
    let t = tempfile::tempdir().unwrap();
    let (img, _) = dirty_journal_image(t.path(), &[], "jo -c");
    // Find the commit block through our own reader and flip a byte of its timestamp.
    let src: SharedSource = Arc::new(FileSource::open(&img).unwrap());
    let raw = ExtVolume::open_unreplayed(src).unwrap();
    let j = raw.fs.inode(raw.fs.sb.journal_inum).unwrap();
    let mut map = raw.fs.block_map(&j).unwrap();
    let bs = u64::from(raw.fs.sb.block_size);
    let mut commit = None;
    for n in 1..j.size / bs {
        let p = raw.fs.map(&mut map, n).unwrap().physical.unwrap();
        let mut h = [0u8; 12];
        raw.fs.src.read_exact_at(p * bs, &mut h).unwrap();
        if crate::block::be::u32(&h, 0) == Some(journal::JBD2_MAGIC)
            && crate::block::be::u32(&h, 4) == Some(2)
        {
            commit = Some(p * bs);
            break;
        }
    }
    drop(raw);
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&[0x5A], commit.unwrap() + 0x31).unwrap();
    drop(f);
    let fs = open_image(&img);
    let notes = fs.notes();
    assert!(
        notes.iter().any(|n| n.contains("bad checksum")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("journal replayed: 0 transactions")),
        "{notes:?}"
    );
    assert!(fs.lookup("/newfile").is_err());
}

/// Throughput of reading every file of a 1 GiB ext4 image through the volume's block cache,
/// against a plain sequential read of the image (`cat`). Run with
/// `cargo test --release -p coldscan-scanner --lib fs::ext::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "measurement: builds a 1 GiB image"]
fn throughput_against_cat() {
    use std::io::Read;
    use std::time::Instant;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..240 {
        let dir = src.join(format!("d{}", i % 8));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}")), noise(4 << 20, i)).unwrap();
    }
    let img = t.path().join("big.img");
    run(Command::new("mkfs.ext4")
        .arg("-q")
        .arg("-F")
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg("1G"));
    let cat = || {
        let start = Instant::now();
        let mut f = std::fs::File::open(&img).unwrap();
        let mut buf = vec![0u8; 128 * 1024];
        let mut n = 0u64;
        loop {
            let r = f.read(&mut buf).unwrap();
            if r == 0 {
                break;
            }
            n += r as u64;
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    let ours = || {
        let start = Instant::now();
        let file: SharedSource = Arc::new(FileSource::open(&img).unwrap());
        let cached: SharedSource = Arc::new(crate::block::CachedSource::new(file));
        let fs = ExtVolume::open(cached).unwrap();
        let mut entries = Vec::new();
        fs.walk(&mut |ev| {
            if let WalkEvent::Entry(e) = ev {
                entries.push(e)
            }
        })
        .unwrap();
        let mut n = 0u64;
        for e in entries.iter().filter(|e| e.kind == EntryKind::File) {
            let mut r = fs.open(e).unwrap();
            n += read_all(r.as_mut(), &e.path, &mut |_| {}).unwrap();
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    let _ = (cat(), ours()); // warm the page cache
    let (c, o) = (cat(), ours());
    println!(
        "cat {:.0} MB/s, ext reader {:.0} MB/s ({:.0}%)",
        c / 1e6,
        o / 1e6,
        100.0 * o / c
    );
    assert!(o >= 0.6 * c, "ext reader below 60% of cat");
}

/// Regression: bigalloc groups span more than 8 * block_size blocks; such superblocks were
/// refused as corrupt.
#[test]
fn bigalloc_1k_blocks_16k_clusters() {
    let t = tempfile::tempdir().unwrap();
    let img = small_image(t.path(), &["-b", "1024", "-O", "bigalloc", "-C", "16384"]);
    let fs = open_image(&img);
    assert_eq!(fs.fs.sb.first_data_block, 0);
    let (seen, errors, _) = ours(&fs);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(seen["/data.bin"].sha, Some(sha(&noise(300_000, 7))));
    assert_eq!(seen["/a/b/file"].sha, Some(sha(b"in b")));
}

/// Byte flips in the metadata of small images: open, walk and read must neither panic nor
/// hang (the cargo-fuzz target `ext` does the same at scale).
#[test]
fn mutated_images_never_panic() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d/e")).unwrap();
    std::fs::write(src.join("d/e/f"), noise(5000, 3)).unwrap();
    std::fs::write(src.join("tiny"), b"tiny").unwrap();
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(400_000).unwrap();
    f.write_all_at(b"x", 390_000).unwrap();
    let mut images = Vec::new();
    for (name, mkfs, args) in [
        ("e2", "mkfs.ext2", &["-b", "1024", "-N", "32"][..]),
        (
            "e4",
            "mkfs.ext4",
            &["-b", "1024", "-N", "32", "-O", "^has_journal,inline_data"][..],
        ),
    ] {
        let img = t.path().join(name);
        run(Command::new(mkfs)
            .arg("-q")
            .arg("-F")
            .args(args)
            .arg("-d")
            .arg(&src)
            .arg(&img)
            .arg("1M"));
        images.push(std::fs::read(&img).unwrap());
    }
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for base in &images {
        for _ in 0..300 {
            let mut img = base.clone();
            for _ in 0..1 + next() % 8 {
                // Metadata lives in the first 64 KiB of these images.
                let at = (next() % 65536) as usize;
                img[at] = next() as u8;
            }
            let src: SharedSource = Arc::new(MemSource::new(img, "mut"));
            let Ok(fs) = ExtVolume::open(src) else {
                continue;
            };
            let mut entries = Vec::new();
            let _ = fs.walk(&mut |ev| {
                if let WalkEvent::Entry(e) = ev {
                    entries.push(e)
                }
            });
            let mut buf = vec![0u8; 65536];
            for e in &entries {
                if let Ok(mut r) = fs.open(e) {
                    let mut pos = 0;
                    while pos < r.size().min(1 << 20) {
                        match r.read_at(pos, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => pos += n as u64,
                        }
                    }
                }
            }
        }
    }
}

/// The features ext4-view refuses whole filesystems for are fine here.
#[test]
fn casefold_large_dir_ea_inode_mmp() {
    let t = tempfile::tempdir().unwrap();
    let img = small_image(
        t.path(),
        &["-O", "casefold,large_dir,ea_inode,mmp,inline_data"],
    );
    let fs = open_image(&img);
    for bit in [
        incompat::CASEFOLD,
        incompat::LARGEDIR,
        incompat::EA_INODE,
        incompat::MMP,
    ] {
        assert!(fs.fs.sb.has_incompat(bit), "mke2fs did not set {bit:#x}");
    }
    let (seen, errors, _) = ours(&fs);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(seen["/data.bin"].sha, Some(sha(&noise(300_000, 7))));
    assert_eq!(seen["/a/b/file"].sha, Some(sha(b"in b")));
}
