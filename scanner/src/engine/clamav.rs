//! libclamav as a [`ScanEngine`]: load databases, compile once, scan from many threads.
//!
//! Follows libclamav 1.x's public API (`clamav.h`; "libclamav" chapter of the ClamAV manual).
//! The unsafe calls are in [`ffi`]; this module holds the policy:
//!
//! - **Scan options**: every parser on (archives, PE, ELF, PDF, OLE2, mail, HTML...) as clamscan
//!   does, heuristic alerts on. The first match ends a file's scan, as in clamscan: collecting
//!   all matches (`CL_SCAN_GENERAL_ALLMATCHES`, [`ClamAvEngine::set_all_matches`]) made every
//!   file about 3 times slower to scan with a realistic database (measured with clamscan
//!   `--allmatch` and coldscan alike: the Aho-Corasick matcher keeps tracking partial wildcard
//!   matches to the end of each file), so it is an option. Heuristic alerts do not end a scan:
//!   a real signature found later still wins.
//! - **Nothing is silently clean**: libclamav skips content over its limits without a word unless
//!   `CL_SCAN_HEURISTIC_EXCEEDS_MAX` is set, and scans encrypted archives/documents as opaque
//!   bytes unless the `ENCRYPTED_*` heuristics are set. We set them, and turn their alerts
//!   (`Heuristics.Limits.Exceeded.*`, `Heuristics.Encrypted.*`) into
//!   [`Incomplete`] entries (`too-large`, `limit`, `encrypted`), never into detections.
//! - **Huge pages**: once compiled, the engine's memory is collapsed into transparent huge pages
//!   ([`hugepages`]): the matchers walk hundreds of megabytes of tables, and on small pages
//!   about a fifth of their time went to TLB misses. Advice to the kernel only: same work, same
//!   verdicts.
//! - **Empty files** are scanned too (through an empty memory map, because
//!   `cl_fmap_open_handle` refuses length 0): libclamav returns clean for empty input before any
//!   matcher runs, and hash databases cannot even hold a size-0 signature (`cli_loadhash`
//!   refuses it), so clean is libclamav's verdict, not an assumption of ours.

pub mod ffi;
pub mod hugepages;

use std::path::{Path, PathBuf};

use crate::engine::{Incomplete, ScanEngine, Verdict};
use crate::error::{Error, Reason, Result};
use crate::fs::FileReader;
use crate::report::{DbIdentity, EngineInfo};

/// libclamav cannot map files of 2 GiB or more (`cl_engine_set_num` clamps `MaxFileSize` to
/// `INT_MAX - 2`); larger values are clamped to this.
pub const MAX_FILE_SIZE_CAP: u64 = i32::MAX as u64 - 2;

/// Scan limits. Content beyond any of them is reported as not (fully) scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest file (and largest archive member) scanned, in bytes. Default 1 GiB (clamscan: 100
    /// MB, skipped silently); at most [`MAX_FILE_SIZE_CAP`].
    pub max_file_size: u64,
    /// Most data scanned per file including everything extracted from it, in bytes. Default
    /// 4 GiB (clamscan: 400 MB).
    pub max_scan_size: u64,
    /// Deepest archive nesting followed. Default 17 (libclamav's default).
    pub max_recursion: u32,
    /// Most members scanned per archive. Default 10,000 (libclamav's default).
    pub max_files: u32,
    /// Longest time spent on one file, in milliseconds. Default 600,000 (10 minutes; libclamav's
    /// default is 2 minutes, too short for a 1 GiB file on a busy host).
    pub max_scan_time_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_size: 1 << 30,
            max_scan_size: 4 << 30,
            max_recursion: 17,
            max_files: 10_000,
            max_scan_time_ms: 600_000,
        }
    }
}

/// A database file or directory that was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    /// The path given.
    pub path: PathBuf,
    /// Signatures it added.
    pub signatures: u64,
    /// Versions of the `.cvd`/`.cld` files in it (`daily.cvd` -> 27000), from their headers.
    pub versions: Vec<(String, u32)>,
}

/// Loads databases, then compiles into a [`ClamAvEngine`].
#[derive(Debug)]
pub struct ClamAvBuilder {
    handle: ffi::EngineHandle,
    limits: Limits,
    databases: Vec<DatabaseInfo>,
    /// SHA-256 over the names and contents of every database file loaded, in load order.
    db_digest: sha2::Sha256,
    /// Collapse the compiled engine into huge pages ([`hugepages`]).
    huge_pages: bool,
}

impl ClamAvBuilder {
    /// A new engine with `limits` (applied at compile time).
    pub fn new(limits: Limits) -> Result<Self> {
        Ok(ClamAvBuilder {
            handle: ffi::EngineHandle::new()?,
            limits,
            databases: Vec::new(),
            db_digest: sha2::Sha256::default(),
            huge_pages: true,
        })
    }

    /// Whether the compiled engine's memory is collapsed into huge pages (default on; see
    /// [`hugepages`]). It changes speed only, never a verdict.
    pub fn set_huge_pages(&mut self, on: bool) {
        self.huge_pages = on;
    }

    /// Loads a database file (`.cvd .cld .cud .hdb .hsb .mdb .ndb .ldb .yar` ...) or every
    /// database in a directory.
    pub fn load(&mut self, path: &Path) -> Result<DatabaseInfo> {
        let object = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| Error::Engine {
            object: object.clone(),
            detail: format!("cannot open signature database: {e}"),
        })?;
        if meta.is_dir() {
            let any = std::fs::read_dir(path)
                .map_err(|e| Error::Engine {
                    object: object.clone(),
                    detail: format!("cannot read signature directory: {e}"),
                })?
                .filter_map(|e| e.ok())
                .any(|e| is_database_name(&e.path()));
            if !any {
                return Err(Error::Engine {
                    object,
                    detail: "no signatures: no database files (.cvd .cld .hdb .ndb ...) in this directory".into(),
                });
            }
        }
        let signatures = u64::from(self.handle.load(path)?);
        digest_database(&mut self.db_digest, path, meta.is_dir())?;
        if signatures == 0 {
            return Err(Error::Engine {
                object,
                detail: if meta.is_dir() {
                    "no signatures in this directory (no .cvd/.cld/.hdb/.ndb/... files)".into()
                } else {
                    "no signatures in this file".into()
                },
            });
        }
        let versions = if meta.is_dir() {
            let mut v: Vec<(String, u32)> = std::fs::read_dir(path)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter_map(|e| {
                            let p = e.path();
                            cvd_version(&p).map(|ver| (file_name(&p), ver))
                        })
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        } else {
            cvd_version(path)
                .map(|ver| vec![(file_name(path), ver)])
                .unwrap_or_default()
        };
        let info = DatabaseInfo {
            path: path.to_path_buf(),
            signatures,
            versions,
        };
        self.databases.push(info.clone());
        Ok(info)
    }

    /// Applies the limits and compiles the signatures.
    pub fn compile(mut self) -> Result<ClamAvEngine> {
        if self.databases.is_empty() {
            return Err(Error::Engine {
                object: "libclamav".into(),
                detail: "no signature database loaded".into(),
            });
        }
        let mut limits = self.limits;
        limits.max_file_size = limits.max_file_size.min(MAX_FILE_SIZE_CAP);
        let h = &mut self.handle;
        h.set_num(ffi::Field::MaxFileSize, to_i64(limits.max_file_size))?;
        h.set_num(ffi::Field::MaxScanSize, to_i64(limits.max_scan_size))?;
        h.set_num(ffi::Field::MaxRecursion, i64::from(limits.max_recursion))?;
        h.set_num(ffi::Field::MaxFiles, i64::from(limits.max_files))?;
        h.set_num(ffi::Field::MaxScanTime, i64::from(limits.max_scan_time_ms))?;
        self.handle.compile()?;
        if self.huge_pages {
            // The matchers run faster on huge pages (see the module): advice only, same verdicts.
            hugepages::collapse_engine_memory();
        }
        // libclamav may clamp what we asked for: report and enforce what it really uses.
        if let Some(v) = self.handle.get_num(ffi::Field::MaxFileSize) {
            if let Ok(v) = u64::try_from(v) {
                if v > 0 {
                    limits.max_file_size = limits.max_file_size.min(v);
                }
            }
        }
        use sha2::Digest;
        let db_digest = hex::encode(self.db_digest.finalize());
        let db_version = self
            .handle
            .get_num(ffi::Field::DbVersion)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0);
        Ok(ClamAvEngine {
            all_matches: false,
            db_digest,
            db_version,
            handle: self.handle,
            limits,
            databases: self.databases,
            version: ffi::version(),
        })
    }
}

/// Feeds the names, sizes and contents of the database files at `path` (a file, or the database
/// files of a directory in name order) into `digest`: the identity of the signatures for the
/// verdict cache, so that any change to a database invalidates cached verdicts.
fn digest_database(digest: &mut sha2::Sha256, path: &Path, is_dir: bool) -> Result<()> {
    use sha2::Digest;
    let object = path.display().to_string();
    let io = |e: std::io::Error| Error::io(&object, 0, e);
    let mut files = if is_dir {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| is_database_name(p) && p.is_file())
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    for f in files.drain(..) {
        // Streamed: a database can be hundreds of megabytes, which must not add to the peak
        // memory next to the engine libclamav is building from it.
        use std::io::Read;
        let mut file = std::fs::File::open(&f).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        digest.update(file_name(&f).as_bytes());
        digest.update([0]);
        digest.update(len.to_le_bytes());
        let mut buf = vec![0u8; 1 << 16];
        let mut read = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
                break;
            };
            digest.update(chunk);
            read = read.saturating_add(n as u64);
        }
        if read != len {
            return Err(Error::Engine {
                object: f.display().to_string(),
                detail: format!(
                    "signature database changed while it was read ({len} bytes, then {read})"
                ),
            });
        }
    }
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Version from a `.cvd`/`.cld` header (`ClamAV-VDB:build time:version:signatures:...`, the first
/// 512 bytes of the file).
fn cvd_version(path: &Path) -> Option<u32> {
    use std::io::Read;
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    if ext != "cvd" && ext != "cld" {
        return None;
    }
    let mut head = [0u8; 512];
    let mut f = std::fs::File::open(path).ok()?;
    f.read_exact(&mut head).ok()?;
    let text = std::str::from_utf8(&head).ok()?;
    let mut fields = text.split(':');
    if fields.next()? != "ClamAV-VDB" {
        return None;
    }
    fields.nth(1)?.trim().parse().ok()
}

/// The libclamav system database directory, if it holds at least one database file.
pub fn system_db_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(ffi::default_db_dir());
    let has_db = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .any(|e| is_database_name(&e.path()));
    has_db.then_some(dir)
}

/// Whether `p` has the extension of a database libclamav loads.
pub fn is_database_name(p: &Path) -> bool {
    const EXTS: &[&str] = &[
        "cvd", "cld", "cud", "hdb", "hsb", "hdu", "hsu", "mdb", "msb", "mdu", "msu", "ndb", "ndu",
        "ldb", "ldu", "idb", "cdb", "crb", "cat", "fp", "sfp", "ign", "ign2", "ftm", "pdb", "gdb",
        "wdb", "cbc", "info", "yar", "yara", "pwdb", "imp",
    ];
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTS.contains(&e.to_ascii_lowercase().as_str()))
}

/// What a name reported by libclamav means for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    /// A detection.
    Detection(String),
    /// Not scanned (completely), with the report reason.
    NotScanned(Reason),
}

/// Classifies a libclamav alert name: limit and encryption heuristics are not detections.
pub fn classify(name: &str) -> Alert {
    const LIMITS: &str = "Heuristics.Limits.Exceeded.";
    if let Some(which) = name.strip_prefix(LIMITS) {
        return Alert::NotScanned(match which {
            "MaxFileSize" | "MaxScanSize" => Reason::TooLarge,
            _ => Reason::Limit,
        });
    }
    if name.starts_with("Heuristics.Encrypted.") {
        return Alert::NotScanned(Reason::Encrypted);
    }
    Alert::Detection(name.to_string())
}

/// A compiled libclamav engine, shared by all scan threads.
#[derive(Debug)]
pub struct ClamAvEngine {
    handle: ffi::EngineHandle,
    limits: Limits,
    all_matches: bool,
    databases: Vec<DatabaseInfo>,
    version: String,
    /// Hex SHA-256 of the database files loaded (see [`digest_database`]).
    db_digest: String,
    /// libclamav's `CL_ENGINE_DB_VERSION` after compilation (the `daily` database's version, 0
    /// without one).
    db_version: u64,
}

impl ClamAvEngine {
    /// Loads every path in `databases` and compiles.
    pub fn load(databases: &[PathBuf], limits: Limits) -> Result<Self> {
        let mut b = ClamAvBuilder::new(limits)?;
        for d in databases {
            b.load(d)?;
        }
        b.compile()
    }

    /// libclamav's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Total signatures loaded.
    pub fn signatures(&self) -> u64 {
        self.databases.iter().map(|d| d.signatures).sum()
    }

    /// The databases loaded, with their versions.
    pub fn databases(&self) -> &[DatabaseInfo] {
        &self.databases
    }

    /// The limits in force (after libclamav's own clamping).
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Collects every signature matching a file instead of stopping at the first (slower: see
    /// the module documentation).
    pub fn set_all_matches(&mut self, on: bool) {
        self.all_matches = on;
    }

    fn scan_bits(&self) -> ffi::ScanBits {
        use ffi::bits::*;
        let all = if self.all_matches {
            GENERAL_ALLMATCHES
        } else {
            0
        };
        ffi::ScanBits {
            general: all | GENERAL_HEURISTICS,
            parse: PARSE_ALL,
            heuristic: HEURISTIC_EXCEEDS_MAX
                | HEURISTIC_ENCRYPTED_ARCHIVE
                | HEURISTIC_ENCRYPTED_DOC,
        }
    }
}

impl ScanEngine for ClamAvEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            name: "clamav".into(),
            version: self.version.clone(),
            signatures: self.signatures(),
            db: Some(DbIdentity {
                version: self.db_version,
                sha256: self.db_digest.clone(),
                manager_version: None,
            }),
        }
    }

    fn max_file_size(&self) -> u64 {
        self.limits.max_file_size
    }

    fn scan(&self, reader: &mut dyn FileReader, name: &str) -> Result<Verdict> {
        Ok(self.scan_reader(reader, name, false)?.0)
    }

    fn scan_hashed(
        &self,
        reader: &mut dyn FileReader,
        name: &str,
    ) -> Result<(Verdict, Option<[u8; 32]>)> {
        self.scan_reader(reader, name, true)
    }

    fn scan_bytes(&self, data: &[u8], name: &str) -> Result<Verdict> {
        let size = data.len() as u64;
        if let Some(v) = self.too_large(size) {
            return Ok(v);
        }
        let raw = self.handle.scan_memory(data, name, self.scan_bits())?;
        Ok(verdict_of(raw, name, size))
    }

    fn cache_key(&self) -> Option<String> {
        // Everything that can change a verdict: the engine, the signatures, the limits and
        // whether every match is collected.
        Some(format!(
            "clamav {} signatures {} db {} limits {:?} all-matches {}",
            self.version,
            self.signatures(),
            self.db_digest,
            self.limits,
            self.all_matches
        ))
    }
}

impl ClamAvEngine {
    fn too_large(&self, size: u64) -> Option<Verdict> {
        (size > self.limits.max_file_size).then(|| Verdict {
            signatures: Vec::new(),
            incomplete: vec![Incomplete {
                reason: Reason::TooLarge,
                detail: format!(
                    "{size} bytes is over the maximum file size of {} bytes",
                    self.limits.max_file_size
                ),
            }],
        })
    }

    /// Scans through a handle map; with `hash`, also returns the content's SHA-256, from the
    /// reads libclamav made in order plus one read of whatever it did not (`None` when that
    /// read failed).
    fn scan_reader(
        &self,
        reader: &mut dyn FileReader,
        name: &str,
        hash: bool,
    ) -> Result<(Verdict, Option<[u8; 32]>)> {
        let size = reader.size();
        if let Some(v) = self.too_large(size) {
            return Ok((v, None));
        }
        let mut raw = self
            .handle
            .scan(reader, size, name, self.scan_bits(), hash)?;
        let inline = raw.hash.take();
        let failed = raw.read_error.is_some() || raw.short_read_at.is_some();
        let verdict = verdict_of(raw, name, size);
        let digest = match inline {
            Some(h) if !failed => finish_hash(h, reader, name),
            _ => None,
        };
        Ok((verdict, digest))
    }
}

/// Completes an inline hash with the part libclamav did not read in order.
fn finish_hash(h: ffi::InlineHash, reader: &mut dyn FileReader, name: &str) -> Option<[u8; 32]> {
    use sha2::Digest;
    let ffi::InlineHash { mut hasher, next } = h;
    let size = reader.size();
    let mut tail = TailReader {
        inner: reader,
        start: next,
    };
    if next < size {
        crate::fs::read_all(&mut tail, name, &mut |chunk| hasher.update(chunk)).ok()?;
    }
    ffi::note_hash_coverage(next.min(size), size.saturating_sub(next));
    Some(hasher.finalize().into())
}

/// The part of a reader from `start` on, as a reader of its own.
struct TailReader<'a> {
    inner: &'a mut dyn FileReader,
    start: u64,
}

impl FileReader for TailReader<'_> {
    fn size(&self) -> u64 {
        self.inner.size().saturating_sub(self.start)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match self.start.checked_add(offset) {
            Some(at) => self.inner.read_at(at, buf),
            None => Ok(0),
        }
    }
}

/// Turns libclamav's raw result into a verdict: alerts split into detections and incomplete
/// parts, read errors and short content reported as incomplete.
fn verdict_of(raw: ffi::RawScan, name: &str, size: u64) -> Verdict {
    let mut verdict = Verdict::default();
    for n in raw.names {
        match classify(&n) {
            Alert::Detection(sig) => verdict.signatures.push(sig),
            Alert::NotScanned(reason) => verdict.incomplete.push(Incomplete { reason, detail: n }),
        }
    }
    if let Some(e) = raw.read_error {
        verdict.incomplete.push(Incomplete {
            reason: e.reason(),
            detail: e.to_string(),
        });
    } else if let Some(at) = raw.short_read_at {
        verdict.incomplete.push(Incomplete {
            reason: Reason::Corrupt,
            detail: format!("{name}: content ends at byte {at} of {size}"),
        });
    } else if let Some(first) = raw.map_failures.first() {
        verdict.incomplete.push(Incomplete {
            reason: Reason::EngineError,
            detail: format!("{name}: libclamav could not read part of the content again: {first}"),
        });
    }
    if let Some(e) = raw.engine_error {
        // A read error makes libclamav fail with its own (less precise) error: keep ours.
        if verdict.incomplete.is_empty() {
            verdict.incomplete.push(Incomplete {
                reason: Reason::EngineError,
                detail: format!("libclamav: {e}"),
            });
        }
    }
    verdict
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod reread_tests;
