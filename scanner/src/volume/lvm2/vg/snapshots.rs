//! Classic snapshots in a volume group: lvm2 keeps three LVs per snapshot (lvm2's
//! `lib/metadata/snapshot_manip.c`): the origin, the COW LV users name as the snapshot, and a
//! hidden `snapshotN` LV whose one `snapshot` segment ties them together. The COW LV is listed
//! under its own name but reads through `snapshotN` (the origin with the exceptions applied).
//!
//! While `lvconvert --merge` folds a snapshot back (`merging_store` in the metadata), the kernel
//! shows the origin as the merged state from the moment the merge starts: the origin with the
//! exceptions not yet copied back. The origin is read that way, and the snapshot itself, which
//! no longer exists apart from its origin, is reported as not scanned.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::segments::{Segment, SegmentKind};
use super::super::snapshot::{self, ExceptionStore};
use super::{Mapping, VgMap};
use crate::error::Error;

/// One snapshot: LV indices.
#[derive(Debug)]
struct Snap {
    /// The hidden `snapshotN` LV.
    snap: usize,
    origin: usize,
    cow: usize,
    merging: bool,
}

/// The snapshots of a VG.
#[derive(Debug, Default)]
pub(super) struct Snapshots {
    list: Vec<Snap>,
    /// LV index -> the LV its listed volume reads through.
    read_as: HashMap<usize, usize>,
    vg_name: String,
}

impl Snapshots {
    /// Finds the snapshot segments among the parsed LVs. Names that resolve to no LV, a COW LV
    /// used by two snapshots, or a snapshot of itself are left to the mapping checks, which
    /// report them on the hidden LV; such a snapshot is not listed as one.
    pub(super) fn find(
        raw: &[std::result::Result<Vec<Segment>, Error>],
        names: &HashMap<String, usize>,
        vg_name: &str,
    ) -> Snapshots {
        let mut out = Snapshots {
            vg_name: vg_name.to_string(),
            ..Snapshots::default()
        };
        for (snap, segs) in raw.iter().enumerate() {
            let Ok(segs) = segs else { continue };
            for seg in segs {
                let SegmentKind::Snapshot {
                    origin,
                    cow_store,
                    merging,
                } = &seg.kind
                else {
                    continue;
                };
                let (Some(&origin), Some(&cow)) = (names.get(origin), names.get(cow_store)) else {
                    continue;
                };
                if [origin, cow].contains(&snap)
                    || origin == cow
                    || out.read_as.contains_key(&cow)
                    || (*merging && out.read_as.contains_key(&origin))
                {
                    continue;
                }
                out.read_as.insert(cow, snap);
                if *merging {
                    out.read_as.insert(origin, snap);
                }
                out.list.push(Snap {
                    snap,
                    origin,
                    cow,
                    merging: *merging,
                });
            }
        }
        out
    }

    /// The COW LVs (listed as snapshots).
    pub(super) fn cow_lvs(&self) -> impl Iterator<Item = usize> + '_ {
        self.list.iter().map(|s| s.cow)
    }

    /// The LV that the listed volume `lv` reads through.
    pub(super) fn read_as(&self, lv: usize) -> usize {
        self.read_as.get(&lv).copied().unwrap_or(lv)
    }

    /// Reads every snapshot's exception store and returns the readability of each LV as listed:
    /// a snapshot (its COW LV) is readable when its hidden LV is and its store loads; a merging
    /// snapshot is not scanned, and its origin reads as the merged state.
    pub(super) fn load(
        &self,
        map: &VgMap,
        mut readable: Vec<std::result::Result<(), Arc<Error>>>,
    ) -> Vec<std::result::Result<(), Arc<Error>>> {
        for s in &self.list {
            let state = readable[s.snap]
                .clone()
                .and_then(|()| map.exception_store(s.snap, 0).map(drop));
            let name = |lv: usize| format!("{}/{}", self.vg_name, map.lvs[lv].name);
            if s.merging {
                readable[s.cow] = Err(Arc::new(Error::unsupported(
                    name(s.cow),
                    format!(
                        "snapshot is being merged into {} (lvconvert --merge): its content is \
                         read there, as the merged state",
                        name(s.origin)
                    ),
                )));
                readable[s.origin] = state;
            } else {
                readable[s.cow] = state;
            }
        }
        readable
    }
}

impl VgMap {
    /// The exception store of snapshot LV `lv` (its `snapshotN`), read once.
    pub(super) fn exception_store(
        &self,
        lv: usize,
        depth: usize,
    ) -> std::result::Result<Arc<ExceptionStore>, Arc<Error>> {
        let Some(Mapping::Snapshot { origin, cow }) =
            self.lvs[lv].segments.first().map(|s| &s.mapping)
        else {
            return Err(Arc::new(Error::corrupt(
                format!("{}/{}", self.name, self.lvs[lv].name),
                0,
                "not a snapshot",
            )));
        };
        let (origin, cow) = (*origin, *cow);
        self.snap[lv]
            .get_or_init(|| {
                let object = format!(
                    "{}/{} (snapshot of {}/{}) exception store",
                    self.name, self.lvs[cow].name, self.name, self.lvs[origin].name
                );
                let read = |off: u64, b: &mut [u8]| self.read(cow, off, b, depth + 1);
                let size = |l: usize| self.lvs[l].extents.saturating_mul(self.extent_bytes);
                snapshot::read_store(&read, size(cow), size(origin), &object)
                    .map(Arc::new)
                    .map_err(Arc::new)
            })
            .clone()
    }
}
