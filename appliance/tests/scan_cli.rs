//! End-to-end tests of `coldscan scan` on host directory trees with real files and the real
//! libclamav: parity with `clamscan -r` on Debian's clamav-testfiles, a clean tree, limits and
//! encryption reported as not scanned, database errors, and the JSON report's schema.

mod common;
use common::schema_check;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use coldscan_tests::testdb;

fn coldscan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coldscan"))
}

/// Runs a command, returning (exit code, stdout, stderr).
fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("command runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn test_db(dir: &Path) -> PathBuf {
    testdb::write_test_db(&dir.join("db")).expect("test database")
}

/// `coldscan scan --json - ...`: (exit code, report, stderr).
fn scan_json(db: &Path, extra: &[&str], target: &Path) -> (i32, serde_json::Value, String) {
    let (code, stdout, stderr) = run(coldscan()
        .arg("scan")
        .arg("--db")
        .arg(db)
        .arg("--json")
        .arg("-")
        .args(extra)
        .arg(target));
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON report ({e}): {stdout}\nstderr: {stderr}"));
    (code, report, stderr)
}

fn detected_paths(report: &serde_json::Value) -> BTreeSet<String> {
    report["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_string())
        .collect()
}

/// Plants the 44 clamav-testfiles and EICAR into nested directories (at most 12 levels, within
/// clamscan's default 15) and returns the planted paths.
fn plant_malware_tree(root: &Path) -> BTreeSet<String> {
    let mut planted = BTreeSet::new();
    for (i, src) in testdb::testfiles().unwrap().iter().enumerate() {
        let mut dir = root.to_path_buf();
        for level in 0..(i % 12) {
            dir.push(format!("level{level}"));
        }
        dir.push(format!("set{}", i % 5));
        std::fs::create_dir_all(&dir).unwrap();
        let dst = dir.join(src.file_name().unwrap());
        std::fs::copy(src, &dst).unwrap();
        planted.insert(dst.display().to_string());
    }
    let dir = root.join("level0/level1/docs with space");
    std::fs::create_dir_all(&dir).unwrap();
    let eicar = dir.join("eicar test.com");
    std::fs::write(&eicar, testdb::eicar()).unwrap();
    planted.insert(eicar.display().to_string());
    // Clean neighbours.
    for i in 0..50 {
        std::fs::write(
            root.join(format!("level0/clean{i}.txt")),
            format!("clean {i}\n"),
        )
        .unwrap();
    }
    std::fs::write(root.join("empty"), b"").unwrap();
    planted
}

#[test]
fn finds_every_testfile_like_clamscan() {
    let tmp = tempfile::tempdir().unwrap();
    let db = test_db(tmp.path());
    let root = tmp.path().join("tree");
    let planted = plant_malware_tree(&root);
    assert_eq!(planted.len(), 45);

    let (code, report, stderr) = scan_json(&db, &[], &root);
    assert_eq!(code, 1, "exit 1 when something is found; stderr: {stderr}");
    let ours = detected_paths(&report);
    assert_eq!(ours, planted, "coldscan finds exactly the planted files");
    for d in report["detections"].as_array().unwrap() {
        let sig = d["signature"].as_str().unwrap();
        assert!(
            sig == testdb::CLAM_REPORTED || sig == testdb::EICAR_REPORTED,
            "unexpected signature {sig}"
        );
        assert_eq!(d["partition"], 0);
        let sha = d["sha256"].as_str().unwrap();
        assert_eq!(sha.len(), 64);
    }
    // The FOUND lines on stderr (the human output moves there with `--json -`).
    assert!(stderr.contains("eicar test.com: Coldscan.Test.EICAR.UNOFFICIAL FOUND"));
    assert!(stderr.contains("----------- SCAN SUMMARY -----------"));
    schema_check(&report);

    // clamscan -r with the same database finds the same set.
    let (ccode, cout, cerr) = run(Command::new("clamscan")
        .arg("-r")
        .arg("--no-summary")
        .arg("--infected")
        .arg("-d")
        .arg(&db)
        .arg(&root));
    assert_eq!(ccode, 1, "clamscan: {cerr}");
    let theirs: BTreeSet<String> = cout
        .lines()
        .filter(|l| l.ends_with(" FOUND"))
        .filter_map(|l| l.rsplit_once(": ").map(|(path, _)| path.to_string()))
        .collect();
    assert_eq!(ours, theirs, "coldscan and clamscan find the same files");
}

#[test]
fn finds_eicar_deeper_and_later_than_clamscan_looks() {
    let tmp = tempfile::tempdir().unwrap();
    let db = test_db(tmp.path());
    let root = tmp.path().join("tree");
    let mut dir = root.clone();
    for i in 0..25 {
        dir.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&dir).unwrap();
    let deep = dir.join("deep.com");
    std::fs::write(&deep, testdb::eicar()).unwrap();
    // Over clamscan's silent 100 MB cut-off, EICAR at the very end (sparse, cheap to make).
    let big = root.join("big.img");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&big).unwrap();
        f.seek(SeekFrom::Start(101 << 20)).unwrap();
        f.write_all(&testdb::eicar()).unwrap();
    }
    let (code, report, _) = scan_json(&db, &[], &root);
    assert_eq!(code, 1);
    assert_eq!(
        detected_paths(&report),
        BTreeSet::from([deep.display().to_string(), big.display().to_string()])
    );
    assert!(report["not_scanned"].as_array().unwrap().is_empty());
}

#[test]
fn clean_tree_is_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let db = test_db(tmp.path());
    let root = tmp.path().join("tree");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    // Real binaries (ELF parsing, varied content), bounded so the test stays quick.
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/bin")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    bins.sort();
    let mut total = 0u64;
    let mut files = 0u64;
    for b in bins {
        let len = std::fs::metadata(&b).map(|m| m.len()).unwrap_or(0);
        if len > (8 << 20) || total + len > (120 << 20) || files >= 1200 {
            continue;
        }
        if std::fs::copy(&b, root.join("bin").join(b.file_name().unwrap())).is_ok() {
            total += len;
            files += 1;
        }
    }
    for i in 0..2000 {
        let sub = root.join(format!("text/{}", i % 37));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join(format!("f{i}.txt")),
            format!("ordinary file {i}\n").repeat(i % 50 + 1),
        )
        .unwrap();
        files += 1;
    }
    assert!(files >= 2000);
    let (code, report, stderr) = scan_json(&db, &["--jobs", "2"], &root);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(report["detections"].as_array().unwrap().len(), 0);
    assert_eq!(report["not_scanned"].as_array().unwrap().len(), 0);
    assert_eq!(report["stats"]["files"].as_u64().unwrap(), files);
    schema_check(&report);
}

/// Zips `file` into `dir/name` (with a password if given).
fn zip(dir: &Path, name: &str, file: &str, password: Option<&str>) {
    let mut cmd = Command::new("zip");
    cmd.current_dir(dir).arg("-q");
    if let Some(p) = password {
        cmd.arg("-P").arg(p);
    }
    let status = cmd.arg(name).arg(file).status().expect("zip runs");
    assert!(status.success());
}

#[test]
fn limits_and_encryption_are_not_scanned() {
    let tmp = tempfile::tempdir().unwrap();
    let db = test_db(tmp.path());
    let root = tmp.path().join("tree");
    std::fs::create_dir_all(&root).unwrap();
    // Over --max-filesize (1M), with EICAR inside that must NOT be claimed clean or found.
    let mut big = vec![b' '; 2 << 20];
    big.extend(testdb::eicar());
    std::fs::write(root.join("big.bin"), &big).unwrap();
    // An encrypted zip.
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("secret.txt"), b"a perfectly clean secret\n").unwrap();
    zip(&work, "encrypted.zip", "secret.txt", Some("password"));
    std::fs::rename(work.join("encrypted.zip"), root.join("encrypted.zip")).unwrap();
    // Zips nested 25 deep: beyond libclamav's recursion limit (17).
    std::fs::write(work.join("inner.txt"), b"clean content\n").unwrap();
    zip(&work, "n0.zip", "inner.txt", None);
    for i in 1..25 {
        zip(
            &work,
            &format!("n{i}.zip"),
            &format!("n{}.zip", i - 1),
            None,
        );
    }
    std::fs::rename(work.join("n24.zip"), root.join("nested.zip")).unwrap();
    std::fs::write(root.join("fine.txt"), b"fine\n").unwrap();

    let (code, report, stderr) = scan_json(&db, &["--max-filesize", "1M"], &root);
    assert_eq!(code, 2, "unscanned files exit 2; stderr: {stderr}");
    assert_eq!(report["detections"].as_array().unwrap().len(), 0);
    let reasons: BTreeSet<(String, String)> = report["not_scanned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let path = n["path"].as_str().unwrap();
            let name = Path::new(path).file_name().unwrap().to_string_lossy();
            (name.into_owned(), n["reason"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from([
            ("big.bin".to_string(), "too-large".to_string()),
            ("encrypted.zip".to_string(), "encrypted".to_string()),
            ("nested.zip".to_string(), "limit".to_string()),
        ])
    );
    assert_eq!(
        report["stats"]["files"], 1,
        "only fine.txt was scanned completely"
    );
    assert!(
        stderr.contains("big.bin: NOT SCANNED (too-large)"),
        "{stderr}"
    );
    schema_check(&report);

    let (code, _, _) = scan_json(&db, &["--max-filesize", "1M", "--allow-partial"], &root);
    assert_eq!(code, 0, "--allow-partial forgives unscanned files");

    // With the default limit the big file is scanned and EICAR found: exit 1.
    let (code, report, _) = scan_json(&db, &[], &root);
    assert_eq!(code, 1);
    assert_eq!(
        detected_paths(&report),
        BTreeSet::from([root.join("big.bin").display().to_string()])
    );
}

#[test]
fn database_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path();
    let (code, _, stderr) = run(coldscan()
        .args(["scan", "--db"])
        .arg(tmp.path().join("missing"))
        .arg(target));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot open signature database"),
        "{stderr}"
    );

    let bad = tmp.path().join("bad.ndb");
    std::fs::write(&bad, "not a signature at all\n").unwrap();
    let (code, _, stderr) = run(coldscan().args(["scan", "--db"]).arg(&bad).arg(target));
    assert_eq!(code, 2);
    assert!(stderr.contains("Malformed database"), "{stderr}");

    let empty = tmp.path().join("emptydb");
    std::fs::create_dir(&empty).unwrap();
    let (code, _, stderr) = run(coldscan().args(["scan", "--db"]).arg(&empty).arg(target));
    assert_eq!(code, 2);
    assert!(stderr.contains("no signatures"), "{stderr}");
}

#[test]
fn missing_target_exits_2_even_with_allow_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let db = test_db(tmp.path());
    let (code, report, _) = scan_json(
        &db,
        &["--allow-partial"],
        &tmp.path().join("no-such-disk.qcow2"),
    );
    assert_eq!(code, 2);
    let ns = report["not_scanned"].as_array().unwrap();
    assert_eq!(ns.len(), 1);
    assert!(ns[0]["partition"].is_null() && ns[0]["path"].is_null());
    schema_check(&report);
}

#[test]
fn human_output_and_json_file() {
    let tmp = tempfile::tempdir().unwrap();
    let db = test_db(tmp.path());
    let root = tmp.path().join("tree");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("e.com"), testdb::eicar()).unwrap();
    let json = tmp.path().join("report.json");
    let (code, stdout, _) = run(coldscan()
        .arg("scan")
        .arg("--db")
        .arg(&db)
        .arg("--json")
        .arg(&json)
        .arg(&root));
    assert_eq!(code, 1);
    let line = format!(
        "{} partition 0: {}: Coldscan.Test.EICAR.UNOFFICIAL FOUND",
        root.display(),
        root.join("e.com").display()
    );
    assert!(stdout.contains(&line), "{stdout}");
    assert!(stdout.contains("Infected files: 1"), "{stdout}");
    assert!(stdout.contains("Scanned files: 1"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["tool"], "coldscan");
    assert_eq!(report["engine"]["name"], "clamav");
    assert_eq!(report["engine"]["signatures"], 2);
    // The database is named: no daily database, and the digest of the database files.
    assert_eq!(report["engine"]["db"]["version"], 0);
    let sha = report["engine"]["db"]["sha256"].as_str().unwrap();
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sha}"
    );
    assert!(report["engine"]["db"].get("manager_version").is_none());
    schema_check(&report);

    // The schema check can fail: an unknown reason and a missing field are rejected.
    let schema_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/report.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut broken = report.clone();
    broken["not_scanned"] = serde_json::json!([{
        "target": "t", "partition": 1, "path": null, "reason": "bogus", "detail": ""
    }]);
    assert!(!validator.is_valid(&broken));
    let mut broken = report.clone();
    broken["detections"][0]
        .as_object_mut()
        .unwrap()
        .remove("sha256");
    assert!(!validator.is_valid(&broken));
}

/// A partitioned disk whose partitions hold no recognisable filesystem is a disk image with
/// unreadable volumes: reported, exit 2. A Linux partition promises a filesystem (its missing
/// ext superblock is `corrupt` at byte 0x400 of the partition); a non-filesystem data
/// partition (0xda) is only `unsupported-filesystem`.
#[test]
fn unrecognized_volume_is_reported_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let db = test_db(tmp.path());
    let img = tmp.path().join("zero.img");
    std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
    sfdisk(
        &img,
        b"label: dos\nstart=2048, size=4096, type=83\nstart=6144, size=4096, type=da\n",
    );
    let (code, report, stderr) = scan_json(&db, &["--allow-partial"], &img);
    assert_eq!(
        code, 2,
        "a volume that cannot be read is an error: {stderr}"
    );
    let ns = report["not_scanned"].as_array().unwrap();
    assert_eq!(ns.len(), 2, "{ns:?}");
    assert_eq!(ns[0]["partition"], 1);
    assert!(ns[0]["path"].is_null());
    assert_eq!(ns[0]["reason"], "corrupt");
    let detail = ns[0]["detail"].as_str().unwrap();
    assert!(detail.contains("0x400"), "{detail}");
    assert_eq!(ns[1]["partition"], 2);
    assert_eq!(ns[1]["reason"], "unsupported-filesystem");
    assert_eq!(report["targets"][0]["format"], "raw");
    let parts = &report["targets"][0]["partitions"];
    assert!(
        parts[0]["status"].as_str().unwrap().starts_with("error: "),
        "{parts}"
    );
    assert_eq!(parts[1]["status"], "unrecognized");
    schema_check(&report);
}

/// Writes a partition table with sfdisk.
fn sfdisk(disk: &Path, script: &[u8]) {
    use std::io::Write;
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script).unwrap();
    assert!(child.wait().unwrap().success());
}

/// A host file that is no disk image (no partition table, no filesystem) is scanned as a file,
/// as clamscan does, and may be mixed with a directory and a disk image in one command; the
/// report keeps the targets in the order given.
#[test]
fn files_directories_and_images_in_one_command() {
    let tmp = tempfile::tempdir().unwrap();
    let db = test_db(tmp.path());
    let file = tmp.path().join("invoice.pdf.exe");
    let mut data = vec![b'M'; 3000];
    data.extend(testdb::eicar());
    std::fs::write(&file, &data).unwrap();
    let clean_file = tmp.path().join("notes.txt");
    std::fs::write(&clean_file, b"nothing here\n").unwrap();
    let dir = tmp.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("eicar.com"), testdb::eicar()).unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("in-image.com"), testdb::eicar()).unwrap();
    let img = tmp.path().join("fs.ext4");
    tool(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&img)
            .arg("8M"),
    );
    let (code, stdout, stderr) = run(coldscan()
        .arg("scan")
        .arg("--db")
        .arg(&db)
        .arg("--json")
        .arg("-")
        .arg(&file)
        .arg(&dir)
        .arg(&img)
        .arg(&clean_file));
    assert_eq!(code, 1, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let formats: Vec<&str> = report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["file", "directory", "raw", "file"]);
    assert_eq!(report["targets"][0]["size"], data.len());
    assert_eq!(report["targets"][0]["partitions"], serde_json::json!([]));
    let found: Vec<(String, u64)> = report["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["partition"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (file.display().to_string(), 0),
            (dir.join("eicar.com").display().to_string(), 0),
            ("/in-image.com".to_string(), 0),
        ]
    );
    assert!(report["not_scanned"].as_array().unwrap().is_empty());
    assert_eq!(report["stats"]["files"], 4);
    schema_check(&report);
}

/// `--cache`: the second scan takes every verdict from the cache with the same detections; a
/// cache file that is not ours is left alone with a warning and the scan runs without it.
#[test]
fn verdict_cache_reuses_verdicts_and_refuses_foreign_files() {
    let tmp = tempfile::tempdir().unwrap();
    let db = test_db(tmp.path());
    let root = tmp.path().join("tree");
    let planted = plant_malware_tree(&root);
    let cache = tmp.path().join("verdicts.sqlite");
    let cache_arg = cache.display().to_string();
    let (code, first, stderr) = scan_json(&db, &["--cache", &cache_arg], &root);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(detected_paths(&first), planted);
    let (code, second, stderr) = scan_json(&db, &["--cache", &cache_arg], &root);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(detected_paths(&second), planted);
    assert_eq!(second["stats"]["files"], first["stats"]["files"]);
    assert_eq!(second["stats"]["cached_files"], second["stats"]["files"]);
    assert!(second["detections"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["cached"] == true && d["sha256"].is_string()));
    assert!(first["detections"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["cached"] == false));
    schema_check(&second);

    let foreign = tmp.path().join("foreign.sqlite");
    let junk: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&foreign, &junk).unwrap();
    let (code, third, stderr) = scan_json(&db, &["--cache", &foreign.display().to_string()], &root);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("not a coldscan verdict cache"),
        "{stderr}"
    );
    assert_eq!(detected_paths(&third), planted);
    assert_eq!(third["stats"]["cached_files"], 0);
    assert_eq!(std::fs::read(&foreign).unwrap(), junk, "left untouched");
}

/// Runs a tool, panicking with its stderr when it fails.
fn tool(cmd: &mut Command) {
    let out = cmd.output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The planted tree as an MBR-partitioned disk whose partition 1 is ext4 (mkfs.ext4 -d): the
/// same detections as on the host tree, with paths inside the volume (and a hard link found
/// under both names). The factory's `gpt-infected` disk (ext4, NTFS, FAT32) is covered with
/// clamscan parity in `scan_disks.rs`.
#[test]
fn ext4_partition_parity_with_clamscan() {
    let tmp = tempfile::tempdir().unwrap();
    let db = test_db(tmp.path());
    let root = tmp.path().join("tree");
    let planted = plant_malware_tree(&root);
    std::fs::hard_link(
        root.join("level0/level1/docs with space/eicar test.com"),
        root.join("hardlink.com"),
    )
    .unwrap();
    let fs_img = tmp.path().join("fs.ext4");
    tool(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-d"])
            .arg(&root)
            .arg(&fs_img)
            .arg("64M"),
    );
    let disk = tmp.path().join("disk.img");
    std::fs::write(&disk, b"").unwrap();
    tool(Command::new("truncate").args(["-s", "70M"]).arg(&disk));
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, size=131072, type=83\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    tool(
        Command::new("dd")
            .arg(format!("if={}", fs_img.display()))
            .arg(format!("of={}", disk.display()))
            .args(["bs=512", "seek=2048", "conv=notrunc", "status=none"]),
    );

    let (code, report, stderr) = scan_json(&db, &[], &disk);
    assert_eq!(code, 1, "{stderr}");
    let prefix = root.display().to_string();
    let mut expected: BTreeSet<String> = planted
        .iter()
        .map(|p| p.strip_prefix(&prefix).unwrap().to_string())
        .collect();
    expected.insert("/hardlink.com".into());
    assert_eq!(detected_paths(&report), expected);
    assert!(report["detections"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["partition"] == 1));
    assert_eq!(report["targets"][0]["partitions"][0]["fs"], "ext4");
    schema_check(&report);
}

#[test]
fn archive_member_and_scan_size_limits_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let db = test_db(tmp.path());
    let work = tmp.path().join("work");
    let root = tmp.path().join("tree");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    let mut names = Vec::new();
    for i in 0..5u8 {
        // Incompressible-ish distinct members so that libclamav scans each.
        let data: Vec<u8> = (0..200_000u32)
            .map(|j| (j.wrapping_mul(2_654_435_761) >> (i + 3)) as u8)
            .collect();
        let name = format!("m{i}.bin");
        std::fs::write(work.join(&name), data).unwrap();
        names.push(name);
    }
    let status = Command::new("zip")
        .current_dir(&work)
        .args(["-q", "-0", "members.zip"])
        .args(&names)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::rename(work.join("members.zip"), root.join("members.zip")).unwrap();

    let reasons = |extra: &[&str]| -> Vec<String> {
        let (code, report, stderr) = scan_json(&db, extra, &root);
        assert_eq!(code, 2, "{stderr}");
        report["not_scanned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| format!("{} {}", n["reason"].as_str().unwrap(), n["detail"]))
            .collect()
    };
    let r = reasons(&["--max-files", "2"]);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(
        r[0].starts_with("limit ") && r[0].contains("MaxFiles"),
        "{r:?}"
    );
    let r = reasons(&["--max-scansize", "300K"]);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(
        r[0].starts_with("too-large ") && r[0].contains("MaxScanSize"),
        "{r:?}"
    );
    // Within the defaults everything is scanned.
    let (code, report, _) = scan_json(&db, &[], &root);
    assert_eq!(code, 0);
    assert_eq!(report["stats"]["files"], 1);
}

#[test]
fn without_db_and_system_databases_the_error_says_give_db() {
    if coldscan_scanner::engine::clamav::system_db_dir().is_some() {
        eprintln!("system ClamAV databases are installed: the default is used, nothing to check");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(coldscan().arg("scan").arg(tmp.path()));
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no signature database: give --db"),
        "{stderr}"
    );
}

/// First match by default (as clamscan; collecting all matches is ~3x slower), every matching
/// signature with `--all-matches`.
#[test]
fn all_matches_reports_every_signature_only_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let db = test_db(tmp.path());
    // A second body signature for the same test string, under another name.
    let hex: String = testdb::eicar().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        db.join("second.ndb"),
        format!("Coldscan.Test.Second:0:*:{hex}\n"),
    )
    .unwrap();
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("eicar.com"), testdb::eicar()).unwrap();
    let signatures = |extra: &[&str]| -> Vec<String> {
        let (code, report, stderr) = scan_json(&db, extra, &tree);
        assert_eq!(code, 1, "{stderr}");
        let mut s: Vec<String> = report["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["signature"].as_str().unwrap().to_string())
            .collect();
        s.sort();
        s
    };
    assert_eq!(signatures(&[]).len(), 1, "default stops at the first match");
    let all = signatures(&["--all-matches"]);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all.iter().any(|s| s.contains("Coldscan.Test.Second")),
        "{all:?}"
    );
}

/// A directory the scanning user cannot read is reported (`io-error`), never skipped silently.
/// As root (how CI runs) the permission cannot be planted for root itself: the scan then runs
/// as `nobody` through `setpriv`, so the test checks the same thing under either user.
#[test]
fn unreadable_directory_is_reported_even_when_tests_run_as_root() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(dir.path(), open.clone()).unwrap();
    let db = test_db(dir.path());
    for p in [db.clone(), db.join("test.hdb"), db.join("eicar.ndb")] {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let tree = dir.path().join("tree");
    let locked = tree.join("locked");
    std::fs::create_dir_all(&locked).unwrap();
    std::fs::write(tree.join("readable"), b"clean").unwrap();
    std::fs::write(locked.join("hidden"), b"x").unwrap();
    std::fs::set_permissions(&tree, open.clone()).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let as_root = effective_uid_is_root();
    let mut cmd = if as_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_coldscan"));
        c
    } else {
        coldscan()
    };
    let (code, stdout, stderr) = run(cmd
        .arg("scan")
        .arg("--db")
        .arg(&db)
        .arg("--json")
        .arg("-")
        .arg(&tree));
    std::fs::set_permissions(&locked, open).unwrap();
    let report: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("one JSON report ({e}): {stdout}\nstderr: {stderr}"));
    let not_scanned = report["not_scanned"].as_array().unwrap();
    assert_eq!(not_scanned.len(), 1, "{not_scanned:?} (root: {as_root})");
    assert_eq!(not_scanned[0]["reason"], "io-error");
    assert!(not_scanned[0]["path"].as_str().unwrap().contains("locked"));
    assert_eq!(code, 2, "{stderr}");
}

/// Whether this process runs as root (without unsafe code: `/proc/self/status`'s effective uid).
fn effective_uid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
