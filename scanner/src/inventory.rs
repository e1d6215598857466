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
            Ok(None) => (
                None,
                Err(Arc::new(Error::unsupported(
                    &name,
                    "no recognised filesystem",
                ))),
            ),
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
