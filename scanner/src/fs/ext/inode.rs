//! Inodes: type, size, flags and the 60-byte `i_block` area.
//!
//! Follows Documentation/filesystems/ext4, sections 3.4 "Inode Table" and 4.1 "Index Nodes"
//! (the inode fields, `i_mode` types, `i_flags`), and the kernel's `ext4_isize()` for which
//! inodes use `i_size_high`. Inode `n` lives in group `(n-1) / s_inodes_per_group` at index
//! `(n-1) % s_inodes_per_group` of that group's inode table.

use super::group_desc;
use super::superblock::{incompat, Superblock};
use crate::block::{le, BlockSource};
use crate::error::{Error, Result};
use crate::fs::EntryKind;

/// The root directory.
pub const ROOT_INO: u32 = 2;

/// `i_flags`: the file uses an extent tree.
pub const EXTENTS_FL: u32 = 0x8_0000;
/// `i_flags`: the data lives in the inode (`i_block` + `system.data`).
pub const INLINE_DATA_FL: u32 = 0x1000_0000;
/// `i_flags`: encrypted (fscrypt).
pub const ENCRYPT_FL: u32 = 0x800;
/// `i_flags`: e2compr compressed file.
pub const COMPR_FL: u32 = 0x4;

/// Size of `i_block`.
pub const I_BLOCK_LEN: usize = 60;
/// Offset of `i_block` in the inode.
const I_BLOCK: usize = 0x28;

/// File type bits of `i_mode`.
const S_IFMT: u16 = 0xF000;
const S_IFREG: u16 = 0x8000;
const S_IFDIR: u16 = 0x4000;
const S_IFLNK: u16 = 0xA000;

/// One parsed inode.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Inode number.
    pub ino: u32,
    /// Byte offset of the inode record within the volume (for error messages).
    pub offset: u64,
    /// `i_mode`.
    pub mode: u16,
    /// Logical size in bytes.
    pub size: u64,
    /// `i_flags`.
    pub flags: u32,
    /// `i_links_count`.
    pub links: u16,
    /// The raw inode record (`s_inode_size` bytes): `i_block`, in-inode extended attributes.
    pub raw: Vec<u8>,
}

impl Inode {
    /// Reads inode `ino`, checking the number and the inode table location.
    pub fn read(src: &dyn BlockSource, sb: &Superblock, ino: u32) -> Result<Inode> {
        if ino == 0 || ino > sb.inodes_count {
            return Err(Error::corrupt(
                src.name(),
                0,
                format!("inode number {ino} outside 1..={}", sb.inodes_count),
            ));
        }
        let index = ino - 1;
        let group = index / sb.inodes_per_group;
        let within = u64::from(index % sb.inodes_per_group) * u64::from(sb.inode_size);
        let table = group_desc::inode_table_block(src, sb, group)?;
        let offset = sb
            .block_offset(table)
            .and_then(|o| o.checked_add(within))
            .ok_or_else(|| {
                Error::corrupt(src.name(), 0, format!("inode {ino} address overflows"))
            })?;
        // inode_size <= block_size <= 64 KiB (checked in the superblock).
        let mut raw = vec![0u8; sb.inode_size as usize];
        src.read_exact_at(offset, &mut raw)?;
        Ok(Self::parse(ino, offset, raw, sb))
    }

    /// Interprets a raw inode record.
    pub fn parse(ino: u32, offset: u64, raw: Vec<u8>, sb: &Superblock) -> Inode {
        let mode = le::u16(&raw, 0x0).unwrap_or(0);
        let lo = u64::from(le::u32(&raw, 0x4).unwrap_or(0));
        let hi = u64::from(le::u32(&raw, 0x6C).unwrap_or(0));
        // ext4_isize(): i_size_high counts for regular files, and for everything with largedir
        // (in ext2 it was i_dir_acl for directories).
        let size = if mode & S_IFMT == S_IFREG || sb.has_incompat(incompat::LARGEDIR) {
            lo | (hi << 32)
        } else {
            lo
        };
        Inode {
            ino,
            offset,
            mode,
            size,
            flags: le::u32(&raw, 0x20).unwrap_or(0),
            links: le::u16(&raw, 0x1A).unwrap_or(0),
            raw,
        }
    }

    /// What the inode is.
    pub fn kind(&self) -> EntryKind {
        match self.mode & S_IFMT {
            S_IFREG => EntryKind::File,
            S_IFDIR => EntryKind::Dir,
            S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }

    /// Whether the mode names any file type at all (0 means a free / cleared inode).
    pub fn in_use(&self) -> bool {
        self.mode & S_IFMT != 0
    }

    /// The 60 bytes of `i_block`.
    pub fn i_block(&self) -> &[u8] {
        self.raw.get(I_BLOCK..I_BLOCK + I_BLOCK_LEN).unwrap_or(&[])
    }

    /// Whether a flag of `i_flags` is set.
    pub fn has_flag(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// Whether this is a fast symlink (target in `i_block`), as the kernel's
    /// `ext4_inode_is_fast_symlink`: no inline data and no blocks besides an xattr block.
    pub fn is_fast_symlink(&self, block_size: u32) -> bool {
        if self.kind() != EntryKind::Symlink || self.has_flag(INLINE_DATA_FL) {
            return false;
        }
        let blocks = u64::from(le::u32(&self.raw, 0x1C).unwrap_or(0))
            | (u64::from(le::u16(&self.raw, 0x74).unwrap_or(0)) << 32);
        let acl = le::u32(&self.raw, 0x68).unwrap_or(0) != 0
            || le::u16(&self.raw, 0x76).unwrap_or(0) != 0;
        let ea_blocks = if acl { u64::from(block_size / 512) } else { 0 };
        blocks == ea_blocks
    }
}
