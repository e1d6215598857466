//! Malformed disks: each gives a clear error naming what and where, the intact volumes are
//! still listed exactly, exit code 2, no panic, no hang (every run has a time limit).

use coldscan_tests::{checks, coldscan, fixture};

macro_rules! malformed {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            let f = fixture($name).unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(f.meta.expect.exit_code, 2);
            checks::ls_matches_manifest(&f).unwrap_or_else(|e| panic!("{e:#}"));
            // `info` does not walk directories, so it may find nothing wrong inside a
            // filesystem; it must still finish without panicking.
            let disk = f.disk().display().to_string();
            let out = coldscan::run(&["info", "--json", &disk]).unwrap_or_else(|e| panic!("{e:#}"));
            assert!(matches!(out.code, Some(0) | Some(2)), "info exit {:?}: {}", out.code, out.stderr);
            assert!(!out.stderr.contains("panicked"), "info panicked: {}", out.stderr);
        }
    )*};
}

malformed! {
    truncated => "truncated",
    zeroed_superblock => "zeroed-superblock",
    gpt_infected_zeroed => "gpt-infected-zeroed",
    gpt_corrupt_primary => "gpt-corrupt-primary",
    partition_past_end => "partition-past-end",
    gpt_partition_past_end => "gpt-partition-past-end",
    mbr_ext_loop => "mbr-ext-loop",
    ext4_dir_loop => "ext4-dir-loop",
    ntfs_attr_overrun => "ntfs-attr-overrun",
}

/// An ext4 inode that claims 2 TiB (a bit flip in `i_size_high`) on a 16 MiB volume: `ls --hash
/// sha256` and `scan` finish (each run has the generous time limit of `coldscan::LIMIT`, no
/// timed assertion), the file is listed with its claimed size and reported as `limit`, and
/// every other file is listed with its exact content hash.
#[test]
fn inode_claiming_terabytes_is_reported_not_ground_through() {
    use coldscan_tests::{content::sha256_hex, testdb, tools::tool};
    let dir = coldscan_tests::cache::target_dir()
        .join("tmp")
        .join(format!("huge-size-{}", std::process::id()));
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("/f{i}.bin"), vec![b'a' + i as u8; 5000 + i * 777]))
        .collect();
    for (p, data) in &files {
        std::fs::write(tree.join(&p[1..]), data).unwrap();
    }
    std::fs::write(tree.join("huge.bin"), b"small real content").unwrap();
    let img = dir.join("ext4.img");
    let img_s = img.display().to_string();
    let tree_s = tree.display().to_string();
    tool("truncate", &["-s", "16M", &img_s]).unwrap();
    tool("mkfs.ext4", &["-q", "-F", "-d", &tree_s, &img_s]).unwrap();
    const CLAIMED: u64 = 2 << 40;
    tool(
        "debugfs",
        &["-w", "-R", &format!("sif /huge.bin size {CLAIMED}"), &img_s],
    )
    .unwrap();

    let (recs, out) = coldscan::ls(&img_s).unwrap();
    assert_eq!(out.code, Some(2), "ls exit: {}", out.stderr);
    assert!(
        out.stderr.contains("/huge.bin") && out.stderr.contains("limit"),
        "ls names the file and the limit: {}",
        out.stderr
    );
    let huge = recs.iter().find(|r| r.path == "/huge.bin").expect("listed");
    assert_eq!((huge.size, huge.sha256.as_deref()), (Some(CLAIMED), None));
    for (p, data) in &files {
        let r = recs.iter().find(|r| &r.path == p).expect("listed");
        assert_eq!(r.sha256.as_deref(), Some(sha256_hex(data).as_str()), "{p}");
    }

    let db = testdb::write_test_db(&dir.join("db")).unwrap();
    let db_s = db.display().to_string();
    let out = coldscan::run(&["scan", "--db", &db_s, "--json", "-", &img_s]).unwrap();
    assert_eq!(out.code, Some(2), "scan exit: {}", out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let not_scanned = report["not_scanned"].as_array().unwrap();
    assert!(
        not_scanned
            .iter()
            .any(|n| n["path"] == "/huge.bin" && n["reason"] == "limit"),
        "{not_scanned:?}"
    );
    assert_eq!(not_scanned.len(), 1, "the rest is scanned: {not_scanned:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
