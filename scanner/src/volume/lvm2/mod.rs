//! LVM2: physical volumes found by their label, volume groups assembled from every PV found
//! across all targets, and each logical volume a [`BlockSource`] mapping its extents onto PV
//! byte ranges (libvslvm's "Logical Volume Manager (LVM) format"; lvm2's `lib/format_text/`).
//!
//! The newest valid metadata copy wins: every metadata area of every PV of a VG is read, copies
//! whose checksums fail are skipped (and noted), and the highest `seqno` is used. A logical
//! volume whose extents lie on a PV that was not found, that maps extents past a PV's end, that
//! refers to itself through its images, or whose segment type is not read here is still listed,
//! with the error that keeps it from being read.
//!
//! A classic snapshot is listed under its COW LV's name (`vg/snap`) and reads as its origin at
//! snapshot time: the origin with the copy-on-write exceptions of [`snapshot`] applied.

pub mod label;
pub mod mda;
pub mod metadata;
pub mod segments;
pub mod snapshot;
pub mod thin;
mod vg;

pub use vg::{assemble, LogicalVolume, LvEntry, VolumeGroup};

use std::sync::Arc;

use crate::block::BlockSource;
use crate::error::{Error, Result};
use label::PvLabel;
use metadata::Section;

/// A physical volume as found on a device: its label and the newest valid metadata in its own
/// metadata areas.
#[derive(Debug, Clone)]
pub struct PvScan {
    /// The label.
    pub label: PvLabel,
    /// The VG metadata found on this PV, if any: (seqno, VG name, VG id, parsed text).
    pub metadata: Option<VgText>,
    /// Metadata copies that could not be read (bad checksum, ...): noted, not fatal while
    /// another copy is good.
    pub problems: Vec<Arc<Error>>,
}

/// One parsed metadata copy.
#[derive(Debug, Clone)]
pub struct VgText {
    /// The VG's sequence number (higher is newer).
    pub seqno: u64,
    /// The VG name.
    pub vg_name: String,
    /// The VG UUID (with dashes, as in the text).
    pub vg_id: String,
    /// The VG section.
    pub vg: Section,
}

/// Parses a metadata text into its VG section. `object` names where it came from.
pub fn parse_vg_text(text: &[u8], object: &str) -> Result<VgText> {
    let top = metadata::parse(text, object)?;
    let mut sections = top.sections();
    let (name, vg) = sections
        .next()
        .ok_or_else(|| Error::corrupt(object, 0, "LVM2 metadata holds no volume group"))?;
    if sections.next().is_some() {
        return Err(Error::corrupt(
            object,
            0,
            "LVM2 metadata holds more than one volume group",
        ));
    }
    let seqno = vg
        .int("seqno")
        .and_then(|s| u64::try_from(s).ok())
        .ok_or_else(|| Error::corrupt(object, vg.offset, "VG seqno is missing"))?;
    let vg_id = vg
        .str("id")
        .ok_or_else(|| Error::corrupt(object, vg.offset, "VG id is missing"))?
        .to_string();
    Ok(VgText {
        seqno,
        vg_name: name.to_string(),
        vg_id,
        vg: vg.clone(),
    })
}

/// Reads the LVM2 label and metadata of `dev`; `Ok(None)` when it is not a PV.
pub fn scan_pv(dev: &dyn BlockSource) -> Result<Option<PvScan>> {
    let Some(label) = label::read_label(dev)? else {
        return Ok(None);
    };
    let mut best: Option<VgText> = None;
    let mut problems = Vec::new();
    for area in &label.metadata_areas {
        let text = match mda::read_metadata(dev, *area) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => {
                problems.push(Arc::new(e));
                continue;
            }
        };
        let object = format!("{} metadata area at {:#x}", dev.name(), text.area_offset);
        match parse_vg_text(&text.text, &object) {
            Ok(vt) if best.as_ref().is_none_or(|b| vt.seqno > b.seqno) => best = Some(vt),
            Ok(_) => {}
            Err(e) => problems.push(Arc::new(e)),
        }
    }
    Ok(Some(PvScan {
        label,
        metadata: best,
        problems,
    }))
}

#[cfg(test)]
mod tests;
