//! Reading a sparse extent (hosted `KDMV`, stream-optimized, ESX `COWD`, or ESXi `SESPARSE`)
//! through its grain map: VMware "Virtual Disk Format 1.1", sections "Hosted Sparse Extents",
//! "Stream-Optimized Compressed Sparse Extents" and "ESX Server Sparse Extents" (`SESPARSE`: see
//! [`super::sesparse_header`]).
//!
//! Runs of neighbouring grains that are contiguous in the file (or all zero, or all unallocated)
//! are read with one call, so sequential reads of a freshly converted disk are few large reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::block::{read_vec, BlockSource, SharedSource};
use crate::error::{Error, Result};

use super::cowd_header::CowdHeader;
use super::grain_table::{GrainMapping, GrainTables, MapFormat, SparseGeometry};
use super::sesparse_header::SeSparseHeader;
use super::sparse_header::{SparseHeader, FLAG_REDUNDANT_GD, GD_AT_END, HEADER_SIZE};
use super::stream_optimized;

/// Decompressed grains kept per extent (sequential reads of one grain in small pieces).
pub const GRAIN_CACHE_ENTRIES: usize = 16;
/// Longest run of grains read in one call (bounds the size of one read, not memory).
const MAX_RUN_BYTES: u64 = 32 << 20;

/// A sparse extent opened for reading.
#[derive(Debug)]
pub struct SparseExtent {
    file: SharedSource,
    tables: GrainTables,
    capacity: u64,
    compressed: bool,
    grains: Mutex<GrainCache>,
}

#[derive(Debug, Default)]
struct GrainCache {
    map: HashMap<u64, (Arc<[u8]>, u64)>,
    tick: u64,
}

/// What opening a hosted sparse extent found, for `info`.
#[derive(Debug, Clone)]
pub struct SparseInfo {
    /// The header in effect (the footer's for stream-optimized extents with `GD_AT_END`).
    pub header: SparseHeader,
    /// Remarks (redundant directory used, unclean shutdown...).
    pub notes: Vec<String>,
}

impl SparseExtent {
    /// Opens a hosted sparse (`KDMV`) extent, including stream-optimized ones.
    pub fn open_kdmv(file: SharedSource) -> Result<(Self, SparseInfo)> {
        let head = read_vec(file.as_ref(), 0, HEADER_SIZE as u64, HEADER_SIZE as u64)?;
        let mut header = SparseHeader::parse(&head, file.name(), 0)?;
        let mut notes = Vec::new();
        if header.gd_offset == GD_AT_END {
            let footer = stream_optimized::read_footer(file.as_ref())?;
            notes.push("grain directory located through the footer".to_string());
            // The descriptor location stays the one of the first header.
            let (off, len) = (header.descriptor_offset, header.descriptor_sectors);
            header = footer;
            if header.descriptor_offset == 0 {
                header.descriptor_offset = off;
                header.descriptor_sectors = len;
            }
        }
        if header.unclean_shutdown {
            notes.push("extent was not closed cleanly (unclean shutdown flag set)".to_string());
        }
        let geometry = SparseGeometry {
            capacity_sectors: header.capacity,
            grain_sectors: header.grain_sectors,
            gtes_per_gt: header.gtes_per_gt,
            format: MapFormat::Sector32 {
                zeroed_grain: header.zeroed_grain(),
            },
        };
        let redundant = (header.flags & FLAG_REDUNDANT_GD != 0 && header.rgd_offset != 0)
            .then_some(header.rgd_offset);
        let tables = match GrainTables::load(file.clone(), geometry, header.gd_offset) {
            Ok(t) => t,
            Err(primary) => match redundant {
                Some(rgd) => {
                    let t = GrainTables::load(file.clone(), geometry, rgd).map_err(|e| {
                        Error::corrupt(
                            file.name(),
                            0,
                            format!(
                                "both grain directories are unusable: primary: {primary}; \
                                 redundant: {e}"
                            ),
                        )
                    })?;
                    notes.push(format!(
                        "primary grain directory unusable ({primary}); using the redundant one"
                    ));
                    t
                }
                None => return Err(primary),
            },
        };
        let extent = SparseExtent {
            file,
            tables,
            capacity: header.capacity_bytes(),
            compressed: header.compressed(),
            grains: Mutex::new(GrainCache::default()),
        };
        Ok((extent, SparseInfo { header, notes }))
    }

    /// Opens an ESX sparse (`COWD`) extent.
    pub fn open_cowd(file: SharedSource) -> Result<(Self, CowdHeader)> {
        let head = read_vec(file.as_ref(), 0, 2048.min(file.size()), 2048)?;
        let header = CowdHeader::parse(&head, file.name())?;
        let tables = GrainTables::load(file.clone(), header.geometry(), header.gd_offset)?;
        Ok((
            SparseExtent {
                file,
                tables,
                capacity: header.capacity_bytes(),
                compressed: false,
                grains: Mutex::new(GrainCache::default()),
            },
            header,
        ))
    }

    /// Opens an ESXi space-efficient sparse (`SESPARSE`) extent.
    pub fn open_sesparse(file: SharedSource) -> Result<Self> {
        let header = SeSparseHeader::read(file.as_ref())?;
        let tables = GrainTables::load(file.clone(), header.geometry(), header.gd_offset)?;
        Ok(SparseExtent {
            file,
            tables,
            capacity: header.capacity_bytes(),
            compressed: false,
            grains: Mutex::new(GrainCache::default()),
        })
    }

    /// Capacity of the extent in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether grains are compressed.
    pub fn compressed(&self) -> bool {
        self.compressed
    }

    /// Grain size in bytes.
    pub fn grain_bytes(&self) -> u64 {
        self.tables.geometry().grain_bytes()
    }

    /// Reads `buf` at `offset` of the extent; unallocated ranges are passed to `unallocated`
    /// (offset within the extent, buffer) which reads the parent disk or fills zeros.
    pub fn read(
        &self,
        offset: u64,
        buf: &mut [u8],
        unallocated: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        crate::block::check_bounds(self.file.name(), offset, buf.len(), self.capacity)?;
        let grain_bytes = self.grain_bytes();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let grain = pos / grain_bytes;
            let within = pos % grain_bytes;
            let remaining = (buf.len() - done) as u64;
            let first = self.tables.lookup(grain)?;
            let mut run = (grain_bytes - within).min(remaining);
            // Extend the run over grains that continue it.
            if !(self.compressed && matches!(first, GrainMapping::Allocated(_))) {
                let mut next = grain + 1;
                while run < remaining && run < MAX_RUN_BYTES {
                    let step = next - grain;
                    let continues = match (first, self.tables.lookup(next)?) {
                        (GrainMapping::Allocated(a), GrainMapping::Allocated(b)) => {
                            a.checked_add(step * grain_bytes) == Some(b)
                        }
                        (a, b) => a == b && !matches!(a, GrainMapping::Allocated(_)),
                    };
                    if !continues {
                        break;
                    }
                    run += grain_bytes.min(remaining - run);
                    next += 1;
                }
            }
            // `run` <= remaining, which fits in usize.
            let n = run as usize;
            let out = &mut buf[done..done + n];
            match first {
                GrainMapping::Zero => out.fill(0),
                GrainMapping::Unallocated => unallocated(pos, out)?,
                GrainMapping::Allocated(at) if self.compressed => {
                    let data = self.compressed_grain(grain, at)?;
                    let w = within as usize;
                    let src = data.get(w..w + n).ok_or_else(|| {
                        Error::corrupt(self.file.name(), at, "compressed grain too short")
                    })?;
                    out.copy_from_slice(src);
                }
                GrainMapping::Allocated(at) => {
                    let file_at = at.saturating_add(within);
                    if file_at
                        .checked_add(run)
                        .is_none_or(|end| end > self.file.size())
                    {
                        return Err(Error::corrupt(
                            self.file.name(),
                            at,
                            format!(
                                "grain {grain} is mapped to byte {at:#x}, past the end of the \
                                 file ({} bytes)",
                                self.file.size()
                            ),
                        ));
                    }
                    self.file.read_exact_at(file_at, out)?;
                }
            }
            done += n;
        }
        Ok(())
    }

    fn compressed_grain(&self, grain: u64, at: u64) -> Result<Arc<[u8]>> {
        {
            let mut c = self.grains.lock().unwrap_or_else(|p| p.into_inner());
            c.tick = c.tick.wrapping_add(1);
            let tick = c.tick;
            if let Some((g, used)) = c.map.get_mut(&grain) {
                *used = tick;
                return Ok(g.clone());
            }
        }
        let grain_bytes = self.grain_bytes();
        let start = grain.saturating_mul(grain_bytes);
        let needed = grain_bytes.min(self.capacity.saturating_sub(start));
        let data: Arc<[u8]> =
            stream_optimized::read_compressed_grain(self.file.as_ref(), at, grain_bytes, needed)?
                .into();
        let mut c = self.grains.lock().unwrap_or_else(|p| p.into_inner());
        if c.map.len() >= GRAIN_CACHE_ENTRIES {
            if let Some(oldest) = c.map.iter().min_by_key(|(_, (_, u))| *u).map(|(k, _)| *k) {
                c.map.remove(&oldest);
            }
        }
        c.tick = c.tick.wrapping_add(1);
        let tick = c.tick;
        c.map.insert(grain, (data.clone(), tick));
        Ok(data)
    }
}

impl SparseExtent {
    /// The extent file.
    pub fn file(&self) -> &dyn BlockSource {
        self.file.as_ref()
    }
}
