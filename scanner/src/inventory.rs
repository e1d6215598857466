//! From a target (image, device, directory) to its volumes and their filesystems: the shared
//! front half of `ls`, `info`, `cat` and `scan`.
//!
//! Volumes are partitions (or whole disks) and, through the volume layer ([`crate::volume`]),
//! LVM2 logical volumes assembled from the PVs of every target opened together
//! ([`open_disks`]), and MD RAID1 arrays read through one member. An LV is attached to the
//! target and partition holding its first extent and named `vg/lv` ([`Volume::name`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::block::{CachedSource, SharedSource, Window};
use crate::disk::{self, OpenOptions, OpenedDisk};
use crate::error::{Error, Result};
use crate::fs::{self, FsKind, SharedFilesystem};
use crate::partition::{self, Partition, PartitionTable};
use crate::volume::{self, lvm2, Content};

/// A volume: a partition (or whole disk), or a logical volume, with the filesystem found on it.
#[derive(Debug, Clone)]
pub struct Volume {
    /// The partition this volume is (index 0 for a whole disk). For a logical volume: the
    /// partition holding its first extent, with `start` the byte offset of that extent on the
    /// disk, `size` the LV's size and `type_id` `lvm2-lv`.
    pub partition: Partition,
    /// The logical volume's name (`vg/lv`); `None` for partitions and whole disks.
    pub name: Option<String>,
    /// What the volume layer recognised, outermost first (`[md-raid1, lvm2-pv]` for a PV on a
    /// RAID1 array); empty for a plain filesystem or an unrecognised volume.
    pub content: Vec<Content>,
    /// True when the volume holds no files by design (an LVM2 PV, swap, the second member of a
    /// RAID1 array): no filesystem there is not a problem.
    pub no_files: bool,
    /// Things noticed that did not stop the volume from being read.
    pub notes: Vec<String>,
    /// Its bytes.
    pub source: SharedSource,
    /// The filesystem detected on it, if any.
    pub fs_kind: Option<FsKind>,
    /// The opened filesystem, or why it could not be opened.
    pub filesystem: std::result::Result<SharedFilesystem, Arc<Error>>,
}

/// Partition types that hold no filesystem by design: finding none on them is not a problem.
const NO_FILESYSTEM_TYPES: &[&str] = &[
    "0x82",                                 // Linux swap
    "0x05",                                 // extended (container only)
    "0x0f",                                 // extended, LBA
    "0x85",                                 // Linux extended
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f", // Linux swap
    "21686148-6449-6e6f-744e-656564454649", // BIOS boot
    "e3c9e316-0b5c-4db8-817d-f92df00215ae", // Microsoft reserved
];

/// Partition types that promise a filesystem coldscan reads, with where that filesystem's
/// identifying structure lies: finding no filesystem on such a partition means its metadata is
/// damaged (`corrupt` at that offset), not that it holds something unknown.
const PROMISED_FILESYSTEMS: &[(&str, &str, u64)] = &[
    // Linux types: ext2/3/4 (superblock at byte 1024).
    ("0x83", "ext2/3/4 superblock", 0x400),
    (
        "0fc63daf-8483-4772-8e79-3d69d8477de4",
        "ext2/3/4 superblock",
        0x400,
    ),
    (
        "44479540-f297-41b2-9af7-d131d5f0458a",
        "ext2/3/4 superblock",
        0x400,
    ),
    (
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
        "ext2/3/4 superblock",
        0x400,
    ),
    (
        "933ac7e1-2eb4-4f13-b844-0e14e2aef915",
        "ext2/3/4 superblock",
        0x400,
    ),
    (
        "3b8f8425-20e0-4f3b-907f-1a25a76f98e8",
        "ext2/3/4 superblock",
        0x400,
    ),
    (
        "4d21b016-b534-45c2-a9fb-5c16e091fd2d",
        "ext2/3/4 superblock",
        0x400,
    ),
    (
        "8484680c-9521-48c6-9c11-b0720656f69e",
        "ext2/3/4 superblock",
        0x400,
    ),
    // Windows and FAT types: NTFS or FAT (boot sector at byte 0).
    ("0x07", "NTFS boot sector", 0),
    ("0x01", "FAT boot sector", 0),
    ("0x04", "FAT boot sector", 0),
    ("0x06", "FAT boot sector", 0),
    ("0x0b", "FAT boot sector", 0),
    ("0x0c", "FAT boot sector", 0),
    ("0x0e", "FAT boot sector", 0),
    ("0xef", "FAT boot sector", 0),
    (
        "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
        "NTFS or FAT boot sector",
        0,
    ),
    ("c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "FAT boot sector", 0),
];

/// The error for a volume on which no filesystem was recognised: `corrupt` at the offset of the
/// structure its partition type promises, else `unsupported-filesystem`.
fn unrecognised(name: &str, partition: &Partition) -> Error {
    let type_id = partition.type_id.as_str();
    match PROMISED_FILESYSTEMS.iter().find(|(t, _, _)| *t == type_id) {
        Some((_, what, offset)) => {
            let type_name = partition.type_name.as_deref().unwrap_or(type_id);
            Error::corrupt(
                name,
                *offset,
                format!("partition type {type_name} promises a filesystem, but the {what} is not valid (no recognised filesystem)"),
            )
        }
        None => Error::unsupported(name, "no recognised filesystem"),
    }
}

impl Volume {
    /// Whether this volume should have held a readable filesystem: false for swap, BIOS boot and
    /// Microsoft reserved partitions. Anything else that cannot be read is a problem to report.
    pub fn expects_filesystem(&self) -> bool {
        !NO_FILESYSTEM_TYPES.contains(&self.partition.type_id.as_str())
    }

    /// The problem to report for this volume, if any: unreadable, encrypted, or expected to
    /// hold a filesystem but none was recognised.
    pub fn problem(&self) -> Option<Arc<Error>> {
        match &self.filesystem {
            Ok(_) => None,
            Err(_) if self.no_files => None,
            Err(e)
                if self.fs_kind.is_some()
                    || self.name.is_some()
                    || !self.content.is_empty()
                    || self.expects_filesystem() =>
            {
                Some(e.clone())
            }
            Err(_) => None,
        }
    }

    /// Report status: `ok`, `swap`, `lvm2-pv`, `md-member`, `encrypted`, `unrecognized`, or
    /// `error: ...`.
    pub fn status(&self) -> String {
        match (&self.filesystem, self.fs_kind) {
            (Ok(_), _) => "ok".to_string(),
            (Err(e), None) => match self.content.last() {
                Some(Content::Swap(_)) => "swap".to_string(),
                Some(Content::LvmPv { .. }) if self.no_files => "lvm2-pv".to_string(),
                Some(Content::Md(_)) if self.no_files => "md-member".to_string(),
                Some(Content::Luks(_) | Content::BitLocker(_)) => "encrypted".to_string(),
                None if self.name.is_none()
                    && !matches!(**e, Error::Io { .. })
                    && e.reason() != crate::Reason::Corrupt =>
                {
                    "unrecognized".to_string()
                }
                _ => format!("error: {e}"),
            },
            (Err(e), Some(_)) => format!("error: {e}"),
        }
    }

    /// What the volume is, in one word for listings: the filesystem, else the innermost
    /// recognised content (`lvm2-pv`, `luks2`, `swap`...), else `None`.
    pub fn kind(&self) -> Option<String> {
        self.fs_kind
            .map(|k| k.as_str().to_string())
            .or_else(|| self.content.last().map(Content::kind))
    }
}

/// An opened disk target with its partition table and volumes.
#[derive(Debug)]
pub struct DiskTarget {
    /// The target as the user gave it.
    pub name: String,
    /// The opened virtual disk.
    pub disk: OpenedDisk,
    /// Its partition table (`Scheme::None` for whole-disk filesystems).
    pub table: PartitionTable,
    /// Its volumes.
    pub volumes: Vec<Volume>,
}

/// Deepest stacking of volume-layer structures probed on one partition (MD RAID1 holding an
/// LVM2 PV is 2).
pub const MAX_VOLUME_STACK: usize = 2;

/// What probing one block source found.
struct Probed {
    content: Vec<Content>,
    source: SharedSource,
    fs_kind: Option<FsKind>,
    filesystem: std::result::Result<SharedFilesystem, Arc<Error>>,
    no_files: bool,
}

/// Probes `source` through the volume layer down to a filesystem.
/// `partition` is the partition the volume fills (None for the content of an MD array or an
/// LV): its type says whether a missing filesystem is corruption.
fn probe_volume(
    source: SharedSource,
    name: &str,
    partition: Option<&Partition>,
    depth: usize,
) -> Probed {
    let fail = |source: SharedSource, content, e: Error, no_files| Probed {
        content,
        source,
        fs_kind: None,
        filesystem: Err(Arc::new(e)),
        no_files,
    };
    let found = if depth < MAX_VOLUME_STACK {
        volume::probe(source.as_ref())
    } else {
        Ok(None)
    };
    match found {
        Err(e) => fail(source, vec![], e, false),
        Ok(Some(c)) => match &c {
            Content::LvmPv { uuid } => {
                let e = Error::unsupported(name, format!("LVM2 physical volume {uuid}"));
                fail(source, vec![c], e, true)
            }
            Content::Luks(_) | Content::BitLocker(_) => {
                let detail = format!(
                    "{} volume{}",
                    c.kind(),
                    c.uuid().map(|u| format!(" UUID {u}")).unwrap_or_default()
                );
                let e = Error::Encrypted {
                    object: name.to_string(),
                    detail,
                };
                fail(source, vec![c], e, false)
            }
            Content::Swap(_) => {
                let e = Error::unsupported(name, "swap area");
                fail(source, vec![c], e, true)
            }
            Content::Md(m) if m.level == 1 => {
                let data_name = format!("{name} (md {})", m.array_uuid);
                match Window::new(
                    source.clone(),
                    m.data_offset,
                    m.data_size,
                    data_name.clone(),
                ) {
                    Ok(w) => {
                        let mut inner = probe_volume(Arc::new(w), &data_name, None, depth + 1);
                        inner.content.insert(0, c);
                        inner
                    }
                    Err(e) => fail(source, vec![c], e, false),
                }
            }
            Content::Md(m) => {
                let e = Error::unsupported(
                    name,
                    format!(
                        "member of MD RAID{} array {} (only RAID1 members are read)",
                        m.level, m.array_uuid
                    ),
                );
                fail(source, vec![c], e, false)
            }
        },
        Ok(None) => {
            let (fs_kind, filesystem) = match fs::probe(&source) {
                Ok(Some(kind)) => (Some(kind), fs::open(source.clone(), kind).map_err(Arc::new)),
                Ok(None) => {
                    let e = match partition {
                        Some(p) => unrecognised(name, p),
                        None => Error::unsupported(name, "no recognised filesystem"),
                    };
                    (None, Err(Arc::new(e)))
                }
                Err(e) => (None, Err(Arc::new(e))),
            };
            Probed {
                content: vec![],
                source,
                fs_kind,
                filesystem,
                no_files: false,
            }
        }
    }
}

/// Opens one disk and probes its partitions (volume groups are assembled by [`open_disks`]).
fn open_one(target: &str, opts: &OpenOptions) -> Result<DiskTarget> {
    let disk = disk::open_target(target, opts)?;
    let cached: SharedSource = Arc::new(CachedSource::new(disk.source.clone()));
    let table = partition::read_table(cached.as_ref())?;
    let mut volumes = Vec::with_capacity(table.partitions.len());
    for p in &table.partitions {
        let name = if p.index == 0 {
            target.to_string()
        } else {
            format!("{target} partition {}", p.index)
        };
        let source: SharedSource = match Window::new(cached.clone(), p.start, p.size, name.clone())
        {
            Ok(w) => Arc::new(w),
            Err(e) => {
                volumes.push(Volume {
                    partition: p.clone(),
                    name: None,
                    content: Vec::new(),
                    no_files: false,
                    notes: Vec::new(),
                    source: cached.clone(),
                    fs_kind: None,
                    filesystem: Err(Arc::new(e)),
                });
                continue;
            }
        };
        let probed = probe_volume(source, &name, Some(p), 0);
        volumes.push(Volume {
            partition: p.clone(),
            name: None,
            content: probed.content,
            no_files: probed.no_files,
            notes: Vec::new(),
            source: probed.source,
            fs_kind: probed.fs_kind,
            filesystem: probed.filesystem,
        });
    }
    Ok(DiskTarget {
        name: target.to_string(),
        disk,
        table,
        volumes,
    })
}

/// Opens a disk image, block device or NBD URL and everything on it (volume groups only from
/// the PVs on this one disk; see [`open_disks`]).
pub fn open_disk(target: &str, opts: &OpenOptions) -> Result<DiskTarget> {
    let mut t = open_one(target, opts)?;
    assemble(std::slice::from_mut(&mut t));
    Ok(t)
}

/// Opens every target and everything on them, assembling LVM2 volume groups and MD RAID1
/// arrays across all of them (a VG spanning two disks given as two targets). Results are in
/// the order of `targets`.
pub fn open_disks(targets: &[String], opts: &OpenOptions) -> Vec<Result<DiskTarget>> {
    let mut results: Vec<Result<DiskTarget>> = targets.iter().map(|t| open_one(t, opts)).collect();
    let mut opened: Vec<DiskTarget> = Vec::new();
    let mut slots = Vec::with_capacity(results.len());
    for r in results.drain(..) {
        match r {
            Ok(t) => {
                slots.push(Ok(opened.len()));
                opened.push(t);
            }
            Err(e) => slots.push(Err(e)),
        }
    }
    assemble(&mut opened);
    let mut opened: Vec<Option<DiskTarget>> = opened.into_iter().map(Some).collect();
    slots
        .into_iter()
        .map(|s| s.map(|i| opened[i].take().expect("each target is taken once")))
        .collect()
}

/// Volume-layer assembly across targets: MD RAID1 members of one array read once, then LVM2
/// VGs from every PV, each LV added as a volume of the target holding its first extent.
fn assemble(targets: &mut [DiskTarget]) {
    dedupe_raid1(targets);
    let mut where_: Vec<(usize, usize)> = Vec::new();
    let mut pvs: Vec<(SharedSource, lvm2::PvScan)> = Vec::new();
    for (ti, t) in targets.iter_mut().enumerate() {
        for (vi, v) in t.volumes.iter_mut().enumerate() {
            if !v.no_files || !matches!(v.content.last(), Some(Content::LvmPv { .. })) {
                continue;
            }
            match lvm2::scan_pv(v.source.as_ref()) {
                Ok(Some(scan)) => {
                    v.notes.extend(scan.problems.iter().map(|p| p.to_string()));
                    if scan.metadata.is_none() && scan.label.metadata_areas.is_empty() {
                        v.notes.push("PV without metadata areas".into());
                    }
                    where_.push((ti, vi));
                    pvs.push((v.source.clone(), scan));
                }
                Ok(None) => {}
                Err(e) => {
                    v.no_files = false;
                    v.filesystem = Err(Arc::new(e));
                }
            }
        }
    }
    let groups = lvm2::assemble(&pvs);
    let mut in_vg = vec![false; pvs.len()];
    for vg in &groups {
        for m in &vg.members {
            in_vg[*m] = true;
        }
        if let Some(e) = &vg.error {
            // Every PV carrying this VG's metadata reports why the VG cannot be read.
            for (i, (_, scan)) in pvs.iter().enumerate() {
                if scan.metadata.as_ref().is_some_and(|m| m.vg_id == vg.uuid) {
                    in_vg[i] = true;
                    let (ti, vi) = where_[i];
                    let v = &mut targets[ti].volumes[vi];
                    v.no_files = false;
                    v.filesystem = Err(e.clone());
                }
            }
            continue;
        }
        if let Some(first) = vg.members.first() {
            let (ti, vi) = where_[*first];
            let v = &mut targets[ti].volumes[vi];
            v.notes.extend(vg.problems.iter().map(|p| p.to_string()));
            if !vg.missing.is_empty() {
                v.notes.push(format!(
                    "VG {} is missing PVs: {}",
                    vg.name,
                    vg.missing.join(", ")
                ));
            }
        }
        for lv in &vg.lvs {
            let Some(home) = lv.home.or(vg.members.first().copied()) else {
                continue;
            };
            let (ti, vi) = where_[home];
            let pv_vol = &targets[ti].volumes[vi];
            let mut partition = pv_vol.partition.clone();
            partition.start =
                partition
                    .start
                    .saturating_add(if lv.home.is_some() { lv.home_offset } else { 0 });
            partition.size = lv.size;
            partition.type_id = "lvm2-lv".to_string();
            partition.type_name = Some(format!("LVM2 {}", lv.segment_types.join("+")));
            partition.label = None;
            partition.guid = Some(lv.uuid.clone()).filter(|u| !u.is_empty());
            let volume = match &lv.source {
                Ok(src) => {
                    let p = probe_volume(src.clone(), &lv.name, None, 1);
                    Volume {
                        partition,
                        name: Some(lv.name.clone()),
                        content: p.content,
                        no_files: p.no_files,
                        notes: Vec::new(),
                        source: p.source,
                        fs_kind: p.fs_kind,
                        filesystem: p.filesystem,
                    }
                }
                Err(e) => Volume {
                    partition,
                    name: Some(lv.name.clone()),
                    content: Vec::new(),
                    no_files: false,
                    notes: Vec::new(),
                    source: pv_vol.source.clone(),
                    fs_kind: None,
                    filesystem: Err(e.clone()),
                },
            };
            targets[ti].volumes.push(volume);
        }
    }
    // A PV that no readable VG claims hides its LVs: that is an error, never silence.
    for (i, (ti, vi)) in where_.iter().enumerate() {
        if in_vg[i] {
            continue;
        }
        let v = &mut targets[*ti].volumes[*vi];
        let scan = &pvs[i].1;
        let e = match scan.problems.first() {
            Some(p) => p.clone(),
            None => Arc::new(Error::MissingDevice {
                object: v.source.name().to_string(),
                detail: format!(
                    "PV {} holds no volume group metadata and no PV given holds metadata naming it",
                    scan.label.display_uuid()
                ),
            }),
        };
        v.no_files = false;
        v.filesystem = Err(e);
    }
}

/// Of the members of one MD RAID1 array given together, reads only the freshest (highest event
/// count, then the first given); the others are listed as members read through it.
fn dedupe_raid1(targets: &mut [DiskTarget]) {
    let mut best: std::collections::HashMap<String, (usize, usize, u64)> = Default::default();
    for (ti, t) in targets.iter().enumerate() {
        for (vi, v) in t.volumes.iter().enumerate() {
            if let Some(Content::Md(m)) = v.content.first() {
                if m.level != 1 {
                    continue;
                }
                let e = best
                    .entry(m.array_uuid.clone())
                    .or_insert((ti, vi, m.events));
                if m.events > e.2 {
                    *e = (ti, vi, m.events);
                }
            }
        }
    }
    for ti in 0..targets.len() {
        for vi in 0..targets[ti].volumes.len() {
            let Some(Content::Md(m)) = targets[ti].volumes[vi].content.first().cloned() else {
                continue;
            };
            let Some(&(bt, bv, _)) = best.get(&m.array_uuid) else {
                continue;
            };
            if (bt, bv) == (ti, vi) {
                continue;
            }
            let through = format!(
                "{} partition {}",
                targets[bt].name, targets[bt].volumes[bv].partition.index
            );
            let v = &mut targets[ti].volumes[vi];
            v.content.truncate(1);
            v.no_files = true;
            v.fs_kind = None;
            v.filesystem = Err(Arc::new(Error::unsupported(
                v.source.name().to_string(),
                format!("RAID1 member of MD array {}", m.array_uuid),
            )));
            v.notes.push(format!(
                "RAID1 member of MD array {}, read through {through}",
                m.array_uuid
            ));
        }
    }
}

/// Whether `target` names a host directory (scanned with a plain directory walk).
pub fn is_directory(target: &str) -> bool {
    PathBuf::from(target).is_dir()
}
