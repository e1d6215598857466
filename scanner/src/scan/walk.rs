//! The walker: opens each target, walks its volumes (or host tree) and feeds every content into
//! the queue as it is found; it notes what cannot be opened or walked.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::host::{self, HostEvent};
use super::queue::WorkQueue;
use super::worker::{report, Contents, Origin, Slot, Work};
use super::Collector;
use crate::disk::{DiskFormat, OpenOptions};
use crate::error::Error;
use crate::fs::{EntryKind, FileEntry, FileId, SharedFilesystem, WalkEvent};
use crate::inventory::{self, DiskTarget};
use crate::partition::Scheme;
use crate::report::{NotScanned, PartitionReport, TargetReport};

/// Walks the targets one after the other, feeding the queue.
pub(super) struct Walker<'a> {
    queue: &'a WorkQueue<Work>,
    collector: &'a Collector<'a>,
    open: &'a OpenOptions,
    host: host::HostWalker,
}

/// The contents of one volume seen so far, to read hard links once. Dropped when the volume's
/// walk ends (queued work keeps what it needs).
type Seen = HashMap<FileId, Arc<Slot>>;

impl<'a> Walker<'a> {
    pub(super) fn new(
        queue: &'a WorkQueue<Work>,
        collector: &'a Collector<'a>,
        open: &'a OpenOptions,
    ) -> Self {
        Walker {
            queue,
            collector,
            open,
            host: host::HostWalker::default(),
        }
    }

    /// Walks every target; returns their reports in order.
    pub(super) fn run(mut self, targets: &[String]) -> Vec<TargetReport> {
        // Disks are opened together so that volume groups spanning several are assembled.
        let disks: Vec<String> = targets
            .iter()
            .filter(|t| !inventory::is_directory(t))
            .cloned()
            .collect();
        let mut opened = inventory::open_disks(&disks, self.open).into_iter();
        targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let origin = Origin {
                    target: i,
                    target_name: Arc::from(t.as_str()),
                    partition: 0,
                    volume: None,
                };
                if inventory::is_directory(t) {
                    self.directory(origin)
                } else {
                    let disk = opened.next().unwrap_or_else(|| {
                        Err(Error::NotFound {
                            object: t.clone(),
                            detail: "not opened".into(),
                        })
                    });
                    self.disk(origin, disk)
                }
            })
            .collect()
    }

    fn note(&self, origin: &Origin, partition: Option<u32>, path: Option<String>, e: &Error) {
        self.collector.note(
            origin.target,
            NotScanned {
                target: origin.target_name.to_string(),
                partition,
                volume: partition.and(origin.volume.as_deref().map(str::to_string)),
                path,
                reason: e.reason(),
                detail: e.to_string(),
            },
        );
    }

    /// Queues one name of a content, or attaches it to the content already queued.
    fn offer(&self, seen: &mut Seen, origin: &Origin, contents: &Contents, entry: FileEntry) {
        if let Some(u) = &entry.unreadable {
            self.collector.note(
                origin.target,
                NotScanned {
                    target: origin.target_name.to_string(),
                    partition: Some(origin.partition),
                    volume: origin.volume.as_deref().map(str::to_string),
                    path: Some(entry.path.clone()),
                    reason: u.reason,
                    detail: format!("{}: {}", entry.path, u.detail),
                },
            );
            return;
        }
        if let Some(slot) = seen.get(&entry.id) {
            if let Some((name, outcome)) = slot.add_name(entry) {
                report(self.collector, origin, &name, &outcome, false);
            }
            return;
        }
        let slot = Arc::new(Slot::default());
        seen.insert(entry.id, slot.clone());
        self.collector.observer.enumerated(1, entry.size);
        self.queue.push(
            entry.size,
            Work {
                origin: origin.clone(),
                contents: contents.clone(),
                entry,
                slot,
            },
        );
    }

    /// A host directory tree.
    fn directory(&mut self, origin: Origin) -> TargetReport {
        let target = origin.target_name.to_string();
        let root = std::path::absolute(Path::new(&target))
            .unwrap_or_else(|_| Path::new(&target).to_path_buf());
        self.collector.observer.walking(&target, 0);
        let mut seen = Seen::new();
        let mut host = std::mem::take(&mut self.host);
        host.walk(&root, &mut |ev| match ev {
            HostEvent::File(f) => {
                let contents = Contents::Host {
                    path: f.path,
                    dev: f.dev,
                };
                self.offer(&mut seen, &origin, &contents, f.entry);
            }
            HostEvent::Error(path, e) => self.note(&origin, Some(0), Some(path), &e),
        });
        self.host = host;
        TargetReport {
            target,
            format: "directory".into(),
            chain: Vec::new(),
            size: 0,
            partitions: Vec::new(),
        }
    }

    /// A disk image, device or NBD export through the inventory, or a plain file.
    fn disk(&mut self, origin: Origin, opened: crate::Result<DiskTarget>) -> TargetReport {
        let target = origin.target_name.to_string();
        let opened = match opened {
            Ok(t) => t,
            Err(e) => {
                self.note(&origin, None, None, &e);
                return TargetReport {
                    target,
                    format: "unknown".into(),
                    chain: Vec::new(),
                    size: 0,
                    partitions: Vec::new(),
                };
            }
        };
        if is_plain_file(&target, &opened) {
            return self.file(origin, opened.disk.source.size());
        }
        let report = TargetReport {
            target: target.clone(),
            format: opened.disk.format.as_str().to_string(),
            chain: opened.disk.chain.iter().map(|l| l.path.clone()).collect(),
            size: opened.disk.source.size(),
            partitions: opened
                .volumes
                .iter()
                .map(|v| PartitionReport {
                    index: v.partition.index,
                    volume: v.name.clone(),
                    scheme: opened.table.scheme.as_str().to_string(),
                    type_id: v.partition.type_id.clone(),
                    start: v.partition.start,
                    size: v.partition.size,
                    fs: v.kind(),
                    status: v.status(),
                })
                .collect(),
        };
        for p in &opened.table.problems {
            self.note(&origin, None, None, p);
        }
        for v in &opened.volumes {
            let origin = Origin {
                partition: v.partition.index,
                volume: v.name.as_deref().map(Arc::from),
                ..origin.clone()
            };
            if let Some(e) = v.problem() {
                self.note(&origin, Some(origin.partition), None, &e);
            }
            let Ok(fsys) = &v.filesystem else { continue };
            self.volume(&origin, fsys);
        }
        report
    }

    /// Walks one guest volume, queueing its files.
    pub(super) fn volume(&self, origin: &Origin, fsys: &SharedFilesystem) {
        let index = origin.partition;
        self.collector.observer.walking(&origin.target_name, index);
        let contents = Contents::Volume(fsys.clone());
        let mut seen = Seen::new();
        let walked = fsys.walk(&mut |ev| match ev {
            WalkEvent::Entry(e) => {
                if e.kind == EntryKind::File {
                    self.offer(&mut seen, origin, &contents, e);
                }
            }
            WalkEvent::Error { path, error } => self.note(origin, Some(index), Some(path), &error),
        });
        if let Err(e) = walked {
            self.note(origin, Some(index), None, &e);
        }
    }

    /// A regular host file that is not a disk image: one content, scanned as a file.
    fn file(&mut self, origin: Origin, size: u64) -> TargetReport {
        let target = origin.target_name.to_string();
        let path = std::path::absolute(Path::new(&target))
            .unwrap_or_else(|_| Path::new(&target).to_path_buf());
        let report = TargetReport {
            target: target.clone(),
            format: "file".into(),
            chain: Vec::new(),
            size,
            partitions: Vec::new(),
        };
        self.collector.observer.walking(&target, 0);
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let entry = FileEntry {
                    path: path.display().to_string(),
                    stream: None,
                    kind: EntryKind::File,
                    size: meta.len(),
                    id: self.host.id_of(&meta),
                    unreadable: None,
                };
                let contents = Contents::Host {
                    path,
                    dev: std::os::unix::fs::MetadataExt::dev(&meta),
                };
                self.offer(&mut Seen::new(), &origin, &contents, entry);
            }
            Err(e) => self.note(&origin, None, None, &Error::io(&target, 0, e)),
        }
        report
    }
}

/// Whether an opened target is a plain host file rather than a disk image: a regular file read
/// as raw (no image format), with no partition table and no filesystem on it.
fn is_plain_file(target: &str, opened: &DiskTarget) -> bool {
    opened.disk.format == DiskFormat::Raw
        && opened.table.scheme == Scheme::None
        && opened.volumes.iter().all(|v| v.fs_kind.is_none())
        && std::fs::metadata(target).is_ok_and(|m| m.file_type().is_file())
}
