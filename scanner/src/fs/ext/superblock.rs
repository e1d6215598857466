//! The ext2/3/4 superblock.
//!
//! Follows the kernel's "ext4 Data Structures and Algorithms" (Documentation/filesystems/ext4),
//! section 3.1 "Super Block", and e2fsprogs' `lib/ext2fs/ext2_fs.h` for the feature bits. The
//! superblock is 1024 bytes at byte 1024 of the volume, little-endian. The classification into
//! ext2 / ext3 / ext4 follows util-linux blkid's `superblocks/ext.c` (what `blkid` reports).

use crate::block::le;
use crate::error::{Error, Result};
use crate::fs::FsKind;

/// Byte offset of the primary superblock within the volume.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the on-disk superblock.
pub const SUPERBLOCK_SIZE: usize = 1024;
/// `s_magic`.
pub const EXT_MAGIC: u16 = 0xEF53;
/// Largest `s_log_block_size` (64 KiB blocks), as the kernel's `EXT4_MAX_BLOCK_LOG_SIZE`.
const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// Largest cluster/block size ratio exponent accepted with bigalloc (the kernel's
/// `EXT4_MAX_CLUSTER_LOG_SIZE` 30 minus the smallest block log 10).
const MAX_CLUSTER_SHIFT: u32 = 20;

/// `s_feature_compat` bits.
pub mod compat {
    /// A journal exists (`has_journal`).
    pub const HAS_JOURNAL: u32 = 0x4;
    /// Backup superblocks only in the groups named by `s_backup_bgs`.
    pub const SPARSE_SUPER2: u32 = 0x200;
}

/// `s_feature_incompat` bits.
pub mod incompat {
    /// e2compr compression (never merged upstream).
    pub const COMPRESSION: u32 = 0x1;
    /// Directory entries record the file type.
    pub const FILETYPE: u32 = 0x2;
    /// The journal needs recovery.
    pub const RECOVER: u32 = 0x4;
    /// This is an external journal device, not a filesystem.
    pub const JOURNAL_DEV: u32 = 0x8;
    /// Meta block groups.
    pub const META_BG: u32 = 0x10;
    /// Extent-mapped files.
    pub const EXTENTS: u32 = 0x40;
    /// 64-bit block numbers.
    pub const BIT64: u32 = 0x80;
    /// Multiple mount protection.
    pub const MMP: u32 = 0x100;
    /// Flexible block groups.
    pub const FLEX_BG: u32 = 0x200;
    /// Large extended attribute values in inodes.
    pub const EA_INODE: u32 = 0x400;
    /// Data in directory entries (Lustre): extra bytes after the name, flagged in `file_type`.
    pub const DIRDATA: u32 = 0x1000;
    /// Metadata checksum seed in the superblock.
    pub const CSUM_SEED: u32 = 0x2000;
    /// Directories over 2 GiB / three-level htrees.
    pub const LARGEDIR: u32 = 0x4000;
    /// Data inside inodes.
    pub const INLINE_DATA: u32 = 0x8000;
    /// Encrypted inodes may exist.
    pub const ENCRYPT: u32 = 0x10000;
    /// Case-insensitive directories may exist.
    pub const CASEFOLD: u32 = 0x20000;
    /// Every bit this reader knows how to treat (the rest make the volume unsupported).
    pub const KNOWN: u32 = COMPRESSION
        | FILETYPE
        | RECOVER
        | JOURNAL_DEV
        | META_BG
        | EXTENTS
        | BIT64
        | MMP
        | FLEX_BG
        | EA_INODE
        | DIRDATA
        | CSUM_SEED
        | LARGEDIR
        | INLINE_DATA
        | ENCRYPT
        | CASEFOLD;
    /// Names of known bits, for messages.
    pub const NAMES: &[(u32, &str)] = &[
        (COMPRESSION, "compression"),
        (FILETYPE, "filetype"),
        (RECOVER, "needs_recovery"),
        (JOURNAL_DEV, "journal_dev"),
        (META_BG, "meta_bg"),
        (EXTENTS, "extent"),
        (BIT64, "64bit"),
        (MMP, "mmp"),
        (FLEX_BG, "flex_bg"),
        (EA_INODE, "ea_inode"),
        (DIRDATA, "dirdata"),
        (CSUM_SEED, "metadata_csum_seed"),
        (LARGEDIR, "large_dir"),
        (INLINE_DATA, "inline_data"),
        (ENCRYPT, "encrypt"),
        (CASEFOLD, "casefold"),
    ];
    /// Features ext2 may have according to blkid (`EXT2_FEATURE_INCOMPAT_SUPP`).
    pub const EXT2_SUPP: u32 = FILETYPE | META_BG;
    /// Features ext3 may have according to blkid (`EXT3_FEATURE_INCOMPAT_SUPP`).
    pub const EXT3_SUPP: u32 = FILETYPE | RECOVER | META_BG;
}

/// `s_feature_ro_compat` bits.
pub mod ro_compat {
    /// Backup superblocks only in groups 0, 1 and powers of 3, 5, 7.
    pub const SPARSE_SUPER: u32 = 0x1;
    /// Files over 2 GiB.
    pub const LARGE_FILE: u32 = 0x2;
    /// Old btree directory flag.
    pub const BTREE_DIR: u32 = 0x4;
    /// Allocation in clusters of several blocks.
    pub const BIGALLOC: u32 = 0x200;
    /// Features ext2 and ext3 may have according to blkid.
    pub const EXT23_SUPP: u32 = SPARSE_SUPER | LARGE_FILE | BTREE_DIR;
}

/// The fields of the superblock this reader uses, validated.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// `s_inodes_count`.
    pub inodes_count: u32,
    /// Block count (`s_blocks_count_lo`, plus `_hi` with `64bit`).
    pub blocks_count: u64,
    /// `s_first_data_block` (1 for 1 KiB blocks, else 0).
    pub first_data_block: u32,
    /// Block size in bytes (1024..=65536).
    pub block_size: u32,
    /// `s_blocks_per_group`.
    pub blocks_per_group: u32,
    /// `s_inodes_per_group`.
    pub inodes_per_group: u32,
    /// On-disk inode record size.
    pub inode_size: u32,
    /// `s_feature_compat`.
    pub feature_compat: u32,
    /// `s_feature_incompat`.
    pub feature_incompat: u32,
    /// `s_feature_ro_compat`.
    pub feature_ro_compat: u32,
    /// `s_volume_name`.
    pub volume_name: [u8; 16],
    /// `s_journal_inum`.
    pub journal_inum: u32,
    /// `s_journal_dev` (external journal device number).
    pub journal_dev: u32,
    /// `s_journal_uuid` (external journal UUID).
    pub journal_uuid: [u8; 16],
    /// Group descriptor size (32, or `s_desc_size` with `64bit`).
    pub desc_size: u32,
    /// `s_first_meta_bg`.
    pub first_meta_bg: u32,
    /// `s_backup_bgs` (sparse_super2).
    pub backup_bgs: [u32; 2],
    /// Number of block groups.
    pub group_count: u32,
}

impl Superblock {
    /// Parses and validates the 1024-byte superblock. `object` names the volume in errors.
    pub fn parse(b: &[u8], object: &str) -> Result<Self> {
        let at = |off: usize| SUPERBLOCK_OFFSET + off as u64;
        let bad = |off: usize, detail: String| Error::corrupt(object, at(off), detail);
        let u32_at =
            |off: usize| le::u32(b, off).ok_or_else(|| bad(off, "short superblock".into()));
        let u16_at =
            |off: usize| le::u16(b, off).ok_or_else(|| bad(off, "short superblock".into()));

        let magic = u16_at(0x38)?;
        if magic != EXT_MAGIC {
            return Err(bad(0x38, format!("bad ext magic {magic:#06x}")));
        }
        let feature_compat = u32_at(0x5C)?;
        let feature_incompat = u32_at(0x60)?;
        let feature_ro_compat = u32_at(0x64)?;
        let rev_level = u32_at(0x4C)?;

        let log_block_size = u32_at(0x18)?;
        if log_block_size > MAX_LOG_BLOCK_SIZE {
            return Err(bad(
                0x18,
                format!("s_log_block_size {log_block_size} is above {MAX_LOG_BLOCK_SIZE}"),
            ));
        }
        let block_size = 1024u32 << log_block_size;
        let inodes_count = u32_at(0x0)?;
        let mut blocks_count = u64::from(u32_at(0x4)?);
        if feature_incompat & incompat::BIT64 != 0 {
            blocks_count |= u64::from(u32_at(0x150)?) << 32;
        }
        let first_data_block = u32_at(0x14)?;
        let blocks_per_group = u32_at(0x20)?;
        let inodes_per_group = u32_at(0x28)?;
        let inode_size = if rev_level == 0 {
            128
        } else {
            u32::from(u16_at(0x58)?)
        };
        if !(128..=block_size).contains(&inode_size) || !inode_size.is_power_of_two() {
            return Err(bad(0x58, format!("bad inode size {inode_size}")));
        }
        // Group geometry: the kernel insists on these, and they keep the arithmetic below sane.
        // With bigalloc the group bitmap counts clusters: a group spans up to 8 * block_size
        // clusters of 2^(s_log_cluster_size - s_log_block_size) blocks each.
        let cluster_shift = if feature_ro_compat & ro_compat::BIGALLOC != 0 {
            let log_cluster = u32_at(0x1C)?;
            match log_cluster.checked_sub(log_block_size) {
                Some(shift) if shift <= MAX_CLUSTER_SHIFT => shift,
                _ => {
                    return Err(bad(0x1C, format!("bad s_log_cluster_size {log_cluster}")));
                }
            }
        } else {
            0
        };
        let max_per_group = (u64::from(block_size) * 8) << cluster_shift;
        if blocks_per_group == 0 || u64::from(blocks_per_group) > max_per_group {
            return Err(bad(
                0x20,
                format!("bad s_blocks_per_group {blocks_per_group}"),
            ));
        }
        if inodes_per_group == 0 || inodes_per_group > block_size.saturating_mul(8) {
            return Err(bad(
                0x28,
                format!("bad s_inodes_per_group {inodes_per_group}"),
            ));
        }
        if u64::from(first_data_block) >= blocks_count {
            return Err(bad(
                0x14,
                format!(
                    "s_first_data_block {first_data_block} not below block count {blocks_count}"
                ),
            ));
        }
        let groups =
            (blocks_count - u64::from(first_data_block)).div_ceil(u64::from(blocks_per_group));
        let group_count = u32::try_from(groups)
            .map_err(|_| bad(0x4, format!("{groups} block groups do not fit in 32 bits")))?;
        if u64::from(group_count) * u64::from(inodes_per_group) < u64::from(inodes_count) {
            return Err(bad(
                0x0,
                format!("{inodes_count} inodes do not fit in {group_count} groups of {inodes_per_group}"),
            ));
        }
        let desc_size = if feature_incompat & incompat::BIT64 != 0 {
            let s = u32::from(u16_at(0xFE)?);
            // The kernel's bounds: EXT4_MIN_DESC_SIZE_64BIT..=EXT4_MAX_DESC_SIZE, a power of two.
            if !(64..=1024).contains(&s) || !s.is_power_of_two() {
                return Err(bad(
                    0xFE,
                    format!("bad s_desc_size {s} for a 64bit filesystem"),
                ));
            }
            s
        } else {
            32
        };
        let mut volume_name = [0u8; 16];
        volume_name.copy_from_slice(b.get(0x78..0x88).ok_or_else(|| bad(0x78, "short".into()))?);
        let mut journal_uuid = [0u8; 16];
        journal_uuid.copy_from_slice(b.get(0xD0..0xE0).ok_or_else(|| bad(0xD0, "short".into()))?);
        Ok(Superblock {
            inodes_count,
            blocks_count,
            first_data_block,
            block_size,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            feature_compat,
            feature_incompat,
            feature_ro_compat,
            volume_name,
            journal_inum: u32_at(0xE0)?,
            journal_dev: u32_at(0xE4)?,
            journal_uuid,
            desc_size,
            first_meta_bg: u32_at(0x104)?,
            backup_bgs: [u32_at(0x24C)?, u32_at(0x250)?],
            group_count,
        })
    }

    /// Whether an incompat feature bit is set.
    pub fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }

    /// The incompat bits this reader does not know, if any, named for messages.
    pub fn unknown_incompat(&self) -> Option<String> {
        let unknown = self.feature_incompat & !incompat::KNOWN;
        (unknown != 0).then(|| format!("unknown incompatible feature flags {unknown:#x}"))
    }

    /// ext2, ext3 or ext4, as blkid decides: ext3 needs a journal and nothing beyond ext3's
    /// feature set, ext2 has no journal and nothing beyond ext2's, everything else is ext4.
    pub fn kind(&self) -> FsKind {
        let ro_extra = self.feature_ro_compat & !ro_compat::EXT23_SUPP != 0;
        if self.feature_compat & compat::HAS_JOURNAL != 0 {
            if !ro_extra && self.feature_incompat & !incompat::EXT3_SUPP == 0 {
                return FsKind::Ext3;
            }
        } else if !ro_extra && self.feature_incompat & !incompat::EXT2_SUPP == 0 {
            return FsKind::Ext2;
        }
        FsKind::Ext4
    }

    /// The volume label, if set.
    pub fn label(&self) -> Option<String> {
        let end = self.volume_name.iter().position(|&c| c == 0).unwrap_or(16);
        let name = self.volume_name.get(..end)?;
        (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
    }

    /// Whether block group `group` holds a superblock backup (and so group descriptors), as the
    /// kernel's `ext4_bg_has_super`.
    pub fn group_has_super(&self, group: u32) -> bool {
        if group == 0 {
            return true;
        }
        if self.feature_compat & compat::SPARSE_SUPER2 != 0 {
            return self.backup_bgs.contains(&group);
        }
        if group <= 1 || self.feature_ro_compat & ro_compat::SPARSE_SUPER == 0 {
            return true;
        }
        if group & 1 == 0 {
            return false;
        }
        [3u32, 5, 7].iter().any(|&base| is_power_of(group, base))
    }

    /// Byte offset of block `block`, or `None` on overflow.
    pub fn block_offset(&self, block: u64) -> Option<u64> {
        block.checked_mul(u64::from(self.block_size))
    }
}

fn is_power_of(mut n: u32, base: u32) -> bool {
    while n > 1 {
        if n % base != 0 {
            return false;
        }
        n /= base;
    }
    n == 1
}

/// Recognises an ext2/3/4 superblock in the 1024 bytes at byte 1024 of a volume. External
/// journal devices (`journal_dev`) carry the same magic but hold no files: `None`.
pub fn probe_ext(superblock: &[u8]) -> Option<FsKind> {
    let sb = Superblock::parse(superblock, "probe").ok()?;
    if sb.has_incompat(incompat::JOURNAL_DEV) {
        return None;
    }
    Some(sb.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        b[0x38..0x3A].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        b[0x0..0x4].copy_from_slice(&64u32.to_le_bytes());
        b[0x4..0x8].copy_from_slice(&1024u32.to_le_bytes());
        b[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
        b[0x20..0x24].copy_from_slice(&8192u32.to_le_bytes());
        b[0x28..0x2C].copy_from_slice(&64u32.to_le_bytes());
        b
    }

    #[test]
    fn zeroed_superblock_is_not_ext() {
        assert_eq!(probe_ext(&[0u8; SUPERBLOCK_SIZE]), None);
        let err = Superblock::parse(&[0u8; SUPERBLOCK_SIZE], "v").unwrap_err();
        assert!(err.to_string().contains("bad ext magic"), "{err}");
    }

    #[test]
    fn kinds_follow_blkid() {
        let mut b = minimal();
        assert_eq!(probe_ext(&b), Some(FsKind::Ext2));
        b[0x5C] = compat::HAS_JOURNAL as u8;
        assert_eq!(probe_ext(&b), Some(FsKind::Ext3));
        b[0x60] = incompat::EXTENTS as u8;
        assert_eq!(probe_ext(&b), Some(FsKind::Ext4));
        b[0x60] = incompat::JOURNAL_DEV as u8;
        assert_eq!(probe_ext(&b), None);
    }

    #[test]
    fn hostile_geometry_is_refused() {
        let mut b = minimal();
        b[0x18] = 7;
        assert!(Superblock::parse(&b, "v").is_err());
        let mut b = minimal();
        b[0x20..0x24].copy_from_slice(&0u32.to_le_bytes());
        assert!(Superblock::parse(&b, "v").is_err());
        let mut b = minimal();
        b[0x0..0x4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Superblock::parse(&b, "v").is_err());
    }

    #[test]
    fn sparse_super_groups() {
        let mut b = minimal();
        b[0x64] = ro_compat::SPARSE_SUPER as u8;
        let sb = Superblock::parse(&b, "v").unwrap();
        let with: Vec<u32> = (0..60).filter(|&g| sb.group_has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }
}
