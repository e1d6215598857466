//! The Btrfs superblock (`struct btrfs_super_block`, btrfs on-disk format documentation,
//! "Superblock"; kernel `include/uapi/linux/btrfs_tree.h`).
//!
//! Copies sit at 64 KiB (primary), 64 MiB and 256 GiB. Each is 4096 bytes, checksummed from
//! byte 32 on. The valid copy (magic, checksum, its own `bytenr`) with the highest generation
//! wins, as `btrfs check --super` and `btrfs rescue super-recover` choose.

use crate::block::{le, BlockSource};
use crate::error::{Error, Result};

/// Size of one superblock copy.
pub const SUPERBLOCK_SIZE: usize = 4096;
/// Byte offsets of the primary superblock and its mirrors.
pub const SUPERBLOCK_OFFSETS: [u64; 3] = [0x1_0000, 0x400_0000, 0x40_0000_0000];
/// `_BHRfS_M`.
pub const MAGIC: u64 = 0x4D5F_5366_5248_425F;
/// Bytes of the checksum area at the start of every superblock and tree block.
pub const CSUM_SIZE: usize = 32;
/// Most bytes of the bootstrap chunk array.
pub const SYS_CHUNK_ARRAY_MAX: usize = 2048;
const SYS_CHUNK_ARRAY_OFFSET: usize = 0x32b;
/// Smallest and largest tree-block (node) sizes the kernel accepts.
pub const NODESIZE_RANGE: (u32, u32) = (4096, 65536);

/// Checksum algorithms (`btrfs_csum_type`).
pub mod csum_type {
    /// CRC32C (the default).
    pub const CRC32C: u16 = 0;
    /// xxHash64.
    pub const XXHASH: u16 = 1;
    /// SHA-256.
    pub const SHA256: u16 = 2;
    /// BLAKE2b-256.
    pub const BLAKE2: u16 = 3;
}

/// Incompatible features this reader understands (`BTRFS_FEATURE_INCOMPAT_*`).
pub mod incompat {
    /// Mixed backref (always on since 2.6.31).
    pub const MIXED_BACKREF: u64 = 1 << 0;
    /// A default subvolume other than 5 may be set.
    pub const DEFAULT_SUBVOL: u64 = 1 << 1;
    /// Data and metadata share block groups.
    pub const MIXED_GROUPS: u64 = 1 << 2;
    /// LZO compression in use.
    pub const COMPRESS_LZO: u64 = 1 << 3;
    /// zstd compression in use.
    pub const COMPRESS_ZSTD: u64 = 1 << 4;
    /// Tree blocks bigger than a page.
    pub const BIG_METADATA: u64 = 1 << 5;
    /// INODE_EXTREF items for many hard links in one directory.
    pub const EXTENDED_IREF: u64 = 1 << 6;
    /// RAID5/6 profiles.
    pub const RAID56: u64 = 1 << 7;
    /// Skinny metadata extent refs (extent tree only).
    pub const SKINNY_METADATA: u64 = 1 << 8;
    /// Explicit hole extents are not written.
    pub const NO_HOLES: u64 = 1 << 9;
    /// `metadata_uuid` differs from the fsid.
    pub const METADATA_UUID: u64 = 1 << 10;
    /// RAID1C3/RAID1C4 profiles.
    pub const RAID1C34: u64 = 1 << 11;
    /// Zoned devices.
    pub const ZONED: u64 = 1 << 12;
    /// Extent tree v2 (experimental).
    pub const EXTENT_TREE_V2: u64 = 1 << 13;
    /// RAID stripe tree (experimental).
    pub const RAID_STRIPE_TREE: u64 = 1 << 14;
    /// Simple quotas.
    pub const SIMPLE_QUOTA: u64 = 1 << 16;
    /// Everything this reader handles: extent tree v2 and the stripe tree change the layout.
    pub const SUPPORTED: u64 = MIXED_BACKREF
        | DEFAULT_SUBVOL
        | MIXED_GROUPS
        | COMPRESS_LZO
        | COMPRESS_ZSTD
        | BIG_METADATA
        | EXTENDED_IREF
        | RAID56
        | SKINNY_METADATA
        | NO_HOLES
        | METADATA_UUID
        | RAID1C34
        | ZONED
        | SIMPLE_QUOTA;
}

/// The fields of one superblock copy that reading needs.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// Byte offset of this copy on the device.
    pub offset: u64,
    /// Filesystem UUID.
    pub fsid: [u8; 16],
    /// Metadata UUID (tree blocks carry this one), equal to `fsid` unless METADATA_UUID.
    pub metadata_uuid: [u8; 16],
    /// Transaction generation of this copy.
    pub generation: u64,
    /// Logical address of the root tree's root.
    pub root: u64,
    /// Logical address of the chunk tree's root.
    pub chunk_root: u64,
    /// Logical address of the log root tree, 0 without a tree log.
    pub log_root: u64,
    /// Size of the filesystem in bytes (all devices).
    pub total_bytes: u64,
    /// Number of devices.
    pub num_devices: u64,
    /// Data block size.
    pub sectorsize: u32,
    /// Tree block size.
    pub nodesize: u32,
    /// Incompatible feature flags.
    pub incompat_flags: u64,
    /// Checksum algorithm.
    pub csum_type: u16,
    /// Level of the root tree's root.
    pub root_level: u8,
    /// Level of the chunk tree's root.
    pub chunk_root_level: u8,
    /// Level of the log root tree's root.
    pub log_root_level: u8,
    /// This device's id.
    pub devid: u64,
    /// This device's UUID.
    pub dev_uuid: [u8; 16],
    /// Label (NUL-terminated on disk).
    pub label: String,
    /// The bootstrap chunk array (keys and chunk items of the SYSTEM block groups).
    pub sys_chunk_array: Vec<u8>,
}

/// Whether a block starting with this superblock copy looks like Btrfs (magic only).
pub fn probe(block: &[u8]) -> bool {
    le::u64(block, 0x40) == Some(MAGIC)
}

/// The checksum of `data` by `csum_type`, or `None` for an algorithm this reader does not
/// compute (xxhash64, SHA-256 and BLAKE2b are not verified, and that is said in a note).
pub fn checksum(csum_type: u16, data: &[u8]) -> Option<[u8; 4]> {
    match csum_type {
        csum_type::CRC32C => Some(crc32c::crc32c(data).to_le_bytes()),
        _ => None,
    }
}

/// A human name for a checksum type.
pub fn csum_name(csum_type: u16) -> String {
    match csum_type {
        csum_type::CRC32C => "crc32c".into(),
        csum_type::XXHASH => "xxhash64".into(),
        csum_type::SHA256 => "sha256".into(),
        csum_type::BLAKE2 => "blake2b".into(),
        n => format!("unknown checksum type {n}"),
    }
}

impl Superblock {
    /// Parses and validates one superblock copy read from `offset`.
    pub fn parse(b: &[u8], offset: u64, name: &str) -> Result<Self> {
        let bad =
            |detail: String| Error::corrupt(format!("{name} btrfs superblock"), offset, detail);
        if b.len() < SUPERBLOCK_SIZE {
            return Err(bad("short superblock".into()));
        }
        let u64_at = |at| le::u64(b, at).unwrap_or(0);
        let u32_at = |at| le::u32(b, at).unwrap_or(0);
        if u64_at(0x40) != MAGIC {
            return Err(bad("no _BHRfS_M magic".into()));
        }
        let csum_type = le::u16(b, 0xc4).unwrap_or(u16::MAX);
        if let Some(c) = checksum(csum_type, &b[CSUM_SIZE..SUPERBLOCK_SIZE]) {
            if b[..4] != c {
                return Err(bad(format!(
                    "checksum mismatch (stored {:02x?}, computed {c:02x?})",
                    &b[..4]
                )));
            }
        } else if csum_type > csum_type::BLAKE2 {
            return Err(bad(format!("unknown checksum type {csum_type}")));
        }
        if u64_at(0x30) != offset {
            return Err(bad(format!(
                "the copy says it sits at byte {:#x}",
                u64_at(0x30)
            )));
        }
        let sectorsize = u32_at(0x90);
        let nodesize = u32_at(0x94);
        if !sectorsize.is_power_of_two() || !(4096..=65536).contains(&sectorsize) {
            return Err(bad(format!("sector size {sectorsize} is invalid")));
        }
        if !nodesize.is_power_of_two()
            || !(NODESIZE_RANGE.0..=NODESIZE_RANGE.1).contains(&nodesize)
            || nodesize < sectorsize
        {
            return Err(bad(format!("node size {nodesize} is invalid")));
        }
        let sys_len = u32_at(0xa0) as usize;
        if sys_len > SYS_CHUNK_ARRAY_MAX {
            return Err(bad(format!(
                "sys_chunk_array_size {sys_len} exceeds {SYS_CHUNK_ARRAY_MAX}"
            )));
        }
        let mut fsid = [0u8; 16];
        fsid.copy_from_slice(&b[0x20..0x30]);
        let incompat_flags = u64_at(0xbc);
        let mut metadata_uuid = fsid;
        if incompat_flags & incompat::METADATA_UUID != 0 {
            metadata_uuid.copy_from_slice(&b[0x23b..0x24b]);
        }
        let mut dev_uuid = [0u8; 16];
        dev_uuid.copy_from_slice(&b[0xc9 + 66..0xc9 + 82]);
        let label_bytes = &b[0x12b..0x12b + 256];
        let end = label_bytes.iter().position(|&c| c == 0).unwrap_or(256);
        Ok(Superblock {
            offset,
            fsid,
            metadata_uuid,
            generation: u64_at(0x48),
            root: u64_at(0x50),
            chunk_root: u64_at(0x58),
            log_root: u64_at(0x60),
            total_bytes: u64_at(0x70),
            num_devices: u64_at(0x88),
            sectorsize,
            nodesize,
            incompat_flags,
            csum_type,
            root_level: b[0xc6],
            chunk_root_level: b[0xc7],
            log_root_level: b[0xc8],
            devid: u64_at(0xc9),
            dev_uuid,
            label: String::from_utf8_lossy(&label_bytes[..end]).into_owned(),
            sys_chunk_array: b[SYS_CHUNK_ARRAY_OFFSET..SYS_CHUNK_ARRAY_OFFSET + sys_len].to_vec(),
        })
    }

    /// Reads every copy that fits in `src` and returns the valid one with the highest
    /// generation, plus notes on the copies that were bad. Fails when no copy is valid.
    pub fn read_best(src: &dyn BlockSource) -> Result<(Self, Vec<String>)> {
        let name = src.name().to_string();
        let mut best: Option<Superblock> = None;
        let mut notes = Vec::new();
        let mut first_err = None;
        let mut buf = vec![0u8; SUPERBLOCK_SIZE];
        for (i, &off) in SUPERBLOCK_OFFSETS.iter().enumerate() {
            if off.saturating_add(SUPERBLOCK_SIZE as u64) > src.size() {
                break;
            }
            src.read_exact_at(off, &mut buf)?;
            if i > 0 && !probe(&buf) {
                continue;
            }
            match Superblock::parse(&buf, off, &name) {
                Ok(sb) => {
                    if let Some(b) = &best {
                        if b.fsid != sb.fsid {
                            notes.push(format!(
                                "superblock copy at {off:#x} belongs to another filesystem; ignored"
                            ));
                            continue;
                        }
                        if sb.generation > b.generation {
                            notes.push(format!(
                                "superblock copy at {off:#x} is newer (generation {}) than the one at {:#x} (generation {}); using it",
                                sb.generation, b.offset, b.generation
                            ));
                            best = Some(sb);
                        }
                    } else {
                        if i > 0 {
                            notes.push(format!(
                                "primary superblock unusable; using the copy at {off:#x}"
                            ));
                        }
                        best = Some(sb);
                    }
                }
                Err(e) => {
                    notes.push(format!("superblock copy at {off:#x} is unusable: {e}"));
                    first_err.get_or_insert(e);
                }
            }
        }
        match best {
            Some(sb) => Ok((sb, notes)),
            None => Err(first_err.unwrap_or_else(|| {
                Error::corrupt(
                    format!("{name} btrfs superblock"),
                    SUPERBLOCK_OFFSETS[0],
                    "no superblock copy found",
                )
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid superblock for unit tests.
    pub(crate) fn minimal(offset: u64, generation: u64) -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        b[0x30..0x38].copy_from_slice(&offset.to_le_bytes());
        b[0x40..0x48].copy_from_slice(&MAGIC.to_le_bytes());
        b[0x48..0x50].copy_from_slice(&generation.to_le_bytes());
        b[0x90..0x94].copy_from_slice(&4096u32.to_le_bytes());
        b[0x94..0x98].copy_from_slice(&16384u32.to_le_bytes());
        let c = crc32c::crc32c(&b[CSUM_SIZE..]).to_le_bytes();
        b[..4].copy_from_slice(&c);
        b
    }

    #[test]
    fn parses_a_minimal_copy_and_rejects_a_bad_checksum() {
        let mut b = minimal(0x1_0000, 7);
        let sb = Superblock::parse(&b, 0x1_0000, "t").unwrap();
        assert_eq!(sb.generation, 7);
        assert_eq!(sb.nodesize, 16384);
        b[100] ^= 1;
        let e = Superblock::parse(&b, 0x1_0000, "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("checksum mismatch") && e.contains("0x10000"),
            "{e}"
        );
    }

    #[test]
    fn refuses_a_copy_that_names_another_position() {
        let b = minimal(0x1_0000, 7);
        let e = Superblock::parse(&b, 0x400_0000, "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sits at byte 0x10000"), "{e}");
    }
}
