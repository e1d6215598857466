//! The volume layer between partitions and filesystems (DESIGN.md section 1): what is on a
//! partition or whole disk, when it is not (only) a filesystem.
//!
//! [`probe`] recognises LVM2 physical volumes, LUKS1/LUKS2 and BitLocker volumes, MD RAID
//! members (superblocks 0.90 and 1.x), swap, and otherwise defers to [`crate::fs::probe`].
//! LVM2 volume groups are assembled across every target ([`lvm2::assemble`]); MD RAID1 members
//! are read as their data; encrypted volumes are named and reported, never read.

pub mod bitlocker;
pub mod luks;
pub mod lvm2;
pub mod md;
pub mod swap;

use crate::block::BlockSource;
use crate::error::Result;

/// What the volume layer recognised on a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Content {
    /// An LVM2 physical volume.
    LvmPv {
        /// PV UUID in lvm2's display form.
        uuid: String,
    },
    /// A LUKS1 or LUKS2 encrypted volume.
    Luks(luks::LuksHeader),
    /// A BitLocker encrypted volume.
    BitLocker(bitlocker::BitLockerVolume),
    /// An MD RAID member.
    Md(md::MdMember),
    /// A swap area.
    Swap(swap::SwapArea),
}

impl Content {
    /// Short kind name used in `info` and reports: `lvm2-pv`, `luks1`, `luks2`, `bitlocker`,
    /// `md-raid1` (`md-raid5`, ...), `swap`.
    pub fn kind(&self) -> String {
        match self {
            Content::LvmPv { .. } => "lvm2-pv".into(),
            Content::Luks(h) => format!("luks{}", h.version),
            Content::BitLocker(_) => "bitlocker".into(),
            Content::Md(m) if m.level == -1 => "md-linear".into(),
            Content::Md(m) => format!("md-raid{}", m.level),
            Content::Swap(_) => "swap".into(),
        }
    }

    /// The UUID the structure carries, if any.
    pub fn uuid(&self) -> Option<String> {
        match self {
            Content::LvmPv { uuid } => Some(uuid.clone()),
            Content::Luks(h) => Some(h.uuid.clone()).filter(|u| !u.is_empty()),
            Content::BitLocker(b) => b.guid.clone(),
            Content::Md(m) => Some(m.array_uuid.clone()),
            Content::Swap(s) => s.uuid.clone(),
        }
    }

    /// The label or name the structure carries, if any.
    pub fn label(&self) -> Option<String> {
        match self {
            Content::Luks(h) => h.label.clone(),
            Content::Md(m) => m.name.clone(),
            Content::Swap(s) => s.label.clone(),
            Content::LvmPv { .. } | Content::BitLocker(_) => None,
        }
    }
}

/// Recognises what is on `dev` at the volume layer (before filesystems): an LVM2 PV label,
/// a LUKS or BitLocker header, an MD superblock, or a swap signature. `Ok(None)` means none of
/// these: look for a filesystem.
///
/// Order matters: MD 1.0 and 0.90 members keep their superblock at the end and their data
/// (possibly a filesystem) at the start, so they are checked before filesystems are; LVM and
/// encryption headers are unambiguous.
pub fn probe(dev: &dyn BlockSource) -> Result<Option<Content>> {
    if let Some(label) = lvm2::label::read_label_lenient(dev)? {
        return Ok(Some(Content::LvmPv { uuid: label }));
    }
    if let Some(h) = luks::probe(dev)? {
        return Ok(Some(Content::Luks(h)));
    }
    if let Some(b) = bitlocker::probe(dev)? {
        return Ok(Some(Content::BitLocker(b)));
    }
    if let Some(m) = md::probe(dev)? {
        return Ok(Some(Content::Md(m)));
    }
    if let Some(s) = swap::probe(dev)? {
        return Ok(Some(Content::Swap(s)));
    }
    Ok(None)
}
