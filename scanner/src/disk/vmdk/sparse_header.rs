//! The hosted sparse extent header (`SparseExtentHeader`, magic `KDMV`) of VMware's "Virtual
//! Disk Format 1.1", section "Hosted Sparse Extent Header", including the stream-optimized
//! variant (section "Stream-Optimized Compressed Sparse Extents": compressed grains, markers and
//! `gdOffset == GD_AT_END` with the real header in a footer).
//!
//! All fields are little-endian; offsets and sizes are in 512-byte sectors. Every value is
//! range-checked here so that the grain-table code can compute with it without overflow.

use crate::block::le;
use crate::error::{Error, Result};

/// `KDMV` as it appears at byte 0.
pub const MAGIC: &[u8; 4] = b"KDMV";
/// Size of the header (one sector).
pub const HEADER_SIZE: usize = 512;
/// Bytes per sector: every offset in the format counts these.
pub const SECTOR: u64 = 512;

/// Flag bit 0: the newline-detection characters are valid.
pub const FLAG_NL_DETECT: u32 = 1 << 0;
/// Flag bit 1: a redundant grain directory (and tables) is kept at `rgdOffset`.
pub const FLAG_REDUNDANT_GD: u32 = 1 << 1;
/// Flag bit 2: grain table entry 1 means "grain reads as zeros" (zeroed-grain GTE).
pub const FLAG_ZEROED_GRAIN: u32 = 1 << 2;
/// Flag bit 16: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 1 << 16;
/// Flag bit 17: the extent contains markers (stream-optimized).
pub const FLAG_MARKERS: u32 = 1 << 17;

/// `compressAlgorithm` value for DEFLATE (stored as zlib streams, RFC 1950).
pub const COMPRESSION_DEFLATE: u16 = 1;
/// `gdOffset` value meaning "the grain directory location is in the footer".
pub const GD_AT_END: u64 = u64::MAX;

/// Largest grain accepted (VMware uses 64 KiB; the format allows any power of two).
pub const MAX_GRAIN_SECTORS: u64 = (16 << 20) / SECTOR;
/// Most grain table entries per grain table accepted (VMware and QEMU use 512).
pub const MAX_GTES_PER_GT: u32 = 16384;

/// A parsed and checked hosted sparse extent header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseHeader {
    /// Format version (1, 2 or 3).
    pub version: u32,
    /// Flag bits (`FLAG_*`).
    pub flags: u32,
    /// Extent capacity in sectors.
    pub capacity: u64,
    /// Grain size in sectors (a power of two).
    pub grain_sectors: u64,
    /// Embedded descriptor offset in sectors (0: none).
    pub descriptor_offset: u64,
    /// Embedded descriptor size in sectors.
    pub descriptor_sectors: u64,
    /// Grain table entries per grain table.
    pub gtes_per_gt: u32,
    /// Redundant grain directory offset in sectors (0: none).
    pub rgd_offset: u64,
    /// Grain directory offset in sectors ([`GD_AT_END`]: see the footer).
    pub gd_offset: u64,
    /// Sectors of metadata before the first grain.
    pub overhead: u64,
    /// The extent was not closed cleanly.
    pub unclean_shutdown: bool,
    /// Compression algorithm (0 none, [`COMPRESSION_DEFLATE`]).
    pub compress_algorithm: u16,
}

impl SparseHeader {
    /// Parses and checks the 512-byte header in `b` (of the file `object`, at byte `at`).
    pub fn parse(b: &[u8], object: &str, at: u64) -> Result<Self> {
        let corrupt = |field_at: u64, detail: String| Error::corrupt(object, at + field_at, detail);
        if b.len() < HEADER_SIZE || b.get(0..4) != Some(MAGIC.as_slice()) {
            return Err(corrupt(
                0,
                "not a VMDK sparse extent header (no KDMV magic)".into(),
            ));
        }
        // Every read below is inside the 512 bytes checked above.
        let u32_at = |o: usize| le::u32(b, o).unwrap_or(0);
        let u64_at = |o: usize| le::u64(b, o).unwrap_or(0);
        let h = SparseHeader {
            version: u32_at(4),
            flags: u32_at(8),
            capacity: u64_at(12),
            grain_sectors: u64_at(20),
            descriptor_offset: u64_at(28),
            descriptor_sectors: u64_at(36),
            gtes_per_gt: u32_at(44),
            rgd_offset: u64_at(48),
            gd_offset: u64_at(56),
            overhead: u64_at(64),
            unclean_shutdown: b.get(72).copied().unwrap_or(0) != 0,
            compress_algorithm: le::u16(b, 77).unwrap_or(0),
        };
        if !(1..=3).contains(&h.version) {
            return Err(Error::unsupported(
                object,
                format!(
                    "VMDK sparse extent version {} (only 1-3 are known)",
                    h.version
                ),
            ));
        }
        if h.grain_sectors == 0
            || !h.grain_sectors.is_power_of_two()
            || h.grain_sectors > MAX_GRAIN_SECTORS
        {
            return Err(corrupt(
                20,
                format!(
                    "grain size of {} sectors (must be a power of two up to {MAX_GRAIN_SECTORS})",
                    h.grain_sectors
                ),
            ));
        }
        if h.gtes_per_gt == 0 || h.gtes_per_gt > MAX_GTES_PER_GT {
            return Err(corrupt(
                44,
                format!(
                    "{} grain table entries per table (1..={MAX_GTES_PER_GT} accepted)",
                    h.gtes_per_gt
                ),
            ));
        }
        let max_sectors = crate::disk::MAX_VIRTUAL_SIZE / SECTOR;
        if h.capacity > max_sectors {
            return Err(corrupt(
                12,
                format!(
                    "capacity of {} sectors exceeds the {}-byte limit",
                    h.capacity,
                    crate::disk::MAX_VIRTUAL_SIZE
                ),
            ));
        }
        if h.flags & FLAG_COMPRESSED != 0 && h.compress_algorithm != COMPRESSION_DEFLATE {
            return Err(Error::unsupported_compression(
                object,
                format!("VMDK grain compression algorithm {}", h.compress_algorithm),
            ));
        }
        Ok(h)
    }

    /// Whether grains are compressed.
    pub fn compressed(&self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    /// Whether grains are preceded by markers (stream-optimized).
    pub fn markers(&self) -> bool {
        self.flags & FLAG_MARKERS != 0
    }

    /// Whether grain table entry 1 means a zero grain.
    pub fn zeroed_grain(&self) -> bool {
        self.flags & FLAG_ZEROED_GRAIN != 0
    }

    /// Grain size in bytes (at most [`MAX_GRAIN_SECTORS`] sectors: cannot overflow).
    pub fn grain_bytes(&self) -> u64 {
        self.grain_sectors * SECTOR
    }

    /// Capacity in bytes (at most `MAX_VIRTUAL_SIZE`: cannot overflow).
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity * SECTOR
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid header for tests: `capacity` sectors, 128-sector grains, 512 GTEs per table.
    pub(crate) fn header_bytes(capacity: u64, gd_offset: u64, flags: u32) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[12..20].copy_from_slice(&capacity.to_le_bytes());
        b[20..28].copy_from_slice(&128u64.to_le_bytes());
        b[44..48].copy_from_slice(&512u32.to_le_bytes());
        b[56..64].copy_from_slice(&gd_offset.to_le_bytes());
        b[73..77].copy_from_slice(b"\n \r\n");
        b
    }

    #[test]
    fn parses_a_valid_header() {
        let h = SparseHeader::parse(&header_bytes(10240, 21, 3), "x", 0).unwrap();
        assert_eq!(h.capacity_bytes(), 10240 * 512);
        assert_eq!(h.grain_bytes(), 65536);
        assert_eq!(h.gd_offset, 21);
        assert!(!h.compressed());
    }

    #[test]
    fn refuses_bad_grain_sizes_and_absurd_capacities() {
        let mut b = header_bytes(10240, 21, 3);
        b[20..28].copy_from_slice(&100u64.to_le_bytes());
        assert!(SparseHeader::parse(&b, "x", 0).is_err());
        let mut b = header_bytes(u64::MAX / 2, 21, 3);
        let err = SparseHeader::parse(&b, "x", 0).unwrap_err();
        assert!(err.to_string().contains("capacity"), "{err}");
        b[12..20].copy_from_slice(&1u64.to_le_bytes());
        b[44..48].copy_from_slice(&0u32.to_le_bytes());
        assert!(SparseHeader::parse(&b, "x", 0).is_err());
        assert!(SparseHeader::parse(&b[..100], "x", 0).is_err());
    }

    #[test]
    fn refuses_unknown_compression() {
        let mut b = header_bytes(10240, 21, FLAG_COMPRESSED);
        b[77..79].copy_from_slice(&7u16.to_le_bytes());
        let err = SparseHeader::parse(&b, "x", 0).unwrap_err();
        assert!(err.to_string().contains("compression"), "{err}");
    }
}
