//! Scan engines: what turns the content of one file into a verdict.
//!
//! An engine is compiled once and shared by every scan thread ([`ScanEngine`] is `Send + Sync`).
//! It reads content through a [`FileReader`] (positional reads, no temporary files) and returns
//! a [`Verdict`] that separates real detections from the parts it could not scan (limits,
//! encryption, read errors), so that the report never presents an unscanned file as clean.
//! libclamav ([`clamav`]) is the first engine; the trait leaves room for more (YARA-X, ...).

pub mod clamav;

use std::fmt;

use crate::error::{Reason, Result};
use crate::fs::FileReader;
use crate::report::EngineInfo;

/// What an engine found in one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Signature names that matched (malware, PUA, heuristic detections), without duplicates.
    pub signatures: Vec<String>,
    /// Why the file (or part of it, e.g. a member of an archive) was not scanned completely.
    pub incomplete: Vec<Incomplete>,
}

impl Verdict {
    /// Whether the whole content was scanned and nothing matched.
    pub fn is_clean(&self) -> bool {
        self.signatures.is_empty() && self.incomplete.is_empty()
    }
}

/// A part of a file the engine could not scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incomplete {
    /// Report reason (`too-large`, `encrypted`, `limit`, `io-error`, `engine-error`...).
    pub reason: Reason,
    /// What happened (`Heuristics.Limits.Exceeded.MaxRecursion`, the read error...).
    pub detail: String,
}

/// A compiled, shareable scan engine.
pub trait ScanEngine: Send + Sync + fmt::Debug {
    /// Name, version and signature count, for the report.
    fn info(&self) -> EngineInfo;

    /// Files larger than this are not given to the engine; the caller reports them as
    /// `too-large` instead.
    fn max_file_size(&self) -> u64;

    /// Scans the whole content of `reader` (its [`FileReader::size`] bytes). `name` is used in
    /// messages only. An `Err` means nothing could be scanned; partial problems are in
    /// [`Verdict::incomplete`].
    fn scan(&self, reader: &mut dyn FileReader, name: &str) -> Result<Verdict>;

    /// Scans like [`ScanEngine::scan`] and also returns the SHA-256 of the content, computed
    /// from the same reads where the engine reads in order (`None` when the content could not
    /// be read completely). The default reads the content a second time.
    fn scan_hashed(
        &self,
        reader: &mut dyn FileReader,
        name: &str,
    ) -> Result<(Verdict, Option<[u8; 32]>)> {
        let verdict = self.scan(reader, name)?;
        let mut hasher = sha2::Sha256::default();
        let digest = crate::fs::read_all(reader, name, &mut |chunk| {
            sha2::Digest::update(&mut hasher, chunk)
        })
        .ok()
        .map(|_| sha2::Digest::finalize(hasher).into());
        Ok((verdict, digest))
    }

    /// Scans content already in memory (the whole file).
    fn scan_bytes(&self, data: &[u8], name: &str) -> Result<Verdict> {
        self.scan(&mut SliceReader(data), name)
    }

    /// Identifies everything that decides a verdict (engine version, signatures, limits,
    /// options), for the verdict cache; `None` when verdicts must not be cached.
    fn cache_key(&self) -> Option<String> {
        None
    }
}

/// A [`FileReader`] over bytes in memory.
#[derive(Debug)]
pub struct SliceReader<'a>(pub &'a [u8]);

impl FileReader for SliceReader<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = self.0.get(start..).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        Ok(n)
    }
}
