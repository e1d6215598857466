//! The verdict cache never changes a verdict: random trees scanned without a cache, with a cold
//! cache and with a warm one give the same reports apart from the cache fields; a database
//! change misses every old entry.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::cache::VerdictCache;
use crate::engine::clamav::tests::{eicar, engine};
use crate::engine::clamav::{ClamAvEngine, Limits};
use crate::engine::ScanEngine;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A random tree: random and text contents, EICAR planted at random offsets, clam.exe, copies
/// of earlier contents under other inodes, hard links, empty files, and files over the size
/// limit; one content over the in-memory scan size when `large`.
fn random_tree(root: &Path, seed: u64, large: bool) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let clam = std::fs::read("/usr/share/clamav-testfiles/clam.exe").unwrap();
    let mut written: Vec<std::path::PathBuf> = Vec::new();
    let files = 20 + rng.below(30);
    for i in 0..files {
        let mut dir = root.to_path_buf();
        for d in 0..rng.below(4) {
            dir.push(format!("d{}", (d + rng.below(3)) % 5));
        }
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("f{i}"));
        match rng.below(10) {
            0 if !written.is_empty() => {
                let src = &written[rng.below(written.len() as u64) as usize];
                if std::fs::hard_link(src, &path).is_err() {
                    continue;
                }
            }
            1 if !written.is_empty() => {
                let src = &written[rng.below(written.len() as u64) as usize];
                std::fs::copy(src, &path).unwrap();
            }
            2 => {
                let n = rng.below(50_000) as usize;
                let mut data = rng.bytes(n);
                let at = rng.below(data.len() as u64 + 1) as usize;
                data.splice(at..at, eicar());
                std::fs::write(&path, data).unwrap();
            }
            3 => std::fs::write(&path, &clam).unwrap(),
            4 => std::fs::write(&path, b"").unwrap(),
            5 => {
                let n = 300_000 + rng.below(100_000) as usize;
                std::fs::write(&path, rng.bytes(n)).unwrap()
            }
            _ => {
                let n = rng.below(70_000) as usize;
                std::fs::write(&path, rng.bytes(n)).unwrap()
            }
        }
        written.push(path);
    }
    if large {
        // One content read into a buffer of its own, one scanned through the reader.
        for (name, size) in [
            ("mid", worker::MEMORY_SCAN_MAX + 4096),
            ("big", worker::TRANSIENT_SCAN_MAX + 4096),
        ] {
            let mut data = vec![0x41u8; size as usize];
            let at = data.len() - 1000;
            data.splice(at..at, eicar());
            let path = root.join(format!("{name}.bin"));
            std::fs::write(&path, &data).unwrap();
            std::fs::copy(&path, root.join(format!("{name}-copy.bin"))).unwrap();
        }
    }
}

fn scan(e: &dyn ScanEngine, target: &Path, cache: Option<&Arc<VerdictCache>>) -> ScanReport {
    let opts = ScanOptions {
        jobs: 2,
        cache: cache.cloned(),
        ..ScanOptions::default()
    };
    let r = scan_targets(e, &[target.display().to_string()], &opts, &NoProgress).unwrap();
    if let Some(c) = cache {
        c.finish().unwrap();
    }
    r
}

/// The report without what legitimately differs: times and the cache fields.
fn normalized(r: &ScanReport) -> ScanReport {
    let mut r = r.clone();
    r.started.clear();
    r.finished.clear();
    r.stats.seconds = 0.0;
    r.stats.cached_files = 0;
    for d in &mut r.detections {
        d.cached = false;
    }
    r
}

#[test]
fn cache_never_changes_a_verdict() {
    let limits = Limits {
        max_file_size: 350_000,
        ..Limits::default()
    };
    let e = engine(Limits {
        max_file_size: worker::TRANSIENT_SCAN_MAX * 2,
        ..limits
    });
    let small_limit = engine(limits);
    for seed in 1..=6u64 {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        random_tree(&tree, seed, seed == 1);
        for e in [&e, &small_limit] {
            let key = e.cache_key().unwrap();
            let cache = Arc::new(VerdictCache::open(&tmp.path().join("c.sqlite"), &key).unwrap());
            let plain = scan(e, &tree, None);
            let cold = scan(e, &tree, Some(&cache));
            let warm = scan(e, &tree, Some(&cache));
            assert_eq!(normalized(&plain), normalized(&cold), "seed {seed}");
            assert_eq!(normalized(&plain), normalized(&warm), "seed {seed}");
            assert_eq!(plain.stats.cached_files, 0);
            // Every complete verdict comes from the cache the second time; nothing else does.
            assert_eq!(warm.stats.cached_files, warm.stats.files, "seed {seed}");
            assert!(warm.detections.iter().all(|d| d.cached), "seed {seed}");
            assert!(
                warm.detections.iter().all(|d| d.sha256.is_some()),
                "seed {seed}"
            );
            assert!(plain.detections.iter().all(|d| d.sha256.is_some()));
            drop(cache);
            std::fs::remove_file(tmp.path().join("c.sqlite")).unwrap();
        }
    }
}

/// A database that detects clam.exe (by hash) and EICAR, or EICAR only.
fn engine_with(clam_exe: bool) -> ClamAvEngine {
    let dir = tempfile::tempdir().unwrap();
    crate::engine::clamav::tests::write_db(dir.path());
    if !clam_exe {
        std::fs::remove_file(dir.path().join("clam.hsb")).unwrap();
    }
    ClamAvEngine::load(&[dir.path().to_path_buf()], Limits::default()).unwrap()
}

#[test]
fn database_change_invalidates_cached_verdicts() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::copy(
        "/usr/share/clamav-testfiles/clam.exe",
        tree.join("clam.exe"),
    )
    .unwrap();
    let path = tmp.path().join("cache.sqlite");
    let old = engine_with(false);
    let new = engine_with(true);
    assert_ne!(old.cache_key(), new.cache_key());
    {
        let cache = Arc::new(VerdictCache::open(&path, &old.cache_key().unwrap()).unwrap());
        let r = scan(&old, &tree, Some(&cache));
        assert!(r.detections.is_empty());
        let r = scan(&old, &tree, Some(&cache));
        assert_eq!(r.stats.cached_files, 1, "clean verdict cached");
    }
    let cache = Arc::new(VerdictCache::open(&path, &new.cache_key().unwrap()).unwrap());
    let r = scan(&new, &tree, Some(&cache));
    assert_eq!(r.stats.cached_files, 0, "old verdicts are not used");
    assert_eq!(r.detections.len(), 1);
    assert_eq!(r.detections[0].signature, "clam.exe.UNOFFICIAL");
    assert!(!r.detections[0].cached);
    // Same database files in another place: same identity, verdicts reused.
    let again = engine_with(true);
    assert_eq!(again.cache_key(), new.cache_key());
}
