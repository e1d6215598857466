//! Host directory targets: `coldscan scan DIR` walks a directory tree of the host (no disk
//! layers) and produces the same report as a guest volume, with `partition` 0 and absolute host
//! paths.
//!
//! Unlike `clamscan -r` (DESIGN.md section 4) the walk has no depth cap and no silent size skip:
//! every regular file is scanned or reported. Symbolic links are not followed (a link could
//! point out of the tree or into a loop); FIFOs, sockets and device nodes are not files and are
//! never opened (opening a FIFO would block).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs::{EntryKind, FileEntry, FileId, FileReader};

/// A walked host tree: its regular files, and how to open them again by id.
#[derive(Debug, Default)]
pub struct HostTree {
    /// One path per content id (the first name seen), used to open the content.
    paths: HashMap<FileId, PathBuf>,
    /// Host devices seen, numbered in order: `FileId::stream` holds this index so that
    /// `(device, inode)` identifies content exactly across mounted filesystems.
    devices: HashMap<u64, u32>,
}

/// What walking a host tree produced.
#[derive(Debug, Default)]
pub struct HostWalk {
    /// Regular files (kind `File`), paths absolute.
    pub entries: Vec<FileEntry>,
    /// Parts that could not be read: (path, error).
    pub errors: Vec<(String, Error)>,
}

impl HostTree {
    /// Walks `root` (an absolute directory path) completely.
    pub fn walk(root: &Path) -> (HostTree, HostWalk) {
        let mut tree = HostTree::default();
        let mut out = HostWalk::default();
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .follow_root_links(true)
            .sort_by_file_name();
        for item in walker {
            let entry = match item {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().unwrap_or(root).display().to_string();
                    let err = match e.into_io_error() {
                        Some(io) => Error::io(&path, 0, io),
                        None => Error::corrupt(&path, 0, "directory loop"),
                    };
                    out.errors.push((path, err));
                    continue;
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let path_str = entry.path().display().to_string();
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) => {
                    let err = match e.into_io_error() {
                        Some(io) => Error::io(&path_str, 0, io),
                        None => Error::corrupt(&path_str, 0, "metadata unreadable"),
                    };
                    out.errors.push((path_str, err));
                    continue;
                }
            };
            let next = u32::try_from(tree.devices.len()).unwrap_or(u32::MAX);
            let dev = *tree.devices.entry(meta.dev()).or_insert(next);
            let id = FileId {
                node: meta.ino(),
                stream: dev,
            };
            tree.paths
                .entry(id)
                .or_insert_with(|| entry.path().to_path_buf());
            out.entries.push(FileEntry {
                path: path_str,
                stream: None,
                kind: EntryKind::File,
                size: meta.len(),
                id,
                unreadable: None,
            });
        }
        (tree, out)
    }

    /// Opens the content of a walked entry (by its id, so every hard-linked name reads the same
    /// file), refusing anything that is no longer a regular file.
    pub fn open(&self, entry: &FileEntry) -> Result<Box<dyn FileReader>> {
        use rustix::fs::{Mode, OFlags};
        let path = self.paths.get(&entry.id).ok_or_else(|| Error::NotFound {
            object: "host tree".into(),
            detail: entry.path.clone(),
        })?;
        let name = path.display().to_string();
        // NOFOLLOW and NONBLOCK: the tree may have changed since the walk; never follow a link
        // that replaced the file, never block on a FIFO that did.
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| Error::io(&name, 0, e.into()))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| Error::io(&name, 0, e))?;
        if !meta.file_type().is_file() {
            return Err(Error::Refused {
                object: name,
                detail: "no longer a regular file".into(),
            });
        }
        Ok(Box::new(HostFileReader {
            file,
            size: meta.len(),
            name,
        }))
    }
}

/// Positional reader over a host file.
#[derive(Debug)]
struct HostFileReader {
    file: File,
    size: u64,
    name: String,
}

impl FileReader for HostFileReader {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(&self.name, offset, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_deep_trees_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().to_path_buf();
        for i in 0..40 {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), b"deep").unwrap();
        std::fs::write(dir.path().join("a"), b"a").unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
        let (tree, walk) = HostTree::walk(dir.path());
        assert!(walk.errors.is_empty(), "{:?}", walk.errors);
        let mut paths: Vec<_> = walk.entries.iter().map(|e| e.path.clone()).collect();
        paths.sort();
        assert_eq!(paths.len(), 3, "{paths:?}");
        assert!(paths[2].ends_with("/d39/f"));
        assert_eq!(
            walk.entries[0].id, walk.entries[1].id,
            "hard links share an id"
        );
        let mut r = tree.open(&walk.entries[2]).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(r.read_at(0, &mut buf).unwrap(), 4);
    }
}
