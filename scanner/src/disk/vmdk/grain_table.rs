//! Grain directories and grain tables of sparse extents: VMware "Virtual Disk Format 1.1",
//! section "Grain Directory and Grain Table" (hosted sparse `KDMV` extents) and the same two-level
//! map of ESX `COWD` sparse extents.
//!
//! A grain directory (GD) entry is the sector of one grain table (GT), 0 if that whole table is
//! unallocated; a GT entry is the sector of one grain, 0 if unallocated (read from the parent disk
//! or as zeros) and, with the zeroed-grain flag, 1 for a grain that reads as zeros. Every table
//! location is checked against the extent file's size when the directory is loaded; grain
//! locations are checked when they are used. Grain tables are kept in a bounded LRU cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::block::{read_vec, SharedSource};
use crate::error::{Error, Result};

use super::sparse_header::SECTOR;

/// Largest grain directory read (4 bytes per table; 64 TiB of 64 KiB grains needs 8 MiB).
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
    /// Whether GT entry 1 means a zero grain.
    pub zeroed_grain: bool,
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

/// Where one grain's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrainMapping {
    /// Not allocated in this extent: read the parent disk (or zeros).
    Unallocated,
    /// Allocated as zeros (zeroed-grain GTE).
    Zero,
    /// At this byte offset of the extent file (for compressed grains: the grain marker).
    Allocated(u64),
}

/// A loaded grain directory with its grain-table cache.
#[derive(Debug)]
pub struct GrainTables {
    file: SharedSource,
    geometry: SparseGeometry,
    directory: Vec<u32>,
    cache: Mutex<GtCache>,
}

#[derive(Debug, Default)]
struct GtCache {
    map: HashMap<u64, (Arc<[u32]>, u64)>,
    tick: u64,
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
        let bytes = read_vec(
            file.as_ref(),
            gd_at,
            entries.saturating_mul(4),
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
        let directory: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let gt_bytes = u64::from(geometry.gtes_per_gt) * 4;
        for (i, &sector) in directory.iter().enumerate() {
            if sector == 0 {
                continue;
            }
            let at = u64::from(sector) * SECTOR;
            if at.checked_add(gt_bytes).is_none_or(|end| end > file.size()) {
                return Err(Error::corrupt(
                    &object,
                    gd_at + (i as u64) * 4,
                    format!(
                        "grain directory entry {i} points to a grain table at sector {sector}, \
                         past the end of the file ({} bytes)",
                        file.size()
                    ),
                ));
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

    fn table(&self, gt_index: u64) -> Result<Option<Arc<[u32]>>> {
        let Some(&sector) = usize::try_from(gt_index)
            .ok()
            .and_then(|i| self.directory.get(i))
        else {
            return Ok(None);
        };
        if sector == 0 {
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
        let at = u64::from(sector) * SECTOR;
        let len = u64::from(self.geometry.gtes_per_gt) * 4;
        let bytes = read_vec(self.file.as_ref(), at, len, len)?;
        let table: Arc<[u32]> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
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
        Ok(match entry {
            0 => GrainMapping::Unallocated,
            1 if self.geometry.zeroed_grain => GrainMapping::Zero,
            sector => GrainMapping::Allocated(u64::from(sector) * SECTOR),
        })
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
            zeroed_grain: true,
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
