//! A RHEL-style disk (GPT: ESP FAT32, `/boot` XFS, LVM2 PV with `rhel/root` XFS, `rhel/home`
//! XFS and `rhel/swap`), raw and as qcow2: `ls --hash sha256` equals the planted manifest,
//! `info` names every volume, and `scan` finds exactly the planted test files in `rhel/root`.
//! Needs the `coldscan` binary built (`cargo build --bins`) and loop devices for the fixture.

use std::collections::BTreeSet;

use coldscan_tests::lvm::{LvmFixture, PlantedDetection};
use coldscan_tests::{coldscan, manifest, rhel, testdb};

fn built() -> LvmFixture {
    rhel::rhel().unwrap_or_else(|e| panic!("{e:#}"))
}

fn disks(f: &LvmFixture) -> [String; 2] {
    [
        f.disks[0].display().to_string(),
        f.file("disk.qcow2").display().to_string(),
    ]
}

#[test]
fn rhel_style_disk_lists_exactly_the_planted_trees() {
    let f = built();
    let want = f.manifest().unwrap();
    for disk in disks(&f) {
        let out = coldscan::run(&["ls", "--format", "jsonl", "--hash", "sha256", &disk]).unwrap();
        assert_eq!(out.code, Some(0), "{disk}: {}", out.stderr);
        let got = manifest::parse_jsonl(&out.stdout_text()).unwrap();
        if let Some(d) = manifest::diff(&want, &got) {
            panic!("coldscan ls {disk} differs from the ground truth:\n{d}");
        }
    }
}

#[test]
fn rhel_style_disk_info_names_esp_boot_lvs_and_swap() {
    let f = built();
    let (info, out) = coldscan::info(&f.disks[0].display().to_string()).unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let seen: Vec<(u64, Option<&str>, Option<&str>, &str)> = info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["index"].as_u64().unwrap(),
                p["volume"].as_str(),
                p["fs"].as_str(),
                p["status"].as_str().unwrap(),
            )
        })
        .collect();
    for want in [
        (1, None, Some("fat32"), "ok"),
        (2, None, Some("xfs"), "ok"),
        (3, Some("rhel/root"), Some("xfs"), "ok"),
        (3, Some("rhel/home"), Some("xfs"), "ok"),
    ] {
        assert!(seen.contains(&want), "{want:?} not in {seen:?}");
    }
    assert!(
        seen.iter()
            .any(|s| s.1 == Some("rhel/swap") && s.3 == "swap"),
        "{seen:?}"
    );
}

#[test]
fn rhel_style_disk_scan_finds_exactly_the_planted_files() {
    let f = built();
    let tmp = coldscan_tests::cache::target_dir()
        .join("tmp")
        .join("rhel-db");
    let db = testdb::write_test_db(&tmp).unwrap();
    let want: BTreeSet<PlantedDetection> = f.detections().unwrap().into_iter().collect();
    assert!(want.len() > 40);
    for disk in disks(&f) {
        let out = coldscan::run(&[
            "scan",
            "--db",
            &db.display().to_string(),
            "--json",
            "-",
            &disk,
        ])
        .unwrap();
        assert_eq!(out.code, Some(1), "{disk}: {}", out.stderr);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: BTreeSet<PlantedDetection> = report["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| PlantedDetection {
                partition: u32::try_from(d["partition"].as_u64().unwrap()).unwrap(),
                volume: d["volume"].as_str().map(str::to_string),
                path: d["path"].as_str().unwrap().to_string(),
            })
            .collect();
        assert_eq!(got, want, "{disk}");
        assert_eq!(report["not_scanned"], serde_json::json!([]), "{disk}");
    }
}
