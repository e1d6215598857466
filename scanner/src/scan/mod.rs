//! The scan pipeline (DESIGN.md sections 1 and 3): targets -> volumes -> files -> engine ->
//! [`ScanReport`].
//!
//! Per target and per volume, the filesystem is walked first (sequentially: walks are cheap and
//! filesystem-specific), then the files are scanned on a local rayon pool of `jobs` threads,
//! largest first so that one huge file does not start last and hold the scan up alone. Content
//! is scanned once per [`FileId`] (hard links share it); every name of a detected file is
//! reported.
//!
//! Accounting is exact: every enumerated file ends either scanned completely (counted in
//! [`ScanStats`]) or in `not_scanned` with a reason (it may also have detections). Targets that
//! cannot be opened, partition-table problems, volumes that cannot be read and walk errors are
//! `not_scanned` entries too (with `partition` and/or `path` null when a whole target or volume
//! is concerned). A corrupt volume does not stop the rest.

pub mod host;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::disk::OpenOptions;
use crate::engine::ScanEngine;
use crate::error::{Error, Result};
use crate::fs::{self, EntryKind, FileEntry, FileId, FileReader, WalkEvent};
use crate::inventory;
use crate::report::{
    now_rfc3339, Detection, NotScanned, PartitionReport, ScanReport, ScanStats, TargetReport,
};

/// Scan options.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Scan threads; 0 means one per core.
    pub jobs: usize,
    /// How disk images are opened (backing-file policy, snapshot).
    pub open: OpenOptions,
}

/// Receives progress while a scan runs (from scan threads: implementations must be `Sync`).
pub trait ScanObserver: Sync {
    /// Enumeration of a volume (or host directory) starts.
    fn walking(&self, _target: &str, _partition: u32) {}
    /// A volume was enumerated: `files` more files of `bytes` total will be scanned.
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

/// Reads the content of an enumerated entry: a guest filesystem or a host tree.
trait Contents: Sync {
    fn open_entry(&self, entry: &FileEntry) -> Result<Box<dyn FileReader + '_>>;
}

impl Contents for dyn fs::Filesystem + '_ {
    fn open_entry(&self, entry: &FileEntry) -> Result<Box<dyn FileReader + '_>> {
        self.open(entry)
    }
}

impl Contents for host::HostTree {
    fn open_entry(&self, entry: &FileEntry) -> Result<Box<dyn FileReader + '_>> {
        self.open(entry)
    }
}

/// Everything the scan of one target produced.
#[derive(Debug, Default)]
struct Findings {
    files: u64,
    bytes: u64,
    detections: Vec<Detection>,
    not_scanned: Vec<NotScanned>,
}

/// Shared state of one scan.
struct Scan<'a> {
    engine: &'a dyn ScanEngine,
    pool: rayon::ThreadPool,
    observer: &'a dyn ScanObserver,
}

/// Scans every target and builds the report. Fails only when the thread pool cannot be built;
/// every problem with a target is in the report.
pub fn scan_targets(
    engine: &dyn ScanEngine,
    targets: &[String],
    opts: &ScanOptions,
    observer: &dyn ScanObserver,
) -> Result<ScanReport> {
    let started = now_rfc3339();
    let clock = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs)
        .thread_name(|i| format!("coldscan-scan-{i}"))
        .build()
        .map_err(|e| Error::Engine {
            object: "scan".into(),
            detail: format!("cannot start scan threads: {e}"),
        })?;
    let scan = Scan {
        engine,
        pool,
        observer,
    };
    let mut report = ScanReport {
        schema_version: crate::report::SCHEMA_VERSION,
        tool: "coldscan".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        engine: engine.info(),
        started,
        finished: String::new(),
        targets: Vec::with_capacity(targets.len()),
        stats: ScanStats::default(),
        detections: Vec::new(),
        not_scanned: Vec::new(),
    };
    for target in targets {
        let (target_report, mut findings) = if inventory::is_directory(target) {
            scan.directory(target)
        } else {
            scan.disk(target, &opts.open)
        };
        findings.detections.sort();
        findings.not_scanned.sort();
        report.targets.push(target_report);
        report.stats.files += findings.files;
        report.stats.bytes += findings.bytes;
        report.detections.extend(findings.detections);
        report.not_scanned.extend(findings.not_scanned);
    }
    report.stats.seconds = clock.elapsed().as_secs_f64();
    report.finished = now_rfc3339();
    Ok(report)
}

impl Scan<'_> {
    fn note(&self, f: &mut Findings, n: NotScanned) {
        self.observer.not_scanned(&n);
        f.not_scanned.push(n);
    }

    /// A host directory tree.
    fn directory(&self, target: &str) -> (TargetReport, Findings) {
        let mut findings = Findings::default();
        let root = std::path::absolute(Path::new(target))
            .unwrap_or_else(|_| Path::new(target).to_path_buf());
        let report = TargetReport {
            target: target.to_string(),
            format: "directory".into(),
            chain: Vec::new(),
            size: 0,
            partitions: Vec::new(),
        };
        self.observer.walking(target, 0);
        let (tree, walk) = host::HostTree::walk(&root);
        for (path, error) in walk.errors {
            self.note(
                &mut findings,
                NotScanned {
                    target: target.to_string(),
                    partition: Some(0),
                    path: Some(path),
                    reason: error.reason(),
                    detail: error.to_string(),
                },
            );
        }
        self.files(target, 0, &walk.entries, &tree, &mut findings);
        (report, findings)
    }

    /// A disk image or device, through the inventory.
    fn disk(&self, target: &str, open: &OpenOptions) -> (TargetReport, Findings) {
        let mut findings = Findings::default();
        let opened = match inventory::open_disk(target, open) {
            Ok(t) => t,
            Err(e) => {
                self.note(
                    &mut findings,
                    NotScanned {
                        target: target.to_string(),
                        partition: None,
                        path: None,
                        reason: e.reason(),
                        detail: e.to_string(),
                    },
                );
                let report = TargetReport {
                    target: target.to_string(),
                    format: "unknown".into(),
                    chain: Vec::new(),
                    size: 0,
                    partitions: Vec::new(),
                };
                return (report, findings);
            }
        };
        let report = TargetReport {
            target: target.to_string(),
            format: opened.disk.format.as_str().to_string(),
            chain: opened.disk.chain.iter().map(|l| l.path.clone()).collect(),
            size: opened.disk.source.size(),
            partitions: opened
                .volumes
                .iter()
                .map(|v| PartitionReport {
                    index: v.partition.index,
                    scheme: opened.table.scheme.as_str().to_string(),
                    type_id: v.partition.type_id.clone(),
                    start: v.partition.start,
                    size: v.partition.size,
                    fs: v.fs_kind.map(|k| k.as_str().to_string()),
                    status: v.status(),
                })
                .collect(),
        };
        for p in &opened.table.problems {
            self.note(
                &mut findings,
                NotScanned {
                    target: target.to_string(),
                    partition: None,
                    path: None,
                    reason: p.reason(),
                    detail: p.to_string(),
                },
            );
        }
        for v in &opened.volumes {
            let index = v.partition.index;
            if let Some(e) = v.problem() {
                self.note(
                    &mut findings,
                    NotScanned {
                        target: target.to_string(),
                        partition: Some(index),
                        path: None,
                        reason: e.reason(),
                        detail: e.to_string(),
                    },
                );
            }
            let Ok(fsys) = &v.filesystem else { continue };
            self.volume(target, index, fsys.as_ref(), &mut findings);
        }
        (report, findings)
    }

    /// Walks one guest volume and scans its files.
    fn volume(&self, target: &str, index: u32, fsys: &dyn fs::Filesystem, findings: &mut Findings) {
        self.observer.walking(target, index);
        let mut entries = Vec::new();
        let mut walk_errors = Vec::new();
        let walked = fsys.walk(&mut |ev| match ev {
            WalkEvent::Entry(e) => {
                if e.kind == EntryKind::File {
                    entries.push(e);
                }
            }
            WalkEvent::Error { path, error } => walk_errors.push((Some(path), error)),
        });
        if let Err(e) = walked {
            walk_errors.push((None, e));
        }
        for (path, error) in walk_errors {
            self.note(
                findings,
                NotScanned {
                    target: target.to_string(),
                    partition: Some(index),
                    path,
                    reason: error.reason(),
                    detail: error.to_string(),
                },
            );
        }
        self.files(target, index, &entries, fsys, findings);
    }

    /// Scans the regular files of one volume: once per content id, largest first.
    fn files<C: Contents + ?Sized>(
        &self,
        target: &str,
        partition: u32,
        entries: &[FileEntry],
        contents: &C,
        findings: &mut Findings,
    ) {
        let mut by_id: HashMap<FileId, Vec<&FileEntry>> = HashMap::new();
        for e in entries.iter().filter(|e| e.kind == EntryKind::File) {
            if let Some(u) = &e.unreadable {
                self.note(
                    findings,
                    NotScanned {
                        target: target.to_string(),
                        partition: Some(partition),
                        path: Some(e.path.clone()),
                        reason: u.reason,
                        detail: format!("{}: {}", e.path, u.detail),
                    },
                );
                continue;
            }
            by_id.entry(e.id).or_default().push(e);
        }
        let mut work: Vec<Vec<&FileEntry>> = by_id.into_values().collect();
        // Largest first (head-of-line blocking), then by id for a stable order.
        work.sort_by(|a, b| {
            let (a, b) = (a[0], b[0]);
            b.size.cmp(&a.size).then_with(|| a.id.cmp(&b.id))
        });
        let total: u64 = work.iter().map(|names| names[0].size).sum();
        self.observer.enumerated(work.len() as u64, total);
        let results: Vec<Findings> = self.pool.install(|| {
            crate::parallel::map_each(&work, |names| self.one(target, partition, names, contents))
        });
        for r in results {
            findings.files += r.files;
            findings.bytes += r.bytes;
            findings.detections.extend(r.detections);
            findings.not_scanned.extend(r.not_scanned);
        }
    }

    /// Scans one content (all its names), on a pool thread.
    fn one<C: Contents + ?Sized>(
        &self,
        target: &str,
        partition: u32,
        names: &[&FileEntry],
        contents: &C,
    ) -> Findings {
        let mut out = Findings::default();
        let Some(first) = names.first() else {
            return out;
        };
        let verdict = contents
            .open_entry(first)
            .and_then(|mut reader| self.engine.scan(reader.as_mut(), &first.path));
        match verdict {
            Err(e) => {
                for n in names {
                    self.note(
                        &mut out,
                        NotScanned {
                            target: target.to_string(),
                            partition: Some(partition),
                            path: Some(n.path.clone()),
                            reason: e.reason(),
                            detail: e.to_string(),
                        },
                    );
                }
            }
            Ok(v) => {
                if v.incomplete.is_empty() {
                    out.files = names.len() as u64;
                    out.bytes = first.size;
                }
                for inc in &v.incomplete {
                    for n in names {
                        self.note(
                            &mut out,
                            NotScanned {
                                target: target.to_string(),
                                partition: Some(partition),
                                path: Some(n.path.clone()),
                                reason: inc.reason,
                                detail: inc.detail.clone(),
                            },
                        );
                    }
                }
                if !v.signatures.is_empty() {
                    let sha256 = sha256_of(contents, first);
                    for sig in &v.signatures {
                        for n in names {
                            let d = Detection {
                                target: target.to_string(),
                                partition,
                                path: n.path.clone(),
                                stream: n.stream.clone(),
                                size: n.size,
                                sha256: sha256.clone(),
                                signature: sig.clone(),
                            };
                            self.observer.detection(&d);
                            out.detections.push(d);
                        }
                    }
                }
            }
        }
        self.observer.finished(first.size);
        out
    }
}

/// sha256 of a detected file's content (read again: detections are rare, and libclamav does not
/// read every byte in order).
fn sha256_of<C: Contents + ?Sized>(contents: &C, entry: &FileEntry) -> Option<String> {
    let mut reader = contents.open_entry(entry).ok()?;
    let mut hasher = Sha256::new();
    fs::read_all(reader.as_mut(), &entry.path, &mut |chunk| {
        hasher.update(chunk)
    })
    .ok()?;
    Some(hex::encode(hasher.finalize()))
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
        let scan = Scan {
            engine: &e,
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap(),
            observer: &NoProgress,
        };
        let mut f = Findings::default();
        scan.volume("disk.img", 2, &fsys, &mut f);
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
