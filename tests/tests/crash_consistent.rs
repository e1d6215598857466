//! Crash-consistent XFS, Btrfs and ext4 images (copied while a writer runs, with a log or
//! journal to replay): `coldscan scan` finds exactly the test file fsync'ed just before the
//! copy, and `info` says the log (or journal) was replayed. (`ls`
//! against the kernel's view after recovery is in `inventory.rs`.) Needs the `coldscan` binary
//! built (`cargo build --bins`).

use coldscan_tests::{checks, coldscan, fixture};

fn scan_finds_exactly_the_planted_file(name: &str) {
    let f = fixture(name).unwrap_or_else(|e| panic!("{e:#}"));
    checks::scan_finds_expected(&f).unwrap_or_else(|e| panic!("{e:#}"));
    let disk = f.disk().display().to_string();
    let (info, _) = coldscan::info(&disk).unwrap();
    let info = info.to_string();
    assert!(
        info.contains(" replayed") && !info.contains("NOT replayed"),
        "info notes the replay: {info}"
    );
}

#[test]
fn xfs_crash_scan_finds_the_fsynced_file() {
    scan_finds_exactly_the_planted_file("xfs-crash");
}

#[test]
fn xfs_crash_with_a_wrapped_log_scan_finds_the_fsynced_file() {
    scan_finds_exactly_the_planted_file("xfs-crash-small-log");
}

#[test]
fn btrfs_crash_scan_finds_the_fsynced_file() {
    scan_finds_exactly_the_planted_file("btrfs-crash");
}

#[test]
fn ext4_crash_scan_finds_the_fsynced_file() {
    scan_finds_exactly_the_planted_file("ext4-crash");
}
