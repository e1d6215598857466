//! Hostile XFS: structures of a real image (mkfs.xfs -p) rewritten into cycles, overlaps,
//! out-of-range extents, impossible counts, bad directory lengths and directory loops; and
//! dirty logs (made by the kernel: loop mount, changes, `xfs_io -x -c 'shutdown -f'`) with
//! corrupt records. Each must give a clear error with a byte offset, the rest must still be
//! listed, and nothing may panic or hang. Changes are laid over the image with a
//! [`LogOverlay`], never written to it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::log::LogOverlay;
use super::superblock::Superblock;
use super::tests::build;
use super::*;
use crate::block::FileSource;
use crate::fs::{read_all, Filesystem};

/// `img` with `patches` laid over it.
fn overlay(img: &Path, patches: &[(u64, Vec<u8>)]) -> LogOverlay {
    let src: SharedSource = Arc::new(FileSource::open(img).unwrap());
    let mut o = LogOverlay::new(src);
    for (at, bytes) in patches {
        o.write(*at, bytes).unwrap();
    }
    o
}

/// Opens `img` with `patches` laid over it.
fn patched(img: &Path, patches: &[(u64, Vec<u8>)]) -> XfsVolume {
    XfsVolume::open(Arc::new(overlay(img, patches))).unwrap()
}

/// Recomputes the CRC of the log record whose header is at byte `at` (`xlog_cksum`), so that
/// a patched record reaches the operation parser.
fn fix_record_crc(o: &mut LogOverlay, at: u64) {
    let mut h = vec![0u8; 512];
    o.read_exact_at(at, &mut h).unwrap();
    let len = u32::from_be_bytes(h[12..16].try_into().unwrap()) as usize;
    let h_size = u64::from(u32::from_be_bytes(h[320..324].try_into().unwrap()));
    let hblks = if h_size > 32768 {
        h_size.div_ceil(32768)
    } else {
        1
    };
    h[32..36].fill(0);
    let mut crc = crc32c::crc32c(&h[..328]);
    for i in 1..(len as u64).div_ceil(32768).min(hblks) {
        let mut x = vec![0u8; 260];
        o.read_exact_at(at + i * 512, &mut x).unwrap();
        crc = crc32c::crc32c_append(crc, &x);
    }
    let mut data = vec![0u8; len];
    o.read_exact_at(at + hblks * 512, &mut data).unwrap();
    crc = crc32c::crc32c_append(crc, &data);
    o.write(at + 32, &crc.to_le_bytes()).unwrap();
}

/// Walks `vol`: (paths listed, errors as text).
fn walk_all(vol: &XfsVolume) -> (Vec<String>, Vec<String>) {
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    vol.walk(&mut |ev| match ev {
        WalkEvent::Entry(e) => paths.push(e.path),
        WalkEvent::Error { path, error } => errors.push(format!("{path}: {error}")),
    })
    .unwrap();
    (paths, errors)
}

fn sb_of(img: &Path) -> Superblock {
    let src = FileSource::open(img).unwrap();
    let mut b = vec![0u8; 512];
    src.read_exact_at(0, &mut b).unwrap();
    Superblock::parse(&b, "t").unwrap()
}

/// Byte offset of the inode of `path` and its first extent's start block.
fn inode_and_block(img: &Path, path: &str) -> (u64, u64) {
    let src: SharedSource = Arc::new(FileSource::open(img).unwrap());
    let vol = XfsVolume::open(src.clone()).unwrap();
    let e = vol.lookup(path).unwrap();
    let sb = sb_of(img);
    let at = sb.inode_to_byte(e.id.node).unwrap();
    let mut fork = vec![0u8; 16];
    src.read_exact_at(at + 176, &mut fork).unwrap();
    let ext = bmbt::decode(&fork).unwrap();
    (at, ext.startblock)
}

/// An on-disk bmbt record.
fn bmbt_rec(startoff: u64, startblock: u64, count: u64) -> Vec<u8> {
    let l0 = (startoff << 9) | (startblock >> 43);
    let l1 = (startblock << 21) | count;
    [l0.to_be_bytes(), l1.to_be_bytes()].concat()
}

/// A v5 bmbt block at `level` with `body` after its 72-byte header.
fn bmbt_block(bs: usize, level: u16, numrecs: u16, body: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut b = vec![0u8; bs];
    b[0..4].copy_from_slice(&bmbt::BMAP_CRC_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&level.to_be_bytes());
    b[6..8].copy_from_slice(&numrecs.to_be_bytes());
    b[8..24].fill(0xff);
    for (at, bytes) in body {
        b[*at..*at + bytes.len()].copy_from_slice(bytes);
    }
    b
}

/// Turns `/big.bin` into a btree-format file whose root points at its own first block `blk`
/// (where the test writes `block`).
fn btree_file(img: &Path, block: impl Fn(u64, usize) -> Vec<u8>) -> (XfsVolume, u64) {
    let sb = sb_of(img);
    let (ino_at, blk) = inode_and_block(img, "/big.bin");
    let fork_len = usize::from(sb.inode_size) - 176;
    let maxrecs = (fork_len - 4) / 16;
    let mut root = vec![0u8; fork_len];
    root[0..2].copy_from_slice(&1u16.to_be_bytes());
    root[2..4].copy_from_slice(&1u16.to_be_bytes());
    root[4 + maxrecs * 8..4 + maxrecs * 8 + 8].copy_from_slice(&blk.to_be_bytes());
    let blk_at = sb.fsb_to_byte(blk).unwrap();
    let vol = patched(
        img,
        &[
            (ino_at + 5, vec![inode::format::BTREE]),
            (ino_at + 176, root),
            (blk_at, block(blk, sb.block_size as usize)),
        ],
    );
    (vol, blk_at)
}

fn image() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let (img, _) = build(t.path(), true, 512);
    (t, img)
}

/// Opening `/big.bin` fails with a corrupt error naming `what`, everything else is listed.
fn only_big_is_bad(vol: &XfsVolume, what: &str) {
    let (paths, errors) = walk_all(vol);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(paths
        .iter()
        .any(|p| p == "/node/entry-with-a-longish-name-01499"));
    let e = vol.lookup("/big.bin").unwrap();
    let err = match vol.open(&e) {
        Err(e) => e.to_string(),
        Ok(mut r) => {
            let mut buf = vec![0u8; 1 << 20];
            r.read_at(0, &mut buf).unwrap_err().to_string()
        }
    };
    assert!(err.contains(what) && err.contains("0x"), "{err}");
    let small = vol.lookup("/small.txt").unwrap();
    let mut data = Vec::new();
    read_all(vol.open(&small).unwrap().as_mut(), "/small.txt", &mut |b| {
        data.extend_from_slice(b)
    })
    .unwrap();
    assert_eq!(data, b"hello\n");
}

#[test]
fn bmbt_cycle_is_an_error_not_a_hang() {
    let (_t, img) = image();
    let (vol, _) = btree_file(&img, |blk, bs| {
        let ptr_at = 72 + (bs - 72) / 16 * 8;
        bmbt_block(
            bs,
            1,
            1,
            &[(72, vec![0; 8]), (ptr_at, blk.to_be_bytes().to_vec())],
        )
    });
    // The node names itself as its child: expected level 0, found 1, or a cycle.
    only_big_is_bad(&vol, "bmap btree");
}

#[test]
fn bmbt_overlapping_records_are_an_error() {
    let (_t, img) = image();
    let (vol, _) = btree_file(&img, |blk, bs| {
        bmbt_block(
            bs,
            0,
            2,
            &[(72, bmbt_rec(10, blk, 5)), (88, bmbt_rec(0, blk, 20))],
        )
    });
    only_big_is_bad(&vol, "overlap");
}

#[test]
fn extent_past_the_allocation_group_is_an_error_at_read() {
    let (_t, img) = image();
    let (vol, _) = btree_file(&img, |_, bs| {
        bmbt_block(bs, 0, 1, &[(72, bmbt_rec(0, (1 << 40) - 1, 100))])
    });
    only_big_is_bad(&vol, "outside");
}

#[test]
fn huge_extent_count_is_an_error() {
    let (_t, img) = image();
    let (ino_at, _) = inode_and_block(&img, "/big.bin");
    let vol = patched(&img, &[(ino_at + 76, u32::MAX.to_be_bytes().to_vec())]);
    only_big_is_bad(&vol, "do not fit");
}

#[test]
fn bad_directory_entry_length_loses_only_that_block() {
    let (_t, img) = image();
    let sb = sb_of(&img);
    let src: SharedSource = Arc::new(FileSource::open(&img).unwrap());
    let vol = XfsVolume::open(src.clone()).unwrap();
    let dir = vol.lookup("/block").unwrap();
    let at = sb.inode_to_byte(dir.id.node).unwrap();
    let mut fork = vec![0u8; 16];
    src.read_exact_at(at + 176, &mut fork).unwrap();
    let blk = bmbt::decode(&fork).unwrap().startblock;
    let blk_at = sb.fsb_to_byte(blk).unwrap();
    // The first entry after the 64-byte header and "." / "..": a free tag with length 3.
    let vol = patched(&img, &[(blk_at + 64, vec![0xff, 0xff, 0, 3])]);
    let (paths, errors) = walk_all(&vol);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("/block: ") && e.contains("0x")),
        "{errors:?}"
    );
    assert!(paths
        .iter()
        .any(|p| p == "/node/entry-with-a-longish-name-00000"));
    assert!(paths.iter().any(|p| p == "/big.bin"));
}

#[test]
fn directory_loop_is_reported_once_and_not_descended() {
    let (_t, img) = image();
    let sb = sb_of(&img);
    let src: SharedSource = Arc::new(FileSource::open(&img).unwrap());
    let vol = XfsVolume::open(src.clone()).unwrap();
    let node = vol.lookup("/node/entry-with-a-longish-name-00007").unwrap();
    // Find that entry's inode number in the directory blocks and point it at the root.
    let want = node.id.node.to_be_bytes();
    let name = b"entry-with-a-longish-name-00007";
    let size = src.size();
    let mut buf = vec![0u8; 1 << 20];
    let mut found = None;
    let mut off = 0;
    while off < size && found.is_none() {
        let n = (size - off).min(buf.len() as u64) as usize;
        src.read_exact_at(off, &mut buf[..n]).unwrap();
        found = buf[..n]
            .windows(9 + name.len())
            .position(|w| w[..8] == want && w[8] as usize == name.len() && &w[9..] == name)
            .map(|p| off + p as u64);
        off += n as u64 - 64;
    }
    let at = found.expect("entry found on disk");
    let vol = patched(&img, &[(at, sb.root_ino.to_be_bytes().to_vec())]);
    let (paths, errors) = walk_all(&vol);
    assert_eq!(
        errors.iter().filter(|e| e.contains("second time")).count(),
        1,
        "{errors:?}"
    );
    assert!(paths
        .iter()
        .any(|p| p == "/node/entry-with-a-longish-name-01499"));
}

/// A v5 image with a dirty log, made by the kernel: changes, then a shutdown that flushes the
/// log but writes no metadata back. Needs root and loop devices.
fn dirty_image(dir: &Path) -> PathBuf {
    let img = dir.join("dirty.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let ok = |c: &mut Command| {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(Command::new("mkfs.xfs")
        .env("TEST_DIR", "/tmp")
        .env("TEST_DEV", "x")
        .env("QA_CHECK_FS", "1")
        .args(["-q", "-f"])
        .arg(&img));
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = Command::new("mount")
        .arg("-o")
        .arg("loop")
        .arg(&img)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "this test needs a loop mount (root, loop devices, the XFS driver): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = || -> std::io::Result<()> {
        std::fs::create_dir_all(mnt.join("a/b"))?;
        for i in 0..200u32 {
            let path = mnt.join(format!("a/f{i}"));
            std::fs::write(&path, vec![i as u8; (i * 37) as usize])?;
            if i % 5 == 0 {
                // Each fsync forces the log: many records.
                std::fs::File::open(&path)?.sync_all()?;
            }
        }
        for i in 0..50u32 {
            std::fs::remove_file(mnt.join(format!("a/f{i}")))?;
        }
        std::fs::write(mnt.join("a/b/last"), b"last words\n")?;
        Ok(())
    };
    let r = run();
    let shut = Command::new("xfs_io")
        .args(["-x", "-c", "shutdown -f"])
        .arg(&mnt)
        .output();
    let _ = Command::new("umount").arg(&mnt).status();
    r.unwrap();
    assert!(shut.unwrap().status.success());
    img
}

/// The log record headers of `img`, as (byte offset, h_lsn), in log order from the tail.
fn record_headers(img: &Path) -> Vec<(u64, u64)> {
    let sb = sb_of(img);
    let start = sb.log_offset().unwrap();
    let len = u64::from(sb.log_blocks) * u64::from(sb.block_size);
    let src = FileSource::open(img).unwrap();
    let mut log = vec![0u8; len as usize];
    src.read_exact_at(start, &mut log).unwrap();
    let mut out: Vec<(u64, u64)> = log
        .chunks_exact(512)
        .enumerate()
        .filter(|(_, b)| b[..4] == 0xfeed_babe_u32.to_be_bytes())
        .map(|(i, b)| {
            (
                start + i as u64 * 512,
                u64::from_be_bytes(b[16..24].try_into().unwrap()),
            )
        })
        .collect();
    out.sort_by_key(|r| r.1);
    out
}

#[test]
fn dirty_log_replays_and_corrupt_records_are_noted() {
    let t = tempfile::tempdir().unwrap();
    let img = dirty_image(t.path());
    let src: SharedSource = Arc::new(FileSource::open(&img).unwrap());
    let vol = XfsVolume::open(src.clone()).unwrap();
    let notes = vol.notes().join("\n");
    assert!(notes.contains("log replayed"), "{notes}");
    let (paths, errors) = walk_all(&vol);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(paths.iter().any(|p| p == "/a/b/last"));
    assert!(paths.iter().any(|p| p == "/a/f199"));
    assert!(!paths.iter().any(|p| p == "/a/f0"));
    let unreplayed = XfsVolume::open_unreplayed(src).unwrap();
    let (before, _) = walk_all(&unreplayed);
    assert!(!before.iter().any(|p| p == "/a/b/last"), "needs the replay");

    let recs = record_headers(&img);
    assert!(recs.len() >= 20, "{recs:?}");
    // A bad CRC before the last records that may be torn: not replayed, said so, the on-disk
    // state listed.
    let mid = recs[recs.len() - 12].0;
    let vol = patched(&img, &[(mid + 32, vec![1, 2, 3, 4])]);
    let notes = vol.notes().join("\n");
    assert!(
        notes.contains("log NOT replayed") && notes.contains("CRC"),
        "{notes}"
    );
    let (paths, errors) = walk_all(&vol);
    assert!(errors.is_empty() && paths == before, "{errors:?}");
    // The last record torn: the head moves back, the rest is replayed.
    let last = recs.last().unwrap().0;
    let vol = patched(&img, &[(last + 32, vec![1, 2, 3, 4])]);
    let notes = vol.notes().join("\n");
    assert!(
        notes.contains("torn") && notes.contains("log replayed"),
        "{notes}"
    );
    walk_all(&vol);
    // Garbage operations inside a record: a clear note, never a panic.
    for (i, &(at, _)) in recs.iter().enumerate().rev().take(10) {
        for (k, junk) in [
            vec![0xff; 64],
            vec![0; 12],
            0x7fff_fff0u32.to_be_bytes().to_vec(),
        ]
        .iter()
        .enumerate()
        {
            let mut o = overlay(&img, &[(at + 512 + 16 * k as u64 + 4, junk.clone())]);
            fix_record_crc(&mut o, at);
            let vol = XfsVolume::open(Arc::new(o)).unwrap();
            let notes = vol.notes().join("\n");
            assert!(notes.contains("log"), "record {i}: {notes}");
            walk_all(&vol);
        }
    }
}
