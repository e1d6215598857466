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

/// One regular file found by [`HostWalker::walk`].
#[derive(Debug)]
pub struct HostFile {
    /// The entry as reported (path absolute, `id` = (inode, device number)).
    pub entry: FileEntry,
    /// The path to open (exact bytes, where `entry.path` may be a lossy rendering).
    pub path: PathBuf,
    /// The host device holding it.
    pub dev: u64,
}

/// What walking a host tree produces, one event at a time.
#[derive(Debug)]
pub enum HostEvent {
    /// A regular file.
    File(HostFile),
    /// A part that could not be read: (path, error).
    Error(String, Error),
}

/// Walks host trees, numbering the host devices it meets so that `(device, inode)` identifies
/// content exactly across mounted filesystems (`FileId::stream` holds the device's number).
#[derive(Debug, Default)]
pub struct HostWalker {
    devices: HashMap<u64, u32>,
}

impl HostWalker {
    /// The [`FileId`] of a host file.
    pub fn id_of(&mut self, meta: &std::fs::Metadata) -> FileId {
        let next = u32::try_from(self.devices.len()).unwrap_or(u32::MAX);
        let dev = *self.devices.entry(meta.dev()).or_insert(next);
        FileId {
            node: meta.ino(),
            stream: dev,
        }
    }

    /// Walks `root` (an absolute directory path), streaming each regular file and error to
    /// `visit` in name order, without holding the tree in memory.
    pub fn walk(&mut self, root: &Path, visit: &mut dyn FnMut(HostEvent)) {
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
                    visit(HostEvent::Error(path, err));
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
                    visit(HostEvent::Error(path_str, err));
                    continue;
                }
            };
            let id = self.id_of(&meta);
            visit(HostEvent::File(HostFile {
                entry: FileEntry {
                    path: path_str,
                    stream: None,
                    kind: EntryKind::File,
                    size: meta.len(),
                    id,
                    unreadable: None,
                },
                path: entry.path().to_path_buf(),
                dev: meta.dev(),
            }));
        }
    }
}

/// Opens a host file found by a walk, refusing anything that is no longer the same regular file
/// (the tree may have changed since: never follow a link that replaced it, never block on a
/// FIFO that did, never read another inode under the old name).
pub fn open_file(path: &Path, dev: u64, ino: u64) -> Result<Box<dyn FileReader>> {
    use rustix::fs::{Mode, OFlags};
    let name = path.display().to_string();
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| Error::io(&name, 0, e.into()))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|e| Error::io(&name, 0, e))?;
    if !meta.file_type().is_file() || meta.dev() != dev || meta.ino() != ino {
        return Err(Error::Refused {
            object: name,
            detail: "no longer the regular file that was listed".into(),
        });
    }
    Ok(Box::new(HostFileReader {
        file,
        size: meta.len(),
        name,
    }))
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
        let mut files = Vec::new();
        HostWalker::default().walk(dir.path(), &mut |ev| match ev {
            HostEvent::File(f) => files.push(f),
            HostEvent::Error(p, e) => panic!("{p}: {e}"),
        });
        let paths: Vec<_> = files.iter().map(|f| f.entry.path.clone()).collect();
        assert_eq!(paths.len(), 3, "{paths:?}");
        assert!(
            paths[0].ends_with("/a") && paths[1].ends_with("/b"),
            "name order"
        );
        assert!(paths[2].ends_with("/d39/f"));
        assert_eq!(
            files[0].entry.id, files[1].entry.id,
            "hard links share an id"
        );
        let f = &files[2];
        let mut r = open_file(&f.path, f.dev, f.entry.id.node).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(r.read_at(0, &mut buf).unwrap(), 4);
        // Replaced since the walk: refused.
        std::fs::remove_file(&f.path).unwrap();
        std::fs::write(&f.path, b"other").unwrap();
        let fresh = std::fs::metadata(&f.path).unwrap();
        if fresh.ino() != f.entry.id.node {
            assert!(open_file(&f.path, f.dev, f.entry.id.node).is_err());
        }
    }
}
