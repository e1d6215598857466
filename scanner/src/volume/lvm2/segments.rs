//! LVM2 logical volume segments as the text metadata describes them (lvm2's
//! `lib/format_text/import_vsn1.c` and each segment type's `text_import`: `lib/striped`,
//! `lib/mirror`, `lib/raid`, `lib/thin`, `lib/snapshot`; libvslvm's format document, section
//! 4.3 "logical volume segment"): which extents of which physical (or sub-logical) volume hold
//! each part of a logical volume.
//!
//! Readable here: `striped` (linear is a striped segment with one stripe), `raid0`, `mirror`
//! and `raid1` (one image is read: all images hold the same data), `zero`, `thin` (through its
//! pool's metadata, see [`super::thin`]), `snapshot` (the origin through the copy-on-write
//! store's exceptions, see [`super::snapshot`]). Caches and parity RAID are recognised and
//! named, and their volumes reported as not scanned.

use super::metadata::{Section, Value};
use crate::error::{Error, Result};

/// Most segments in one logical volume.
pub const MAX_SEGMENTS: usize = 65_536;
/// Most areas (stripes, images) in one segment.
pub const MAX_AREAS: usize = 256;

/// Where an area of a segment lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AreaTarget {
    /// Extents of a physical volume: the PV's key in `physical_volumes` (`pv0`).
    Pv(String),
    /// Extents of another logical volume (a RAID or mirror image): its name.
    Lv(String),
}

/// One area: a run of extents starting at `start_extent` of its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    /// The PV or LV holding the area.
    pub target: AreaTarget,
    /// First extent of the area in its target.
    pub start_extent: u64,
}

/// How a segment maps its extents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentKind {
    /// Data striped over `areas` in chunks of `stripe_sectors` (a single area: linear).
    Striped {
        /// Stripe size in 512-byte sectors (unused with one area).
        stripe_sectors: u64,
        /// The stripes, in order.
        areas: Vec<Area>,
    },
    /// Identical copies (`mirror`, `raid1`): any one image holds the data.
    Mirrored {
        /// The images, in order.
        images: Vec<Area>,
    },
    /// Reads as zeros.
    Zero,
    /// A thin pool: `metadata` and `data` are its hidden sub-LVs (`pool_tmeta`, `pool_tdata`).
    ThinPool {
        /// The metadata LV.
        metadata: String,
        /// The data LV.
        data: String,
    },
    /// A thin volume: blocks of thin device `device_id` of `pool`.
    Thin {
        /// The thin pool LV.
        pool: String,
        /// The thin device id in the pool's metadata.
        device_id: u64,
    },
    /// A classic snapshot (lvm2's hidden `snapshotN` LV): `cow_store` holds the exceptions
    /// against `origin`.
    Snapshot {
        /// The origin LV.
        origin: String,
        /// The LV holding the copy-on-write store (the snapshot as users name it).
        cow_store: String,
        /// Set when the metadata names it `merging_store`: `lvconvert --merge` is folding the
        /// snapshot back into its origin.
        merging: bool,
    },
    /// A segment type that is recognised but not read (thin, snapshot, cache, parity RAID...).
    Unsupported {
        /// The segment's `type`.
        kind: String,
    },
}

/// One segment of a logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First logical extent of the LV that this segment maps.
    pub start_extent: u64,
    /// Number of logical extents.
    pub extent_count: u64,
    /// The mapping.
    pub kind: SegmentKind,
    /// Byte offset of the segment's section in the metadata text (for errors).
    pub offset: u64,
}

impl Segment {
    /// Number of extents each area of this segment holds.
    pub fn area_extents(&self) -> u64 {
        match &self.kind {
            SegmentKind::Striped { areas, .. } => self.extent_count / (areas.len().max(1) as u64),
            _ => self.extent_count,
        }
    }
}

fn uint(s: &Section, key: &str, object: &str) -> Result<u64> {
    match s.get(key) {
        Some(Value::Int(i)) => u64::try_from(*i)
            .map_err(|_| Error::corrupt(object, s.offset, format!("{key} = {i} is negative"))),
        Some(_) => Err(Error::corrupt(
            object,
            s.offset,
            format!("{key} is not an integer"),
        )),
        None => Err(Error::corrupt(
            object,
            s.offset,
            format!("{key} is missing"),
        )),
    }
}

/// `[ "name", extent, "name", extent ... ]` pairs (striped `stripes`, mirror `mirrors`).
fn name_extent_pairs(s: &Section, key: &str, object: &str, pv: bool) -> Result<Vec<Area>> {
    let list = s
        .list(key)
        .ok_or_else(|| Error::corrupt(object, s.offset, format!("{key} list is missing")))?;
    if list.len() % 2 != 0 || list.is_empty() || list.len() / 2 > MAX_AREAS {
        return Err(Error::corrupt(
            object,
            s.offset,
            format!(
                "{key} holds {} items, expected 1 to {MAX_AREAS} name/extent pairs",
                list.len()
            ),
        ));
    }
    list.chunks(2)
        .map(|pair| match pair {
            [Value::Str(name), Value::Int(start)] => {
                let start_extent = u64::try_from(*start).map_err(|_| {
                    Error::corrupt(object, s.offset, format!("{key}: negative extent {start}"))
                })?;
                let target = if pv {
                    AreaTarget::Pv(name.clone())
                } else {
                    AreaTarget::Lv(name.clone())
                };
                Ok(Area {
                    target,
                    start_extent,
                })
            }
            _ => Err(Error::corrupt(
                object,
                s.offset,
                format!("{key} is not a list of name/extent pairs"),
            )),
        })
        .collect()
}

/// The LV names of a RAID segment's `raids` list: `images` only, or `meta, image` pairs.
fn raid_images(s: &Section, object: &str) -> Result<Vec<Area>> {
    let list = s
        .list("raids")
        .ok_or_else(|| Error::corrupt(object, s.offset, "raids list is missing"))?;
    let names: Vec<&str> = list
        .iter()
        .map(|v| match v {
            Value::Str(n) => Ok(n.as_str()),
            _ => Err(Error::corrupt(
                object,
                s.offset,
                "raids is not a list of names",
            )),
        })
        .collect::<Result<_>>()?;
    let count = s
        .int("device_count")
        .and_then(|c| usize::try_from(c).ok())
        .unwrap_or(names.len());
    let images: Vec<&str> = if names.len() == count.saturating_mul(2) {
        names.iter().skip(1).step_by(2).copied().collect()
    } else if names.len() == count {
        names
    } else {
        return Err(Error::corrupt(
            object,
            s.offset,
            format!("raids holds {} names for {count} devices", names.len()),
        ));
    };
    if images.is_empty() || images.len() > MAX_AREAS {
        return Err(Error::corrupt(
            object,
            s.offset,
            format!("{} RAID images (1 to {MAX_AREAS} expected)", images.len()),
        ));
    }
    Ok(images
        .into_iter()
        .map(|n| Area {
            target: AreaTarget::Lv(n.to_string()),
            start_extent: 0,
        })
        .collect())
}

/// Parses one `segmentN` section of a logical volume.
pub fn parse_segment(s: &Section, object: &str) -> Result<Segment> {
    let start_extent = uint(s, "start_extent", object)?;
    let extent_count = uint(s, "extent_count", object)?;
    if extent_count == 0 {
        return Err(Error::corrupt(object, s.offset, "segment of 0 extents"));
    }
    let kind_name = s
        .str("type")
        .ok_or_else(|| Error::corrupt(object, s.offset, "segment type is missing"))?;
    let kind = match kind_name {
        "striped" | "linear" => {
            let areas = name_extent_pairs(s, "stripes", object, true)?;
            let stripe_sectors = if areas.len() > 1 {
                let ss = uint(s, "stripe_size", object)?;
                if ss == 0 {
                    return Err(Error::corrupt(object, s.offset, "stripe_size is 0"));
                }
                ss
            } else {
                0
            };
            let declared = s.int("stripe_count").unwrap_or(areas.len() as i64);
            if declared != areas.len() as i64 {
                return Err(Error::corrupt(
                    object,
                    s.offset,
                    format!("stripe_count {declared} but {} stripes listed", areas.len()),
                ));
            }
            if extent_count % areas.len() as u64 != 0 {
                return Err(Error::corrupt(
                    object,
                    s.offset,
                    format!(
                        "{extent_count} extents do not divide into {} stripes",
                        areas.len()
                    ),
                ));
            }
            SegmentKind::Striped {
                stripe_sectors,
                areas,
            }
        }
        "raid0" | "raid0_meta" => {
            let areas = raid_images(s, object)?;
            let stripe_sectors = uint(s, "stripe_size", object)?;
            if stripe_sectors == 0 || extent_count % areas.len() as u64 != 0 {
                return Err(Error::corrupt(
                    object,
                    s.offset,
                    "raid0 stripe size or extent count does not fit its images",
                ));
            }
            // raid0 images hold extent_count / N extents each, from their start.
            SegmentKind::Striped {
                stripe_sectors,
                areas,
            }
        }
        "mirror" => SegmentKind::Mirrored {
            images: name_extent_pairs(s, "mirrors", object, false)?,
        },
        "raid1" => SegmentKind::Mirrored {
            images: raid_images(s, object)?,
        },
        "zero" => SegmentKind::Zero,
        "thin-pool" => SegmentKind::ThinPool {
            metadata: s
                .str("metadata")
                .ok_or_else(|| Error::corrupt(object, s.offset, "thin-pool without metadata LV"))?
                .to_string(),
            data: s
                .str("pool")
                .ok_or_else(|| Error::corrupt(object, s.offset, "thin-pool without data LV"))?
                .to_string(),
        },
        "thin" => SegmentKind::Thin {
            pool: s
                .str("thin_pool")
                .ok_or_else(|| Error::corrupt(object, s.offset, "thin LV without thin_pool"))?
                .to_string(),
            device_id: uint(s, "device_id", object)?,
        },
        "snapshot" => {
            // lvm2's `_snap_text_import`: `cow_store`, or `merging_store` while merging.
            let (cow_store, merging) = match (s.str("cow_store"), s.str("merging_store")) {
                (Some(c), None) => (c, false),
                (None, Some(m)) => (m, true),
                _ => {
                    return Err(Error::corrupt(
                        object,
                        s.offset,
                        "snapshot segment needs exactly one of cow_store and merging_store",
                    ))
                }
            };
            SegmentKind::Snapshot {
                origin: s
                    .str("origin")
                    .ok_or_else(|| Error::corrupt(object, s.offset, "snapshot without origin"))?
                    .to_string(),
                cow_store: cow_store.to_string(),
                merging,
            }
        }
        other => SegmentKind::Unsupported {
            kind: other.to_string(),
        },
    };
    Ok(Segment {
        start_extent,
        extent_count,
        kind,
        offset: s.offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::lvm2::metadata::parse;

    fn seg(text: &str) -> Result<Segment> {
        let top = parse(text.as_bytes(), "t").unwrap();
        parse_segment(top.section("segment1").unwrap(), "t")
    }

    #[test]
    fn linear_striped_mirror_raid() {
        let s = seg("segment1 { start_extent = 0 extent_count = 4 type = \"striped\" stripe_count = 1 stripes = [\"pv0\", 10] }").unwrap();
        assert_eq!(
            s.kind,
            SegmentKind::Striped {
                stripe_sectors: 0,
                areas: vec![Area {
                    target: AreaTarget::Pv("pv0".into()),
                    start_extent: 10
                }]
            }
        );
        let s = seg("segment1 { start_extent = 4 extent_count = 4 type = \"striped\" stripe_count = 2 stripe_size = 128 stripes = [\"pv0\", 0, \"pv1\", 0] }").unwrap();
        assert_eq!(s.area_extents(), 2);
        let s = seg("segment1 { start_extent = 0 extent_count = 4 type = \"raid1\" device_count = 2 raids = [\"m0\", \"i0\", \"m1\", \"i1\"] }").unwrap();
        assert_eq!(
            s.kind,
            SegmentKind::Mirrored {
                images: vec![
                    Area {
                        target: AreaTarget::Lv("i0".into()),
                        start_extent: 0
                    },
                    Area {
                        target: AreaTarget::Lv("i1".into()),
                        start_extent: 0
                    }
                ]
            }
        );
        let s = seg("segment1 { start_extent = 0 extent_count = 4 type = \"cache\" }").unwrap();
        assert_eq!(
            s.kind,
            SegmentKind::Unsupported {
                kind: "cache".into()
            }
        );
    }

    #[test]
    fn inconsistent_segments_are_errors() {
        for bad in [
            "segment1 { start_extent = 0 extent_count = 3 type = \"striped\" stripe_count = 2 stripe_size = 128 stripes = [\"pv0\", 0, \"pv1\", 0] }",
            "segment1 { start_extent = 0 extent_count = 2 type = \"striped\" stripe_count = 2 stripe_size = 0 stripes = [\"pv0\", 0, \"pv1\", 0] }",
            "segment1 { start_extent = 0 extent_count = 2 type = \"striped\" stripe_count = 3 stripes = [\"pv0\", 0] }",
            "segment1 { start_extent = -1 extent_count = 2 type = \"striped\" stripes = [\"pv0\", 0] }",
            "segment1 { start_extent = 0 extent_count = 0 type = \"striped\" stripes = [\"pv0\", 0] }",
            "segment1 { start_extent = 0 extent_count = 2 type = \"striped\" stripes = [\"pv0\"] }",
            "segment1 { start_extent = 0 extent_count = 2 stripes = [\"pv0\", 0] }",
            "segment1 { start_extent = 0 extent_count = 2 type = \"snapshot\" chunk_size = 8 origin = \"o\" }",
            "segment1 { start_extent = 0 extent_count = 2 type = \"snapshot\" chunk_size = 8 cow_store = \"c\" }",
            "segment1 { start_extent = 0 extent_count = 2 type = \"snapshot\" chunk_size = 8 origin = \"o\" cow_store = \"c\" merging_store = \"c\" }",
        ] {
            assert!(seg(bad).is_err(), "{bad}");
        }
    }
}
