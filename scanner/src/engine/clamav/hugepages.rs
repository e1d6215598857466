//! The compiled signatures on transparent huge pages (Linux `madvise(2)`: `MADV_HUGEPAGE`,
//! `MADV_COLLAPSE` since Linux 6.1; `Documentation/admin-guide/mm/transhuge.rst`).
//!
//! Why: libclamav's matchers chase pointers through a few hundred megabytes of compiled
//! signatures (the Aho-Corasick trie of the body patterns, the Boyer-Moore shift tables, the
//! hash sets), allocated in its own `mmap`ed pools. On 4 KiB pages nearly every step of the trie
//! misses the TLB; most distributions enable transparent huge pages only on `madvise`, which
//! libclamav never calls. Measured on the benchmark database (1M hashes + 50k patterns) and
//! corpus, one thread: 6.1-6.4 s of CPU instead of 7.3-8.4 s for the same 390 files, the same
//! detections. The work done is the same; only the page size of memory already resident changes.
//!
//! What: once the engine is compiled, every anonymous private writable mapping of the process
//! that is mostly resident ([`MIN_RESIDENT_PERCENT`], which leaves out thread stacks and
//! reservations) is marked `MADV_HUGEPAGE` and collapsed into huge pages at once
//! (`MADV_COLLAPSE`) rather than whenever `khugepaged` gets to it. Both calls are advice: they
//! never change the memory's contents, and where the kernel refuses them (THP disabled, a kernel
//! before 6.1, no free huge pages) the engine simply runs on small pages.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void};

/// Huge page size on x86-64 and (with 4 KiB base pages) aarch64.
pub const HUGE_PAGE: u64 = 2 << 20;

/// A mapping is collapsed only when at least this share of it is resident already, so that
/// collapsing (which makes each 2 MiB range fully resident) grows the resident set by little.
pub const MIN_RESIDENT_PERCENT: u64 = 75;

const MADV_HUGEPAGE: c_int = 14;
const MADV_COLLAPSE: c_int = 25;

extern "C" {
    /// glibc's `madvise(2)` (rustix 1.1 has no `MADV_COLLAPSE`).
    fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
}

/// One mapping from `/proc/self/smaps`, narrowed to whole huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// First byte (huge-page aligned).
    pub start: u64,
    /// Length (a multiple of [`HUGE_PAGE`]).
    pub len: u64,
}

/// The mappings of an `smaps` listing worth collapsing: anonymous (no inode, no name, or the
/// `[heap]`), private and writable, at least [`MIN_RESIDENT_PERCENT`] resident, and holding at
/// least one whole aligned huge page.
pub fn candidates(smaps: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    let mut current: Option<(u64, u64)> = None;
    let flush = |region: Option<(u64, u64)>, rss: u64, out: &mut Vec<Candidate>| {
        let Some((start, end)) = region else { return };
        let size = end.saturating_sub(start);
        if size == 0 || rss.saturating_mul(100) < size.saturating_mul(MIN_RESIDENT_PERCENT) {
            return;
        }
        let first = start.div_ceil(HUGE_PAGE).saturating_mul(HUGE_PAGE);
        let last = end / HUGE_PAGE * HUGE_PAGE;
        if last > first {
            out.push(Candidate {
                start: first,
                len: last - first,
            });
        }
    };
    let mut rss = 0u64;
    for line in smaps.lines() {
        if let Some(region) = mapping_header(line) {
            flush(current.take(), rss, &mut out);
            current = region;
            rss = 0;
        } else if let Some(kb) = line.strip_prefix("Rss:") {
            let kb = kb.trim().trim_end_matches("kB").trim();
            rss = kb.parse::<u64>().unwrap_or(0).saturating_mul(1024);
        }
    }
    flush(current, rss, &mut out);
    out
}

/// Parses a mapping header line (`start-end perms offset dev inode [name]`): `None` when the
/// line is not one (a field line), `Some(None)` for a mapping that is not a candidate.
fn mapping_header(line: &str) -> Option<Option<(u64, u64)>> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let (a, b) = range.split_once('-')?;
    let start = u64::from_str_radix(a, 16).ok()?;
    let end = u64::from_str_radix(b, 16).ok()?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let _dev = fields.next()?;
    let inode = fields.next()?;
    let name = fields.next().unwrap_or("");
    let anonymous = inode == "0" && (name.is_empty() || name == "[heap]");
    let private_rw = perms.starts_with("rw") && perms.ends_with('p');
    Some((anonymous && private_rw && end > start).then_some((start, end)))
}

/// Marks the huge page at `addr` and collapses it; whether it was collapsed.
fn advise_huge(addr: u64) -> bool {
    let (Ok(addr), Ok(len)) = (usize::try_from(addr), usize::try_from(HUGE_PAGE)) else {
        return false;
    };
    let ptr = addr as *mut c_void;
    // SAFETY: MADV_HUGEPAGE and MADV_COLLAPSE are advice on the backing of pages: they never
    // change what any byte of the range reads, so no Rust or C object in it is affected. If the
    // range was unmapped or remapped since smaps was read, the kernel fails the call (ENOMEM)
    // or applies the same harmless advice to the new mapping.
    let marked = unsafe { madvise(ptr, len, MADV_HUGEPAGE) } == 0;
    // SAFETY: as above.
    marked && unsafe { madvise(ptr, len, MADV_COLLAPSE) } == 0
}

/// Marks and collapses the candidate mappings of this process; returns the bytes the kernel
/// collapsed (0 when it refused, e.g. THP disabled or a kernel without `MADV_COLLAPSE`).
pub fn collapse_engine_memory() -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut collapsed = 0u64;
    for c in candidates(&smaps) {
        // One huge page per call: a page the kernel cannot collapse does not hide the others.
        let mut at = c.start;
        while at < c.start.saturating_add(c.len) {
            if advise_huge(at) {
                collapsed = collapsed.saturating_add(HUGE_PAGE);
            }
            at = at.saturating_add(HUGE_PAGE);
        }
    }
    collapsed
}

#[cfg(test)]
mod tests {
    use super::super::{ClamAvBuilder, ClamAvEngine, Limits};
    use super::*;
    use crate::engine::{ScanEngine, Verdict};

    const SMAPS: &str = "\
55d0c0000000-55d0c0a00000 rw-p 00000000 00:00 0                          [heap]
Size:              10240 kB
Rss:               10240 kB
7f0000100000-7f0000900000 rw-p 00000000 00:00 0 
Size:               8192 kB
Rss:                  64 kB
7f0001000000-7f0001700000 rw-p 00000000 00:00 0 
Size:               7168 kB
Rss:                7000 kB
7f0002000000-7f0002400000 r--p 00000000 fd:00 1234                       /usr/lib/libclamav.so.12
Size:               4096 kB
Rss:                4096 kB
7f0003000000-7f0003400000 rw-s 00000000 00:01 77                         /memfd:x (deleted)
Size:               4096 kB
Rss:                4096 kB
7f0004000000-7f0004100000 rw-p 00000000 00:00 0 
Size:               1024 kB
Rss:                1024 kB
7ffd00000000-7ffd00800000 rw-p 00000000 00:00 0                          [stack]
Size:               8192 kB
Rss:                8192 kB
";

    #[test]
    fn only_resident_anonymous_private_mappings_aligned_inward() {
        assert_eq!(
            candidates(SMAPS),
            vec![
                // The heap, 5 whole huge pages.
                Candidate {
                    start: 0x55d0c0000000,
                    len: 10 << 20
                },
                // 7 MiB mostly resident: the 3 whole huge pages inside.
                Candidate {
                    start: 0x7f0001000000,
                    len: 6 << 20
                },
            ]
        );
    }

    #[test]
    fn garbage_is_no_candidate() {
        assert!(candidates("").is_empty());
        assert!(candidates("not a mapping\nRss: 5 kB\nffff-1 rw-p 0 0 0\n").is_empty());
    }

    /// After an engine of realistic size is compiled, its memory goes on huge pages wherever
    /// the kernel allows them, and every verdict stays the same: Debian's clamav-testfiles
    /// (clam.exe in archives, packers and documents), EICAR and clean files are scanned before
    /// and after the collapse.
    #[test]
    fn collapsed_engine_gives_the_same_verdicts() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        let dir = tempfile::tempdir().unwrap();
        super::super::tests::write_db(dir.path());
        // 200,000 hashes and 20,000 body patterns (a fixed pseudo-random sequence): tens of
        // megabytes of compiled tables.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut hdb = String::new();
        for i in 0..200_000 {
            hdb.push_str(&format!(
                "{:016x}{:016x}:{}:Hash.{i}\n",
                next(),
                next(),
                1000 + i
            ));
        }
        std::fs::write(dir.path().join("big.hdb"), hdb).unwrap();
        let mut ndb = String::new();
        for i in 0..20_000 {
            let hex: String = (0..12).map(|_| format!("{:02x}", next() & 0xff)).collect();
            ndb.push_str(&format!("Body.{i}:0:*:{hex}\n"));
        }
        std::fs::write(dir.path().join("big.ndb"), ndb).unwrap();
        let mut b = ClamAvBuilder::new(Limits::default()).unwrap();
        b.set_huge_pages(false);
        b.load(dir.path()).unwrap();
        let engine = b.compile().unwrap();
        assert!(engine.signatures() >= 220_000);

        let mut samples: Vec<(String, Vec<u8>)> = std::fs::read_dir("/usr/share/clamav-testfiles")
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                (p.display().to_string(), std::fs::read(&p).unwrap())
            })
            .collect();
        samples.sort();
        assert!(
            samples.len() >= 40,
            "clamav-testfiles: {} files",
            samples.len()
        );
        samples.push(("eicar".into(), super::super::tests::eicar()));
        samples.push(("text".into(), b"nothing to see here\n".repeat(5000)));
        let verdicts = |engine: &ClamAvEngine| -> Vec<(String, Verdict)> {
            samples
                .iter()
                .map(|(name, data)| (name.clone(), engine.scan_bytes(data, name).unwrap()))
                .collect()
        };
        let before = verdicts(&engine);
        let detected = before
            .iter()
            .filter(|(_, v)| !v.signatures.is_empty())
            .count();
        assert_eq!(detected, samples.len() - 1, "{before:?}");

        let collapsed = collapse_engine_memory();
        if thp.contains("[never]") || thp.is_empty() {
            eprintln!("transparent huge pages disabled on this kernel: nothing collapsed");
        } else {
            assert!(collapsed >= 4 * HUGE_PAGE, "collapsed {collapsed} bytes");
        }
        assert_eq!(verdicts(&engine), before);
    }
}
