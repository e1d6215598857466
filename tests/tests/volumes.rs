//! The volume layer end to end: LVM2 volume groups made by the real LVM tools (linear, striped,
//! spanning two disks given as two targets), swap, and a LUKS2 partition, listed by `coldscan
//! ls`/`info` against the planted ground truth (needs the `coldscan` binary built:
//! `cargo build --bins`; needs loop devices to build the fixtures).

use coldscan_tests::lvm::{self, LvmFixture};
use coldscan_tests::{coldscan, manifest};

fn built(f: anyhow::Result<LvmFixture>) -> LvmFixture {
    f.unwrap_or_else(|e| panic!("{e:#}"))
}

/// `coldscan ls --format jsonl --hash sha256 DISKS...`: (exit code, records, stderr).
fn ls(disks: &[String]) -> (Option<i32>, Vec<manifest::Record>, String) {
    let mut args = vec!["ls", "--format", "jsonl", "--hash", "sha256"];
    args.extend(disks.iter().map(String::as_str));
    let out = coldscan::run(&args).unwrap_or_else(|e| panic!("{e:#}"));
    let recs = manifest::parse_jsonl(&out.stdout_text()).unwrap_or_else(|e| panic!("{e:#}"));
    (out.code, recs, out.stderr.clone())
}

fn assert_listing(f: &LvmFixture, disks: &[String]) {
    let (code, got, stderr) = ls(disks);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let want = f.manifest().unwrap();
    if let Some(d) = manifest::diff(&want, &got) {
        panic!("coldscan ls {disks:?} differs from the ground truth:\n{d}");
    }
}

fn strs(paths: &[std::path::PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

#[test]
fn ubuntu_style_disk_lists_boot_and_root_lv() {
    let f = built(lvm::ubuntu());
    assert_listing(&f, &strs(&f.disks));
    assert_listing(&f, &[f.file("disk.qcow2").display().to_string()]);
}

#[test]
fn ubuntu_style_disk_info_names_pv_lvs_and_swap() {
    let f = built(lvm::ubuntu());
    let (info, out) = coldscan::info(&f.disks[0].display().to_string()).unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let parts = info["partitions"].as_array().unwrap();
    let find = |vol: Option<&str>, index: u64| {
        parts
            .iter()
            .find(|p| p["index"] == index && p["volume"].as_str() == vol)
            .unwrap_or_else(|| panic!("no volume {vol:?} {index} in {parts:?}"))
    };
    let pv = find(None, 2);
    assert_eq!(pv["status"], "lvm2-pv");
    assert_eq!(pv["content"][0]["kind"], "lvm2-pv");
    let root = find(Some("ubuntu-vg/root"), 2);
    assert_eq!(
        (root["fs"].as_str(), root["status"].as_str()),
        (Some("ext4"), Some("ok"))
    );
    assert_eq!(root["size"], 96 << 20);
    assert_eq!(root["type"], "lvm2-lv");
    let swap = find(Some("ubuntu-vg/swap"), 2);
    assert_eq!(swap["status"], "swap");
    assert_eq!(swap["content"][0]["label"], "guestswap");
    assert_eq!(
        swap["content"][0]["uuid"],
        "0b5e55ed-0000-4000-8000-00000000000a"
    );
}

#[test]
fn vg_spanning_two_disks_is_assembled_from_both_targets() {
    let f = built(lvm::spanning());
    assert_listing(&f, &strs(&f.disks));
    // Either order, and one disk as qcow2.
    assert_listing(
        &f,
        &[
            f.file("disk2.qcow2").display().to_string(),
            f.disks[0].display().to_string(),
        ],
    );
}

#[test]
fn missing_pv_makes_its_lvs_not_readable_naming_the_pv() {
    let f = built(lvm::spanning());
    let (code, got, stderr) = ls(&[f.disks[0].display().to_string()]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    // `solo` lies on the first disk alone: still listed exactly.
    let want: Vec<_> = f
        .manifest()
        .unwrap()
        .into_iter()
        .filter(|r| r.volume.as_deref() == Some("data/solo"))
        .collect();
    if let Some(d) = manifest::diff(&want, &got) {
        panic!("with one disk, only data/solo is listed:\n{d}");
    }
    for lv in ["data/stripes", "data/spread"] {
        assert!(
            stderr.lines().any(|l| l.contains(lv)
                && l.contains("missing device")
                && l.contains("physical volume")),
            "{lv} not reported: {stderr}"
        );
    }
}

#[test]
fn luks2_partition_is_named_and_never_clean() {
    let f = built(lvm::luks());
    let disk = f.disks[0].display().to_string();
    let (code, got, stderr) = ls(std::slice::from_ref(&disk));
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("partition 2") && stderr.contains("encrypted"),
        "{stderr}"
    );
    if let Some(d) = manifest::diff(&f.manifest().unwrap(), &got) {
        panic!("{d}");
    }
    let (info, _) = coldscan::info(&disk).unwrap();
    let p2 = info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["index"] == 2)
        .unwrap()
        .clone();
    assert_eq!(p2["status"], "encrypted");
    assert_eq!(p2["content"][0]["kind"], "luks2");
    assert_eq!(p2["content"][0]["label"], "secret");
    assert_eq!(
        p2["content"][0]["uuid"],
        "0b5e55ed-1c5e-4000-8000-000000000002"
    );
}

/// dissect.volume reads the linear LVs from the PVs on its own; coldscan lists exactly the
/// LV's manifest from those bytes taken as a whole-disk filesystem, so both map the extents
/// alike.
#[test]
fn dissect_oracle_agrees_on_linear_lvs() {
    let check_lv = |f: &LvmFixture, vol: &str, pvs: &[(std::path::PathBuf, u64, u64)]| {
        let name = vol.split('/').nth(1).unwrap();
        let dir = coldscan_tests::cache::target_dir().join("tmp");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join(format!("dissect-{}.raw", vol.replace('/', "-")));
        coldscan_tests::dissect::read_lv(&out, name, pvs).unwrap_or_else(|e| panic!("{e:#}"));
        let want: Vec<_> = f
            .manifest()
            .unwrap()
            .into_iter()
            .filter(|r| r.volume.as_deref() == Some(vol))
            .map(|mut r| {
                r.partition = 0;
                r.volume = None;
                r
            })
            .collect();
        assert!(!want.is_empty());
        let (code, got, stderr) = ls(&[out.display().to_string()]);
        assert_eq!(code, Some(0), "{stderr}");
        std::fs::remove_file(&out).unwrap();
        if let Some(d) = manifest::diff(&want, &got) {
            panic!("{vol} as dissect reads it:\n{d}");
        }
    };
    let f = built(lvm::ubuntu());
    let pv = (f.disks[0].clone(), 66 << 20, 128 << 20);
    check_lv(&f, "ubuntu-vg/root", &[pv]);
    let f = built(lvm::spanning());
    let pvs: Vec<_> = f.disks.iter().map(|d| (d.clone(), 0, 100 << 20)).collect();
    check_lv(&f, "data/solo", &pvs);
    check_lv(&f, "data/spread", &pvs);
}

#[test]
fn md_raid1_members_are_read_once_as_their_data() {
    let f = built(coldscan_tests::md::raid1());
    // Both members together: the array is listed once; either member alone also lists it.
    assert_listing(&f, &strs(&f.disks));
    assert_listing(&f, &[f.disks[1].display().to_string()]);
    let out = coldscan::run(&[
        "info",
        "--json",
        &f.disks[0].display().to_string(),
        &f.disks[1].display().to_string(),
    ])
    .unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &info[0]["partitions"][0];
    assert_eq!(
        (first["status"].as_str(), first["fs"].as_str()),
        (Some("ok"), Some("ext4"))
    );
    assert_eq!(first["content"][0]["kind"], "md-raid1");
    assert_eq!(first["content"][0]["label"], "md0");
    assert_eq!(info[1]["partitions"][0]["status"], "md-member");
}

/// A PV whose only metadata copy fails its checksum: the error names the metadata area and
/// the byte offset, `/boot` is still listed exactly, and the exit code is 2.
#[test]
fn corrupt_lvm_metadata_is_an_error_with_offset_and_the_rest_is_listed() {
    let f = built(lvm::ubuntu());
    let dir = coldscan_tests::cache::target_dir().join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("lvm-corrupt-metadata.img");
    std::fs::copy(&f.disks[0], &disk).unwrap();
    let mda = (66u64 << 20) + 4096;
    let header = coldscan_tests::images::read_at(&disk, mda, 512).unwrap();
    let text_at = u64::from_le_bytes(header[40..48].try_into().unwrap());
    let byte = coldscan_tests::images::read_at(&disk, mda + text_at + 20, 1).unwrap();
    coldscan_tests::images::patch(&disk, mda + text_at + 20, &[byte[0] ^ 0x20]).unwrap();
    let (code, got, stderr) = ls(&[disk.display().to_string()]);
    std::fs::remove_file(&disk).unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("partition 2") && stderr.contains("metadata text checksum"),
        "{stderr}"
    );
    // The offset is the checksum field of the metadata area header, within partition 2.
    assert!(stderr.contains("at byte 0x1038"), "{stderr}");
    let want: Vec<_> = f
        .manifest()
        .unwrap()
        .into_iter()
        .filter(|r| r.volume.is_none())
        .collect();
    if let Some(d) = manifest::diff(&want, &got) {
        panic!("{d}");
    }
}

#[test]
fn thin_pool_with_two_thin_lvs_lists_both() {
    let f = built(coldscan_tests::thin::thin_pool());
    assert_listing(&f, &strs(&f.disks));
    assert_listing(&f, &[f.file("disk.qcow2").display().to_string()]);
}

/// A classic snapshot whose origin changed afterwards: the origin lists as the kernel sees it
/// now, the snapshot as the kernel saw it at snapshot time (the origin with the copy-on-write
/// exceptions applied), and `scan` finds each volume's own planted test files.
#[test]
fn classic_snapshot_lists_the_origin_now_and_the_snapshot_then() {
    let f = built(coldscan_tests::lvm_snapshot::classic_snapshot());
    assert_listing(&f, &strs(&f.disks));
    let tmp = coldscan_tests::cache::target_dir()
        .join("tmp")
        .join("lvm-snapshot-db");
    let db = coldscan_tests::testdb::write_test_db(&tmp).unwrap();
    let disk = f.disks[0].display().to_string();
    let out = coldscan::run(&[
        "scan",
        "--db",
        &db.display().to_string(),
        "--json",
        "-",
        &disk,
    ])
    .unwrap();
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut got: Vec<lvm::PlantedDetection> = report["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| lvm::PlantedDetection {
            partition: u32::try_from(d["partition"].as_u64().unwrap()).unwrap(),
            volume: d["volume"].as_str().map(str::to_string),
            path: d["path"].as_str().unwrap().to_string(),
        })
        .collect();
    got.sort();
    assert_eq!(got, f.detections().unwrap());
    assert_eq!(report["not_scanned"], serde_json::json!([]));
    let (info, out) = coldscan::info(&disk).unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let snap = info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["volume"] == "svg/snap")
        .unwrap_or_else(|| panic!("no svg/snap in {info}"));
    assert_eq!(snap["type_name"], "LVM2 snapshot", "{snap}");
    assert_eq!(snap["size"], 48 << 20);
}

/// The same snapshot invalidated by the kernel (its header's valid flag cleared, as when its
/// COW space fills up): `svg/snap` is an error naming the flag's offset, the origin is still
/// listed exactly, and the exit code is 2.
#[test]
fn invalidated_snapshot_is_an_error_and_its_origin_is_listed() {
    let f = built(coldscan_tests::lvm_snapshot::classic_snapshot());
    let dir = coldscan_tests::cache::target_dir().join("tmp");
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("lvm-snapshot-invalid.img");
    let copied = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(&f.disks[0])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(copied.success());
    let (info, _) = coldscan::info(&disk.display().to_string()).unwrap();
    let cow_start = info["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["volume"] == "svg/snap")
        .and_then(|p| p["start"].as_u64())
        .unwrap();
    coldscan_tests::images::patch(&disk, cow_start + 4, &[0, 0, 0, 0]).unwrap();
    let (code, got, stderr) = ls(&[disk.display().to_string()]);
    std::fs::remove_file(&disk).unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("svg/snap") && stderr.contains("invalid") && stderr.contains("0x4"),
        "{stderr}"
    );
    let want: Vec<_> = f
        .manifest()
        .unwrap()
        .into_iter()
        .filter(|r| r.volume.as_deref() == Some("svg/data"))
        .collect();
    if let Some(d) = manifest::diff(&want, &got) {
        panic!("{d}");
    }
}
