//! Grain directories and grain tables of sparse extents: VMware "Virtual Disk Format 1.1",
//! section "Grain Directory and Grain Table" (hosted sparse `KDMV` extents), the same two-level
//! map of ESX `COWD` sparse extents, and the 64-bit map of ESXi `SESPARSE` extents (layout as
//! described in [`super::sesparse_header`]).
//!
//! A grain directory (GD) entry locates one grain table (GT), 0 if that whole table is
//! unallocated; a GT entry locates one grain, 0 if unallocated (read from the parent disk or as
//! zeros); some entries mean "reads as zeros" (the zeroed-grain GTE 1 of `KDMV`, the zero and
//! unmapped types of `SESPARSE`). Every table location is checked against the extent file's size
//! when the directory is loaded; grain locations are checked when they are used. Grain tables are
//! kept in a bounded LRU cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::block::{read_vec, SharedSource};
use crate::error::{Error, Result};

use super::sparse_header::SECTOR;

/// Largest grain directory read (64 TiB of 64 KiB grains in 512-entry tables needs 8 MiB).
pub const MAX_GD_BYTES: u64 = 64 << 20;
/// Grain tables kept in memory per extent.
pub const GT_CACHE_ENTRIES: usize = 1024;

/// The shape of a sparse extent's two-level map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseGeometry {
    /// Extent capacity in sectors.
    pub capacity_sectors: u64,
    /// Grain size in sectors (power of two, bounded by the header parser).
    pub grain_sectors: u64,
    /// Entries per grain table (bounded by the header parser).
    pub gtes_per_gt: u32,
    /// How directory and table entries are encoded.
    pub format: MapFormat,
}

impl SparseGeometry {
    /// Grain size in bytes.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_sectors.saturating_mul(SECTOR)
    }

    /// Number of grain directory entries needed to cover the capacity.
    pub fn gd_entries(&self) -> u64 {
        let per_gt = self
            .grain_sectors
            .saturating_mul(u64::from(self.gtes_per_gt));
        self.capacity_sectors.div_ceil(per_gt.max(1))
    }
}

/// Encoding of grain directory and grain table entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapFormat {
    /// 32-bit sector numbers (`KDMV`, `COWD`); with `zeroed_grain`, GT entry 1 is a zero grain.
    Sector32 {
        /// Whether GT entry 1 means a zero grain.
        zeroed_grain: bool,
    },
    /// 64-bit `SESPARSE` entries: GD entries hold a table number (top 32 bits `0x10000000`),
    /// GT entries a type nibble and a grain number.
    SeSparse {
        /// Sector where grain tables start.
        tables_sector: u64,
        /// Sector where grains start.
        grains_sector: u64,
    },
}

impl MapFormat {
    fn entry_bytes(self) -> u64 {
        match self {
            MapFormat::Sector32 { .. } => 4,
            MapFormat::SeSparse { .. } => 8,
        }
    }
}

/// Where one grain's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrainMapping {
    /// Not allocated in this extent: read the parent disk (or zeros).
    Unallocated,
    /// Allocated as zeros (zeroed-grain GTE, SESPARSE zero or unmapped grain).
    Zero,
    /// At this byte offset of the extent file (for compressed grains: the grain marker).
    Allocated(u64),
}

/// A loaded grain directory with its grain-table cache.
#[derive(Debug)]
pub struct GrainTables {
    file: SharedSource,
    geometry: SparseGeometry,
    /// Byte offset of each grain table in the file, 0 for an unallocated table.
    directory: Vec<u64>,
    cache: Mutex<GtCache>,
}

#[derive(Debug, Default)]
struct GtCache {
    map: HashMap<u64, (Arc<[u64]>, u64)>,
    tick: u64,
}

/// Little-endian entries of `width` (4 or 8) bytes.
fn decode(bytes: &[u8], width: u64) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks_exact(width as usize).map(|c| {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(b)
    })
}

impl GrainTables {
    /// Loads the grain directory at sector `gd_sector` of `file` and checks that every table it
    /// names lies inside the file.
    pub fn load(file: SharedSource, geometry: SparseGeometry, gd_sector: u64) -> Result<Self> {
        let object = file.name().to_string();
        let entries = geometry.gd_entries();
        let gd_at = gd_sector
            .checked_mul(SECTOR)
            .ok_or_else(|| Error::corrupt(&object, 0, "grain directory offset overflows"))?;
        let width = geometry.format.entry_bytes();
        let bytes = read_vec(
            file.as_ref(),
            gd_at,
            entries.saturating_mul(width),
            MAX_GD_BYTES,
        )
        .map_err(|e| match e {
            Error::OutOfBounds { .. } => Error::corrupt(
                &object,
                gd_at,
                format!("grain directory of {entries} entries runs past the end of the file"),
            ),
            other => other,
        })?;
        let gt_bytes = u64::from(geometry.gtes_per_gt) * width;
        let mut directory = Vec::with_capacity(bytes.len() / width as usize);
        for (i, raw) in decode(&bytes, width).enumerate() {
            let entry_at = gd_at + (i as u64) * width;
            if raw == 0 {
                directory.push(0);
                continue;
            }
            let at = match geometry.format {
                MapFormat::Sector32 { .. } => raw.checked_mul(SECTOR),
                MapFormat::SeSparse { tables_sector, .. } => {
                    if raw >> 32 != 0x1000_0000 {
                        return Err(Error::corrupt(
                            &object,
                            entry_at,
                            format!("SESPARSE grain directory entry {i} is {raw:#018x}"),
                        ));
                    }
                    (raw & 0xffff_ffff)
                        .checked_mul(gt_bytes)
                        .and_then(|o| tables_sector.checked_mul(SECTOR)?.checked_add(o))
                }
            };
            match at {
                Some(at)
                    if at
                        .checked_add(gt_bytes)
                        .is_some_and(|end| end <= file.size()) =>
                {
                    directory.push(at)
                }
                _ => {
                    return Err(Error::corrupt(
                        &object,
                        entry_at,
                        format!(
                            "grain directory entry {i} ({raw:#x}) points to a grain table past \
                             the end of the file ({} bytes)",
                            file.size()
                        ),
                    ))
                }
            }
        }
        Ok(GrainTables {
            file,
            geometry,
            directory,
            cache: Mutex::new(GtCache::default()),
        })
    }

    /// The map's geometry.
    pub fn geometry(&self) -> &SparseGeometry {
        &self.geometry
    }

    fn table(&self, gt_index: u64) -> Result<Option<Arc<[u64]>>> {
        let Some(&at) = usize::try_from(gt_index)
            .ok()
            .and_then(|i| self.directory.get(i))
        else {
            return Ok(None);
        };
        if at == 0 {
            return Ok(None);
        }
        {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            c.tick = c.tick.wrapping_add(1);
            let tick = c.tick;
            if let Some((t, used)) = c.map.get_mut(&gt_index) {
                *used = tick;
                return Ok(Some(t.clone()));
            }
        }
        // In range: checked in `load`.
        let width = self.geometry.format.entry_bytes();
        let len = u64::from(self.geometry.gtes_per_gt) * width;
        let bytes = read_vec(self.file.as_ref(), at, len, len)?;
        let table: Arc<[u64]> = decode(&bytes, width).collect();
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.map.len() >= GT_CACHE_ENTRIES {
            // Drop the least recently used eighth in one pass.
            let mut ages: Vec<u64> = c.map.values().map(|(_, used)| *used).collect();
            ages.sort_unstable();
            let cutoff = ages.get(ages.len() / 8).copied().unwrap_or(0);
            c.map.retain(|_, (_, used)| *used > cutoff);
        }
        c.tick = c.tick.wrapping_add(1);
        let tick = c.tick;
        c.map.insert(gt_index, (table.clone(), tick));
        Ok(Some(table))
    }

    /// Where grain number `grain` (counted from the start of the extent) is.
    pub fn lookup(&self, grain: u64) -> Result<GrainMapping> {
        let per = u64::from(self.geometry.gtes_per_gt);
        let Some(table) = self.table(grain / per)? else {
            return Ok(GrainMapping::Unallocated);
        };
        let entry = usize::try_from(grain % per)
            .ok()
            .and_then(|i| table.get(i).copied())
            .unwrap_or(0);
        match self.geometry.format {
            MapFormat::Sector32 { zeroed_grain } => Ok(match entry {
                0 => GrainMapping::Unallocated,
                1 if zeroed_grain => GrainMapping::Zero,
                sector => GrainMapping::Allocated(sector.saturating_mul(SECTOR)),
            }),
            MapFormat::SeSparse { grains_sector, .. } => match entry >> 60 {
                0 if entry == 0 => Ok(GrainMapping::Unallocated),
                // 1: unmapped by the guest (SCSI UNMAP), 2: written as zeros.
                1 | 2 => Ok(GrainMapping::Zero),
                3 => {
                    let number = ((entry & 0x0fff_0000_0000_0000) >> 48)
                        | ((entry & 0x0000_ffff_ffff_ffff) << 12);
                    number
                        .checked_mul(self.geometry.grain_sectors)
                        .and_then(|s| s.checked_add(grains_sector))
                        .and_then(|s| s.checked_mul(SECTOR))
                        .map(GrainMapping::Allocated)
                        .ok_or_else(|| {
                            Error::corrupt(
                                self.file.name(),
                                0,
                                format!("SESPARSE grain table entry {entry:#018x} overflows"),
                            )
                        })
                }
                _ => Err(Error::corrupt(
                    self.file.name(),
                    0,
                    format!("SESPARSE grain table entry {entry:#018x} for grain {grain}"),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;

    fn geometry() -> SparseGeometry {
        SparseGeometry {
            capacity_sectors: 4 * 8 * 2,
            grain_sectors: 8,
            gtes_per_gt: 4,
            format: MapFormat::Sector32 { zeroed_grain: true },
        }
    }

    #[test]
    fn maps_allocated_zero_and_unallocated_grains() {
        // GD at sector 1 (2 entries), GT 0 at sector 2, GT 1 unallocated.
        let mut img = vec![0u8; 512 * 4];
        img[512..516].copy_from_slice(&2u32.to_le_bytes());
        let gt = [3u32, 0, 1, 3];
        for (i, v) in gt.iter().enumerate() {
            img[1024 + i * 4..1028 + i * 4].copy_from_slice(&v.to_le_bytes());
        }
        let t = GrainTables::load(Arc::new(MemSource::new(img, "x")), geometry(), 1).unwrap();
        assert_eq!(t.lookup(0).unwrap(), GrainMapping::Allocated(3 * 512));
        assert_eq!(t.lookup(1).unwrap(), GrainMapping::Unallocated);
        assert_eq!(t.lookup(2).unwrap(), GrainMapping::Zero);
        assert_eq!(t.lookup(5).unwrap(), GrainMapping::Unallocated);
        assert_eq!(t.lookup(u64::MAX).unwrap(), GrainMapping::Unallocated);
    }

    #[test]
    fn refuses_tables_past_the_end_of_the_file() {
        let mut img = vec![0u8; 512 * 4];
        img[512..516].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let err = GrainTables::load(Arc::new(MemSource::new(img, "x")), geometry(), 1).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
        let img = vec![0u8; 512];
        assert!(GrainTables::load(Arc::new(MemSource::new(img, "x")), geometry(), 1).is_err());
    }
}
