//! A scan worker: takes contents from the queue, scans each once, reports every name of it.
//!
//! How content is read (one read per content wherever possible):
//! - **Small contents** (up to [`MEMORY_SCAN_MAX`]) are read whole into a buffer the worker keeps
//!   and reuses, hashed there when the hash is needed (cache, or a detection), and given to the
//!   engine as memory. One read serves the hash, the cache lookup and the scan, and libclamav
//!   needs no page map of its own (measured: its handle maps take a fresh anonymous mapping per
//!   file and fault every page in under a process-wide lock).
//! - **Mid-size contents** (up to [`TRANSIENT_SCAN_MAX`]) go the same way through a buffer of
//!   their own, freed after the scan. Through a handle map they cost more than the memory: for
//!   each page libclamav first touches the fresh mapping for reading (mapping the shared zero
//!   page), then our read writes it, and replacing the zero page flushes that TLB entry on every
//!   CPU running the process: one inter-processor interrupt per 4 KiB with two scan threads
//!   (measured: 3.5% of all CPU time in `smp_call_function_many_cond` and the x2APIC write, on
//!   top of the other thread's lost time).
//! - **Large contents** are scanned through the engine's positional reader. Without a cache the
//!   hash only goes into detections, so it is computed after the scan for a detected content
//!   only (one more read of a rare file rather than hashing every large clean one). With a
//!   cache, the hash must be known before the scan to look the verdict up, so a large content
//!   is hashed first and, on a miss, read a second time by the scan; if that hash cannot be
//!   read, the scan's own in-order reads feed it ([`crate::engine::ScanEngine::scan_hashed`]).
//! - A content that cannot be read whole into the buffer (read error, shorter than its size) is
//!   scanned through the reader, which reports exactly what could not be read.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::queue::WorkQueue;
use super::{host, Collector};
use crate::cache::VerdictCache;
use crate::engine::{ScanEngine, Verdict};
use crate::error::{Error, Reason, Result};
use crate::fs::{FileEntry, FileReader, SharedFilesystem};
use crate::report::{Detection, NotScanned};

/// Largest content read whole into a worker's buffer (one such buffer per worker, kept).
pub const MEMORY_SCAN_MAX: u64 = 16 << 20;

/// Largest content read whole into memory at all: above [`MEMORY_SCAN_MAX`], into a buffer of
/// its own that is freed after the scan, so each worker holds at most this much content.
pub const TRANSIENT_SCAN_MAX: u64 = 64 << 20;

/// Where a content is read from.
#[derive(Debug, Clone)]
pub(super) enum Contents {
    /// A guest filesystem.
    Volume(SharedFilesystem),
    /// A host file (inside a directory target, or a file target), checked to be the same
    /// `(device, inode)` when opened.
    Host {
        /// Exact path.
        path: PathBuf,
        /// Host device.
        dev: u64,
    },
}

/// Which target and volume a content belongs to.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    /// Target index (order of the command line).
    pub target: usize,
    /// Target as given.
    pub target_name: Arc<str>,
    /// Partition index (0 for whole disks, directories and files); for a logical volume, the
    /// partition holding its first extent.
    pub partition: u32,
    /// The logical volume (`vg/lv`) when the volume is one.
    pub volume: Option<Arc<str>>,
}

/// One content to scan.
#[derive(Debug)]
pub(super) struct Work {
    pub origin: Origin,
    pub contents: Contents,
    /// The first name seen for this content.
    pub entry: FileEntry,
    /// Shared with the walker: more names of the same content.
    pub slot: Arc<Slot>,
}

/// The names of one content and, once scanned, its outcome. A name the walker finds after the
/// scan is reported at once with the stored outcome; before, it waits here.
#[derive(Debug, Default)]
pub(super) struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    more_names: Vec<FileEntry>,
    outcome: Option<Arc<Outcome>>,
}

impl Slot {
    /// Adds a name found by the walker; returns the outcome when the content is already done
    /// (the caller reports the name with it).
    pub(super) fn add_name(&self, entry: FileEntry) -> Option<(FileEntry, Arc<Outcome>)> {
        let mut st = self.state.lock().ok()?;
        match &st.outcome {
            Some(o) => Some((entry, o.clone())),
            None => {
                st.more_names.push(entry);
                None
            }
        }
    }

    fn complete(&self, outcome: Arc<Outcome>) -> Vec<FileEntry> {
        match self.state.lock() {
            Ok(mut st) => {
                st.outcome = Some(outcome);
                std::mem::take(&mut st.more_names)
            }
            Err(_) => Vec::new(),
        }
    }
}

/// What scanning one content gave.
#[derive(Debug)]
pub(super) struct Outcome {
    /// The verdict, or why nothing could be scanned.
    result: std::result::Result<Verdict, (Reason, String)>,
    /// Lowercase hex SHA-256 of the content, when known.
    sha256: Option<String>,
    /// The verdict came from the cache.
    cached: bool,
    /// Content size.
    size: u64,
}

/// One scan thread's state.
pub(super) struct Worker<'a> {
    engine: &'a dyn ScanEngine,
    cache: Option<&'a VerdictCache>,
    collector: &'a Collector<'a>,
    /// Reused for every small content (grows to the largest one seen, at most
    /// [`MEMORY_SCAN_MAX`]).
    buffer: Vec<u8>,
}

impl<'a> Worker<'a> {
    pub(super) fn new(
        engine: &'a dyn ScanEngine,
        cache: Option<&'a VerdictCache>,
        collector: &'a Collector<'a>,
    ) -> Self {
        Worker {
            engine,
            cache,
            collector,
            buffer: Vec::new(),
        }
    }

    /// Scans until the queue is closed and empty.
    pub(super) fn run(mut self, queue: &WorkQueue<Work>) {
        while let Some(work) = queue.pop() {
            let outcome = Arc::new(self.scan(&work));
            let more = work.slot.complete(outcome.clone());
            report(self.collector, &work.origin, &work.entry, &outcome, true);
            for name in &more {
                report(self.collector, &work.origin, name, &outcome, false);
            }
            self.collector.observer.finished(work.entry.size);
        }
    }

    fn scan(&mut self, work: &Work) -> Outcome {
        let fail = |e: Error, size| Outcome {
            result: Err((e.reason(), e.to_string())),
            sha256: None,
            cached: false,
            size,
        };
        let mut reader = match open(&work.contents, &work.entry) {
            Ok(r) => r,
            Err(e) => return fail(e, work.entry.size),
        };
        let size = reader.size();
        let name = work.entry.path.as_str();
        if size > self.engine.max_file_size() {
            // The engine reports it as too large without reading it.
            return match self.engine.scan(reader.as_mut(), name) {
                Ok(v) => self.finish(v, None, size, false),
                Err(e) => fail(e, size),
            };
        }
        if size <= TRANSIENT_SCAN_MAX {
            if let Some(outcome) = self.scan_in_memory(reader.as_mut(), name, size) {
                return outcome;
            }
        }
        let mut known = None;
        if let Some(cache) = self.cache {
            known = hash_reader(reader.as_mut(), name);
            if let Some(sha) = &known {
                if let Some(sigs) = cache.get(sha, size) {
                    return cached(sigs, sha, size);
                }
            }
        }
        let scanned = match known {
            Some(sha) => self
                .engine
                .scan(reader.as_mut(), name)
                .map(|v| (v, Some(sha))),
            // Without a cache the hash only goes into detections: hash the rare detected file
            // afterwards rather than every large clean one during its scan.
            None if self.cache.is_none() => self.engine.scan(reader.as_mut(), name).map(|v| {
                let sha = if v.signatures.is_empty() {
                    None
                } else {
                    hash_reader(reader.as_mut(), name)
                };
                (v, sha)
            }),
            None => self.engine.scan_hashed(reader.as_mut(), name),
        };
        match scanned {
            Ok((v, sha)) => self.finish(v, sha, size, true),
            Err(e) => fail(e, size),
        }
    }

    /// Reads a content whole and scans it from memory; `None` when it could not be read whole
    /// (the caller scans it through the reader, which reports what went wrong). Contents up to
    /// [`MEMORY_SCAN_MAX`] use the worker's buffer, larger ones (up to
    /// [`TRANSIENT_SCAN_MAX`]) a buffer of their own, freed after the scan.
    fn scan_in_memory(
        &mut self,
        reader: &mut dyn FileReader,
        name: &str,
        size: u64,
    ) -> Option<Outcome> {
        let len = usize::try_from(size).ok()?;
        let kept = size <= MEMORY_SCAN_MAX;
        let mut buf = if kept {
            std::mem::take(&mut self.buffer)
        } else {
            Vec::new()
        };
        if buf.len() < len {
            if kept {
                buf.resize(len, 0);
            } else {
                // Fresh zero pages, first written by the read itself.
                buf = vec![0u8; len];
            }
        }
        let filled = buf.get_mut(..len).is_some_and(|d| fill(reader, d).is_ok());
        let outcome = filled
            .then(|| buf.get(..len))
            .flatten()
            .map(|data| self.scan_data(data, name, size));
        if kept {
            self.buffer = buf;
        }
        outcome
    }

    /// Looks a content read whole up in the cache, or scans it from memory.
    fn scan_data(&self, data: &[u8], name: &str, size: u64) -> Outcome {
        let mut sha = None;
        if let Some(cache) = self.cache {
            let digest: [u8; 32] = Sha256::digest(data).into();
            if let Some(sigs) = cache.get(&digest, size) {
                return cached(sigs, &digest, size);
            }
            sha = Some(digest);
        }
        let verdict = match self.engine.scan_bytes(data, name) {
            Ok(v) => v,
            Err(e) => {
                return Outcome {
                    result: Err((e.reason(), e.to_string())),
                    sha256: None,
                    cached: false,
                    size,
                }
            }
        };
        if sha.is_none() && !verdict.signatures.is_empty() {
            sha = Some(Sha256::digest(data).into());
        }
        self.finish(verdict, sha, size, true)
    }

    /// Stores a complete verdict in the cache and builds the outcome.
    fn finish(
        &self,
        verdict: Verdict,
        sha: Option<[u8; 32]>,
        size: u64,
        cacheable: bool,
    ) -> Outcome {
        if let (Some(cache), Some(sha), true) = (self.cache, &sha, cacheable) {
            if verdict.incomplete.is_empty() {
                cache.put(sha, size, &verdict.signatures);
            }
        }
        Outcome {
            result: Ok(verdict),
            sha256: sha.map(hex::encode),
            cached: false,
            size,
        }
    }
}

fn cached(signatures: Vec<String>, sha: &[u8; 32], size: u64) -> Outcome {
    Outcome {
        result: Ok(Verdict {
            signatures,
            incomplete: Vec::new(),
        }),
        sha256: Some(hex::encode(sha)),
        cached: true,
        size,
    }
}

fn open<'c>(contents: &'c Contents, entry: &FileEntry) -> Result<Box<dyn FileReader + 'c>> {
    match contents {
        Contents::Volume(fsys) => fsys.open(entry),
        Contents::Host { path, dev } => host::open_file(path, *dev, entry.id.node),
    }
}

/// Fills `buf` from the start of the content; an error if the content ends early.
fn fill(reader: &mut dyn FileReader, buf: &mut [u8]) -> Result<()> {
    let mut done = 0usize;
    while let Some(rest) = buf.get_mut(done..).filter(|r| !r.is_empty()) {
        let n = reader.read_at(done as u64, rest)?;
        if n == 0 {
            return Err(Error::corrupt(
                "content",
                done as u64,
                "ends before its size",
            ));
        }
        done = done.saturating_add(n);
    }
    Ok(())
}

fn hash_reader(reader: &mut dyn FileReader, name: &str) -> Option<[u8; 32]> {
    let mut hasher = Sha256::new();
    crate::fs::read_all(reader, name, &mut |chunk| hasher.update(chunk)).ok()?;
    Some(hasher.finalize().into())
}

/// Reports one name of a content: counted as scanned when the verdict is complete (its bytes
/// once, with the first name), detections and incomplete parts for every name.
pub(super) fn report(
    collector: &Collector<'_>,
    work: &Origin,
    name: &FileEntry,
    outcome: &Outcome,
    first: bool,
) {
    let target = work.target_name.to_string();
    let note = |reason, detail| NotScanned {
        target: target.clone(),
        partition: Some(work.partition),
        volume: work.volume.as_deref().map(str::to_string),
        path: Some(name.path.clone()),
        reason,
        detail,
    };
    match &outcome.result {
        Err((reason, detail)) => collector.note(work.target, note(*reason, detail.clone())),
        Ok(v) => {
            if v.incomplete.is_empty() {
                collector.with(work.target, |f| {
                    f.files += 1;
                    if first {
                        f.bytes += outcome.size;
                    }
                    if outcome.cached {
                        f.cached_files += 1;
                    }
                });
            }
            for inc in &v.incomplete {
                collector.note(work.target, note(inc.reason, inc.detail.clone()));
            }
            for sig in &v.signatures {
                collector.detection(
                    work.target,
                    Detection {
                        target: target.clone(),
                        partition: work.partition,
                        volume: work.volume.as_deref().map(str::to_string),
                        path: name.path.clone(),
                        stream: name.stream.clone(),
                        size: name.size,
                        sha256: outcome.sha256.clone(),
                        signature: sig.clone(),
                        cached: outcome.cached,
                    },
                );
            }
        }
    }
}
