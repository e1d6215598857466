//! The ESX sparse extent header (magic `COWD`): the `VMFSSPARSE` extent type of VMware's
//! "Virtual Disk Format 1.1", section "ESX Server Sparse Extent Header" (ESX 2 redo logs and the
//! `-delta.vmdk` files of ESX snapshots). Little-endian; sizes in sectors; grain tables always
//! hold 4096 entries.

use crate::block::le;
use crate::error::{Error, Result};

use super::grain_table::{MapFormat, SparseGeometry};
use super::sparse_header::{MAX_GRAIN_SECTORS, SECTOR};

/// `COWD` as it appears at byte 0.
pub const MAGIC: &[u8; 4] = b"COWD";
/// Grain table entries per table in `COWD` extents (fixed by the format).
pub const GTES_PER_GT: u32 = 4096;
/// Offset of the parent file name of a child redo log.
const PARENT_NAME_AT: usize = 32;

/// A parsed and checked `COWD` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CowdHeader {
    /// Format version.
    pub version: u32,
    /// Flags.
    pub flags: u32,
    /// Capacity in sectors.
    pub capacity: u64,
    /// Grain size in sectors.
    pub grain_sectors: u64,
    /// Grain directory offset in sectors.
    pub gd_offset: u64,
    /// Number of grain directory entries.
    pub gd_entries: u32,
    /// Parent file name for ESX 2 child redo logs (empty for a root or an ESX 3+ delta).
    pub parent_name: String,
}

impl CowdHeader {
    /// Parses the header in `b` (at least 2048 bytes hold the parent name; 512 are required).
    pub fn parse(b: &[u8], object: &str) -> Result<Self> {
        if b.len() < 512 || b.get(0..4) != Some(MAGIC.as_slice()) {
            return Err(Error::corrupt(object, 0, "not a COWD sparse extent header"));
        }
        let u32_at = |o: usize| le::u32(b, o).unwrap_or(0);
        let name_bytes = b
            .get(PARENT_NAME_AT..PARENT_NAME_AT + 1024)
            .unwrap_or(&[])
            .split(|&c| c == 0)
            .next()
            .unwrap_or(&[]);
        let h = CowdHeader {
            version: u32_at(4),
            flags: u32_at(8),
            capacity: u64::from(u32_at(12)),
            grain_sectors: u64::from(u32_at(16)),
            gd_offset: u64::from(u32_at(20)),
            gd_entries: u32_at(24),
            parent_name: String::from_utf8_lossy(name_bytes).into_owned(),
        };
        if h.grain_sectors == 0
            || !h.grain_sectors.is_power_of_two()
            || h.grain_sectors > MAX_GRAIN_SECTORS
        {
            return Err(Error::corrupt(
                object,
                16,
                format!("COWD grain size of {} sectors", h.grain_sectors),
            ));
        }
        let geometry = h.geometry();
        if u64::from(h.gd_entries) < geometry.gd_entries() {
            return Err(Error::corrupt(
                object,
                24,
                format!(
                    "COWD grain directory of {} entries cannot map {} sectors",
                    h.gd_entries, h.capacity
                ),
            ));
        }
        Ok(h)
    }

    /// The grain map's shape.
    pub fn geometry(&self) -> SparseGeometry {
        SparseGeometry {
            capacity_sectors: self.capacity,
            grain_sectors: self.grain_sectors,
            gtes_per_gt: GTES_PER_GT,
            format: MapFormat::Sector32 {
                zeroed_grain: false,
            },
        }
    }

    /// Capacity in bytes (a `u32` of sectors: cannot overflow).
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity * SECTOR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_a_cowd_header() {
        let mut b = vec![0u8; 2048];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&(4096u32 * 16).to_le_bytes());
        b[16..20].copy_from_slice(&16u32.to_le_bytes());
        b[20..24].copy_from_slice(&4u32.to_le_bytes());
        b[24..28].copy_from_slice(&1u32.to_le_bytes());
        let h = CowdHeader::parse(&b, "x").unwrap();
        assert_eq!(h.capacity_bytes(), 4096 * 16 * 512);
        assert!(h.parent_name.is_empty());
        b[12..16].copy_from_slice(&(4096u32 * 16 + 1).to_le_bytes());
        assert!(CowdHeader::parse(&b, "x").is_err());
        b[16..20].copy_from_slice(&3u32.to_le_bytes());
        assert!(CowdHeader::parse(&b, "x").is_err());
    }
}
