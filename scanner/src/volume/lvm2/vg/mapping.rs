//! From parsed segments to read mappings: each segment's areas resolved to PV slots or LV
//! indices, checked against the PVs' extents, segments sorted and contiguous.

use std::collections::HashMap;

use super::super::segments::{self, AreaTarget, Segment, SegmentKind};
use super::{MappedSegment, Mapping, Place, PvSlot};
use crate::error::{Error, Result};

pub(super) fn kind_name(k: &SegmentKind) -> String {
    match k {
        SegmentKind::Striped { areas, .. } if areas.len() == 1 => "linear".into(),
        SegmentKind::Striped { .. } => "striped".into(),
        SegmentKind::Mirrored { .. } => "mirror".into(),
        SegmentKind::Zero => "zero".into(),
        SegmentKind::Snapshot { .. } => "snapshot".into(),
        SegmentKind::ThinPool { .. } => "thin-pool".into(),
        SegmentKind::Thin { .. } => "thin".into(),
        SegmentKind::Unsupported { kind } => kind.clone(),
    }
}

pub(super) fn map_segments(
    mut segs: Vec<Segment>,
    keys: &HashMap<&str, usize>,
    slots: &[PvSlot],
    names: &HashMap<String, usize>,
    extent_bytes: u64,
    object: &str,
) -> Result<(Vec<MappedSegment>, u64)> {
    if segs.len() > segments::MAX_SEGMENTS {
        return Err(Error::limit(
            object,
            format!("more than {} segments", segments::MAX_SEGMENTS),
        ));
    }
    segs.sort_by_key(|s| s.start_extent);
    let count = segs.len();
    let mut next = 0u64;
    let mut out = Vec::with_capacity(segs.len());
    for s in segs {
        if s.start_extent != next {
            return Err(Error::corrupt(
                object,
                s.offset,
                format!(
                    "segment at extent {} does not follow the previous one (ends at {next}): overlap or gap",
                    s.start_extent
                ),
            ));
        }
        next = s
            .start_extent
            .checked_add(s.extent_count)
            .ok_or_else(|| Error::corrupt(object, s.offset, "extent count overflows"))?;
        let too_big = || Error::corrupt(object, s.offset, "segment size overflows");
        let len = s
            .extent_count
            .checked_mul(extent_bytes)
            .ok_or_else(too_big)?;
        let start = s
            .start_extent
            .checked_mul(extent_bytes)
            .ok_or_else(too_big)?;
        let area_extents = s.area_extents();
        let area_bytes = area_extents.checked_mul(extent_bytes).ok_or_else(too_big)?;
        let place = |a: &segments::Area| -> Result<Place> {
            let end = a
                .start_extent
                .checked_add(area_extents)
                .ok_or_else(too_big)?;
            match &a.target {
                AreaTarget::Pv(key) => {
                    let slot = *keys.get(key.as_str()).ok_or_else(|| {
                        Error::corrupt(object, s.offset, format!("segment names unknown PV {key}"))
                    })?;
                    if end > slots[slot].pe_count {
                        return Err(Error::corrupt(
                            object,
                            s.offset,
                            format!(
                                "segment maps extents {}..{end} of {key}, which has {}",
                                a.start_extent, slots[slot].pe_count
                            ),
                        ));
                    }
                    Ok(Place::Pv {
                        slot,
                        start_extent: a.start_extent,
                    })
                }
                AreaTarget::Lv(name) => {
                    let lv = *names.get(name).ok_or_else(|| {
                        Error::corrupt(object, s.offset, format!("segment names unknown LV {name}"))
                    })?;
                    Ok(Place::Lv {
                        lv,
                        start_extent: a.start_extent,
                    })
                }
            }
        };
        let mapping = match &s.kind {
            SegmentKind::Striped {
                stripe_sectors,
                areas,
            } => Mapping::Striped {
                stripe_bytes: stripe_sectors.checked_mul(512).ok_or_else(too_big)?,
                areas: areas.iter().map(place).collect::<Result<_>>()?,
            },
            SegmentKind::Mirrored { images } => Mapping::Mirror {
                images: images.iter().map(place).collect::<Result<_>>()?,
                chosen: 0,
            },
            SegmentKind::Zero => Mapping::Zero,
            SegmentKind::Unsupported { kind } => {
                return Err(Error::unsupported(
                    object,
                    format!("LVM2 {kind} segments are not read"),
                ))
            }
            SegmentKind::ThinPool { metadata, data } => {
                let lv = |n: &String| {
                    names.get(n).copied().ok_or_else(|| {
                        Error::corrupt(object, s.offset, format!("thin pool names unknown LV {n}"))
                    })
                };
                Mapping::Pool {
                    meta: lv(metadata)?,
                    data: lv(data)?,
                }
            }
            SegmentKind::Thin { pool, device_id } => Mapping::Thin {
                pool: names.get(pool).copied().ok_or_else(|| {
                    Error::corrupt(
                        object,
                        s.offset,
                        format!("thin LV names unknown pool {pool}"),
                    )
                })?,
                device_id: *device_id,
            },
            SegmentKind::Snapshot {
                origin, cow_store, ..
            } => {
                if s.start_extent != 0 || count != 1 {
                    return Err(Error::corrupt(
                        object,
                        s.offset,
                        "a snapshot segment must be its LV's only segment",
                    ));
                }
                let lv = |n: &String| {
                    names.get(n).copied().ok_or_else(|| {
                        Error::corrupt(object, s.offset, format!("snapshot names unknown LV {n}"))
                    })
                };
                Mapping::Snapshot {
                    origin: lv(origin)?,
                    cow: lv(cow_store)?,
                }
            }
        };
        out.push(MappedSegment {
            start,
            len,
            area_bytes,
            mapping,
        });
    }
    Ok((out, next))
}
