//! The logical volume read path: a read is split at segment and stripe boundaries and each
//! piece sent to the PV (or image LV) holding it.

use std::sync::Arc;

use super::super::snapshot::Placement;
use super::super::thin;
use super::{missing, LogicalVolume, Mapping, Place, VgMap, MAX_LV_NESTING};
use crate::block::{check_bounds, BlockSource};
use crate::error::{Error, Result};

impl BlockSource for LogicalVolume {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(&self.name, offset, buf.len(), self.size)?;
        self.vg.read(self.lv, offset, buf, 0)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl VgMap {
    pub(super) fn read(
        &self,
        lv: usize,
        mut offset: u64,
        mut buf: &mut [u8],
        depth: usize,
    ) -> Result<()> {
        let map = self
            .lvs
            .get(lv)
            .ok_or_else(|| Error::corrupt(&self.name, 0, "no such LV"))?;
        if depth > MAX_LV_NESTING {
            return Err(Error::limit(
                format!("{}/{}", self.name, map.name),
                format!("logical volumes nested deeper than {MAX_LV_NESTING}"),
            ));
        }
        while !buf.is_empty() {
            // Segments are sorted and contiguous (checked at assembly).
            let i = map.segments.partition_point(|s| s.start + s.len <= offset);
            let seg = map.segments.get(i).ok_or_else(|| {
                Error::corrupt(
                    format!("{}/{}", self.name, map.name),
                    offset,
                    "read past the last segment",
                )
            })?;
            let within = offset - seg.start;
            let mut n = (seg.len - within).min(buf.len() as u64);
            match &seg.mapping {
                Mapping::Zero => {
                    let k = usize::try_from(n).unwrap_or(buf.len());
                    buf[..k].fill(0);
                }
                Mapping::Pool { .. } => {
                    return Err(Error::unsupported(
                        format!("{}/{}", self.name, map.name),
                        "a thin pool is read through its thin volumes",
                    ))
                }
                Mapping::Thin { pool, device_id } => {
                    let k = usize::try_from(n).unwrap_or(buf.len());
                    n = self.read_thin(*pool, *device_id, offset, &mut buf[..k], depth)?;
                }
                Mapping::Snapshot { origin, cow } => {
                    // The only segment (checked at assembly): LV offsets are origin offsets.
                    let store = self.exception_store(lv, depth).map_err(|e| {
                        Error::corrupt(format!("{}/{}", self.name, map.name), 0, e.to_string())
                    })?;
                    let (from, at, len) = match store.place(offset, n) {
                        Placement::Origin { len } => (*origin, offset, len),
                        Placement::Cow { at, len } => (*cow, at, len),
                    };
                    n = len;
                    let k = usize::try_from(n).unwrap_or(buf.len());
                    self.read(from, at, &mut buf[..k], depth + 1)?;
                }
                Mapping::Mirror { images, chosen } => {
                    let k = usize::try_from(n).unwrap_or(buf.len());
                    self.read_place(images[*chosen], within, &mut buf[..k], depth)?;
                }
                Mapping::Striped {
                    stripe_bytes,
                    areas,
                } => {
                    let (area, area_off) = if areas.len() == 1 {
                        (0, within)
                    } else {
                        let stripe_no = within / stripe_bytes;
                        let in_stripe = within % stripe_bytes;
                        n = n.min(stripe_bytes - in_stripe);
                        let count = areas.len() as u64;
                        let row = stripe_no / count;
                        ((stripe_no % count) as usize, row * stripe_bytes + in_stripe)
                    };
                    if area_off.checked_add(n).is_none_or(|e| e > seg.area_bytes) {
                        return Err(Error::corrupt(
                            format!("{}/{}", self.name, map.name),
                            offset,
                            "stripe runs past its area",
                        ));
                    }
                    let k = usize::try_from(n).unwrap_or(buf.len());
                    self.read_place(areas[area], area_off, &mut buf[..k], depth)?;
                }
            }
            let k = usize::try_from(n).unwrap_or(buf.len());
            offset += n;
            buf = &mut buf[k..];
        }
        Ok(())
    }

    /// Reads from thin device `device_id` of pool LV `pool` at LV byte `offset`, up to the end
    /// of the thin block; returns how many bytes were read. Unmapped blocks read as zeros.
    fn read_thin(
        &self,
        pool: usize,
        device_id: u64,
        offset: u64,
        buf: &mut [u8],
        depth: usize,
    ) -> Result<u64> {
        let object = format!("{}/{}", self.name, self.lvs[pool].name);
        let Some(Mapping::Pool { meta, data }) =
            self.lvs[pool].segments.first().map(|s| &s.mapping)
        else {
            return Err(Error::corrupt(&object, 0, "not a thin pool"));
        };
        let (meta, data) = (*meta, *data);
        let read_meta = |off: u64, b: &mut [u8]| self.read(meta, off, b, depth + 1);
        let meta_size = self.lvs[meta].extents.saturating_mul(self.extent_bytes);
        let sb = self.thin[pool]
            .get_or_init(|| {
                thin::read_superblock(&read_meta, meta_size, &format!("{object} metadata"))
                    .map_err(Arc::new)
            })
            .as_ref()
            .map_err(|e| Error::corrupt(&object, 0, e.to_string()))?;
        let block = u64::from(sb.data_block_sectors) * 512;
        let in_block = offset % block;
        let n = (block - in_block).min(buf.len() as u64);
        let k = usize::try_from(n).unwrap_or(buf.len());
        match thin::map_block(
            &read_meta,
            sb,
            device_id,
            offset / block,
            &format!("{object} metadata"),
        )? {
            Some(db) => {
                let at = db
                    .checked_mul(block)
                    .and_then(|a| a.checked_add(in_block))
                    .ok_or_else(|| {
                        Error::corrupt(&object, 0, format!("data block {db} overflows"))
                    })?;
                self.read(data, at, &mut buf[..k], depth + 1)?;
            }
            None => buf[..k].fill(0),
        }
        Ok(n)
    }

    fn read_place(&self, place: Place, off: u64, buf: &mut [u8], depth: usize) -> Result<()> {
        match place {
            Place::Pv { slot, start_extent } => {
                let pv = &self.pvs[slot];
                let src = pv.source.as_ref().ok_or_else(|| missing(&self.name, pv))?;
                // In range: area bounds were checked against the PV at assembly.
                let at = pv.pe_start + start_extent * self.extent_bytes + off;
                src.read_exact_at(at, buf)
            }
            Place::Lv { lv, start_extent } => {
                self.read(lv, start_extent * self.extent_bytes + off, buf, depth + 1)
            }
        }
    }
}
