//! A deterministic cpio archive writer, "new ASCII" (`newc`, magic `070701`) format as the Linux
//! kernel's initramfs reads it (Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! Entries are written in byte order of their path, every parent directory first, with uid/gid 0,
//! one fixed mtime, and inode numbers counted from 1 in that order: the same tree always gives the
//! same bytes.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};

/// Largest file the newc header can describe (its size field is 32 bits).
const MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// What the content of a regular file is.
#[derive(Debug, Clone)]
pub enum Content {
    /// Copied from a host file.
    Host(PathBuf),
    /// Given in memory.
    Bytes(Vec<u8>),
}

/// One archive entry.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory (mode 0755).
    Dir,
    /// A regular file with its permission bits.
    File { mode: u32, content: Content },
    /// A symbolic link to the target.
    Symlink(String),
    /// A character device node.
    CharDev { mode: u32, major: u32, minor: u32 },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// A tree of entries keyed by path relative to the archive root (no leading `/`).
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `entry` at `path`, creating its parent directories. Adding a different entry at a path
    /// that already holds one is an error (two inputs claiming one file); the same directory twice
    /// is fine.
    pub fn add(&mut self, path: &str, entry: Entry) -> Result<()> {
        let path = path.trim_start_matches('/').trim_end_matches('/');
        ensure!(
            !path.is_empty()
                && !path
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == ".."),
            "bad archive path {path:?}"
        );
        let mut parent = String::new();
        for component in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(parent.clone(), Entry::Dir);
                }
                Some(Entry::Dir) => {}
                Some(_) => bail!("{parent} is not a directory, cannot hold {path}"),
            }
        }
        match (self.entries.get(path), &entry) {
            (None, _) => {
                self.entries.insert(path.to_string(), entry);
            }
            (Some(Entry::Dir), Entry::Dir) => {}
            (Some(Entry::Symlink(a)), Entry::Symlink(b)) if a == b => {}
            (Some(_), _) => bail!("two inputs claim {path} in the initramfs"),
        }
        Ok(())
    }

    /// Whether `path` is in the tree.
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    /// Writes the archive (with its `TRAILER!!!`) to `out`; returns the bytes of file content.
    pub fn write(&self, mtime: u32, out: &mut impl Write) -> Result<u64> {
        let mut w = Writer { out, written: 0 };
        let mut content_bytes = 0u64;
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            match entry {
                Entry::Dir => w.header(ino, S_IFDIR | 0o755, 2, mtime, 0, 0, path)?,
                Entry::Symlink(target) => {
                    w.header(ino, S_IFLNK | 0o777, 1, mtime, target.len() as u32, 0, path)?;
                    w.data(target.as_bytes())?;
                }
                Entry::CharDev { mode, major, minor } => {
                    let rdev = (*major, *minor);
                    w.header_dev(ino, S_IFCHR | mode, mtime, rdev, path)?;
                }
                Entry::File { mode, content } => {
                    let size = match content {
                        Content::Bytes(b) => b.len() as u64,
                        Content::Host(p) => std::fs::metadata(p)
                            .with_context(|| format!("cannot stat {}", p.display()))?
                            .len(),
                    };
                    ensure!(size <= MAX_FILE_SIZE, "{path} is too large for cpio newc");
                    w.header(ino, S_IFREG | mode, 1, mtime, size as u32, 0, path)?;
                    match content {
                        Content::Bytes(b) => w.data(b)?,
                        Content::Host(p) => {
                            let f = std::fs::File::open(p)
                                .with_context(|| format!("cannot open {}", p.display()))?;
                            let copied = io::copy(&mut f.take(size), &mut w)?;
                            ensure!(copied == size, "{} changed while archiving", p.display());
                            w.pad()?;
                        }
                    }
                    content_bytes += size;
                }
            }
        }
        w.header(0, 0, 1, 0, 0, 0, "TRAILER!!!")?;
        Ok(content_bytes)
    }
}

struct Writer<'a, W: Write> {
    out: &'a mut W,
    written: u64,
}

impl<W: Write> Write for Writer<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Writer<'_, W> {
    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        mtime: u32,
        size: u32,
        rdev_major: u32,
        name: &str,
    ) -> Result<()> {
        self.raw_header(ino, mode, nlink, mtime, size, (rdev_major, 0), name)
    }

    fn header_dev(
        &mut self,
        ino: u32,
        mode: u32,
        mtime: u32,
        rdev: (u32, u32),
        name: &str,
    ) -> Result<()> {
        self.raw_header(ino, mode, 1, mtime, 0, rdev, name)
    }

    #[allow(clippy::too_many_arguments)]
    fn raw_header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        mtime: u32,
        size: u32,
        rdev: (u32, u32),
        name: &str,
    ) -> Result<()> {
        let namesize = name.len() as u32 + 1;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check
        let header = format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{mtime:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
            0, 0, 0, 0, rdev.0, rdev.1, 0
        );
        self.write_all(header.as_bytes())?;
        self.write_all(name.as_bytes())?;
        self.write_all(&[0])?;
        self.pad()
    }

    fn data(&mut self, data: &[u8]) -> Result<()> {
        self.write_all(data)?;
        self.pad()
    }

    /// Pads to a multiple of 4 bytes (headers+names and file data are each 4-aligned).
    fn pad(&mut self) -> Result<()> {
        let rem = (self.written % 4) as usize;
        if rem != 0 {
            self.write_all(&[0u8; 4][..4 - rem])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.add(
            "/usr/lib/x",
            Entry::File {
                mode: 0o644,
                content: Content::Bytes(b"hello".to_vec()),
            },
        )
        .unwrap();
        t.add(
            "init",
            Entry::File {
                mode: 0o755,
                content: Content::Bytes(b"#!".to_vec()),
            },
        )
        .unwrap();
        t.add("lib", Entry::Symlink("usr/lib".into())).unwrap();
        t.add(
            "dev/console",
            Entry::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        )
        .unwrap();
        t
    }

    #[test]
    fn cpio_tool_reads_what_we_write() {
        let mut buf = Vec::new();
        sample().write(1_700_000_000, &mut buf).unwrap();
        let mut again = Vec::new();
        sample().write(1_700_000_000, &mut again).unwrap();
        assert_eq!(buf, again, "not deterministic");
        let list = |verbose: bool| {
            let mut cmd = std::process::Command::new("cpio");
            cmd.args(["-t", "--quiet"]);
            if verbose {
                cmd.arg("-v");
            }
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(&buf).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        let names = list(false);
        assert_eq!(
            names.lines().collect::<Vec<_>>(),
            [
                "dev",
                "dev/console",
                "init",
                "lib",
                "usr",
                "usr/lib",
                "usr/lib/x"
            ]
        );
        let long = list(true);
        assert!(long.contains("lib -> usr/lib"), "{long}");
        assert!(
            long.lines().next().unwrap().starts_with("drwxr-xr-x"),
            "{long}"
        );
        assert!(
            long.lines().nth(1).unwrap().starts_with("crw-------"),
            "{long}"
        );
        assert!(
            long.lines()
                .all(|l| l.split_whitespace().nth(2) == Some("root")),
            "{long}"
        );
    }

    #[test]
    fn conflicting_entries_are_refused() {
        let mut t = sample();
        let e = t.add("init", Entry::Dir).unwrap_err();
        assert!(e.to_string().contains("init"));
        assert!(t.add("init/x", Entry::Dir).is_err());
        assert!(t.add("../etc", Entry::Dir).is_err());
    }
}
