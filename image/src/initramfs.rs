//! The initramfs step: `/init` (the `coldscan` binary), its shared-library closure, the kernel
//! modules with their load order, `/dev/console` and the signature database, as a deterministic
//! cpio `newc` archive compressed with zstd (the Debian kernel has `CONFIG_RD_ZSTD`; zstd unpacks
//! far faster than xz under emulation).
//!
//! Layout (merged `/usr`, as Debian 12): `/lib` -> `usr/lib`; libraries in
//! `/usr/lib/x86_64-linux-gnu`; modules in `/usr/lib/modules/RELEASE`; their load order, one
//! absolute path a line, dependencies first, in [`MODULE_ORDER_FILE`]; the database in
//! [`DB_DIR`].

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::cpio::{Content, Entry, Tree};
use crate::kernel::Kernel;
use crate::libs::{self, IMAGE_LIB_DIR};

/// The module load order file PID 1 reads (`finit_module` each line in order).
pub const MODULE_ORDER_FILE: &str = "etc/coldscan/modules";
/// Where the baked signature database lives in the image.
pub const DB_DIR: &str = "var/lib/coldscan/db";
/// Default zstd level of the initramfs: the best ratio without long-distance matching (which the
/// kernel's decompressor window may not cover); decompression speed barely depends on the level.
pub const ZSTD_LEVEL: i32 = 19;
/// Symbolic links followed while copying one host path (as the kernel's limit of 40).
const MAX_SYMLINKS: usize = 40;

/// What goes into the initramfs.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The (stripped) `coldscan` binary.
    pub coldscan: &'a Path,
    /// The unpacked kernel with its module closure.
    pub kernel: &'a Kernel,
    /// Signature database files: (name in the image, host file).
    pub db_files: &'a [(String, PathBuf)],
    /// `os-release` text.
    pub os_release: &'a str,
    /// zstd compression level.
    pub zstd_level: i32,
}

/// Sizes of the initramfs' parts, uncompressed bytes.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Sizes {
    /// `/init`.
    pub coldscan: u64,
    /// Shared libraries and the interpreter.
    pub libraries: u64,
    /// Kernel modules.
    pub modules: u64,
    /// Signature database.
    pub db: u64,
    /// The whole archive before compression.
    pub archive: u64,
    /// The compressed initramfs.
    pub compressed: u64,
}

/// A library of the closure: `DT_NEEDED` name and host file (for `build.json`).
pub type Library = (String, PathBuf);

/// Builds the compressed initramfs at `out`; returns its part sizes and the libraries used.
pub fn build(inputs: &Inputs, mtime: u32, out: &Path) -> Result<(Sizes, Vec<Library>)> {
    let mut tree = Tree::new();
    let mut sizes = Sizes::default();
    for dir in [
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "usr/lib64",
        "etc/coldscan",
        DB_DIR,
    ] {
        tree.add(dir, Entry::Dir)?;
    }
    tree.add("lib", Entry::Symlink("usr/lib".into()))?;
    tree.add(
        "dev/console",
        Entry::CharDev {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    )?;
    tree.add(
        "usr/lib/os-release",
        bytes_file(0o644, inputs.os_release.as_bytes()),
    )?;
    tree.add(
        "etc/os-release",
        Entry::Symlink("../usr/lib/os-release".into()),
    )?;

    tree.add("init", host_file(0o755, inputs.coldscan))?;
    sizes.coldscan = file_size(inputs.coldscan)?;

    let closure = libs::closure(inputs.coldscan).context("shared-library closure of coldscan")?;
    if let Some(interp) = &closure.interpreter {
        sizes.libraries += add_host_path(&mut tree, interp)?;
    }
    let mut libraries = Vec::new();
    for (name, host) in &closure.libraries {
        let path = format!("{IMAGE_LIB_DIR}/{name}");
        if !tree.contains(&path) {
            tree.add(&path, host_file(0o755, host))?;
            sizes.libraries += file_size(host)?;
        }
        libraries.push((name.clone(), host.clone()));
    }

    let kernel = inputs.kernel;
    let mut order = String::new();
    for m in &kernel.modules {
        let host = kernel.modules_dir().join(&m.path);
        let path = format!("usr/lib/modules/{}/{}", kernel.release, m.path);
        tree.add(&path, host_file(0o644, &host))?;
        sizes.modules += file_size(&host)?;
        order.push_str(&format!("/{path}\n"));
    }
    tree.add(MODULE_ORDER_FILE, bytes_file(0o644, order.as_bytes()))?;

    for (name, host) in inputs.db_files {
        tree.add(&format!("{DB_DIR}/{name}"), host_file(0o644, host))?;
        sizes.db += file_size(host)?;
    }

    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut encoder = zstd::Encoder::new(std::io::BufWriter::new(file), inputs.zstd_level)?;
    let mut counting = CountingWriter {
        inner: &mut encoder,
        count: 0,
    };
    tree.write(mtime, &mut counting)?;
    sizes.archive = counting.count;
    encoder.finish()?.flush()?;
    sizes.compressed = file_size(out)?;
    Ok((sizes, libraries))
}

fn host_file(mode: u32, path: &Path) -> Entry {
    Entry::File {
        mode,
        content: Content::Host(path.to_path_buf()),
    }
}

fn bytes_file(mode: u32, data: &[u8]) -> Entry {
    Entry::File {
        mode,
        content: Content::Bytes(data.to_vec()),
    }
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len())
}

/// Adds the host file at the absolute `path` under the same path, reproducing each symbolic link
/// met on the way (e.g. `/lib64` -> `usr/lib64`), so that the path resolves in the image as on
/// the host. Returns the size of the regular file at the end.
fn add_host_path(tree: &mut Tree, path: &Path) -> Result<u64> {
    let mut pending: Vec<PathBuf> = Vec::new();
    let mut resolved = PathBuf::from("/");
    let mut rest: Vec<PathBuf> = components(path)?.into_iter().rev().collect();
    let mut links = 0;
    while let Some(c) = rest.pop() {
        if c == Path::new("..") {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&c);
        let meta = std::fs::symlink_metadata(&candidate)
            .with_context(|| format!("cannot stat {}", candidate.display()))?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                bail!("too many symbolic links resolving {}", path.display());
            }
            let target = std::fs::read_link(&candidate)?;
            tree.add(
                &candidate.to_string_lossy(),
                Entry::Symlink(target.to_string_lossy().into_owned()),
            )?;
            if target.is_absolute() {
                resolved = PathBuf::from("/");
            }
            rest.extend(components(&target)?.into_iter().rev());
        } else {
            resolved = candidate;
        }
        pending.push(resolved.clone());
    }
    let meta = std::fs::metadata(&resolved)?;
    if !meta.is_file() {
        bail!("{} is not a regular file", resolved.display());
    }
    tree.add(&resolved.to_string_lossy(), host_file(0o755, &resolved))?;
    Ok(meta.len())
}

fn components(p: &Path) -> Result<Vec<PathBuf>> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(PathBuf::from(n))),
            Component::ParentDir => Some(Ok(PathBuf::from(".."))),
            Component::RootDir | Component::CurDir => None,
            Component::Prefix(_) => Some(Err(anyhow::anyhow!("bad path {}", p.display()))),
        })
        .collect()
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreter_path_keeps_its_symlinks() {
        let mut tree = Tree::new();
        let size = add_host_path(&mut tree, Path::new("/lib64/ld-linux-x86-64.so.2")).unwrap();
        assert!(size > 0);
        assert!(tree.contains("lib64"));
        assert!(tree.contains("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"));
    }
}
