//! dissect.xfs and dissect.btrfs (PyPI, pure Python, written apart from coldscan) as oracles
//! for XFS and Btrfs: `coldscan ls --hash sha256` and dissect's own walk list the same paths,
//! kinds, sizes and SHA-256 on the XFS and Btrfs fixtures. Where dissect is known to be wrong,
//! the test names the entries and the oracle's limitation and checks that dissect still
//! differs there (so that the list stays honest); coldscan's own listing is checked against
//! the planted ground truth by the inventory tests, never loosened here. (Needs the `coldscan`
//! binary built, and PyPI reachable on first use to fill `target/dissect-venv`.)

use std::collections::BTreeMap;

use coldscan_tests::{coldscan, dissect, fixture, manifest, Record};

/// Compares coldscan's listing of fixture `name` with dissect's. `oracle_wrong`: paths where
/// dissect is known to be wrong, and why.
fn agrees(name: &str, kind: &str, oracle_wrong: &[(&str, &str)]) {
    let f = fixture(name).unwrap_or_else(|e| panic!("{e:#}"));
    let disk = f.disk();
    let (ours, out) = coldscan::ls(&disk.display().to_string()).unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let oracle = dissect::list_fs(kind, &disk).unwrap_or_else(|e| panic!("{e:#}"));
    let wrong: BTreeMap<&str, &str> = oracle_wrong.iter().copied().collect();
    for (path, e) in &oracle.errors {
        assert!(
            wrong.contains_key(path.as_str()),
            "dissect.{kind} failed on {path} ({e}): a new limitation of the oracle, or a fixture problem"
        );
    }
    let keep = |r: &&Record| !wrong.contains_key(r.path.as_str());
    let ours_kept: Vec<Record> = ours.iter().filter(keep).cloned().collect();
    let oracle_kept: Vec<Record> = oracle.records.iter().filter(keep).cloned().collect();
    assert!(ours_kept.len() > 100, "{name}: too little compared");
    if let Some(d) = manifest::diff(&oracle_kept, &ours_kept) {
        panic!("{name}: coldscan ls (actual) differs from dissect.{kind} (expected):\n{d}");
    }
    // Each known oracle mistake is still one: dissect errs or lists something else there.
    for (path, why) in oracle_wrong {
        let theirs = oracle.records.iter().find(|r| r.path == *path);
        let mine = ours.iter().find(|r| r.path == *path);
        let errs = oracle.errors.iter().any(|(p, _)| p == path);
        assert!(
            errs || theirs != mine,
            "{path}: dissect.{kind} now agrees with coldscan; drop it from the known mistakes ({why})"
        );
    }
}

#[test]
fn dissect_xfs_agrees_on_the_xfs_fixtures() {
    agrees("xfs-whole", "xfs", &[]);
    agrees("xfs-4k-sectors", "xfs", &[]);
}

#[test]
fn dissect_btrfs_agrees_on_the_btrfs_fixture() {
    agrees("btrfs-subvolumes", "btrfs", &[]);
}
