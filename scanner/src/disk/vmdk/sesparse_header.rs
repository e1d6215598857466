//! The ESXi space-efficient sparse extent (`SESPARSE`, `-sesparse.vmdk`, the snapshot format of
//! VMFS 6 and of disks over 2 TiB). VMware has not published this layout; it follows the
//! description in QEMU's `block/vmdk.c` (the read-only `seSparse` support added in QEMU 4.1),
//! with the same strict checks since the format is undocumented.
//!
//! A constant header (sector 0, little-endian `u64` fields, offsets and sizes in sectors) locates
//! a volatile header, the journal, the grain directory, the grain tables and the grains. GD
//! entries are `0x10000000_nnnnnnnn` (grain table number `n`); GT entries carry a type in their top
//! nibble: 0 unallocated, 1 unmapped, 2 zero, 3 allocated (grain number in the other bits,
//! shuffled). A volatile header asking for journal replay means the extent is not consistent
//! without it: such extents are refused.

use crate::block::{le, read_vec, BlockSource};
use crate::error::{Error, Result};

use super::grain_table::{MapFormat, SparseGeometry};
use super::sparse_header::{MAX_GRAIN_SECTORS, MAX_GTES_PER_GT, SECTOR};

/// Magic of the constant header (`u64` at byte 0).
pub const CONST_MAGIC: u64 = 0xcafe_babe;
/// Magic of the volatile header.
pub const VOLATILE_MAGIC: u64 = 0xcafe_cafe;
/// The only version known.
pub const VERSION: u64 = 0x0000_0002_0000_0001;

/// A parsed and checked `SESPARSE` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeSparseHeader {
    /// Capacity in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub grain_sectors: u64,
    /// Grain table size in sectors.
    pub gt_sectors: u64,
    /// Grain directory offset in sectors.
    pub gd_offset: u64,
    /// Grain directory size in sectors.
    pub gd_sectors: u64,
    /// Grain tables offset in sectors.
    pub tables_offset: u64,
    /// Grains offset in sectors.
    pub grains_offset: u64,
}

impl SeSparseHeader {
    /// Reads and checks both headers of `file`.
    pub fn read(file: &dyn BlockSource) -> Result<Self> {
        let object = file.name();
        let b = read_vec(file, 0, SECTOR, SECTOR)?;
        let f = |i: usize| le::u64(&b, i * 8).unwrap_or(0);
        if f(0) != CONST_MAGIC {
            return Err(Error::corrupt(object, 0, "not a SESPARSE extent header"));
        }
        if f(1) != VERSION {
            return Err(Error::unsupported(
                object,
                format!("SESPARSE version {:#018x}", f(1)),
            ));
        }
        if f(5) != 0 || (6..10).any(|i| f(i) != 0) {
            return Err(Error::unsupported(
                object,
                format!("SESPARSE flags {:#x} or reserved fields set", f(5)),
            ));
        }
        let h = SeSparseHeader {
            capacity: f(2),
            grain_sectors: f(3),
            gt_sectors: f(4),
            gd_offset: f(16),
            gd_sectors: f(17),
            tables_offset: f(18),
            grains_offset: f(24),
        };
        if h.grain_sectors == 0
            || !h.grain_sectors.is_power_of_two()
            || h.grain_sectors > MAX_GRAIN_SECTORS
        {
            return Err(Error::corrupt(
                object,
                24,
                format!("SESPARSE grain size of {} sectors", h.grain_sectors),
            ));
        }
        let entries = h.gt_sectors.saturating_mul(SECTOR / 8);
        if entries == 0 || entries > u64::from(MAX_GTES_PER_GT) {
            return Err(Error::corrupt(
                object,
                32,
                format!("SESPARSE grain table of {} sectors", h.gt_sectors),
            ));
        }
        if h.capacity > crate::disk::MAX_VIRTUAL_SIZE / SECTOR {
            return Err(Error::corrupt(
                object,
                16,
                format!("SESPARSE capacity of {} sectors", h.capacity),
            ));
        }
        if h.gd_sectors.saturating_mul(SECTOR / 8) < h.geometry().gd_entries() {
            return Err(Error::corrupt(
                object,
                136,
                format!(
                    "SESPARSE grain directory of {} sectors cannot map {} sectors",
                    h.gd_sectors, h.capacity
                ),
            ));
        }
        let volatile_at = f(10).checked_mul(SECTOR).ok_or_else(|| {
            Error::corrupt(object, 80, "SESPARSE volatile header offset overflows")
        })?;
        let v = read_vec(file, volatile_at, SECTOR, SECTOR)?;
        if le::u64(&v, 0) != Some(VOLATILE_MAGIC) {
            return Err(Error::corrupt(
                object,
                volatile_at,
                "SESPARSE volatile header magic missing",
            ));
        }
        if le::u64(&v, 24).unwrap_or(0) != 0 {
            return Err(Error::unsupported(
                object,
                "SESPARSE extent with a journal to replay (not closed cleanly)",
            ));
        }
        Ok(h)
    }

    /// The grain map's shape.
    pub fn geometry(&self) -> SparseGeometry {
        SparseGeometry {
            capacity_sectors: self.capacity,
            grain_sectors: self.grain_sectors,
            // Bounded by MAX_GTES_PER_GT in `read`.
            gtes_per_gt: u32::try_from(self.gt_sectors.saturating_mul(SECTOR / 8))
                .unwrap_or(MAX_GTES_PER_GT),
            format: MapFormat::SeSparse {
                tables_sector: self.tables_offset,
                grains_sector: self.grains_offset,
            },
        }
    }

    /// Capacity in bytes (bounded in `read`).
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity * SECTOR
    }
}
