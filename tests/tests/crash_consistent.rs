//! Crash-consistent XFS images (copied while a writer runs, dirty log): `coldscan scan` finds
//! exactly the test file fsync'ed just before the copy, and says the log was replayed. (`ls`
//! against the kernel's view after recovery is in `inventory.rs`.) Needs the `coldscan` binary
//! built (`cargo build --bins`).

use std::collections::BTreeSet;

use coldscan_tests::fixtures::ExpectedDetection;
use coldscan_tests::{coldscan, fixture, testdb};

fn scan_finds_exactly_the_planted_file(name: &str) {
    let f = fixture(name).unwrap_or_else(|e| panic!("{e:#}"));
    let db = testdb::write_test_db(&f.dir.join("db")).unwrap();
    let disk = f.disk().display().to_string();
    let out = coldscan::run(&[
        "scan",
        "--db",
        &db.display().to_string(),
        "--json",
        "-",
        &disk,
    ])
    .unwrap();
    assert_eq!(out.code, Some(1), "exit 1 (found); stderr: {}", out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: BTreeSet<ExpectedDetection> = report["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert_eq!(d["signature"], testdb::EICAR_REPORTED, "{d}");
            ExpectedDetection {
                partition: u32::try_from(d["partition"].as_u64().unwrap()).unwrap(),
                path: d["path"].as_str().unwrap().to_string(),
                stream: None,
            }
        })
        .collect();
    let want: BTreeSet<ExpectedDetection> = f.expected_detections().unwrap().into_iter().collect();
    assert_eq!(got, want);
    assert_eq!(
        report["not_scanned"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    let (info, _) = coldscan::info(&disk).unwrap();
    assert!(
        info.to_string().contains("log replayed"),
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
