//! Btrfs fixtures, made by the real tools on a loop mount: `mkfs.btrfs`, the planted tree at
//! the top level, subvolumes `home` and `data` (`btrfs subvolume create`), directories whose
//! files the kernel compresses with zstd and zlib (the `compression` property, checked with
//! `filefrag`: their extents must be `encoded`), and a snapshot of `home` taken before `home`
//! changes (a file added, one removed, one partly rewritten), so that the snapshot shares some
//! extents with its origin and not others.
//!
//! The manifest is the kernel's own view of the finished filesystem (walked while mounted,
//! after `sync`). Needs root, loop devices and the kernel's Btrfs driver; a machine without
//! them fails the fixture with a clear message.

use std::fs;
use std::path::Path;

use anyhow::{ensure, Context};

use crate::crash::walk_records;
use crate::images::{materialize, sparse_file};
use crate::manifest::Record;
use crate::testdb::eicar;
use crate::tools::{check, command};
use crate::tree::Tree;
use crate::xfs::LoopMount;

/// What a Btrfs fixture build produced.
#[derive(Debug)]
pub struct BtrfsImage {
    /// The kernel's view, as manifest records of partition 0.
    pub records: Vec<Record>,
    /// Paths of the planted test files (`coldscan scan` must report exactly these).
    pub detections: Vec<String>,
}

/// Compressible text: repeated lines with a counter, `len` bytes.
fn compressible(len: usize, tag: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("{tag} line {i:08} of compressible text\n").as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// Runs `btrfs ARGS...`.
fn btrfs(args: &[&str], path: &Path) -> anyhow::Result<()> {
    check(command("btrfs").args(args).arg(path))?;
    Ok(())
}

/// Fails unless every extent of `file` but the last is compressed (`encoded` in `filefrag
/// -v`; a short tail that does not shrink is stored plain).
fn assert_compressed(file: &Path) -> anyhow::Result<()> {
    let out = command("filefrag")
        .arg("-v")
        .arg(file)
        .output()
        .context("running filefrag")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let extents: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    let body = &extents[..extents.len().saturating_sub(1)];
    ensure!(
        !body.is_empty() && body.iter().all(|l| l.contains("encoded")),
        "{} is not stored compressed: {text}",
        file.display()
    );
    Ok(())
}

/// Writes files the kernel compresses with `algo` under `dir` (a fresh directory with the
/// `compression` property): a large one (many 128 KiB compressed extents), a small one that
/// fits inline, and an incompressible one (stored plain: the kernel's heuristic gives up).
fn compressed_dir(dir: &Path, algo: &str) -> anyhow::Result<()> {
    fs::create_dir_all(dir)?;
    check(
        command("btrfs")
            .args(["property", "set"])
            .arg(dir)
            .args(["compression", algo]),
    )?;
    let big = dir.join(format!("{algo}-text-3m.txt"));
    fs::write(&big, compressible(3 * 1024 * 1024 + 123, algo))?;
    let small = dir.join(format!("{algo}-inline.txt"));
    fs::write(&small, compressible(1800, algo))?;
    let random = dir.join(format!("{algo}-random.bin"));
    let noise = crate::content::Content::Random {
        seed: crate::content::seed_of(algo),
        len: 200 * 1024,
    };
    fs::write(&random, noise.to_vec())?;
    check(command("sync").arg("-f").arg(dir))?;
    assert_compressed(&big)?;
    Ok(())
}

/// Builds `disk` (`size` bytes, whole-disk Btrfs) holding `seed` at the top level plus the
/// subvolumes, snapshot and compressed files described in the module comment; `work` holds
/// the mount point meanwhile.
pub fn btrfs_image(work: &Path, disk: &Path, size: u64, seed: &Tree) -> anyhow::Result<BtrfsImage> {
    sparse_file(disk, size)?;
    check(command("mkfs.btrfs").args(["-q", "-f"]).arg(disk))?;
    let mount = LoopMount::new(disk, &work.join("btrfs.mnt"))?;
    let root = mount.dir.clone();
    materialize(seed, &root)?;

    btrfs(&["subvolume", "create"], &root.join("home"))?;
    let user = root.join("home/user");
    fs::create_dir_all(user.join("downloads"))?;
    fs::write(user.join("notes.txt"), compressible(10_000, "notes"))?;
    fs::write(user.join("downloads/eicar.com"), eicar())?;
    fs::write(
        user.join("rewritten.bin"),
        compressible(256 * 1024, "before"),
    )?;
    fs::write(
        user.join("removed-later.txt"),
        b"present in the snapshot only\n",
    )?;
    std::os::unix::fs::symlink("downloads/eicar.com", user.join("link-to-eicar"))?;
    fs::hard_link(user.join("notes.txt"), user.join("notes-hardlink.txt"))?;

    btrfs(&["subvolume", "create"], &root.join("data"))?;
    compressed_dir(&root.join("data/zstd"), "zstd")?;
    compressed_dir(&root.join("data/zlib"), "zlib")?;

    check(command("sync").arg("-f").arg(&root))?;
    check(
        command("btrfs")
            .args(["subvolume", "snapshot"])
            .arg(root.join("home"))
            .arg(root.join("home-snapshot")),
    )?;
    // home moves on; the snapshot keeps the old state.
    fs::write(
        user.join("after-snapshot.txt"),
        b"written after the snapshot\n",
    )?;
    fs::remove_file(user.join("removed-later.txt"))?;
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(user.join("rewritten.bin"))?;
        f.write_all_at(&compressible(8192, "after"), 64 * 1024)?;
    }
    check(command("sync").arg("-f").arg(&root))?;
    let records = walk_records(&root, "btrfs")?;
    drop(mount);
    Ok(BtrfsImage {
        records,
        detections: vec![
            "/home-snapshot/user/downloads/eicar.com".to_string(),
            "/home/user/downloads/eicar.com".to_string(),
        ],
    })
}
