//! The XFS superblock (`xfs_dsb`), version 4 and version 5 (CRC-enabled).
//!
//! Follows "XFS Algorithms & Data Structures", chapter "Allocation Groups", section
//! "Superblocks". All fields are big-endian. Only the primary superblock (sector 0 of AG 0) is
//! read; the geometry it gives is checked against named limits before anything uses it.

use crate::block::be;
use crate::error::{Error, Result};

/// `XFSB`.
pub const XFS_SB_MAGIC: u32 = 0x5846_5342;
/// Bytes of the superblock that are parsed (the whole v5 structure fits in one 512-byte sector).
pub const SUPERBLOCK_READ: usize = 512;

/// Smallest and largest filesystem block sizes (`XFS_MIN_BLOCKSIZE`, `XFS_MAX_BLOCKSIZE`).
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest filesystem block size.
pub const MAX_BLOCK_SIZE: u32 = 65536;
/// Largest directory block size (`XFS_MAX_BLOCKSIZE` as well: dirblklog is bounded by it).
pub const MAX_DIR_BLOCK_SIZE: u32 = 65536;
/// Inode sizes allowed (`XFS_DINODE_MIN_SIZE`..`XFS_DINODE_MAX_SIZE`).
pub const MIN_INODE_SIZE: u16 = 256;
/// Largest inode size.
pub const MAX_INODE_SIZE: u16 = 2048;

/// `sb_versionnum` bits.
pub mod version {
    /// The low nibble: 4 or 5.
    pub const NUMBITS: u16 = 0x000f;
    /// Version 2 directories (required: v1 directories are not read).
    pub const DIRV2: u16 = 0x2000;
    /// `sb_features2` is valid.
    pub const MOREBITS: u16 = 0x8000;
}

/// `sb_features2` bits that matter to a reader.
pub mod features2 {
    /// Directory entries carry a file type byte (v4 filesystems).
    pub const FTYPE: u32 = 0x0200;
}

/// `sb_features_incompat` bits (v5).
pub mod incompat {
    /// Directory entries carry a file type byte.
    pub const FTYPE: u32 = 1 << 0;
    /// Sparse inode chunks.
    pub const SPINODES: u32 = 1 << 1;
    /// `sb_meta_uuid` is the UUID in metadata headers.
    pub const META_UUID: u32 = 1 << 2;
    /// Timestamps past 2038.
    pub const BIGTIME: u32 = 1 << 3;
    /// `xfs_repair` must run before mounting (read anyway, with a note).
    pub const NEEDSREPAIR: u32 = 1 << 4;
    /// 64-bit data fork extent counters in the inode core.
    pub const NREXT64: u32 = 1 << 5;
    /// File range exchange log items.
    pub const EXCHRANGE: u32 = 1 << 6;
    /// Parent pointers (stored in the attribute fork, which is not read).
    pub const PARENT: u32 = 1 << 7;
    /// Everything this reader understands.
    pub const KNOWN: u32 =
        FTYPE | SPINODES | META_UUID | BIGTIME | NEEDSREPAIR | NREXT64 | EXCHRANGE | PARENT;
}

/// The parsed superblock: the geometry every other structure needs.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// Filesystem block size in bytes.
    pub block_size: u32,
    /// log2 of `block_size`.
    pub block_log: u8,
    /// Data blocks in the filesystem.
    pub dblocks: u64,
    /// First block of an internal log (0 for an external log).
    pub log_start: u64,
    /// Blocks in the log.
    pub log_blocks: u32,
    /// Root directory inode.
    pub root_ino: u64,
    /// Blocks per allocation group.
    pub ag_blocks: u32,
    /// log2 of `ag_blocks` rounded up: the width of the AG-relative block field.
    pub ag_blk_log: u8,
    /// Number of allocation groups.
    pub ag_count: u32,
    /// Version number (4 or 5).
    pub version: u16,
    /// Sector size in bytes.
    pub sect_size: u16,
    /// Inode size in bytes.
    pub inode_size: u16,
    /// log2 of inodes per block.
    pub inopb_log: u8,
    /// Directory block size in bytes.
    pub dir_block_size: u32,
    /// Log sector size (v2 logs; 512 when unset).
    pub log_sect_size: u32,
    /// Log stripe unit in bytes (v2 logs), 0 or 1 when unset.
    pub log_sunit: u32,
    /// `sb_versionnum`.
    pub versionnum: u16,
    /// `sb_features2`.
    pub features2: u32,
    /// `sb_features_incompat` (v5).
    pub incompat: u32,
    /// `sb_features_log_incompat` (v5).
    pub log_incompat: u32,
    /// Volume label.
    pub label: [u8; 12],
    /// Filesystem UUID.
    pub uuid: [u8; 16],
    /// The UUID stamped in v5 metadata headers (`sb_meta_uuid`, or `sb_uuid` without the
    /// META_UUID feature).
    pub meta_uuid: [u8; 16],
    /// Inode chunk alignment in blocks (`sb_inoalignmt`).
    pub inode_align: u32,
}

impl Superblock {
    /// Parses and checks the primary superblock from its first [`SUPERBLOCK_READ`] bytes.
    pub fn parse(b: &[u8], object: &str) -> Result<Superblock> {
        let bad = |at: usize, what: String| Error::corrupt(object, at as u64, what);
        let u32_at = |at| be::u32(b, at).ok_or_else(|| bad(at, "superblock truncated".into()));
        let u64_at = |at| be::u64(b, at).ok_or_else(|| bad(at, "superblock truncated".into()));
        let u16_at = |at| be::u16(b, at).ok_or_else(|| bad(at, "superblock truncated".into()));
        let u8_at = |at: usize| {
            b.get(at)
                .copied()
                .ok_or_else(|| bad(at, "superblock truncated".into()))
        };
        if u32_at(0)? != XFS_SB_MAGIC {
            return Err(bad(0, "not an XFS superblock (magic)".into()));
        }
        let block_size = u32_at(4)?;
        let block_log = u8_at(120)?;
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
            || !block_size.is_power_of_two()
            || 1u32.checked_shl(u32::from(block_log)) != Some(block_size)
        {
            return Err(bad(
                4,
                format!("block size {block_size} (log {block_log}) is not valid"),
            ));
        }
        let versionnum = u16_at(100)?;
        let version = versionnum & version::NUMBITS;
        if version != 4 && version != 5 {
            return Err(Error::unsupported(
                object,
                format!("XFS superblock version {version} (only 4 and 5 are read)"),
            ));
        }
        if version == 4 && versionnum & version::DIRV2 == 0 {
            return Err(Error::unsupported(
                object,
                "XFS version 1 directories (pre-2002 filesystems)",
            ));
        }
        let sect_size = u16_at(102)?;
        if !(512..=32768).contains(&sect_size) || !sect_size.is_power_of_two() {
            return Err(bad(102, format!("sector size {sect_size} is not valid")));
        }
        let inode_size = u16_at(104)?;
        let inode_log = u8_at(122)?;
        if !(MIN_INODE_SIZE..=MAX_INODE_SIZE).contains(&inode_size)
            || !inode_size.is_power_of_two()
            || 1u16.checked_shl(u32::from(inode_log)) != Some(inode_size)
            || u32::from(inode_size) > block_size
        {
            return Err(bad(104, format!("inode size {inode_size} is not valid")));
        }
        let inopb_log = u8_at(123)?;
        if u32::from(inopb_log) + u32::from(inode_log) != u32::from(block_log) {
            return Err(bad(
                123,
                format!(
                    "inodes-per-block log {inopb_log} does not match the block and inode sizes"
                ),
            ));
        }
        let ag_blocks = u32_at(84)?;
        let ag_count = u32_at(88)?;
        let ag_blk_log = u8_at(124)?;
        if ag_blocks == 0
            || ag_count == 0
            || ag_blk_log > 31
            || u64::from(ag_blocks) > 1u64 << ag_blk_log
            || (ag_blk_log > 0 && u64::from(ag_blocks) <= 1u64 << (ag_blk_log - 1))
        {
            return Err(bad(
                84,
                format!("allocation group geometry ({ag_count} AGs of {ag_blocks} blocks, log {ag_blk_log}) is not valid"),
            ));
        }
        let dblocks = u64_at(8)?;
        let dir_blk_log = u8_at(192)?;
        let dir_block_size = 1u32
            .checked_shl(u32::from(dir_blk_log))
            .and_then(|m| block_size.checked_mul(m))
            .filter(|&d| d <= MAX_DIR_BLOCK_SIZE)
            .ok_or_else(|| {
                bad(
                    192,
                    format!("directory block log {dir_blk_log} is too large"),
                )
            })?;
        let log_sect_size = match u16_at(194)? {
            0 => 512,
            n => u32::from(n),
        };
        let features2 = if versionnum & version::MOREBITS != 0 {
            u32_at(200)?
        } else {
            0
        };
        let (incompat, log_incompat) = if version == 5 {
            (u32_at(216)?, u32_at(220)?)
        } else {
            (0, 0)
        };
        let mut label = [0u8; 12];
        label.copy_from_slice(
            b.get(108..120)
                .ok_or_else(|| bad(108, "truncated".into()))?,
        );
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(b.get(32..48).ok_or_else(|| bad(32, "truncated".into()))?);
        let mut meta_uuid = uuid;
        if version == 5 && incompat & incompat::META_UUID != 0 {
            meta_uuid.copy_from_slice(
                b.get(248..264)
                    .ok_or_else(|| bad(248, "truncated".into()))?,
            );
        }
        Ok(Superblock {
            block_size,
            block_log,
            dblocks,
            log_start: u64_at(48)?,
            log_blocks: u32_at(96)?,
            root_ino: u64_at(56)?,
            ag_blocks,
            ag_blk_log,
            ag_count,
            version,
            sect_size,
            inode_size,
            inopb_log,
            dir_block_size,
            log_sect_size,
            log_sunit: u32_at(196)?,
            versionnum,
            features2,
            incompat,
            log_incompat,
            label,
            uuid,
            meta_uuid,
            inode_align: u32_at(180)?,
        })
    }

    /// Names the first incompatible feature this reader does not understand, if any.
    pub fn unknown_incompat(&self) -> Option<String> {
        let unknown = self.incompat & !incompat::KNOWN;
        (unknown != 0).then(|| {
            format!("XFS incompatible feature bits {unknown:#x} (e.g. metadata directories, zoned devices) are not supported")
        })
    }

    /// Version 5: CRC-protected metadata with self-describing headers.
    pub fn has_crc(&self) -> bool {
        self.version == 5
    }

    /// Directory entries carry a file type byte.
    pub fn has_ftype(&self) -> bool {
        if self.has_crc() {
            self.incompat & incompat::FTYPE != 0
        } else {
            self.features2 & features2::FTYPE != 0
        }
    }

    /// Inode cores may use 64-bit extent counters.
    pub fn has_nrext64(&self) -> bool {
        self.incompat & incompat::NREXT64 != 0
    }

    /// The label as text, if set.
    pub fn label(&self) -> Option<String> {
        let end = self.label.iter().position(|&c| c == 0).unwrap_or(12);
        let s = String::from_utf8_lossy(&self.label[..end])
            .trim()
            .to_string();
        (!s.is_empty()).then_some(s)
    }

    /// Byte offset of filesystem block `fsb` (AG number in the high bits, AG block in the low
    /// `ag_blk_log` bits), or `None` when it lies outside the filesystem.
    pub fn fsb_to_byte(&self, fsb: u64) -> Option<u64> {
        let agno = fsb.checked_shr(u32::from(self.ag_blk_log)).unwrap_or(0);
        let agbno = fsb & ((1u64 << self.ag_blk_log) - 1);
        if agno >= u64::from(self.ag_count) || agbno >= u64::from(self.ag_blocks) {
            return None;
        }
        let daddr = agno
            .checked_mul(u64::from(self.ag_blocks))?
            .checked_add(agbno)?;
        if daddr >= self.dblocks {
            return None;
        }
        daddr.checked_mul(u64::from(self.block_size))
    }

    /// Byte offset of inode `ino`, or `None` when the number lies outside the filesystem.
    pub fn inode_to_byte(&self, ino: u64) -> Option<u64> {
        let offset_bits = u32::from(self.inopb_log);
        let fsb = ino.checked_shr(offset_bits)?;
        let within = ino & ((1u64 << offset_bits) - 1);
        // Inode numbers have at most ag_blk_log + inopb_log + 32 bits.
        if fsb.checked_shr(u32::from(self.ag_blk_log)).unwrap_or(0) >= u64::from(self.ag_count) {
            return None;
        }
        self.fsb_to_byte(fsb)?
            .checked_add(within.checked_mul(u64::from(self.inode_size))?)
    }

    /// Byte offset of the internal log, or `None` for an external log.
    pub fn log_offset(&self) -> Option<u64> {
        (self.log_start != 0)
            .then(|| self.fsb_to_byte(self.log_start))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_READ];
        b[0..4].copy_from_slice(&XFS_SB_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&4096u32.to_be_bytes());
        b[8..16].copy_from_slice(&4096u64.to_be_bytes());
        b[56..64].copy_from_slice(&128u64.to_be_bytes());
        b[84..88].copy_from_slice(&1024u32.to_be_bytes());
        b[88..92].copy_from_slice(&4u32.to_be_bytes());
        b[100..102].copy_from_slice(&(5u16 | version::DIRV2 | version::MOREBITS).to_be_bytes());
        b[102..104].copy_from_slice(&512u16.to_be_bytes());
        b[104..106].copy_from_slice(&512u16.to_be_bytes());
        b[120] = 12;
        b[122] = 9;
        b[123] = 3;
        b[124] = 10;
        b[216..220].copy_from_slice(&incompat::FTYPE.to_be_bytes());
        b
    }

    #[test]
    fn parses_geometry_and_addresses() {
        let sb = Superblock::parse(&minimal(), "t").unwrap();
        assert!(sb.has_crc() && sb.has_ftype());
        assert_eq!(sb.fsb_to_byte((1 << 10) | 5), Some((1024 + 5) * 4096));
        assert_eq!(sb.fsb_to_byte(1 << 12), None, "AG 4 of 4");
        assert_eq!(sb.inode_to_byte(128), Some(16 * 4096));
        assert!(sb.unknown_incompat().is_none());
    }

    #[test]
    fn refuses_unknown_incompat_and_bad_geometry() {
        let mut b = minimal();
        b[216..220].copy_from_slice(&(1u32 << 8).to_be_bytes());
        let sb = Superblock::parse(&b, "t").unwrap();
        assert!(sb.unknown_incompat().unwrap().contains("0x100"));
        let mut b = minimal();
        b[120] = 11;
        assert!(Superblock::parse(&b, "t").is_err());
        let mut b = minimal();
        b[124] = 40;
        assert!(Superblock::parse(&b, "t").is_err());
    }
}
