//! `coldscan scan` through the volume layer: the clamav test files and EICAR planted in an LVM2
//! logical volume are found with their `vg/lv` and nothing else; a VG spanning two disks given
//! as two targets is scanned whole; a LUKS2 partition is `not_scanned: encrypted` and the exit
//! code is 2, `--allow-partial` or not. Reports validate against the schema.

mod common;
use common::schema_check;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use coldscan_tests::lvm::{self, PlantedDetection};
use coldscan_tests::testdb;

/// `coldscan scan --db DB --json - [EXTRA] TARGETS`: (exit code, report).
fn scan(db: &Path, extra: &[&str], targets: &[&Path]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_coldscan"))
        .arg("scan")
        .arg("--db")
        .arg(db)
        .args(["--json", "-"])
        .args(extra)
        .args(targets)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: stderr {}", String::from_utf8_lossy(&out.stderr)));
    schema_check(&report);
    (out.status.code().unwrap_or(-1), report)
}

fn found(report: &serde_json::Value) -> BTreeSet<PlantedDetection> {
    report["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| PlantedDetection {
            partition: u32::try_from(d["partition"].as_u64().unwrap()).unwrap(),
            volume: d["volume"].as_str().map(str::to_string),
            path: d["path"].as_str().unwrap().to_string(),
        })
        .collect()
}

#[test]
fn planted_files_in_a_logical_volume_are_found_with_its_name() {
    let f = lvm::ubuntu().unwrap_or_else(|e| panic!("{e:#}"));
    let tmp = tempfile::tempdir().unwrap();
    let db = testdb::write_test_db(&tmp.path().join("db")).unwrap();
    let want: BTreeSet<_> = f.detections().unwrap().into_iter().collect();
    assert!(want.len() > 40);
    for disk in [f.disks[0].clone(), f.file("disk.qcow2")] {
        let (code, report) = scan(&db, &[], &[&disk]);
        assert_eq!(code, 1, "{report:#}");
        assert_eq!(found(&report), want);
        assert_eq!(report["not_scanned"], serde_json::json!([]), "{report:#}");
        let parts = report["targets"][0]["partitions"].as_array().unwrap();
        let statuses: Vec<(Option<&str>, &str)> = parts
            .iter()
            .map(|p| (p["volume"].as_str(), p["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            statuses,
            [
                (None, "ok"),
                (None, "lvm2-pv"),
                (Some("ubuntu-vg/root"), "ok"),
                (Some("ubuntu-vg/swap"), "swap")
            ]
        );
    }
}

#[test]
fn vg_across_two_targets_is_scanned_whole_and_a_missing_pv_is_reported() {
    let f = lvm::spanning().unwrap_or_else(|e| panic!("{e:#}"));
    let tmp = tempfile::tempdir().unwrap();
    let db = testdb::write_test_db(&tmp.path().join("db")).unwrap();
    let (code, report) = scan(&db, &[], &[&f.disks[0], &f.disks[1]]);
    assert_eq!(code, 0, "{report:#}");
    let files = f
        .manifest()
        .unwrap()
        .iter()
        .filter(|r| r.kind == "file")
        .count() as u64;
    assert_eq!(report["stats"]["files"], files);
    let (code, report) = scan(&db, &["--allow-partial"], &[&f.disks[0]]);
    assert_eq!(code, 2, "{report:#}");
    let missing: Vec<&str> = report["not_scanned"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["reason"] == "missing-device")
        .map(|n| n["volume"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["data/spread", "data/stripes"], "{report:#}");
}

#[test]
fn luks_partition_is_not_scanned_encrypted_and_never_clean() {
    let f = lvm::luks().unwrap_or_else(|e| panic!("{e:#}"));
    let tmp = tempfile::tempdir().unwrap();
    let db = testdb::write_test_db(&tmp.path().join("db")).unwrap();
    for extra in [&[][..], &["--allow-partial"][..]] {
        let (code, report) = scan(&db, extra, &[&f.disks[0]]);
        assert_eq!(code, 2, "{extra:?}: {report:#}");
        let ns = report["not_scanned"].as_array().unwrap();
        assert_eq!(ns.len(), 1, "{report:#}");
        assert_eq!(ns[0]["partition"], 2);
        assert_eq!(ns[0]["reason"], "encrypted");
        assert!(
            ns[0]["detail"].as_str().unwrap().contains("luks2"),
            "{report:#}"
        );
        assert_eq!(report["targets"][0]["partitions"][1]["status"], "encrypted");
    }
}
