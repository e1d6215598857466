//! The signature database for appliances, on SQLite and on a real PostgreSQL: `signatures set`
//! and `show`, `GET /api/v1/signatures` and the tar bundle (read back by GNU tar, digest checked
//! over the extracted files), versions that name one content forever; and the database a report
//! names, kept per scan and listed.

mod common;

use std::io::Read;
use std::process::Command;

use common::*;
use sha2::Digest;

/// The digest as the scanner computes it over a directory of database files.
fn digest_of(dir: &std::path::Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut h = sha2::Sha256::new();
    for n in names {
        let c = std::fs::read(dir.join(&n)).unwrap();
        h.update(n.as_bytes());
        h.update([0]);
        h.update((c.len() as u64).to_le_bytes());
        h.update(&c);
    }
    hex::encode(h.finalize())
}

fn scenario(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("db");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("eicar.ndb"), "Coldscan.Test.A:0:*:4142\n").unwrap();
    std::fs::write(src.join("test.hdb"), vec![b'x'; 700]).unwrap();
    std::fs::write(src.join("README"), "not a database\n").unwrap();
    let appliance = token(db, "appliance", "esx-01");
    let admin = token(db, "admin", "ops");

    assert!(manager_cli(db, &["signatures", "show"]).contains("no signature database"));
    let out = manager_cli(
        db,
        &["signatures", "set", "--version", "A", src.to_str().unwrap()],
    );
    std::fs::remove_file(src.join("README")).unwrap();
    let digest = digest_of(&src);
    assert_eq!(out.trim(), format!("A\t{digest}"));

    let m = Manager::start(db, &[]);
    let info = get(&m, "/api/v1/signatures", &appliance);
    assert_eq!(info.status, 200, "{}", info.json);
    assert_eq!(info.json["version"], "A");
    assert_eq!(info.json["sha256"], digest.as_str());
    assert_eq!(info.json["size"], 725);
    let names: Vec<&str> = info.json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["eicar.ndb", "test.hdb"]);
    assert_eq!(get(&m, "/api/v1/signatures", &admin).status, 200);
    let anonymous = call(
        "GET",
        &format!("{}/api/v1/signatures/bundle", m.url),
        None,
        &[],
        None,
    );
    assert_eq!(anonymous.status, 401);

    let mut response = ureq::get(&format!("{}/api/v1/signatures/bundle", m.url))
        .header("Authorization", &format!("Bearer {appliance}"))
        .call()
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("x-coldscan-signatures-sha256")
            .unwrap(),
        digest.as_str()
    );
    assert_eq!(
        response
            .headers()
            .get("x-coldscan-signatures-version")
            .unwrap(),
        "A"
    );
    let mut tar = Vec::new();
    response
        .body_mut()
        .as_reader()
        .read_to_end(&mut tar)
        .unwrap();
    let bundle = dir.path().join("bundle.tar");
    std::fs::write(&bundle, &tar).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&bundle)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(digest_of(&out), digest);

    // The same version and content again: nothing changes. Other content under a used version,
    // or a file libclamav would not load: refused.
    assert!(manager_cli(
        db,
        &["signatures", "set", "--version", "A", src.to_str().unwrap()]
    )
    .contains(&digest));
    let refused = |args: &[&str]| {
        let out = Command::new(manager_bin())
            .arg("--db")
            .arg(db)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let other = dir.path().join("other.ndb");
    std::fs::write(&other, "Coldscan.Test.B:0:*:4344\n").unwrap();
    assert!(refused(&[
        "signatures",
        "set",
        "--version",
        "A",
        other.to_str().unwrap()
    ])
    .contains("already exists"));
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "x").unwrap();
    assert!(refused(&[
        "signatures",
        "set",
        "--version",
        "C",
        notes.to_str().unwrap()
    ])
    .contains("not a signature database"));
    manager_cli(
        db,
        &[
            "signatures",
            "set",
            "--version",
            "B",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(
        get(&m, "/api/v1/signatures", &appliance).json["version"],
        "B"
    );

    // A report naming its database: kept per scan, listed by the API and the CLI; an older
    // report without it is listed with null.
    let mut report = sample_report("/vm/a.qcow2");
    report["engine"]["db"] =
        serde_json::json!({"version": 0, "sha256": digest, "manager_version": "A"});
    assert_eq!(
        post_report(&m, Some(&appliance), "k1", report.to_string().as_bytes()).status,
        201
    );
    let old = sample_report("/vm/b.qcow2");
    assert_eq!(
        post_report(&m, Some(&appliance), "k2", old.to_string().as_bytes()).status,
        201
    );
    let scans = get(&m, "/api/v1/scans", &admin).json;
    assert_eq!(scans["scans"][0]["db"], serde_json::Value::Null);
    assert_eq!(scans["scans"][1]["db"]["manager_version"], "A");
    assert_eq!(scans["scans"][1]["db"]["sha256"], digest.as_str());
    let text = manager_cli(db, &["scans"]);
    assert!(text.contains("signatures A"), "{text}");
    assert!(text.contains("signatures -"), "{text}");
    m.kill();
}

#[test]
fn signatures_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&sqlite_db(dir.path()));
}

#[test]
fn signatures_on_postgres() {
    scenario(&common::postgres::cluster().new_database());
}
