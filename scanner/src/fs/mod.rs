//! Filesystems: detection by magic bytes and a common enumeration / content interface.
//!
//! Each filesystem lives in its own module and implements [`Filesystem`]. A filesystem is opened
//! once per volume and shared by every scan thread (`Send + Sync`); its file readers are
//! per-thread. Entries are identified by [`FileId`] (inode, MFT record, directory-entry position),
//! never by name, so hard links are read once and renamed paths cannot confuse a reader.

use std::fmt;

use serde::Serialize;

use crate::block::SharedSource;
use crate::error::{Error, Result};

pub mod bounded;
pub mod btrfs;
pub mod ext;
pub mod fat;
pub mod ntfs;
pub mod xfs;

/// A filesystem type coldscan can read (or at least name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FsKind {
    /// ext2 (no journal).
    Ext2,
    /// ext3 (journal, no extents).
    Ext3,
    /// ext4.
    Ext4,
    /// NTFS 3.x.
    Ntfs,
    /// FAT12.
    Fat12,
    /// FAT16.
    Fat16,
    /// FAT32.
    Fat32,
    /// XFS (v4 and v5).
    Xfs,
    /// Btrfs.
    Btrfs,
}

impl FsKind {
    /// Name used in reports and `ls` output.
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Ntfs => "ntfs",
            FsKind::Fat12 => "fat12",
            FsKind::Fat16 => "fat16",
            FsKind::Fat32 => "fat32",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file or a named data stream of one (NTFS ADS).
    File,
    /// A directory.
    Dir,
    /// A symbolic link (its size is the target's length; its content is not scanned).
    Symlink,
    /// Device node, FIFO, socket, or reparse point that is not a file.
    Other,
}

impl EntryKind {
    /// Name used in `ls` output.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Other => "other",
        }
    }
}

/// Identifies the content of an entry within one filesystem: an inode or MFT record number
/// plus a stream number (0 for the default data stream). Two names of one hard-linked file
/// have the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// Inode number, MFT record number, or the byte position of a FAT directory entry.
    pub node: u64,
    /// Filesystem-specific stream selector; 0 is the unnamed/default stream.
    pub stream: u32,
}

/// One enumerated name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Absolute path inside the volume with `/` separators; NTFS named streams as `path:stream`.
    pub path: String,
    /// The stream name for NTFS alternate data streams.
    pub stream: Option<String>,
    /// What the entry is.
    pub kind: EntryKind,
    /// Logical size in bytes.
    pub size: u64,
    /// Content identity.
    pub id: FileId,
    /// Set when the content is known up front not to be readable (encrypted, unsupported
    /// compression): the entry is still listed, and readers return this error.
    pub unreadable: Option<Unreadable>,
}

/// Why an entry's content cannot be read, known at enumeration time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Report reason.
    pub reason: crate::error::Reason,
    /// Human detail (`CompactOS XPRESS16K`, `EFS`).
    pub detail: String,
}

/// An event produced while walking a filesystem.
#[derive(Debug)]
pub enum WalkEvent {
    /// A name was found.
    Entry(FileEntry),
    /// Part of the tree could not be read; `path` is the directory or entry concerned. The walk
    /// goes on with the rest.
    Error {
        /// Path of the directory or entry that failed.
        path: String,
        /// What went wrong.
        error: Error,
    },
}

/// Reads the content of one file or stream.
pub trait FileReader: Send {
    /// Logical size in bytes.
    fn size(&self) -> u64;

    /// Reads up to `buf.len()` bytes at `offset`, returning how many were read (0 at or past the
    /// end). Holes read as zeros.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize>;
}

/// A mounted-in-user-space, read-only filesystem.
pub trait Filesystem: Send + Sync + fmt::Debug {
    /// The filesystem type.
    fn kind(&self) -> FsKind;

    /// Volume label, if any.
    fn label(&self) -> Option<String> {
        None
    }

    /// Problems noticed when opening that did not stop it (e.g. a replayed dirty journal is not a
    /// problem, but a journal that could not be replayed is).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Walks every name in the filesystem depth-first, calling `visit` for each entry (directories
    /// included) and for each part that could not be read. Returns an error only when nothing can
    /// be walked at all (the root directory is unreadable).
    fn walk(&self, visit: &mut dyn FnMut(WalkEvent)) -> Result<()>;

    /// Opens the content of `entry` for reading.
    fn open(&self, entry: &FileEntry) -> Result<Box<dyn FileReader + '_>>;

    /// Finds the entry named by an absolute `path` (`/dir/file`, or `/dir/file:stream` for an
    /// NTFS named stream). The default walks the whole tree; filesystems override it with a
    /// directory lookup.
    fn lookup(&self, path: &str) -> Result<FileEntry> {
        let mut found = None;
        self.walk(&mut |ev| {
            if let WalkEvent::Entry(e) = ev {
                if found.is_none() && e.path == path {
                    found = Some(e);
                }
            }
        })?;
        found.ok_or_else(|| Error::NotFound {
            object: format!("{} volume", self.kind()),
            detail: path.to_string(),
        })
    }
}

/// Reads a whole file through `reader` in chunks, passing each chunk to `sink`. Fails if the
/// content ends before its declared size (a truncated or corrupt file is never reported whole).
pub fn read_all(
    reader: &mut dyn FileReader,
    object: &str,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<u64> {
    const CHUNK: usize = 1 << 20;
    let size = reader.size();
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(size).unwrap_or(CHUNK)).max(1)];
    let mut pos = 0u64;
    while pos < size {
        let want = buf
            .len()
            .min(usize::try_from(size - pos).unwrap_or(buf.len()));
        let n = reader.read_at(pos, &mut buf[..want])?;
        if n == 0 {
            return Err(Error::corrupt(
                object,
                pos,
                format!("content ends at byte {pos} of {size}"),
            ));
        }
        sink(&buf[..n]);
        pos += n as u64;
    }
    Ok(pos)
}

/// Shared handle to an opened filesystem.
pub type SharedFilesystem = std::sync::Arc<dyn Filesystem>;

/// Identifies the filesystem on `volume` by its magic bytes; `None` when none is recognised.
///
/// ext is tried first: its superblock sits at byte 1024 and its first block may hold boot code
/// that could pass a FAT boot-sector check; NTFS before FAT because an NTFS boot sector is
/// named by its OEM id, while FAT is recognised by BPB sanity alone.
pub fn probe(volume: &SharedSource) -> Result<Option<FsKind>> {
    let mut sb = [0u8; ext::superblock::SUPERBLOCK_SIZE];
    if volume.size() >= ext::superblock::SUPERBLOCK_OFFSET + sb.len() as u64 {
        volume.read_exact_at(ext::superblock::SUPERBLOCK_OFFSET, &mut sb)?;
        if let Some(kind) = ext::probe_ext(&sb) {
            return Ok(Some(kind));
        }
    }
    let mut first = [0u8; 4];
    if volume.size() >= xfs::superblock::SUPERBLOCK_READ as u64 {
        volume.read_exact_at(0, &mut first)?;
        if xfs::probe_xfs(&first) {
            return Ok(Some(FsKind::Xfs));
        }
    }
    let mut btrfs_sb = [0u8; 0x48];
    if volume.size()
        >= btrfs::superblock::SUPERBLOCK_OFFSETS[0] + btrfs::superblock::SUPERBLOCK_SIZE as u64
    {
        volume.read_exact_at(btrfs::superblock::SUPERBLOCK_OFFSETS[0], &mut btrfs_sb)?;
        if btrfs::probe(&btrfs_sb) {
            return Ok(Some(FsKind::Btrfs));
        }
    }
    if ntfs::probe(volume.as_ref())? {
        return Ok(Some(FsKind::Ntfs));
    }
    let mut boot = [0u8; 512];
    if volume.size() >= boot.len() as u64 {
        volume.read_exact_at(0, &mut boot)?;
        if let Some(kind) = fat::probe_fat(&boot) {
            return Ok(Some(kind));
        }
    }
    Ok(None)
}

/// Opens `volume` as a filesystem of `kind`, its entries bounded by the volume's size
/// ([`bounded::SizeBounded`]).
pub fn open(volume: SharedSource, kind: FsKind) -> Result<SharedFilesystem> {
    let size = volume.size();
    let inner: SharedFilesystem = match kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
            std::sync::Arc::new(ext::ExtVolume::open(volume)?)
        }
        FsKind::Ntfs => std::sync::Arc::new(ntfs::NtfsVolume::open(volume)?),
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => {
            std::sync::Arc::new(fat::FatVolume::open(volume)?)
        }
        FsKind::Xfs => std::sync::Arc::new(xfs::XfsVolume::open(volume)?),
        FsKind::Btrfs => std::sync::Arc::new(btrfs::BtrfsVolume::open(volume)?),
    };
    Ok(std::sync::Arc::new(bounded::SizeBounded::new(inner, size)))
}
