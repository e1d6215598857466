//! ext2 / ext3 / ext4, read natively (read-only) with in-memory journal replay.
//!
//! Follows the kernel's "ext4 Data Structures and Algorithms" (Documentation/filesystems/ext4,
//! the "Ext4 Disk Layout" of the ext4 wiki): one file per on-disk structure ([`superblock`],
//! [`group_desc`], [`inode`], [`extent`], [`indirect`], [`dir`], [`inline`], [`xattr`],
//! [`journal`]). Written instead of using `ext4-view` because that crate refuses whole
//! filesystems with `inline_data`, `casefold`, `meta_bg`, `mmp`, `ea_inode` or `large_dir`,
//! refuses dirty journals without checksum v3, misreads sparse indirect-block files and is
//! `!Send` (DESIGN.md section 2).
//!
//! Opening parses the superblock; if the filesystem needs recovery (or its journal has a
//! non-empty log) the journal is replayed into a [`journal::JournalOverlay`] and everything
//! else is read through it, so the view is the one the kernel would mount. Nothing is written.
//! A non-empty log is replayed even without `needs_recovery`, as e2fsck offers to (the kernel
//! would ignore it). A journal that cannot be replayed (corrupt, unsupported features, over
//! [`journal::MAX_REPLAY_BLOCKS`]) leaves the volume readable as it is on disk, with a note
//! saying so; an external journal that needs recovery makes the volume unsupported.
//! Metadata checksums (`metadata_csum`) are not verified: a scanner reads what is there, and
//! every structure is bounds-checked instead. Journal checksums (v2/v3) are verified, since they
//! decide which transactions count.
//!
//! Names are bytes on disk; paths are made with lossy UTF-8 conversion (invalid sequences become
//! U+FFFD, `/` and NUL inside a name too), so two distinct invalid names may share a path. Entries
//! stay distinct through their [`FileId`] (the inode number).

pub mod dir;
pub mod extent;
pub mod group_desc;
pub mod indirect;
pub mod inline;
pub mod inode;
pub mod journal;
pub mod superblock;
pub mod xattr;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::sync::Arc;

use self::dir::RawEntry;
use self::extent::Extent;
use self::indirect::IndirectMap;
use self::inode::{Inode, ROOT_INO};
use self::superblock::{compat, incompat, Superblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE};
use crate::block::SharedSource;
use crate::error::{Error, Reason, Result};
use crate::fs::{
    EntryKind, FileEntry, FileId, FileReader, Filesystem, FsKind, Unreadable, WalkEvent,
};

pub use self::superblock::probe_ext;

/// Deepest directory nesting walked (the walk uses an explicit stack, never recursion).
pub const MAX_DEPTH: usize = 4096;
/// Most entries read from one directory.
pub const MAX_DIR_ENTRIES: usize = 1 << 22;
/// Bad blocks tolerated in one directory before the rest of it is skipped.
pub const MAX_DIR_ERRORS: usize = 16;

/// A run of logical blocks that map the same way: to consecutive physical blocks from
/// `physical`, or (`None`) to zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First physical block, or `None` for a hole / unwritten extent.
    pub physical: Option<u64>,
    /// Number of blocks (at least 1; `u64::MAX` for "to the end").
    pub len: u64,
}

/// How one inode's content is found.
#[derive(Debug)]
enum BlockMap {
    Extents(Vec<Extent>),
    Indirect(IndirectMap),
    /// Inline data or a fast symlink target: the bytes themselves.
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
    fn inode(&self, ino: u32) -> Result<Inode> {
        Inode::read(self.src.as_ref(), &self.sb, ino)
    }

    fn inode_object(&self, ino: u32) -> String {
        format!("{} inode {ino}", self.name)
    }

    /// The block map of `inode`'s content.
    fn block_map(&self, inode: &Inode) -> Result<BlockMap> {
        if inode.is_fast_symlink(self.sb.block_size) {
            let n = usize::try_from(inode.size)
                .unwrap_or(usize::MAX)
                .min(inode::I_BLOCK_LEN);
            return Ok(BlockMap::Bytes(
                inode.i_block().get(..n).unwrap_or(&[]).to_vec(),
            ));
        }
        if inode.has_flag(inode::INLINE_DATA_FL) {
            return Ok(BlockMap::Bytes(inline::file_data(inode, &self.name)?));
        }
        if inode.has_flag(inode::EXTENTS_FL) {
            return Ok(BlockMap::Extents(extent::load(
                self.src.as_ref(),
                &self.sb,
                inode,
                &self.name,
            )?));
        }
        Ok(BlockMap::Indirect(IndirectMap::new(
            inode.i_block(),
            inode.ino,
            inode.offset + 0x28,
        )))
    }

    fn map(&self, map: &mut BlockMap, lblock: u64) -> Result<Run> {
        match map {
            BlockMap::Extents(e) => Ok(extent::map(e, lblock)),
            BlockMap::Indirect(m) => m.map(self.src.as_ref(), &self.sb, &self.name, lblock),
            BlockMap::Bytes(_) => Ok(Run {
                physical: None,
                len: u64::MAX,
            }),
        }
    }

    /// Reads content through `map` for a file of `size` bytes: holes as zeros, contiguous
    /// physical runs in one read, nothing past `size`.
    fn read_at(&self, map: &mut BlockMap, size: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= size || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if let BlockMap::Bytes(data) = map {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let src = data.get(start..).unwrap_or(&[]);
            let n = want.min(src.len());
            buf[..n].copy_from_slice(&src[..n]);
            // Bytes past the stored data (cannot happen after inline::file_data) read as zeros.
            buf[n..want].fill(0);
            return Ok(want);
        }
        let bs = u64::from(self.sb.block_size);
        let mut done = 0usize;
        while done < want {
            let pos = offset + done as u64;
            let lblock = pos / bs;
            let within = pos % bs;
            let run = self.map(map, lblock)?;
            let avail = run.len.max(1).saturating_mul(bs).saturating_sub(within);
            let n = usize::try_from(avail)
                .unwrap_or(usize::MAX)
                .min(want - done);
            let chunk = &mut buf[done..done + n];
            match run.physical {
                None => chunk.fill(0),
                Some(p) => {
                    let off = p
                        .checked_mul(bs)
                        .and_then(|o| o.checked_add(within))
                        .ok_or_else(|| {
                            Error::corrupt(&self.name, 0, format!("block {p} address overflows"))
                        })?;
                    self.src.read_exact_at(off, chunk)?;
                }
            }
            done += n;
        }
        Ok(want)
    }

    /// Every live entry of directory `inode`, plus the errors met (the entries before a bad
    /// block and after it are kept).
    fn dir_entries(&self, inode: &Inode) -> Result<(Vec<RawEntry>, Vec<Error>)> {
        let filetype = self.sb.has_incompat(incompat::FILETYPE);
        let mut out = Vec::new();
        let mut errors = Vec::new();
        if inode.has_flag(inode::INLINE_DATA_FL) {
            let areas = inline::dir_areas(inode, &self.name)?;
            let mut offset = inode.offset + 0x28 + 4;
            for area in areas {
                if let Err(e) = dir::parse_block(area, offset, filetype, &self.name, &mut out) {
                    errors.push(e);
                }
                offset = inode.offset;
            }
            return Ok((out, errors));
        }
        let mut map = self.block_map(inode)?;
        let bs = u64::from(self.sb.block_size);
        let mut blocks = inode.size.div_ceil(bs);
        // A directory cannot have more blocks than the filesystem: this bounds the work on a
        // hostile directory whose blocks all map to one physical block.
        if blocks > self.sb.blocks_count {
            errors.push(Error::corrupt(
                &self.name,
                inode.offset,
                format!(
                    "directory inode {} claims {} bytes, more than the filesystem holds",
                    inode.ino, inode.size
                ),
            ));
            blocks = self.sb.blocks_count;
        }
        let mut buf = vec![0u8; self.sb.block_size as usize];
        let mut lblock = 0u64;
        while lblock < blocks {
            let run = self.map(&mut map, lblock)?;
            let Some(phys) = run.physical else {
                // A hole in a directory holds no entries.
                lblock = lblock.saturating_add(run.len.max(1));
                continue;
            };
            let off = phys.saturating_mul(bs);
            if let Err(e) = self.src.read_exact_at(off, &mut buf) {
                errors.push(e);
            } else if let Err(e) = dir::parse_block(&buf, off, filetype, &self.name, &mut out) {
                errors.push(e);
            }
            if errors.len() >= MAX_DIR_ERRORS {
                errors.push(Error::corrupt(
                    &self.name,
                    inode.offset,
                    format!(
                        "directory inode {}: too many bad blocks, the rest is skipped",
                        inode.ino
                    ),
                ));
                break;
            }
            if out.len() > MAX_DIR_ENTRIES {
                errors.push(Error::limit(
                    &self.name,
                    format!(
                        "directory inode {} has more than {MAX_DIR_ENTRIES} entries",
                        inode.ino
                    ),
                ));
                break;
            }
            lblock += 1;
        }
        Ok((out, errors))
    }

    /// Why the content of `inode` cannot be read, if that is known up front.
    fn unreadable(&self, inode: &Inode) -> Option<Unreadable> {
        if inode.has_flag(inode::ENCRYPT_FL) {
            return Some(Unreadable {
                reason: Reason::Encrypted,
                detail: "ext4 fscrypt-encrypted inode".into(),
            });
        }
        if self.sb.has_incompat(incompat::COMPRESSION) && inode.has_flag(inode::COMPR_FL) {
            return Some(Unreadable {
                reason: Reason::UnsupportedCompression,
                detail: "ext2 e2compr-compressed inode".into(),
            });
        }
        None
    }

    fn entry(&self, path: String, inode: &Inode) -> FileEntry {
        let kind = inode.kind();
        FileEntry {
            path,
            stream: None,
            kind,
            size: inode.size,
            id: FileId {
                node: u64::from(inode.ino),
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

/// An opened ext2/3/4 volume.
#[derive(Debug)]
pub struct ExtVolume {
    fs: Fs,
    kind: FsKind,
    notes: Vec<String>,
}

impl ExtVolume {
    /// Opens the filesystem on `volume`, replaying its journal in memory if it needs recovery.
    pub fn open(volume: SharedSource) -> Result<Self> {
        let name = volume.name().to_string();
        let sb = read_superblock(volume.as_ref(), &name)?;
        let kind = sb.kind();
        let mut notes = Vec::new();
        if volume.size() < sb.blocks_count.saturating_mul(u64::from(sb.block_size)) {
            notes.push(format!(
                "volume is {} bytes but the filesystem claims {} blocks of {} bytes; it looks truncated",
                volume.size(),
                sb.blocks_count,
                sb.block_size
            ));
        }
        let raw = Fs {
            src: volume.clone(),
            sb,
            name: name.clone(),
        };
        let needs_recovery = raw.sb.has_incompat(incompat::RECOVER);
        if raw.sb.feature_compat & compat::HAS_JOURNAL == 0 {
            if needs_recovery {
                notes.push("needs_recovery is set but there is no journal; read as is".into());
            }
            return Ok(ExtVolume {
                fs: raw,
                kind,
                notes,
            });
        }
        if raw.sb.journal_inum == 0 {
            if needs_recovery {
                return Err(Error::unsupported(
                    &name,
                    "the journal is on an external device and needs recovery; it cannot be replayed",
                ));
            }
            return Ok(ExtVolume {
                fs: raw,
                kind,
                notes,
            });
        }
        match replay_journal(&raw) {
            Ok(None) => {
                if needs_recovery {
                    notes.push("needs_recovery is set but the journal is empty".into());
                }
                Ok(ExtVolume {
                    fs: raw,
                    kind,
                    notes,
                })
            }
            Ok(Some(replay)) => {
                notes.extend(replay.notes.iter().cloned());
                let tx = replay.transactions;
                let blocks = replay.blocks;
                let overlay: SharedSource = Arc::new(replay.overlay);
                // The superblock itself may have been replayed: re-read it, as the kernel sees it.
                match read_superblock(overlay.as_ref(), &name) {
                    Ok(sb2) if sb2.block_size == raw.sb.block_size => {
                        notes.push(format!(
                            "journal replayed: {tx} transactions, {blocks} blocks"
                        ));
                        Ok(ExtVolume {
                            fs: Fs {
                                src: overlay,
                                sb: sb2,
                                name,
                            },
                            kind,
                            notes,
                        })
                    }
                    Ok(_) => {
                        notes.push(
                            "journal NOT replayed: it changes the block size in the superblock"
                                .into(),
                        );
                        Ok(ExtVolume {
                            fs: raw,
                            kind,
                            notes,
                        })
                    }
                    Err(e) => {
                        notes.push(format!(
                            "journal NOT replayed: the replayed superblock is unusable: {e}"
                        ));
                        Ok(ExtVolume {
                            fs: raw,
                            kind,
                            notes,
                        })
                    }
                }
            }
            Err(e) => {
                notes.push(format!(
                    "journal NOT replayed ({e}); recent changes may be missing"
                ));
                Ok(ExtVolume {
                    fs: raw,
                    kind,
                    notes,
                })
            }
        }
    }

    /// Opens `volume` without replaying the journal (the on-disk state as is).
    pub fn open_unreplayed(volume: SharedSource) -> Result<Self> {
        let name = volume.name().to_string();
        let sb = read_superblock(volume.as_ref(), &name)?;
        let kind = sb.kind();
        Ok(ExtVolume {
            fs: Fs {
                src: volume,
                sb,
                name,
            },
            kind,
            notes: Vec::new(),
        })
    }

    fn find(&self, path: &str) -> Result<(String, Inode)> {
        let mut inode = self.fs.inode(ROOT_INO)?;
        let mut built = String::new();
        let not_found = || Error::NotFound {
            object: self.fs.name.clone(),
            detail: path.to_string(),
        };
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if inode.kind() != EntryKind::Dir {
                return Err(not_found());
            }
            let (entries, _) = self.fs.dir_entries(&inode)?;
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

fn read_superblock(src: &dyn crate::block::BlockSource, name: &str) -> Result<Superblock> {
    let mut b = vec![0u8; SUPERBLOCK_SIZE];
    src.read_exact_at(SUPERBLOCK_OFFSET, &mut b)?;
    let sb = Superblock::parse(&b, name)?;
    if let Some(what) = sb.unknown_incompat() {
        return Err(Error::unsupported(name, what));
    }
    if sb.has_incompat(incompat::JOURNAL_DEV) {
        return Err(Error::unsupported(
            name,
            "an external journal device holds no files",
        ));
    }
    Ok(sb)
}

fn replay_journal(raw: &Fs) -> Result<Option<journal::Replay>> {
    let jinode = raw.inode(raw.sb.journal_inum)?;
    let mut map = raw.block_map(&jinode)?;
    let bs = u64::from(raw.sb.block_size);
    let journal_blocks = jinode.size / bs;
    let object = raw.inode_object(raw.sb.journal_inum);
    let mut log_offset = |n: u64| -> Result<u64> {
        if n >= journal_blocks {
            return Err(Error::corrupt(
                &object,
                0,
                format!("journal block {n} beyond its {journal_blocks} blocks"),
            ));
        }
        match raw.map(&mut map, n)?.physical {
            Some(p) => p
                .checked_mul(bs)
                .ok_or_else(|| Error::corrupt(&object, 0, "journal block address overflows")),
            None => Err(Error::corrupt(
                &object,
                0,
                format!("journal block {n} is a hole"),
            )),
        }
    };
    journal::replay(
        raw.src.clone(),
        raw.sb.block_size,
        raw.sb.blocks_count,
        journal_blocks,
        &mut log_offset,
    )
}

impl Filesystem for ExtVolume {
    fn kind(&self) -> FsKind {
        self.kind
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
        let root = self.fs.inode(ROOT_INO)?;
        if root.kind() != EntryKind::Dir {
            return Err(Error::corrupt(
                &self.fs.name,
                root.offset,
                "the root inode is not a directory",
            ));
        }
        let (entries, errors) = self.fs.dir_entries(&root)?;
        for error in errors {
            visit(WalkEvent::Error {
                path: "/".into(),
                error,
            });
        }
        let mut visited: HashSet<u32> = HashSet::from([ROOT_INO]);
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
            match self.fs.dir_entries(&inode) {
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
        let ino = u32::try_from(entry.id.node).map_err(|_| Error::NotFound {
            object: self.fs.name.clone(),
            detail: format!("inode {}", entry.id.node),
        })?;
        let inode = self.fs.inode(ino)?;
        if let Some(u) = self.fs.unreadable(&inode) {
            return Err(match u.reason {
                Reason::Encrypted => Error::Encrypted {
                    object: entry.path.clone(),
                    detail: u.detail,
                },
                _ => Error::unsupported_compression(&entry.path, u.detail),
            });
        }
        if inode.kind() == EntryKind::Dir {
            return Err(Error::unsupported(
                &entry.path,
                "a directory has no content to read",
            ));
        }
        let map = self.fs.block_map(&inode)?;
        Ok(Box::new(ExtFileReader {
            fs: &self.fs,
            size: inode.size,
            map,
        }))
    }

    fn lookup(&self, path: &str) -> Result<FileEntry> {
        let (built, inode) = self.find(path)?;
        Ok(self.fs.entry(built, &inode))
    }
}

/// Reads one inode's content; keeps its block map (extents, or the last pointer blocks).
#[derive(Debug)]
struct ExtFileReader<'a> {
    fs: &'a Fs,
    size: u64,
    map: BlockMap,
}

impl FileReader for ExtFileReader<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.fs.read_at(&mut self.map, self.size, offset, buf)
    }
}
