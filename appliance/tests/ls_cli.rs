//! End-to-end: `coldscan ls` streams a volume's listing (with `--hash`, window by window) in a
//! stable walk order, with the right hash for every name, hard links across windows included.

use std::collections::BTreeMap;
use std::process::Command;

use sha2::{Digest, Sha256};

fn ls(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_coldscan"))
        .arg("ls")
        .args(["--format", "jsonl"])
        .args(args)
        .output()
        .expect("coldscan ls");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ls_hash_streams_in_walk_order_across_windows() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    let mut planted = BTreeMap::new();
    // More files than one hashing window (4096), hard links to early files planted late.
    for i in 0..5000u32 {
        let dir = root.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let data = format!("content {i}\n").repeat((i % 13 + 1) as usize);
        std::fs::write(dir.join(format!("f{i:05}")), &data).unwrap();
        planted.insert(
            format!("/d{}/f{i:05}", i % 7),
            hex::encode(Sha256::digest(data.as_bytes())),
        );
    }
    std::fs::create_dir_all(root.join("zz")).unwrap();
    for i in 0..10u32 {
        let src = format!("/d{}/f{i:05}", i % 7);
        let dst = format!("/zz/link{i}");
        std::fs::hard_link(root.join(&src[1..]), root.join(&dst[1..])).unwrap();
        let h = planted[&src].clone();
        planted.insert(dst, h);
    }
    let img = tmp.path().join("fs.ext4");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-N", "8192", "-d"])
        .arg(&root)
        .arg(&img)
        .arg("64M")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let img = img.display().to_string();

    let hashed = ls(&["--hash", "sha256", &img]);
    let plain = ls(&[&img]);
    let order = |v: &[serde_json::Value]| -> Vec<String> {
        v.iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(order(&hashed), order(&plain), "same walk order");
    let files: BTreeMap<String, String> = hashed
        .iter()
        .filter(|r| r["kind"] == "file" && r["path"] != "/lost+found")
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(files, planted);
}
