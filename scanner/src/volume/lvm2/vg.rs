//! Volume group assembly across PVs and the logical volume read path.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use super::label::display_uuid;
use super::metadata::Section;
use super::segments::{self, Segment, SegmentKind};
use super::snapshot::ExceptionStore;
use super::thin::ThinSuperblock;
use super::{PvScan, VgText};
use crate::block::SharedSource;
use crate::error::{Error, Result};

mod mapping;
mod read;
mod resolve;
mod snapshots;
use mapping::{kind_name, map_segments};
use resolve::resolve;
use snapshots::Snapshots;

/// Most logical volumes in one VG.
pub const MAX_LVS: usize = 65_536;
/// Most physical volumes in one VG.
pub const MAX_PVS: usize = 4_096;
/// Deepest stacking of logical volumes on logical volumes (an LV on RAID images is 1 deep).
pub const MAX_LV_NESTING: usize = 8;

/// A PV of the VG as the metadata names it, and the device found for it.
#[derive(Debug)]
struct PvSlot {
    key: String,
    uuid: String,
    pe_start: u64,
    pe_count: u64,
    /// Index into the caller's PV list, when found.
    found: Option<usize>,
    source: Option<SharedSource>,
}

/// A segment area resolved to a PV slot or an LV index.
#[derive(Debug, Clone, Copy)]
enum Place {
    Pv { slot: usize, start_extent: u64 },
    Lv { lv: usize, start_extent: u64 },
}

#[derive(Debug)]
enum Mapping {
    Striped {
        stripe_bytes: u64,
        areas: Vec<Place>,
    },
    /// A thin pool: its metadata and data LVs (not read directly).
    Pool {
        meta: usize,
        data: usize,
    },
    /// A thin volume: device `device_id` of the pool LV `pool`.
    Thin {
        pool: usize,
        device_id: u64,
    },
    /// A classic snapshot (lvm2's hidden `snapshotN` LV): the origin LV with the exceptions in
    /// the COW LV's store applied. Always the LV's only segment.
    Snapshot {
        origin: usize,
        cow: usize,
    },
    /// Identical images; `chosen` is the first readable one (decided at assembly).
    Mirror {
        images: Vec<Place>,
        chosen: usize,
    },
    Zero,
}

#[derive(Debug)]
struct MappedSegment {
    start: u64,
    len: u64,
    area_bytes: u64,
    mapping: Mapping,
}

#[derive(Debug)]
struct LvMap {
    name: String,
    extents: u64,
    segments: Vec<MappedSegment>,
}

/// The read-side view of one VG, shared by its logical volumes.
#[derive(Debug)]
struct VgMap {
    name: String,
    extent_bytes: u64,
    pvs: Vec<PvSlot>,
    lvs: Vec<LvMap>,
    /// Per LV: its thin pool superblock, read on first use (only pool LVs use theirs).
    thin: Vec<OnceLock<std::result::Result<ThinSuperblock, Arc<Error>>>>,
    /// Per LV: a snapshot's exception store, read at assembly (only snapshot LVs use theirs).
    snap: Vec<OnceLock<std::result::Result<Arc<ExceptionStore>, Arc<Error>>>>,
}

/// A logical volume as a block source: reads are split at segment and stripe boundaries and sent
/// to the PVs (or image LVs) that hold them.
#[derive(Debug)]
pub struct LogicalVolume {
    vg: Arc<VgMap>,
    lv: usize,
    name: String,
    size: u64,
}

fn missing(vg: &str, pv: &PvSlot) -> Error {
    Error::MissingDevice {
        object: vg.to_string(),
        detail: format!(
            "physical volume {} ({}) is not among the targets",
            display_uuid(&pv.uuid),
            pv.key
        ),
    }
}

/// One logical volume of an assembled VG.
#[derive(Debug, Clone)]
pub struct LvEntry {
    /// `vg/lv`.
    pub name: String,
    /// The LV UUID.
    pub uuid: String,
    /// Size in bytes.
    pub size: u64,
    /// The segment types of the LV (`striped`, `raid1`, `thin`...).
    pub segment_types: Vec<String>,
    /// Index (into the list given to [`assemble`]) of the PV holding the LV's first extent,
    /// where that PV was found.
    pub home: Option<usize>,
    /// Byte offset of the LV's first extent on that PV.
    pub home_offset: u64,
    /// The LV's bytes, or why it cannot be read.
    pub source: std::result::Result<SharedSource, Arc<Error>>,
}

/// An assembled volume group.
#[derive(Debug, Clone)]
pub struct VolumeGroup {
    /// VG name.
    pub name: String,
    /// VG UUID.
    pub uuid: String,
    /// Metadata sequence number used.
    pub seqno: u64,
    /// Indices (into the list given to [`assemble`]) of the PVs found for this VG.
    pub members: Vec<usize>,
    /// PV UUIDs the metadata names that were not found.
    pub missing: Vec<String>,
    /// The visible logical volumes, in metadata order.
    pub lvs: Vec<LvEntry>,
    /// Problems that did not stop the VG (older or unreadable metadata copies, a duplicate PV).
    pub problems: Vec<Arc<Error>>,
    /// Set when the VG's metadata cannot be used at all.
    pub error: Option<Arc<Error>>,
}

/// Assembles volume groups from every PV found (`pvs`: the device and what [`super::scan_pv`]
/// read from it). PVs without metadata of their own join the VG whose metadata names them.
pub fn assemble(pvs: &[(SharedSource, PvScan)]) -> Vec<VolumeGroup> {
    // The newest metadata per VG id, and which PV it came from.
    let mut newest: HashMap<&str, (usize, &VgText)> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (i, (_, scan)) in pvs.iter().enumerate() {
        let Some(vt) = &scan.metadata else { continue };
        match newest.get(vt.vg_id.as_str()) {
            Some((_, b)) if b.seqno >= vt.seqno => {}
            Some(_) => {
                newest.insert(&vt.vg_id, (i, vt));
            }
            None => {
                order.push(&vt.vg_id);
                newest.insert(&vt.vg_id, (i, vt));
            }
        }
    }
    let mut by_uuid: HashMap<&str, usize> = HashMap::new();
    let mut duplicates: Vec<(usize, Arc<Error>)> = Vec::new();
    for (i, (src, scan)) in pvs.iter().enumerate() {
        if let Some(first) = by_uuid.get(scan.label.uuid.as_str()) {
            duplicates.push((
                *first,
                Arc::new(Error::corrupt(
                    src.name(),
                    scan.label.sector * 512,
                    format!(
                        "PV {} is also on {}; using that one",
                        scan.label.display_uuid(),
                        pvs[*first].0.name()
                    ),
                )),
            ));
        } else {
            by_uuid.insert(&scan.label.uuid, i);
        }
    }
    order
        .into_iter()
        .map(|id| {
            let (from, vt) = newest[id];
            let mut vg = build(vt, pvs, &by_uuid, pvs[from].0.name());
            for (i, (_, scan)) in pvs.iter().enumerate() {
                if let Some(other) = &scan.metadata {
                    if other.vg_id == id && other.seqno < vt.seqno && vg.members.contains(&i) {
                        vg.problems.push(Arc::new(Error::corrupt(
                            pvs[i].0.name(),
                            0,
                            format!(
                                "holds older metadata of VG {} (seqno {} < {})",
                                vt.vg_name, other.seqno, vt.seqno
                            ),
                        )));
                    }
                }
            }
            vg.problems.extend(
                duplicates
                    .iter()
                    .filter(|(first, _)| vg.members.contains(first))
                    .map(|(_, e)| e.clone()),
            );
            vg
        })
        .collect()
}

fn sectors_to_bytes(v: i64, what: &str, object: &str, at: u64) -> Result<u64> {
    u64::try_from(v)
        .ok()
        .and_then(|v| v.checked_mul(512))
        .ok_or_else(|| Error::corrupt(object, at, format!("{what} = {v} is out of range")))
}

fn build(
    vt: &VgText,
    pvs: &[(SharedSource, PvScan)],
    by_uuid: &HashMap<&str, usize>,
    from: &str,
) -> VolumeGroup {
    let mut vg = VolumeGroup {
        name: vt.vg_name.clone(),
        uuid: vt.vg_id.clone(),
        seqno: vt.seqno,
        members: Vec::new(),
        missing: Vec::new(),
        lvs: Vec::new(),
        problems: Vec::new(),
        error: None,
    };
    let object = format!("{from} VG {} metadata", vt.vg_name);
    match build_map(&vt.vg, &vt.vg_name, pvs, by_uuid, &object) {
        Ok((map, errors, visible, uuids, types, snaps)) => {
            vg.members = map.pvs.iter().filter_map(|p| p.found).collect();
            vg.missing = map
                .pvs
                .iter()
                .filter(|p| p.found.is_none())
                .map(|p| display_uuid(&p.uuid))
                .collect();
            let (map, readable) = resolve(map, errors);
            let readable = snaps.load(&map, readable);
            for lv in visible {
                let lv_map = &map.lvs[lv];
                let name = format!("{}/{}", vt.vg_name, lv_map.name);
                let (home, home_offset) = first_pv(&map, lv, 0)
                    .map(|(slot, off)| (map.pvs[slot].found, off))
                    .unwrap_or((None, 0));
                // A snapshot's COW LV is listed as the snapshot; an origin being merged into
                // reads as the merged state. Both read through the hidden snapshot LV.
                let read_as = snaps.read_as(lv);
                let size = map.lvs[read_as].extents.saturating_mul(map.extent_bytes);
                let source = readable[lv].clone().map(|()| {
                    Arc::new(LogicalVolume {
                        vg: map.clone(),
                        lv: read_as,
                        name: name.clone(),
                        size,
                    }) as SharedSource
                });
                vg.lvs.push(LvEntry {
                    name,
                    uuid: uuids[lv].clone(),
                    size,
                    segment_types: types[lv].clone(),
                    home,
                    home_offset,
                    source,
                });
            }
        }
        Err(e) => vg.error = Some(Arc::new(e)),
    }
    vg
}

type Built = (
    VgMap,
    Vec<Option<Error>>,
    Vec<usize>,
    Vec<String>,
    Vec<Vec<String>>,
    Snapshots,
);

fn build_map(
    vg: &Section,
    vg_name: &str,
    pvs: &[(SharedSource, PvScan)],
    by_uuid: &HashMap<&str, usize>,
    object: &str,
) -> Result<Built> {
    let extent_sectors = vg
        .int("extent_size")
        .ok_or_else(|| Error::corrupt(object, vg.offset, "extent_size is missing"))?;
    let extent_bytes = sectors_to_bytes(extent_sectors, "extent_size", object, vg.offset)?;
    if extent_bytes == 0 {
        return Err(Error::corrupt(object, vg.offset, "extent_size is 0"));
    }
    let pv_sec = vg
        .section("physical_volumes")
        .ok_or_else(|| Error::corrupt(object, vg.offset, "physical_volumes is missing"))?;
    let mut slots = Vec::new();
    for (key, pv) in pv_sec.sections() {
        if slots.len() >= MAX_PVS {
            return Err(Error::limit(object, format!("more than {MAX_PVS} PVs")));
        }
        let uuid: String = pv
            .str("id")
            .ok_or_else(|| Error::corrupt(object, pv.offset, format!("{key}: id is missing")))?
            .chars()
            .filter(|c| *c != '-')
            .collect();
        let pe_start = sectors_to_bytes(
            pv.int("pe_start").unwrap_or(-1),
            "pe_start",
            object,
            pv.offset,
        )?;
        let pe_count = pv
            .int("pe_count")
            .and_then(|c| u64::try_from(c).ok())
            .ok_or_else(|| {
                Error::corrupt(object, pv.offset, format!("{key}: pe_count is missing"))
            })?;
        let found = by_uuid.get(uuid.as_str()).copied();
        let source = found.map(|i| pvs[i].0.clone());
        if let Some(src) = &source {
            let end = pe_count
                .checked_mul(extent_bytes)
                .and_then(|b| b.checked_add(pe_start));
            if end.is_none_or(|e| e > src.size()) {
                return Err(Error::corrupt(
                    object,
                    pv.offset,
                    format!(
                        "{key}: {pe_count} extents from byte {pe_start:#x} run past the end of {} ({:#x} bytes)",
                        src.name(),
                        src.size()
                    ),
                ));
            }
        }
        slots.push(PvSlot {
            key: key.to_string(),
            uuid,
            pe_start,
            pe_count,
            found,
            source,
        });
    }
    let mut lvs = Vec::new();
    let mut visible = Vec::new();
    let mut uuids = Vec::new();
    let mut types = Vec::new();
    let mut raw_segments: Vec<std::result::Result<Vec<Segment>, Error>> = Vec::new();
    if let Some(lv_sec) = vg.section("logical_volumes") {
        for (name, lv) in lv_sec.sections() {
            if lvs.len() >= MAX_LVS {
                return Err(Error::limit(object, format!("more than {MAX_LVS} LVs")));
            }
            let lv_object = format!("{object}: LV {vg_name}/{name}");
            let segs: Result<Vec<Segment>> = lv
                .sections()
                .filter(|(k, _)| k.starts_with("segment"))
                .take(segments::MAX_SEGMENTS + 1)
                .map(|(_, s)| segments::parse_segment(s, &lv_object))
                .collect();
            types.push(
                segs.as_ref()
                    .map(|v| {
                        let mut t: Vec<String> = v.iter().map(|s| kind_name(&s.kind)).collect();
                        t.dedup();
                        t
                    })
                    .unwrap_or_default(),
            );
            // A thin pool holds other volumes' blocks, not a filesystem, and a classic
            // snapshot's hidden `snapshotN` LV is listed under its COW LV's name: neither is
            // listed itself.
            let hidden = segs.as_ref().is_ok_and(|v| {
                v.iter().any(|s| {
                    matches!(
                        s.kind,
                        SegmentKind::ThinPool { .. } | SegmentKind::Snapshot { .. }
                    )
                })
            });
            if lv.has_flag("status", "VISIBLE") && !hidden {
                visible.push(lvs.len());
            }
            uuids.push(lv.str("id").unwrap_or("").to_string());
            lvs.push(LvMap {
                name: name.to_string(),
                extents: 0,
                segments: Vec::new(),
            });
            raw_segments.push(segs);
        }
    }
    let names: HashMap<String, usize> = lvs
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.clone(), i))
        .collect();
    let keys: HashMap<&str, usize> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.as_str(), i))
        .collect();
    let mut map = VgMap {
        name: vg_name.to_string(),
        extent_bytes,
        pvs: Vec::new(),
        lvs: Vec::new(),
        thin: Vec::new(),
        snap: Vec::new(),
    };
    let snaps = Snapshots::find(&raw_segments, &names, vg_name);
    // lvm2 writes a COW LV without VISIBLE (`lv_set_hidden` in `init_snapshot_seg`) yet lists
    // it as the snapshot (`lv_is_visible`): so do we.
    for cow in snaps.cow_lvs() {
        types[cow] = vec!["snapshot".into()];
        if !visible.contains(&cow) {
            visible.push(cow);
        }
    }
    visible.sort_unstable();
    let mut errors: Vec<Option<Error>> = Vec::new();
    for (i, segs) in raw_segments.into_iter().enumerate() {
        let lv_object = format!("{object}: LV {vg_name}/{}", lvs[i].name);
        match segs.and_then(|s| map_segments(s, &keys, &slots, &names, extent_bytes, &lv_object)) {
            Ok((mapped, extents)) => {
                lvs[i].segments = mapped;
                lvs[i].extents = extents;
                errors.push(None);
            }
            Err(e) => errors.push(Some(e)),
        }
    }
    map.pvs = slots;
    map.thin = (0..lvs.len()).map(|_| OnceLock::new()).collect();
    map.snap = (0..lvs.len()).map(|_| OnceLock::new()).collect();
    map.lvs = lvs;
    Ok((map, errors, visible, uuids, types, snaps))
}

/// The PV slot and byte offset of LV `lv`'s first extent.
fn first_pv(map: &VgMap, lv: usize, depth: usize) -> Option<(usize, u64)> {
    if depth > MAX_LV_NESTING {
        return None;
    }
    let seg = map.lvs.get(lv)?.segments.first()?;
    let place = match &seg.mapping {
        Mapping::Striped { areas, .. } => *areas.first()?,
        Mapping::Mirror { images, chosen } => *images.get(*chosen)?,
        Mapping::Zero | Mapping::Pool { .. } | Mapping::Thin { .. } | Mapping::Snapshot { .. } => {
            return None
        }
    };
    match place {
        Place::Pv { slot, start_extent } => Some((
            slot,
            map.pvs[slot].pe_start + start_extent * map.extent_bytes,
        )),
        Place::Lv { lv, .. } => first_pv(map, lv, depth + 1),
    }
}
