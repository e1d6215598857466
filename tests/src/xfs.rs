//! XFS fixtures: `mkfs.xfs`, then the planted tree written through a loop mount (the only way
//! xfsprogs 6.1 can plant every name of the rich tree: its protofiles cannot express spaces,
//! `:` or `$` in names, nor hard links). Needs root and loop devices; a machine without them
//! fails the fixture with a clear message instead of skipping it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::images::{materialize, sparse_file};
use crate::tools::command;
use crate::tree::Tree;

/// How to make the filesystem.
#[derive(Debug, Clone, Copy)]
pub struct XfsOptions {
    /// v5 (metadata CRCs) when true, v4 when false.
    pub crc: bool,
    /// Sector size in bytes (512 or 4096).
    pub sector: u32,
}

/// A loop mount undone on drop (unmount, which also detaches the loop device).
#[derive(Debug)]
pub struct LoopMount {
    /// The mount point.
    pub dir: PathBuf,
}

impl LoopMount {
    /// Mounts `img` (read-write, through a loop device) on `dir`, created if missing.
    pub fn new(img: &Path, dir: &Path) -> anyhow::Result<LoopMount> {
        std::fs::create_dir_all(dir)?;
        let out = command("mount")
            .arg("-o")
            .arg("loop")
            .arg(img)
            .arg(dir)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!(
                "this fixture needs a loop mount (root, loop devices, the kernel's XFS driver): mount -o loop {} failed: {}",
                img.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(LoopMount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = command("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Runs `mkfs.xfs` on the existing file `img` with `opts` and `extra` arguments (images under
/// 300 MB need the xfstests environment variables).
pub fn mkfs_xfs(img: &Path, opts: XfsOptions, extra: &[String]) -> anyhow::Result<()> {
    let mut cmd = command("mkfs.xfs");
    cmd.env("TEST_DIR", "/tmp")
        .env("TEST_DEV", "x")
        .env("QA_CHECK_FS", "1")
        .args(["-q", "-f", "-b", "size=4096"])
        .args(["-m", if opts.crc { "crc=1" } else { "crc=0" }])
        .args(["-s", &format!("size={}", opts.sector)])
        .args(extra)
        .arg(img);
    crate::tools::check(&mut cmd)?;
    Ok(())
}

/// Makes an XFS image of `size` bytes holding `tree`.
pub fn xfs_image(img: &Path, size: u64, tree: &Tree, opts: XfsOptions) -> anyhow::Result<()> {
    sparse_file(img, size)?;
    mkfs_xfs(img, opts, &[])?;
    let dir = img.with_extension("mnt");
    let mount = LoopMount::new(img, &dir)?;
    materialize(tree, &mount.dir)?;
    drop(mount);
    Ok(())
}
