//! On-disk inodes (`xfs_dinode`), versions 1/2 and 3, and their data fork.
//!
//! Follows "XFS Algorithms & Data Structures", chapter "On-disk Inode" (sections "Inode Core",
//! "Data Fork", "Extended Attribute Fork"). The attribute fork is never parsed: it is only used
//! as the bound (`di_forkoff`) of the data fork.

use crate::block::{be, BlockSource};
use crate::error::{Error, Result};
use crate::fs::EntryKind;

use super::superblock::Superblock;

/// `IN`.
pub const XFS_DINODE_MAGIC: u16 = 0x494e;
/// Size of the v1/v2 inode core; the data fork follows it.
pub const CORE_SIZE_V2: usize = 100;
/// Size of the v3 inode core.
pub const CORE_SIZE_V3: usize = 176;

/// `di_format` values.
pub mod format {
    /// Device node: no data.
    pub const DEV: u8 = 0;
    /// Data held in the inode (short-form directory, symlink target).
    pub const LOCAL: u8 = 1;
    /// An array of extent records in the inode.
    pub const EXTENTS: u8 = 2;
    /// The root of a bmap btree in the inode.
    pub const BTREE: u8 = 3;
}

/// `di_flags`: the file lives on the realtime device.
pub const DIFLAG_REALTIME: u16 = 0x0001;
/// `di_flags2`: 64-bit extent counters.
pub const DIFLAG2_NREXT64: u64 = 1 << 4;

/// File type bits of `di_mode` (`S_IFMT`).
const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;

/// A parsed inode: its core fields and a copy of its data fork.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Inode number.
    pub ino: u64,
    /// Byte offset of the inode in the volume (for error messages).
    pub offset: u64,
    /// `di_mode`.
    pub mode: u16,
    /// `di_format`.
    pub format: u8,
    /// `di_size`.
    pub size: u64,
    /// Extents in the data fork (`di_nextents` or `di_big_nextents`).
    pub nextents: u64,
    /// `di_flags`.
    pub flags: u16,
    /// The data fork's bytes (bounded by `di_forkoff` when there is an attribute fork).
    pub data_fork: Vec<u8>,
    /// Byte offset of the data fork in the volume.
    pub fork_offset: u64,
}

impl Inode {
    /// Reads inode `ino` from `src`.
    pub fn read(src: &dyn BlockSource, sb: &Superblock, ino: u64, object: &str) -> Result<Inode> {
        let offset = sb.inode_to_byte(ino).ok_or_else(|| {
            Error::corrupt(
                object,
                0,
                format!("inode number {ino} lies outside the filesystem"),
            )
        })?;
        let mut buf = vec![0u8; usize::from(sb.inode_size)];
        src.read_exact_at(offset, &mut buf)?;
        Inode::parse(&buf, ino, offset, object)
    }

    /// Parses an inode from its `sb.inode_size` bytes at `offset`.
    pub fn parse(b: &[u8], ino: u64, offset: u64, object: &str) -> Result<Inode> {
        let bad = |d: String| Error::corrupt(object, offset, format!("inode {ino}: {d}"));
        let u16_at = |at| be::u16(b, at).ok_or_else(|| bad("truncated".into()));
        let u32_at = |at| be::u32(b, at).ok_or_else(|| bad("truncated".into()));
        let u64_at = |at| be::u64(b, at).ok_or_else(|| bad("truncated".into()));
        if u16_at(0)? != XFS_DINODE_MAGIC {
            return Err(bad("bad magic (not an inode)".into()));
        }
        let version = *b.get(4).ok_or_else(|| bad("truncated".into()))?;
        let core = match version {
            1 | 2 => CORE_SIZE_V2,
            3 => CORE_SIZE_V3,
            v => return Err(bad(format!("unknown inode version {v}"))),
        };
        if version == 3 && u64_at(152)? != ino {
            return Err(bad(format!(
                "the inode records number {} (misplaced or stale)",
                u64_at(152)?
            )));
        }
        let format = b[5];
        let mode = u16_at(2)?;
        let size = u64_at(56)?;
        let flags = u16_at(90)?;
        let flags2 = if version == 3 { u64_at(120)? } else { 0 };
        let nextents = if flags2 & DIFLAG2_NREXT64 != 0 {
            u64_at(24)?
        } else {
            u64::from(u32_at(76)?)
        };
        let forkoff = usize::from(*b.get(82).ok_or_else(|| bad("truncated".into()))?) * 8;
        let end = if forkoff == 0 {
            b.len()
        } else {
            core.checked_add(forkoff)
                .filter(|&e| e <= b.len())
                .ok_or_else(|| bad(format!("attribute fork offset {forkoff} past the inode")))?
        };
        let data_fork = b
            .get(core..end)
            .ok_or_else(|| bad("inode too small for its core".into()))?
            .to_vec();
        if size > i64::MAX as u64 {
            return Err(bad(format!("size {size} is negative")));
        }
        Ok(Inode {
            ino,
            offset,
            mode,
            format,
            size,
            nextents,
            flags,
            data_fork,
            fork_offset: offset + core as u64,
        })
    }

    /// What the inode is, from its mode.
    pub fn kind(&self) -> EntryKind {
        match self.mode & S_IFMT {
            S_IFREG => EntryKind::File,
            S_IFDIR => EntryKind::Dir,
            S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }

    /// An inode is in use when its mode names a type (freed inodes have mode 0).
    pub fn in_use(&self) -> bool {
        self.mode & S_IFMT != 0
    }

    /// The file's data is on the realtime device.
    pub fn is_realtime(&self) -> bool {
        self.flags & DIFLAG_REALTIME != 0
    }
}
