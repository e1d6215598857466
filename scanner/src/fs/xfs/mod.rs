//! XFS (v4 and v5), read natively and read-only, with the dirty log replayed in memory.
//!
//! Follows "XFS Algorithms & Data Structures" (the xfs-documentation book): one file per on-disk
//! structure: [`superblock`], [`inode`], [`bmbt`] (extent records and the bmap btree),
//! [`dir2`] (short form, block, leaf, node and B+tree directories), [`symlink`], and [`log`]
//! (finding the log's head and tail and replaying its buffer and inode items).
//!
//! Files are enumerated by walking directories from the root inode, so every path is known and
//! a hard-linked inode appears under each of its names with one [`FileId`] (its inode number);
//! the inode btrees are not needed for that. Reflinked (shared) extents simply read the shared
//! blocks; holes and unwritten extents read as zeros. Metadata CRCs are not verified: a scanner
//! reads what is there and bounds-checks every structure instead.
//!
//! Opening reads the superblock; if the log holds transactions past its tail (the volume was
//! not cleanly unmounted) they are replayed into an overlay ([`log::LogOverlay`]) and the
//! filesystem is read through it, as the kernel would see it after recovery. A log that cannot
//! be replayed leaves the volume readable as it is on disk, with a note saying so.
//!
//! Names are bytes on disk; paths use lossy UTF-8 (`/` and NUL replaced by U+FFFD).

pub mod bmbt;
pub mod dir2;
mod dirs;
pub mod inode;
pub mod log;
pub mod superblock;
pub mod symlink;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;

use self::bmbt::ExtentMap;
use self::dir2::RawEntry;
use self::inode::{format, Inode};
use self::superblock::{Superblock, SUPERBLOCK_READ, XFS_SB_MAGIC};
use crate::block::{BlockSource, SharedSource};
use crate::error::{Error, Reason, Result};
use crate::fs::{
    EntryKind, FileEntry, FileId, FileReader, Filesystem, FsKind, Unreadable, WalkEvent,
};

/// Deepest directory nesting walked (the walk uses an explicit stack, never recursion).
pub const MAX_DEPTH: usize = 4096;
/// Most entries read from one directory.
pub const MAX_DIR_ENTRIES: usize = 1 << 22;
/// Bad blocks tolerated in one directory before the rest of it is skipped.
pub const MAX_DIR_ERRORS: usize = 16;

/// True when `sb` (the first bytes of a volume) starts with an XFS superblock.
pub fn probe_xfs(sb: &[u8]) -> bool {
    crate::block::be::u32(sb, 0) == Some(XFS_SB_MAGIC)
}

/// How one inode's content is found.
#[derive(Debug)]
enum Content {
    Map(ExtentMap),
    /// Local data or a symlink target: the bytes themselves.
    Bytes(Vec<u8>),
}

/// The geometry and source shared by everything that reads the filesystem.
#[derive(Debug)]
struct Fs {
    src: SharedSource,
    sb: Superblock,
    name: String,
}

impl Fs {
    fn inode(&self, ino: u64) -> Result<Inode> {
        Inode::read(self.src.as_ref(), &self.sb, ino, &self.name)
    }

    fn object(&self, ino: u64) -> String {
        format!("{} inode {ino}", self.name)
    }

    /// The extent map of `inode`'s data fork (extents or btree format).
    fn extent_map(&self, inode: &Inode) -> Result<ExtentMap> {
        let object = self.object(inode.ino);
        match inode.format {
            format::EXTENTS => ExtentMap::from_extents(
                &inode.data_fork,
                inode.nextents,
                inode.fork_offset,
                &object,
            ),
            format::BTREE => ExtentMap::from_btree(
                self.src.as_ref(),
                &self.sb,
                &inode.data_fork,
                inode.fork_offset,
                &object,
            ),
            f => Err(Error::corrupt(
                &object,
                inode.offset,
                format!("data fork format {f} has no extents"),
            )),
        }
    }

    fn local_bytes(&self, inode: &Inode) -> Result<Vec<u8>> {
        let n = usize::try_from(inode.size).unwrap_or(usize::MAX);
        inode.data_fork.get(..n).map(<[u8]>::to_vec).ok_or_else(|| {
            Error::corrupt(
                self.object(inode.ino),
                inode.fork_offset,
                format!(
                    "{} bytes of local data exceed the {}-byte data fork",
                    inode.size,
                    inode.data_fork.len()
                ),
            )
        })
    }

    /// How to read `inode`'s content.
    fn content(&self, inode: &Inode) -> Result<Content> {
        match (inode.kind(), inode.format) {
            (_, format::LOCAL) => Ok(Content::Bytes(self.local_bytes(inode)?)),
            (_, format::DEV) => Ok(Content::Bytes(Vec::new())),
            (EntryKind::Symlink, _) => {
                let map = self.extent_map(inode)?;
                Ok(Content::Bytes(symlink::remote_target(
                    self.src.as_ref(),
                    &self.sb,
                    &map,
                    inode.size,
                    &self.object(inode.ino),
                )?))
            }
            _ => Ok(Content::Map(self.extent_map(inode)?)),
        }
    }

    /// Reads content for a file of `size` bytes: holes as zeros, contiguous runs in one read.
    fn read_at(&self, content: &Content, size: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let map = match content {
            Content::Bytes(data) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let src = data.get(start..).unwrap_or(&[]);
                let n = want.min(src.len());
                buf[..n].copy_from_slice(&src[..n]);
                buf[n..want].fill(0);
                return Ok(want);
            }
            Content::Map(m) => m,
        };
        let bs = u64::from(self.sb.block_size);
        let mut done = 0usize;
        while done < want {
            let pos = offset + done as u64;
            let within = pos % bs;
            let run = map.map(&self.sb, pos / bs);
            let avail = run.len.saturating_mul(bs).saturating_sub(within);
            let n = usize::try_from(avail)
                .unwrap_or(usize::MAX)
                .min(want - done);
            match run.byte {
                None => buf[done..done + n].fill(0),
                Some(u64::MAX) => {
                    return Err(Error::corrupt(
                        &self.name,
                        0,
                        format!("an extent of the file at byte {pos} lies outside the filesystem"),
                    ))
                }
                Some(b) => self
                    .src
                    .read_exact_at(b + within, &mut buf[done..done + n])?,
            }
            done += n;
        }
        Ok(want)
    }

    fn unreadable(&self, inode: &Inode) -> Option<Unreadable> {
        inode.is_realtime().then(|| Unreadable {
            reason: Reason::UnsupportedFilesystem,
            detail: "XFS realtime-device file (the realtime device is not read)".into(),
        })
    }

    fn entry(&self, path: String, inode: &Inode) -> FileEntry {
        let kind = inode.kind();
        FileEntry {
            path,
            stream: None,
            kind,
            size: inode.size,
            id: FileId {
                node: inode.ino,
                stream: 0,
            },
            unreadable: if kind == EntryKind::File {
                self.unreadable(inode)
            } else {
                None
            },
        }
    }
}

/// Turns a name's bytes into a path component (lossy UTF-8; `/` and NUL replaced).
fn component(name: &[u8]) -> String {
    String::from_utf8_lossy(name).replace(['/', '\0'], "\u{FFFD}")
}

fn read_superblock(src: &dyn BlockSource, name: &str) -> Result<Superblock> {
    let mut b = vec![0u8; SUPERBLOCK_READ];
    src.read_exact_at(0, &mut b)?;
    let sb = Superblock::parse(&b, name)?;
    if let Some(what) = sb.unknown_incompat() {
        return Err(Error::unsupported(name, what));
    }
    Ok(sb)
}

/// An opened XFS volume.
#[derive(Debug)]
pub struct XfsVolume {
    fs: Fs,
    notes: Vec<String>,
}

impl XfsVolume {
    /// Opens the filesystem on `volume`, replaying a dirty log in memory.
    pub fn open(volume: SharedSource) -> Result<Self> {
        let name = volume.name().to_string();
        let sb = read_superblock(volume.as_ref(), &name)?;
        let mut notes = Vec::new();
        let claimed = sb.dblocks.saturating_mul(u64::from(sb.block_size));
        if volume.size() < claimed {
            notes.push(format!(
                "volume is {} bytes but the filesystem claims {claimed}; it looks truncated",
                volume.size()
            ));
        }
        if sb.incompat & superblock::incompat::NEEDSREPAIR != 0 {
            notes.push("the superblock says xfs_repair must run before mounting".into());
        }
        let raw = Fs {
            src: volume.clone(),
            sb,
            name: name.clone(),
        };
        if raw.sb.log_offset().is_none() {
            notes.push("the log is on an external device; it is not examined".into());
            return Ok(XfsVolume { fs: raw, notes });
        }
        match log::recover(volume.clone(), &raw.sb, &name) {
            Ok(None) => Ok(XfsVolume { fs: raw, notes }),
            Ok(Some(replay)) => {
                notes.extend(replay.notes.iter().cloned());
                let summary = replay.summary();
                let overlay: SharedSource = Arc::new(replay.overlay);
                match read_superblock(overlay.as_ref(), &name) {
                    Ok(sb2)
                        if sb2.block_size == raw.sb.block_size
                            && sb2.ag_blocks == raw.sb.ag_blocks
                            && sb2.inode_size == raw.sb.inode_size =>
                    {
                        notes.push(format!("log replayed: {summary}"));
                        Ok(XfsVolume {
                            fs: Fs {
                                src: overlay,
                                sb: sb2,
                                name,
                            },
                            notes,
                        })
                    }
                    Ok(_) => {
                        notes.push("log NOT replayed: it changes the geometry in the superblock; recent changes may be missing".into());
                        Ok(XfsVolume { fs: raw, notes })
                    }
                    Err(e) => {
                        notes.push(format!("log NOT replayed: the replayed superblock is unusable: {e}; recent changes may be missing"));
                        Ok(XfsVolume { fs: raw, notes })
                    }
                }
            }
            Err(e) => {
                notes.push(format!(
                    "log NOT replayed ({e}); the volume is read as it is on disk and recent changes may be missing"
                ));
                Ok(XfsVolume { fs: raw, notes })
            }
        }
    }

    /// Opens `volume` without looking at the log (the on-disk state as is).
    pub fn open_unreplayed(volume: SharedSource) -> Result<Self> {
        let name = volume.name().to_string();
        let sb = read_superblock(volume.as_ref(), &name)?;
        Ok(XfsVolume {
            fs: Fs {
                src: volume,
                sb,
                name,
            },
            notes: Vec::new(),
        })
    }

    fn find(&self, path: &str) -> Result<(String, Inode)> {
        let mut inode = self.fs.inode(self.fs.sb.root_ino)?;
        let mut built = String::new();
        let mut budget = self.fs.dir_block_budget();
        let not_found = || Error::NotFound {
            object: self.fs.name.clone(),
            detail: path.to_string(),
        };
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if inode.kind() != EntryKind::Dir {
                return Err(not_found());
            }
            let (entries, _) = self.fs.dir_entries(&inode, &mut budget)?;
            let e = entries
                .iter()
                .find(|e| component(&e.name) == part)
                .ok_or_else(not_found)?;
            inode = self.fs.inode(e.ino)?;
            built.push('/');
            built.push_str(part);
        }
        if built.is_empty() {
            return Err(not_found());
        }
        Ok((built, inode))
    }
}

impl Filesystem for XfsVolume {
    fn kind(&self) -> FsKind {
        FsKind::Xfs
    }

    fn label(&self) -> Option<String> {
        self.fs.sb.label()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn walk(&self, visit: &mut dyn FnMut(WalkEvent)) -> Result<()> {
        struct Frame {
            path: String,
            entries: Vec<RawEntry>,
            next: usize,
        }
        let root_ino = self.fs.sb.root_ino;
        let root = self.fs.inode(root_ino)?;
        if root.kind() != EntryKind::Dir {
            return Err(Error::corrupt(
                &self.fs.name,
                root.offset,
                "the root inode is not a directory",
            ));
        }
        let mut budget = self.fs.dir_block_budget();
        let (entries, errors) = self.fs.dir_entries(&root, &mut budget)?;
        for error in errors {
            visit(WalkEvent::Error {
                path: "/".into(),
                error,
            });
        }
        let mut visited: HashSet<u64> = HashSet::from([root_ino]);
        let mut stack = vec![Frame {
            path: String::new(),
            entries,
            next: 0,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(e) = frame.entries.get(frame.next) else {
                stack.pop();
                continue;
            };
            frame.next += 1;
            let path = format!("{}/{}", frame.path, component(&e.name));
            let ino = e.ino;
            let inode = match self.fs.inode(ino) {
                Ok(i) => i,
                Err(error) => {
                    visit(WalkEvent::Error { path, error });
                    continue;
                }
            };
            if !inode.in_use() {
                visit(WalkEvent::Error {
                    path,
                    error: Error::corrupt(
                        &self.fs.name,
                        inode.offset,
                        format!("entry names inode {ino}, which is not in use"),
                    ),
                });
                continue;
            }
            if inode.kind() != EntryKind::Dir {
                visit(WalkEvent::Entry(self.fs.entry(path, &inode)));
                continue;
            }
            if !visited.insert(ino) {
                visit(WalkEvent::Error {
                    path,
                    error: Error::corrupt(
                        &self.fs.name,
                        inode.offset,
                        format!("directory inode {ino} is reached a second time (a directory loop); not descended"),
                    ),
                });
                continue;
            }
            visit(WalkEvent::Entry(self.fs.entry(path.clone(), &inode)));
            if stack.len() >= MAX_DEPTH {
                visit(WalkEvent::Error {
                    path,
                    error: Error::limit(
                        &self.fs.name,
                        format!("directories nested deeper than {MAX_DEPTH}; not descended"),
                    ),
                });
                continue;
            }
            match self.fs.dir_entries(&inode, &mut budget) {
                Ok((entries, errors)) => {
                    for error in errors {
                        visit(WalkEvent::Error {
                            path: path.clone(),
                            error,
                        });
                    }
                    stack.push(Frame {
                        path,
                        entries,
                        next: 0,
                    });
                }
                Err(error) => visit(WalkEvent::Error { path, error }),
            }
        }
        Ok(())
    }

    fn open(&self, entry: &FileEntry) -> Result<Box<dyn FileReader + '_>> {
        let inode = self.fs.inode(entry.id.node)?;
        if let Some(u) = self.fs.unreadable(&inode) {
            return Err(Error::Unsupported {
                object: entry.path.clone(),
                detail: u.detail,
                reason: u.reason,
            });
        }
        if inode.kind() == EntryKind::Dir {
            return Err(Error::unsupported(
                &entry.path,
                "a directory has no content to read",
            ));
        }
        let content = self.fs.content(&inode)?;
        Ok(Box::new(XfsFileReader {
            fs: &self.fs,
            size: inode.size,
            content,
        }))
    }

    fn lookup(&self, path: &str) -> Result<FileEntry> {
        let (built, inode) = self.find(path)?;
        Ok(self.fs.entry(built, &inode))
    }
}

/// Reads one inode's content through its loaded extent map.
#[derive(Debug)]
struct XfsFileReader<'a> {
    fs: &'a Fs,
    size: u64,
    content: Content,
}

impl FileReader for XfsFileReader<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.fs.read_at(&self.content, self.size, offset, buf)
    }
}
