//! Crash-consistent images, taken as a hypervisor snapshot of a running guest would be: the
//! filesystem is loop-mounted and written continuously (creates, appends, fsyncs, renames,
//! unlinks, links, a growing directory, a fragmenting file) while an atomic copy of its image
//! is taken with `cp --reflink=always` (the image sits on a scratch XFS, so the copy is a
//! clone made under the file's locks, with no freeze). Just before the copy, a test file is
//! written and fsync'ed. The copy's log must be dirty (checked with `xfs_logprint`, retried
//! otherwise).
//!
//! The oracle is the kernel's own view after recovery: a throw-away copy of the copy is
//! mounted read-write (which replays the log) and walked. Needs root, loop devices and the
//! kernel's XFS driver; a machine without them fails with a clear message.

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
fn log_is_dirty(img: &Path) -> anyhow::Result<bool> {
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

/// What to build.
#[derive(Debug)]
pub struct CrashSpec<'a> {
    /// Image size in bytes.
    pub size: u64,
    /// mkfs.xfs options.
    pub opts: XfsOptions,
    /// mkfs.xfs `-l size=` (None for the default log).
    pub log_size: Option<&'a str>,
    /// Where the fsync'ed test file goes.
    pub planted_path: &'a str,
    /// Its content.
    pub planted: &'a [u8],
}

/// Builds `disk`: an XFS image seeded with `seed`, copied while a writer runs, as `spec` says;
/// `work` holds the scratch files meanwhile.
pub fn xfs_crash_image(
    work: &Path,
    disk: &Path,
    seed: &Tree,
    spec: &CrashSpec,
) -> anyhow::Result<CrashImage> {
    let CrashSpec {
        size,
        opts,
        log_size,
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
    let mut extra = Vec::new();
    if let Some(l) = log_size {
        extra.push("-l".to_string());
        extra.push(format!("size={l}"));
    }
    mkfs_xfs(&inner_img, opts, &extra)?;
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
        if log_is_dirty(&copy)? {
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
    ensure!(dirty, "no copy with a dirty log in {ATTEMPTS} attempts");
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
        walk_records(&oracle.dir, "xfs")?
    };
    fs::remove_file(&oracle_img)?;
    ensure!(
        log_is_dirty(disk)?,
        "{} lost its dirty log while being copied",
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
