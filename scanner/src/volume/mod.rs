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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;

    fn probe_bytes(b: Vec<u8>) -> Option<Content> {
        probe(&MemSource::new(b, "t")).unwrap()
    }

    #[test]
    fn bitlocker_is_named_by_its_fve_metadata_guid() {
        let mut b = vec![0u8; 64 << 10];
        b[3..11].copy_from_slice(bitlocker::FVE_SIGNATURE);
        b[0xb0..0xb8].copy_from_slice(&(32768u64).to_le_bytes());
        b[32768..32776].copy_from_slice(bitlocker::FVE_SIGNATURE);
        let guid = [
            0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66, 0x88, 0x99, 1, 2, 3, 4, 5, 6,
        ];
        b[32768 + 80..32768 + 96].copy_from_slice(&guid);
        let c = probe_bytes(b).unwrap();
        assert_eq!(c.kind(), "bitlocker");
        assert_eq!(
            c.uuid().as_deref(),
            Some("00112233-4455-6677-8899-010203040506")
        );
    }

    #[test]
    fn md_090_member_at_the_end_is_found_before_the_filesystem_at_the_start() {
        let size = 1usize << 20;
        let mut b = vec![0u8; size];
        // An ext superblock magic at the start: the data of a RAID1 member.
        b[1080..1082].copy_from_slice(&0xef53u16.to_le_bytes());
        let at = size - (64 << 10);
        let w = |b: &mut Vec<u8>, i: usize, v: u32| {
            b[at + 4 * i..at + 4 * i + 4].copy_from_slice(&v.to_le_bytes())
        };
        w(&mut b, 0, md::MD_MAGIC);
        w(&mut b, 1, 0);
        w(&mut b, 2, 90);
        w(&mut b, 5, 0x0b5e55ed);
        w(&mut b, 7, 1);
        w(&mut b, 8, 512); // KiB per member
        w(&mut b, 10, 2);
        w(&mut b, 39, 7);
        let Some(Content::Md(m)) = probe_bytes(b) else {
            panic!("not an MD member")
        };
        assert_eq!(
            (m.version, m.level, m.raid_disks, m.events),
            ("0.90", 1, 2, 7)
        );
        assert_eq!((m.data_offset, m.data_size), (0, 512 << 10));
        assert!(m.array_uuid.starts_with("ed555e0b"), "{}", m.array_uuid);
    }

    #[test]
    fn swap_and_nothing() {
        let mut b = vec![0u8; 16384];
        b[4086..4096].copy_from_slice(b"SWAPSPACE2");
        b[1024 + 28..1024 + 32].copy_from_slice(b"swp1");
        let c = probe_bytes(b).unwrap();
        assert_eq!(
            (c.kind().as_str(), c.label().as_deref(), c.uuid()),
            ("swap", Some("swp1"), None)
        );
        assert_eq!(probe_bytes(vec![0u8; 16384]), None);
        assert_eq!(probe_bytes(vec![0u8; 100]), None);
    }
}
