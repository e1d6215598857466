//! From a target (image, device, directory) to its volumes and their filesystems: the shared
//! front half of `ls`, `info`, `cat` and `scan`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::block::{CachedSource, SharedSource, Window};
use crate::disk::{self, OpenOptions, OpenedDisk};
use crate::error::{Error, Result};
use crate::fs::{self, FsKind, SharedFilesystem};
use crate::partition::{self, Partition, PartitionTable};

/// A volume: a partition (or whole disk) with the filesystem found on it.
#[derive(Debug, Clone)]
pub struct Volume {
    /// The partition this volume is (index 0 for a whole disk).
    pub partition: Partition,
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

    /// The problem to report for this volume, if any: unreadable, or expected to hold a
    /// filesystem but none was recognised.
    pub fn problem(&self) -> Option<Arc<Error>> {
        match &self.filesystem {
            Ok(_) => None,
            Err(e) if self.fs_kind.is_some() || self.expects_filesystem() => Some(e.clone()),
            Err(_) => None,
        }
    }

    /// Report status: `ok`, `unrecognized`, or `error: ...`.
    pub fn status(&self) -> String {
        match (&self.filesystem, self.fs_kind) {
            (Ok(_), _) => "ok".to_string(),
            (Err(e), None) if e.reason() == crate::Reason::Corrupt => format!("error: {e}"),
            (Err(_), None) => "unrecognized".to_string(),
            (Err(e), Some(_)) => format!("error: {e}"),
        }
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

/// Opens a disk image, block device or NBD URL and everything on it.
pub fn open_disk(target: &str, opts: &OpenOptions) -> Result<DiskTarget> {
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
                    source: cached.clone(),
                    fs_kind: None,
                    filesystem: Err(Arc::new(e)),
                });
                continue;
            }
        };
        let (fs_kind, filesystem) = match fs::probe(&source) {
            Ok(Some(kind)) => (Some(kind), fs::open(source.clone(), kind).map_err(Arc::new)),
            Ok(None) => (None, Err(Arc::new(unrecognised(&name, p)))),
            Err(e) => (None, Err(Arc::new(e))),
        };
        volumes.push(Volume {
            partition: p.clone(),
            source,
            fs_kind,
            filesystem,
        });
    }
    Ok(DiskTarget {
        name: target.to_string(),
        disk,
        table,
        volumes,
    })
}

/// Whether `target` names a host directory (scanned with a plain directory walk).
pub fn is_directory(target: &str) -> bool {
    PathBuf::from(target).is_dir()
}
