//! The scan pipeline (DESIGN.md sections 1 and 3): targets -> volumes -> files -> engine ->
//! [`ScanReport`].
//!
//! A walker thread opens the targets one after the other and walks their volumes, feeding one
//! item per content into a bounded, largest-first [`queue::WorkQueue`]; `jobs` scan workers take
//! items from it as they come. Walking and scanning overlap, several volumes and targets are in
//! flight at once (the walker moves on while the workers finish the previous volume), memory is
//! bounded by the queue's capacity whatever the number of files (plus, while a volume is being
//! walked, one small record per content id of that volume, to read hard links once), and a big
//! file starts as soon as it is seen instead of after the whole volume was listed.
//!
//! Content is scanned once per [`FileId`] (hard links share it) and every name of a detected
//! file is reported. With a [`VerdictCache`], a content already scanned completely by the same
//! engine, signatures and limits is not scanned again (`stats.cached_files`, `cached` on
//! detections); see [`worker`] for how the hash is computed from the content read for the scan.
//!
//! Accounting is exact: every enumerated file ends either scanned completely (counted in
//! [`ScanStats`]) or in `not_scanned` with a reason (it may also have detections). Targets that
//! cannot be opened, partition-table problems, volumes that cannot be read and walk errors are
//! `not_scanned` entries too (with `partition` and/or `path` null when a whole target or volume
//! is concerned). A corrupt volume does not stop the rest.
//!
//! Targets: a disk image, device or NBD export goes through the inventory; a host directory is
//! walked ([`host`]); a regular host file that holds no partition table and no filesystem is not
//! a disk image and is scanned as one file, as clamscan does (report format `file`).

#[cfg(test)]
mod cache_tests;
pub mod host;
pub mod queue;
mod walk;
pub mod worker;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::cache::VerdictCache;
use crate::disk::OpenOptions;
use crate::engine::ScanEngine;
use crate::error::{Error, Result};
use crate::report::{now_rfc3339, Detection, NotScanned, ScanReport, ScanStats};

/// Scan options.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Scan threads; 0 means one per core.
    pub jobs: usize,
    /// How disk images are opened (backing-file policy, snapshot).
    pub open: OpenOptions,
    /// Verdicts of contents scanned before (by this engine identity), and where new ones go.
    pub cache: Option<Arc<VerdictCache>>,
}

/// Receives progress while a scan runs (from scan threads: implementations must be `Sync`).
pub trait ScanObserver: Sync {
    /// Enumeration of a volume (or host directory) starts.
    fn walking(&self, _target: &str, _partition: u32) {}
    /// More content was found: `files` more contents of `bytes` total will be scanned.
    fn enumerated(&self, _files: u64, _bytes: u64) {}
    /// One content was finished (scanned or not), `bytes` of its size.
    fn finished(&self, _bytes: u64) {}
    /// A detection was made.
    fn detection(&self, _detection: &Detection) {}
    /// Something could not be scanned.
    fn not_scanned(&self, _entry: &NotScanned) {}
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;
impl ScanObserver for NoProgress {}

/// Everything the scan of one target produced.
#[derive(Debug, Default)]
struct Findings {
    files: u64,
    bytes: u64,
    cached_files: u64,
    detections: Vec<Detection>,
    not_scanned: Vec<NotScanned>,
}

/// Findings per target (by index), filled by the walker and the workers.
struct Collector<'a> {
    targets: Mutex<Vec<Findings>>,
    observer: &'a dyn ScanObserver,
}

impl Collector<'_> {
    fn with(&self, target: usize, f: impl FnOnce(&mut Findings)) {
        if let Ok(mut all) = self.targets.lock() {
            if let Some(t) = all.get_mut(target) {
                f(t);
            }
        }
    }

    fn note(&self, target: usize, n: NotScanned) {
        self.observer.not_scanned(&n);
        self.with(target, |f| f.not_scanned.push(n));
    }

    fn detection(&self, target: usize, d: Detection) {
        self.observer.detection(&d);
        self.with(target, |f| f.detections.push(d));
    }
}

/// Scans every target and builds the report. Fails only when the scan threads cannot be
/// started; every problem with a target is in the report.
pub fn scan_targets(
    engine: &dyn ScanEngine,
    targets: &[String],
    opts: &ScanOptions,
    observer: &dyn ScanObserver,
) -> Result<ScanReport> {
    let started = now_rfc3339();
    let clock = Instant::now();
    let (target_reports, findings) = run(engine, opts, observer, targets.len(), |walker| {
        walker.run(targets)
    })?;
    let mut report = ScanReport {
        schema_version: crate::report::SCHEMA_VERSION,
        tool: "coldscan".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        engine: engine.info(),
        started,
        finished: String::new(),
        targets: target_reports,
        stats: ScanStats::default(),
        detections: Vec::new(),
        not_scanned: Vec::new(),
    };
    for mut f in findings {
        f.detections.sort();
        f.not_scanned.sort();
        report.stats.files += f.files;
        report.stats.bytes += f.bytes;
        report.stats.cached_files += f.cached_files;
        report.detections.extend(f.detections);
        report.not_scanned.extend(f.not_scanned);
    }
    report.stats.seconds = clock.elapsed().as_secs_f64();
    report.finished = now_rfc3339();
    Ok(report)
}

/// Runs the pipeline: `walk` feeds the queue on this thread while `jobs` workers scan.
fn run<R>(
    engine: &dyn ScanEngine,
    opts: &ScanOptions,
    observer: &dyn ScanObserver,
    targets: usize,
    walk: impl FnOnce(walk::Walker<'_>) -> R,
) -> Result<(R, Vec<Findings>)> {
    let jobs = match opts.jobs {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let collector = Collector {
        targets: Mutex::new((0..targets).map(|_| Findings::default()).collect()),
        observer,
    };
    let queue = queue::WorkQueue::new(queue::QUEUE_CAPACITY, 1);
    let cache = opts.cache.as_deref();
    let walked = std::thread::scope(|scope| -> Result<R> {
        let mut workers = Vec::with_capacity(jobs);
        for i in 0..jobs {
            let (queue, collector) = (&queue, &collector);
            let spawned = std::thread::Builder::new()
                .name(format!("coldscan-scan-{i}"))
                .spawn_scoped(scope, move || {
                    worker::Worker::new(engine, cache, collector).run(queue)
                });
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    queue.producer_done();
                    return Err(Error::Engine {
                        object: "scan".into(),
                        detail: format!("cannot start scan threads: {e}"),
                    });
                }
            }
        }
        let walked = walk(walk::Walker::new(&queue, &collector, &opts.open));
        queue.producer_done();
        for w in workers {
            let _ = w.join();
        }
        Ok(walked)
    })?;
    let findings = collector.targets.into_inner().unwrap_or_default();
    Ok((walked, findings))
}

/// Whether a report shows anything not scanned that `--allow-partial` does not excuse: a whole
/// target or volume (entries without a path).
pub fn has_unscanned_volumes(report: &ScanReport) -> bool {
    report.not_scanned.iter().any(|n| n.path.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::clamav::tests::{eicar, engine};
    use crate::engine::clamav::Limits;
    use crate::error::Reason;
    use crate::fs::{self, EntryKind, FileEntry, FileId, FileReader, WalkEvent};
    use sha2::{Digest, Sha256};
    use std::path::Path;

    fn scan_dir(dir: &Path, limits: Limits) -> ScanReport {
        let e = engine(limits);
        let opts = ScanOptions {
            jobs: 2,
            ..ScanOptions::default()
        };
        scan_targets(&e, &[dir.display().to_string()], &opts, &NoProgress).unwrap()
    }

    #[test]
    fn host_tree_detections_hard_links_and_accounting() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/eicar.com"), eicar()).unwrap();
        std::fs::hard_link(root.join("a/b/c/eicar.com"), root.join("a/link.com")).unwrap();
        std::fs::copy(
            "/usr/share/clamav-testfiles/clam.exe",
            root.join("a/clam.exe"),
        )
        .unwrap();
        std::fs::write(root.join("clean.txt"), b"nothing to see").unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        let r = scan_dir(root, Limits::default());
        let found: Vec<(String, String)> = r
            .detections
            .iter()
            .map(|d| {
                (
                    d.path
                        .strip_prefix(&root.display().to_string())
                        .unwrap()
                        .to_string(),
                    d.signature.clone(),
                )
            })
            .collect();
        assert_eq!(
            found,
            vec![
                (
                    "/a/b/c/eicar.com".to_string(),
                    "Test.EICAR.UNOFFICIAL".to_string()
                ),
                ("/a/clam.exe".to_string(), "clam.exe.UNOFFICIAL".to_string()),
                (
                    "/a/link.com".to_string(),
                    "Test.EICAR.UNOFFICIAL".to_string()
                ),
            ]
        );
        assert!(r.not_scanned.is_empty(), "{:?}", r.not_scanned);
        assert_eq!(r.stats.files, 5);
        let eicar_sha = hex::encode(Sha256::digest(eicar()));
        assert_eq!(r.detections[0].sha256.as_deref(), Some(eicar_sha.as_str()));
        assert_eq!(r.detections[0].partition, 0);
        assert_eq!(r.targets[0].format, "directory");
    }

    #[test]
    fn limits_are_reported_not_clean() {
        let dir = tempfile::tempdir().unwrap();
        let mut big = eicar();
        big.resize(10_000, b' ');
        std::fs::write(dir.path().join("big"), &big).unwrap();
        std::fs::write(dir.path().join("small"), b"ok").unwrap();
        let r = scan_dir(
            dir.path(),
            Limits {
                max_file_size: 5000,
                ..Limits::default()
            },
        );
        assert!(r.detections.is_empty());
        assert_eq!(r.not_scanned.len(), 1, "{:?}", r.not_scanned);
        assert_eq!(r.not_scanned[0].reason, Reason::TooLarge);
        assert!(r.not_scanned[0].path.as_ref().unwrap().ends_with("/big"));
        assert_eq!(r.stats.files, 1);
        assert!(!has_unscanned_volumes(&r));
    }

    #[test]
    fn unreadable_directory_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::write(locked.join("f"), b"x").unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read_dir(&locked).is_ok() {
            // Running as root: the permission error cannot be planted.
            std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
            return;
        }
        let r = scan_dir(dir.path(), Limits::default());
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(r.not_scanned.len(), 1, "{:?}", r.not_scanned);
        assert_eq!(r.not_scanned[0].reason, Reason::IoError);
    }

    #[test]
    fn missing_target_is_a_target_error() {
        let e = engine(Limits::default());
        let r = scan_targets(
            &e,
            &["/nonexistent/disk.img".to_string()],
            &ScanOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert_eq!(r.not_scanned.len(), 1);
        assert!(r.not_scanned[0].partition.is_none());
        assert!(has_unscanned_volumes(&r));
    }

    /// A guest filesystem stand-in: hard links, an ADS, an unreadable entry, a walk error and a
    /// file whose reads fail.
    #[derive(Debug)]
    struct MockFs {
        files: Vec<(FileEntry, Vec<u8>)>,
    }

    fn entry(path: &str, node: u64, size: u64) -> FileEntry {
        FileEntry {
            path: path.into(),
            stream: None,
            kind: EntryKind::File,
            size,
            id: FileId { node, stream: 0 },
            unreadable: None,
        }
    }

    impl fs::Filesystem for MockFs {
        fn kind(&self) -> fs::FsKind {
            fs::FsKind::Ntfs
        }
        fn walk(&self, visit: &mut dyn FnMut(WalkEvent)) -> Result<()> {
            visit(WalkEvent::Entry(FileEntry {
                kind: EntryKind::Dir,
                ..entry("/dir", 5, 0)
            }));
            for (e, _) in &self.files {
                visit(WalkEvent::Entry(e.clone()));
            }
            visit(WalkEvent::Error {
                path: "/broken".into(),
                error: Error::corrupt("mock volume", 0x1000, "bad index block"),
            });
            Ok(())
        }
        fn open(&self, e: &FileEntry) -> Result<Box<dyn FileReader + '_>> {
            let (_, data) = self
                .files
                .iter()
                .find(|(f, _)| f.id == e.id)
                .ok_or_else(|| Error::corrupt("mock", 0, "no such id"))?;
            let mut r = crate::engine::clamav::tests::MemReader::new(data.clone());
            if e.path == "/failing" {
                r.fail_at = Some(10);
            }
            Ok(Box::new(r))
        }
    }

    #[test]
    fn guest_volume_accounting() {
        let eicar = eicar();
        let n = eicar.len() as u64;
        let mut ads = entry("/doc.txt:hidden", 7, n);
        ads.stream = Some("hidden".into());
        ads.id.stream = 1;
        let mut compressed = entry("/compact.dll", 8, 100);
        compressed.unreadable = Some(fs::Unreadable {
            reason: Reason::UnsupportedCompression,
            detail: "CompactOS XPRESS16K".into(),
        });
        let fsys = MockFs {
            files: vec![
                (entry("/a/eicar.com", 6, n), eicar.clone()),
                (entry("/b/same-inode.com", 6, n), eicar.clone()),
                (entry("/doc.txt", 7, 5), b"hello".to_vec()),
                (ads, eicar.clone()),
                (compressed, Vec::new()),
                (entry("/failing", 9, 1000), vec![0; 1000]),
                (entry("/empty", 10, 0), Vec::new()),
            ],
        };
        let e = engine(Limits::default());
        let opts = ScanOptions {
            jobs: 2,
            ..ScanOptions::default()
        };
        let fsys: crate::fs::SharedFilesystem = Arc::new(fsys);
        let ((), mut findings) = run(&e, &opts, &NoProgress, 1, |walker| {
            let origin = worker::Origin {
                target: 0,
                target_name: Arc::from("disk.img"),
                partition: 2,
                volume: None,
            };
            walker.volume(&origin, &fsys);
        })
        .unwrap();
        let mut f = findings.pop().unwrap();
        f.detections.sort();
        f.not_scanned.sort();
        let found: Vec<(&str, Option<&str>)> = f
            .detections
            .iter()
            .map(|d| (d.path.as_str(), d.stream.as_deref()))
            .collect();
        assert_eq!(
            found,
            vec![
                ("/a/eicar.com", None),
                ("/b/same-inode.com", None),
                ("/doc.txt:hidden", Some("hidden")),
            ]
        );
        assert!(f.detections.iter().all(|d| d.partition == 2));
        let ns: Vec<(&str, Reason)> = f
            .not_scanned
            .iter()
            .map(|n| (n.path.as_deref().unwrap(), n.reason))
            .collect();
        assert_eq!(
            ns,
            vec![
                ("/broken", Reason::Corrupt),
                ("/compact.dll", Reason::UnsupportedCompression),
                ("/failing", Reason::IoError),
            ]
        );
        // Scanned completely: both names of inode 6, /doc.txt, its stream, /empty.
        assert_eq!(f.files, 5);
        // Content bytes once per id: eicar (inode 6) + 5 + eicar (stream) + 0.
        assert_eq!(f.bytes, 2 * n + 5);
    }
}
