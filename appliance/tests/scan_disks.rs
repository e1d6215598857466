//! End-to-end tests of `coldscan scan` on guest disks from the fixture factory: Debian's
//! clamav-testfiles and EICAR planted in ext4, NTFS (also in a compressed folder and an
//! alternate data stream) and FAT32 partitions (`gpt-infected`) are all found with the right
//! partition and path and nothing else, the same set as `clamscan -r` finds on the same files
//! extracted with `coldscan cat`, through a qcow2 conversion too; a disk with a corrupt
//! partition is still scanned and the error is in the report.

mod common;
use common::schema_check;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use coldscan_tests::fixtures::ExpectedDetection;
use coldscan_tests::{fixture, testdb, Fixture};

fn coldscan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coldscan"))
}

/// Runs a command, returning (exit code, stdout bytes, stderr).
fn run(cmd: &mut Command) -> (i32, Vec<u8>, String) {
    let out = cmd.output().expect("command runs");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn built(name: &str) -> Fixture {
    fixture(name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `coldscan scan --db DB --json - TARGET`: (exit code, report, stderr).
fn scan_json(db: &Path, target: &Path) -> (i32, serde_json::Value, String) {
    let (code, stdout, stderr) = run(coldscan()
        .arg("scan")
        .arg("--db")
        .arg(db)
        .arg("--json")
        .arg("-")
        .arg(target));
    let report: serde_json::Value = serde_json::from_slice(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is one JSON report ({e}): {}\nstderr: {stderr}",
            String::from_utf8_lossy(&stdout)
        )
    });
    (code, report, stderr)
}

/// The report's detections as the fixture lists them, checking on the way that each names
/// the scanned target and a signature of the test database.
fn detections(report: &serde_json::Value, target: &Path) -> BTreeSet<ExpectedDetection> {
    let target = target.display().to_string();
    let mut out = BTreeSet::new();
    for d in report["detections"].as_array().unwrap() {
        assert_eq!(d["target"], target.as_str(), "{d}");
        let sig = d["signature"].as_str().unwrap();
        assert!(
            sig == testdb::CLAM_REPORTED || sig == testdb::EICAR_REPORTED,
            "unexpected signature {sig}: {d}"
        );
        let new = out.insert(ExpectedDetection {
            partition: u32::try_from(d["partition"].as_u64().unwrap()).unwrap(),
            path: d["path"].as_str().unwrap().to_string(),
            stream: d["stream"].as_str().map(str::to_string),
        });
        assert!(new, "reported twice: {d}");
    }
    out
}

/// Readable difference of two detection sets.
fn assert_same(
    what: &str,
    expected: &BTreeSet<ExpectedDetection>,
    got: &BTreeSet<ExpectedDetection>,
) {
    let missing: Vec<_> = expected.difference(got).collect();
    let extra: Vec<_> = got.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} expected, {} got\nmissing: {missing:#?}\nunexpected: {extra:#?}",
        expected.len(),
        got.len()
    );
}

/// libclamav reports `clam_cache_emax.tgz` (an archive made to exceed its extraction limits)
/// both as detected and as not scanned completely (`limit`); clamscan prints only the
/// detection. Returns the `not_scanned` entries other than that one.
fn unexpected_not_scanned(report: &serde_json::Value) -> Vec<serde_json::Value> {
    report["not_scanned"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            let known = n["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/clam_cache_emax.tgz"))
                && n["reason"] == "limit";
            !known
        })
        .cloned()
        .collect()
}

/// Extracts every planted file and stream of the listed volumes with `coldscan cat` into
/// `root/p<partition><path>` (streams as `name:stream` files).
fn extract_all(f: &Fixture, root: &Path) -> usize {
    let disk = f.disk();
    let mut n = 0;
    for r in f.manifest().unwrap().iter().filter(|r| r.kind == "file") {
        let (code, data, stderr) = run(coldscan()
            .arg("cat")
            .arg(&disk)
            .arg(r.partition.to_string())
            .arg(&r.path));
        assert_eq!(code, 0, "cat {} {}: {stderr}", r.partition, r.path);
        assert_eq!(
            coldscan_tests::content::sha256_hex(&data),
            r.sha256.clone().unwrap(),
            "cat {} {} gives the planted content",
            r.partition,
            r.path
        );
        let dst = root.join(format!("p{}{}", r.partition, r.path));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(&dst, data).unwrap();
        n += 1;
    }
    n
}

/// `clamscan -r --infected` over `root` with the same database and coldscan's default size
/// limits (clamscan's own defaults skip big files silently); the FOUND files mapped back to
/// (partition, path) through the `p<partition>` directories of [`extract_all`].
fn clamscan_set(db: &Path, root: &Path) -> BTreeSet<(u32, String)> {
    let (code, stdout, stderr) = run(Command::new("clamscan")
        .args(["-r", "--no-summary", "--infected", "--stdout"])
        .args(["--max-filesize=1000M", "--max-scansize=4000M"])
        .arg("-d")
        .arg(db)
        .arg(root));
    assert_eq!(code, 1, "clamscan finds something: {stderr}");
    let prefix = format!("{}/p", root.display());
    String::from_utf8(stdout)
        .unwrap()
        .lines()
        .filter(|l| l.ends_with(" FOUND"))
        .map(|l| {
            let (path, _) = l.rsplit_once(": ").unwrap();
            let rest = path.strip_prefix(&prefix).unwrap_or_else(|| panic!("{l}"));
            let slash = rest.find('/').unwrap();
            (rest[..slash].parse().unwrap(), rest[slash..].to_string())
        })
        .collect()
}

fn as_pairs(set: &BTreeSet<ExpectedDetection>) -> BTreeSet<(u32, String)> {
    set.iter().map(|d| (d.partition, d.path.clone())).collect()
}

#[test]
fn infected_disk_every_planted_file_and_nothing_else_like_clamscan() {
    let f = built("gpt-infected");
    let tmp = tempfile::tempdir().unwrap();
    let db = testdb::write_test_db(&tmp.path().join("db")).unwrap();
    let expected: BTreeSet<ExpectedDetection> =
        f.expected_detections().unwrap().into_iter().collect();
    // 44 test files and EICAR per partition, and on NTFS EICAR twice in the compressed
    // folder and in two streams.
    let per_partition = testdb::testfiles().unwrap().len() + 1;
    assert_eq!(expected.len(), 3 * per_partition + 4);
    for p in 1..=3 {
        assert!(expected.iter().filter(|d| d.partition == p).count() >= per_partition);
    }
    for stream in ["payload", "big payload"] {
        assert!(expected
            .iter()
            .any(|d| d.partition == 2 && d.stream.as_deref() == Some(stream)));
    }

    let disk = f.disk();
    let (code, report, stderr) = scan_json(&db, &disk);
    assert_eq!(code, 1, "exit 1 when something is found; stderr: {stderr}");
    let got = detections(&report, &disk);
    assert_same("coldscan scan of gpt-infected", &expected, &got);
    assert_eq!(
        unexpected_not_scanned(&report),
        Vec::<serde_json::Value>::new(),
        "everything else was scanned"
    );
    // Each detection carries the planted content's size and sha256.
    let truth: BTreeMap<(u32, String), coldscan_tests::Record> = f
        .manifest()
        .unwrap()
        .into_iter()
        .map(|r| ((r.partition, r.path.clone()), r))
        .collect();
    for d in report["detections"].as_array().unwrap() {
        let key = (
            u32::try_from(d["partition"].as_u64().unwrap()).unwrap(),
            d["path"].as_str().unwrap().to_string(),
        );
        let r = &truth[&key];
        assert_eq!(d["size"].as_u64(), r.size, "{d}");
        assert_eq!(d["sha256"].as_str(), r.sha256.as_deref(), "{d}");
    }
    let fs: Vec<&str> = report["targets"][0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["fs"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(fs, ["ext4", "ntfs", "fat32"]);
    assert!(
        stderr.contains(
            "partition 2: /Users/Public/notes.txt:payload: Coldscan.Test.EICAR.UNOFFICIAL FOUND"
        ),
        "{stderr}"
    );
    schema_check(&report);

    // clamscan over the same planted files (every file and stream, clean ones too, taken out
    // of the image with `coldscan cat`) finds the same set.
    let root = tmp.path().join("extracted");
    let files = extract_all(&f, &root);
    assert!(files > expected.len());
    let theirs = clamscan_set(&db, &root);
    assert_eq!(
        as_pairs(&got),
        theirs,
        "coldscan on the disk and clamscan on the extracted files find the same set"
    );
}

#[test]
fn infected_disk_through_qcow2_same_detections() {
    let f = built("gpt-infected");
    let tmp = tempfile::tempdir().unwrap();
    let db = testdb::write_test_db(&tmp.path().join("db")).unwrap();
    let qcow2 = tmp.path().join("gpt-infected.qcow2");
    let (code, _, stderr) = run(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(f.disk())
        .arg(&qcow2));
    assert_eq!(code, 0, "qemu-img convert: {stderr}");
    let (code, report, stderr) = scan_json(&db, &qcow2);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(report["targets"][0]["format"], "qcow2");
    let expected: BTreeSet<ExpectedDetection> =
        f.expected_detections().unwrap().into_iter().collect();
    assert_same(
        "coldscan scan of gpt-infected as qcow2",
        &expected,
        &detections(&report, &qcow2),
    );
    assert!(unexpected_not_scanned(&report).is_empty(), "{report}");
    schema_check(&report);
}

/// The `not_scanned` entries of whole volumes (`path` null) by partition.
fn volume_errors(report: &serde_json::Value) -> BTreeMap<u64, (String, String)> {
    report["not_scanned"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["path"].is_null())
        .map(|n| {
            (
                n["partition"].as_u64().unwrap_or(u64::MAX),
                (
                    n["reason"].as_str().unwrap().to_string(),
                    n["detail"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

#[test]
fn corrupt_partition_the_rest_is_scanned_and_the_error_reported() {
    let f = built("gpt-infected-zeroed");
    let tmp = tempfile::tempdir().unwrap();
    let db = testdb::write_test_db(&tmp.path().join("db")).unwrap();
    let expected: BTreeSet<ExpectedDetection> =
        f.expected_detections().unwrap().into_iter().collect();
    assert!(expected.iter().all(|d| d.partition != 1));
    assert!(expected.iter().any(|d| d.partition == 2) && expected.iter().any(|d| d.partition == 3));

    let disk = f.disk();
    let (code, report, stderr) = scan_json(&db, &disk);
    assert_eq!(code, 1, "detections take precedence over errors: {stderr}");
    assert_same(
        "coldscan scan of gpt-infected-zeroed",
        &expected,
        &detections(&report, &disk),
    );
    let errors = volume_errors(&report);
    assert_eq!(
        errors.keys().copied().collect::<Vec<_>>(),
        [1],
        "{errors:?}"
    );
    let (reason, detail) = &errors[&1];
    assert!(!reason.is_empty() && !detail.is_empty());
    assert!(
        detail.contains("partition 1"),
        "the detail names the volume: {detail}"
    );
    assert!(
        stderr.contains("partition 1: NOT SCANNED"),
        "the human output shows it: {stderr}"
    );
    let not_scanned = unexpected_not_scanned(&report);
    assert_eq!(not_scanned.len(), 1, "{not_scanned:#?}");
    schema_check(&report);
}

#[test]
fn clean_but_corrupt_disks_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let db = testdb::write_test_db(&tmp.path().join("db")).unwrap();

    // A volume that cannot be read: the other partition is scanned, exit 2.
    let f = built("zeroed-superblock");
    let (code, report, stderr) = scan_json(&db, &f.disk());
    assert_eq!(code, 2, "{stderr}");
    assert!(report["detections"].as_array().unwrap().is_empty());
    let errors = volume_errors(&report);
    assert_eq!(
        errors.keys().copied().collect::<Vec<_>>(),
        [1],
        "{errors:?}"
    );
    assert!(errors[&1].1.contains("partition 1"), "{errors:?}");
    let planted_files = f
        .volume_manifest(2)
        .unwrap()
        .iter()
        .filter(|r| r.kind == "file")
        .count();
    assert_eq!(
        report["stats"]["files"].as_u64().unwrap(),
        u64::try_from(planted_files).unwrap(),
        "every file of the intact FAT32 partition was scanned"
    );
    schema_check(&report);

    // One broken MFT record: that file is reported (naming it or its record), every other
    // file is scanned, exit 2.
    let f = built("ntfs-attr-overrun");
    let (code, report, stderr) = scan_json(&db, &f.disk());
    assert_eq!(code, 2, "{stderr}");
    assert!(report["detections"].as_array().unwrap().is_empty());
    let ns = report["not_scanned"].as_array().unwrap();
    assert!(!ns.is_empty());
    assert!(ns.iter().all(|n| n["partition"] == 0), "{ns:#?}");
    assert!(
        ns.iter().any(|n| {
            let detail = n["detail"].as_str().unwrap();
            (detail.contains("overrun-victim.txt") || detail.contains("record"))
                && n["reason"] == "corrupt"
        }),
        "{ns:#?}"
    );
    let planted_files = f
        .manifest()
        .unwrap()
        .iter()
        .filter(|r| r.kind == "file")
        .count();
    assert!(
        report["stats"]["files"].as_u64().unwrap() >= u64::try_from(planted_files).unwrap(),
        "the rest of the volume was scanned: {}",
        report["stats"]
    );
    schema_check(&report);
}

/// The fixture directory holds no copy of the test malware besides the disk (they are read
/// from the installed package at build time).
#[test]
fn infected_fixture_keeps_no_loose_copies() {
    let f = built("gpt-infected");
    let names: Vec<PathBuf> = std::fs::read_dir(&f.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for n in &names {
        assert!(n.is_file(), "no staging directories left: {}", n.display());
    }
}
