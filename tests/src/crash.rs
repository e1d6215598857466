//! Crash-consistent images (XFS, Btrfs, ext4), taken as a hypervisor snapshot of a running
//! guest would be: the filesystem is loop-mounted and written continuously (creates, appends,
//! fsyncs, renames, unlinks, links, a growing directory, a fragmenting file) while an atomic
//! copy of its image is taken with `cp --reflink=always` (the image sits on a scratch XFS, so
//! the copy is a clone made under the file's locks, with no freeze). Just before the copy, a
//! test file is written and fsync'ed. The copy must need recovery (a dirty XFS log checked
//! with `xfs_logprint`, a Btrfs tree log in the superblock, ext4's `needs_recovery` flag),
//! else the copy is retried.
//!
//! The oracle is the kernel's own view after recovery: a throw-away copy of the copy is
//! mounted read-write (which replays the log or journal) and walked. Needs root, loop devices
//! and the kernel's drivers; a machine without them fails with a clear message.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use sha2::{Digest, Sha256};

use crate::images::{materialize, sparse_file};
use crate::manifest::Record;
use crate::tools::{check, command};
use crate::tree::Tree;
use crate::xfs::{mkfs_xfs, LoopMount, XfsOptions};

/// How long the writer runs before the copy is taken.
const CHURN: Duration = Duration::from_millis(2500);
/// Copies tried before giving up on getting a dirty log.
const ATTEMPTS: u32 = 5;

/// What a crash-consistent build produced.
#[derive(Debug)]
pub struct CrashImage {
    /// The kernel's view after recovery, as manifest records of partition 0.
    pub records: Vec<Record>,
    /// Path of the fsync'ed test file planted just before the copy.
    pub planted: String,
}

/// Deterministic filler bytes.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

/// The writer: keeps changing the tree under `root` until `stop` is set.
fn churn(root: &Path, stop: &AtomicBool) {
    let _ = fs::create_dir_all(root.join("big-dir"));
    let frag = root.join("fragmenting.bin");
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) && i < 200_000 {
        i += 1;
        let dir = root.join(format!("d{:02}", i % 25));
        let _ = fs::create_dir_all(&dir);
        let path = dir.join(format!("f{i}"));
        let data = pattern(((i * 7919) % 65_536) as usize, i);
        if let Ok(mut f) = fs::File::create(&path) {
            let _ = f.write_all(&data);
            if i % 3 == 0 {
                let _ = f.sync_all();
            }
        }
        if i % 5 == 0 && i > 10 {
            let _ = fs::remove_file(
                root.join(format!("d{:02}", (i - 10) % 25))
                    .join(format!("f{}", i - 10)),
            );
        }
        if i % 7 == 0 && i > 3 {
            let from = root
                .join(format!("d{:02}", (i - 3) % 25))
                .join(format!("f{}", i - 3));
            let _ = fs::rename(
                from,
                root.join(format!("d{:02}", (i + 1) % 25))
                    .join(format!("moved{i}")),
            );
        }
        for k in 0..8 {
            let _ = fs::File::create(root.join("big-dir").join(format!("entry-{i:06}-{k}")));
        }
        if i % 4 == 0 {
            // Every other 4 KiB block: the extent map grows until it needs a btree.
            if let Ok(f) = fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&frag)
            {
                use std::os::unix::fs::FileExt;
                let _ = f.write_all_at(&pattern(4096, i), (i / 4) * 8192);
                if i % 16 == 0 {
                    let _ = f.sync_data();
                }
            }
        }
        if i % 11 == 0 {
            let _ = fs::hard_link(&path, dir.join(format!("link{i}")));
            let target = "t".repeat(((i % 3) * 300 + 10) as usize);
            let _ = std::os::unix::fs::symlink(target, dir.join(format!("sym{i}")));
        }
        if i % 13 == 0 {
            if let Ok(f) = fs::OpenOptions::new().write(true).open(&path) {
                let _ = f.set_len(data.len() as u64 / 2);
            }
        }
    }
}

/// True when `xfs_logprint` says the image's log is dirty.
fn xfs_log_is_dirty(img: &Path) -> anyhow::Result<bool> {
    let out = command("xfs_logprint").arg("-t").arg(img).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("<DIRTY>") {
        return Ok(true);
    }
    ensure!(
        text.contains("<CLEAN>"),
        "xfs_logprint -t {} says neither clean nor dirty: {text}",
        img.display()
    );
    Ok(false)
}

/// Walks a mounted tree into manifest records, as `coldscan ls --hash sha256` lists them.
pub fn walk_records(root: &Path, fs_kind: &str) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| anyhow::anyhow!("non-UTF-8 name {n:?}"))?;
            let path = format!("{prefix}/{name}");
            let md = fs::symlink_metadata(e.path())?;
            let ft = md.file_type();
            let (kind, size, sha256) = if ft.is_dir() {
                stack.push((e.path(), path.clone()));
                ("dir", None, None)
            } else if ft.is_symlink() {
                let t = fs::read_link(e.path())?;
                ("symlink", Some(t.as_os_str().len() as u64), None)
            } else if ft.is_file() {
                let mut h = Sha256::new();
                let mut f = fs::File::open(e.path())?;
                std::io::copy(&mut f, &mut h)?;
                ("file", Some(md.len()), Some(hex::encode(h.finalize())))
            } else {
                ("other", Some(md.len()), None)
            };
            out.push(Record {
                partition: 0,
                volume: None,
                fs: fs_kind.to_string(),
                path,
                stream: None,
                size,
                sha256,
                kind: kind.to_string(),
            });
        }
    }
    out.sort();
    Ok(out)
}

/// True when the Btrfs superblock points to a tree log (fsync'ed changes to replay).
fn btrfs_has_log(img: &Path) -> anyhow::Result<bool> {
    let out = command("btrfs")
        .args(["inspect-internal", "dump-super"])
        .arg(img)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let log_root = text
        .lines()
        .find_map(|l| l.strip_prefix("log_root").map(str::trim))
        .with_context(|| format!("btrfs dump-super {}: no log_root: {text}", img.display()))?;
    Ok(log_root != "0")
}

/// True when the ext4 superblock says its journal needs recovery.
fn ext4_needs_recovery(img: &Path) -> anyhow::Result<bool> {
    let out = command("dumpe2fs").arg("-h").arg(img).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let features = text
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem features:"))
        .with_context(|| format!("dumpe2fs -h {}: no features: {text}", img.display()))?;
    Ok(features.split_whitespace().any(|f| f == "needs_recovery"))
}

/// The filesystem of a crash-consistent image.
#[derive(Debug, Clone, Copy)]
pub enum CrashFs<'a> {
    /// XFS with these options and `-l size=` (None for the default log).
    Xfs {
        /// mkfs.xfs options.
        opts: XfsOptions,
        /// Log size.
        log_size: Option<&'a str>,
    },
    /// Btrfs (defaults of mkfs.btrfs).
    Btrfs,
    /// ext4 (defaults of mke2fs, with its journal).
    Ext4,
}

impl CrashFs<'_> {
    /// The name `coldscan` gives it.
    pub fn kind(&self) -> &'static str {
        match self {
            CrashFs::Xfs { .. } => "xfs",
            CrashFs::Btrfs => "btrfs",
            CrashFs::Ext4 => "ext4",
        }
    }

    fn mkfs(&self, img: &Path) -> anyhow::Result<()> {
        match *self {
            CrashFs::Xfs { opts, log_size } => {
                let mut extra = Vec::new();
                if let Some(l) = log_size {
                    extra.push("-l".to_string());
                    extra.push(format!("size={l}"));
                }
                mkfs_xfs(img, opts, &extra)
            }
            CrashFs::Btrfs => check(command("mkfs.btrfs").args(["-q", "-f"]).arg(img)).map(drop),
            CrashFs::Ext4 => {
                check(command("mke2fs").args(["-F", "-q", "-t", "ext4"]).arg(img)).map(drop)
            }
        }
    }

    /// Whether an image of it needs recovery (a log or journal to replay).
    fn needs_recovery(&self, img: &Path) -> anyhow::Result<bool> {
        match self {
            CrashFs::Xfs { .. } => xfs_log_is_dirty(img),
            CrashFs::Btrfs => btrfs_has_log(img),
            CrashFs::Ext4 => ext4_needs_recovery(img),
        }
    }
}

/// What to build.
#[derive(Debug)]
pub struct CrashSpec<'a> {
    /// Image size in bytes.
    pub size: u64,
    /// The filesystem.
    pub fs: CrashFs<'a>,
    /// Where the fsync'ed test file goes.
    pub planted_path: &'a str,
    /// Its content.
    pub planted: &'a [u8],
}

/// Builds `disk`: an image seeded with `seed`, copied while a writer runs, as `spec` says;
/// `work` holds the scratch files meanwhile.
pub fn crash_image(
    work: &Path,
    disk: &Path,
    seed: &Tree,
    spec: &CrashSpec,
) -> anyhow::Result<CrashImage> {
    let CrashSpec {
        size,
        fs: crash_fs,
        planted_path,
        planted,
    } = *spec;
    let scratch_img = work.join("scratch.img");
    sparse_file(&scratch_img, size * 3)?;
    check(command("mkfs.xfs").args(["-q", "-f"]).arg(&scratch_img))?;
    let scratch = LoopMount::new(&scratch_img, &work.join("scratch.mnt"))?;
    let inner_img = scratch.dir.join("guest.img");
    let copy = scratch.dir.join("copy.img");
    sparse_file(&inner_img, size)?;
    crash_fs.mkfs(&inner_img)?;
    let guest = LoopMount::new(&inner_img, &work.join("guest.mnt"))?;
    materialize(seed, &guest.dir)?;
    check(command("sync").arg("-f").arg(&guest.dir))?;
    let planted_host = guest.dir.join(planted_path.trim_start_matches('/'));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let root = guest.dir.join("churn");
        std::thread::spawn(move || churn(&root, &stop))
    };
    let mut dirty = false;
    for _ in 0..ATTEMPTS {
        std::thread::sleep(CHURN);
        fs::create_dir_all(planted_host.parent().context("planted path has a parent")?)?;
        let mut f = fs::File::create(&planted_host)?;
        f.write_all(planted)?;
        f.sync_all()?;
        fs::File::open(planted_host.parent().expect("checked"))?.sync_all()?;
        check(
            command("cp")
                .arg("--reflink=always")
                .arg(&inner_img)
                .arg(&copy),
        )?;
        if crash_fs.needs_recovery(&copy)? {
            dirty = true;
            break;
        }
        fs::remove_file(&copy)?;
    }
    stop.store(true, Ordering::Relaxed);
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?;
    drop(guest);
    ensure!(
        dirty,
        "no {} copy needing recovery in {ATTEMPTS} attempts",
        crash_fs.kind()
    );
    check(command("cp").arg("--sparse=always").arg(&copy).arg(disk))?;
    drop(scratch);
    fs::remove_file(&scratch_img)?;
    // The oracle: the kernel's view after it replays the log of a throw-away copy.
    let oracle_img = work.join("oracle.img");
    check(
        command("cp")
            .arg("--sparse=always")
            .arg(disk)
            .arg(&oracle_img),
    )?;
    let records = {
        let oracle = LoopMount::new(&oracle_img, &work.join("oracle.mnt"))?;
        walk_records(&oracle.dir, crash_fs.kind())?
    };
    fs::remove_file(&oracle_img)?;
    ensure!(
        crash_fs.needs_recovery(disk)?,
        "{} lost its log while being copied",
        disk.display()
    );
    let by_path: BTreeMap<&str, &Record> = records.iter().map(|r| (r.path.as_str(), r)).collect();
    match by_path.get(planted_path) {
        Some(r) if r.size == Some(planted.len() as u64) => {}
        other => bail!("the fsync'ed test file is not in the kernel's recovered view: {other:?}"),
    }
    Ok(CrashImage {
        records,
        planted: planted_path.to_string(),
    })
}
