//! Reports end to end on loopback: the real `coldscan` binary scans a guest disk from the fixture
//! factory (Debian's clamav-testfiles and EICAR, built at run time, in ext4, NTFS and FAT32
//! partitions) and posts its report with `--manager`; the manager stores it once per idempotency
//! key, lists exactly its detections, refuses bad tokens and bad bodies without storing
//! anything, loses nothing when killed, and a spool keeps reports while it is down.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use coldscan_tests::fixtures::ExpectedDetection;
use coldscan_tests::{fixture, testdb};
use common::*;

/// `coldscan scan --db DB --json - [extra] TARGET`: exit code, report, stderr.
fn scan(db: &Path, extra: &[&str], target: &Path) -> (i32, serde_json::Value, String) {
    let out = Command::new(coldscan_bin())
        .arg("scan")
        .arg("--db")
        .arg(db)
        .args(["--json", "-"])
        .args(extra)
        .arg(target)
        .output()
        .expect("coldscan runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("one JSON report on stdout ({e}); stderr: {stderr}"));
    (out.status.code().unwrap_or(-1), report, stderr)
}

/// `--manager URL --token-file FILE` as arguments.
fn manager_args<'a>(url: &'a str, token_file: &'a Path) -> Vec<&'a str> {
    vec![
        "--manager",
        url,
        "--token-file",
        token_file.to_str().unwrap(),
    ]
}

/// A host directory with one clean file: a quick second target.
fn clean_tree(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("clean");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("readme.txt"), "nothing to see\n").unwrap();
    root
}

fn detection_set(rows: &[serde_json::Value]) -> BTreeSet<ExpectedDetection> {
    let mut out = BTreeSet::new();
    for d in rows {
        let new = out.insert(ExpectedDetection {
            partition: u32::try_from(d["partition"].as_u64().unwrap()).unwrap(),
            path: d["path"].as_str().unwrap().to_string(),
            stream: d["stream"].as_str().map(str::to_string),
        });
        assert!(new, "listed twice: {d}");
    }
    out
}

/// Everything the admin API lists, to compare before and after a restart.
fn snapshot(m: &Manager, admin: &str) -> serde_json::Value {
    serde_json::json!({
        "scans": list_all(m, "/api/v1/scans", "scans", admin),
        "detections": list_all(m, "/api/v1/detections", "detections", admin),
        "not_scanned": list_all(m, "/api/v1/not-scanned", "not_scanned", admin),
        "targets": list_all(m, "/api/v1/targets", "targets", admin),
        "appliances": get(m, "/api/v1/appliances", admin).json,
        "jobs": list_all(m, "/api/v1/jobs", "jobs", admin),
    })
}

#[test]
fn real_reports_are_stored_with_exactly_their_detections_and_survive_a_crash() {
    let infected = fixture("gpt-infected").unwrap_or_else(|e| panic!("{e:#}"));
    let expected: BTreeSet<ExpectedDetection> = infected
        .expected_detections()
        .unwrap()
        .into_iter()
        .collect();
    assert!(expected.len() > 40, "the fixture plants the test files");
    let dir = tempfile::tempdir().unwrap();
    let sigs = testdb::write_test_db(&dir.path().join("sigs")).unwrap();
    let db = sqlite_db(dir.path());
    let appliance = token(&db, "appliance", "esx-01");
    let admin = token(&db, "admin", "ops");
    let tf = token_file(dir.path(), "token", &appliance);
    let m = Manager::start(&db, &[]);

    let disk = infected.disk();
    let (code, report, stderr) = scan(&sigs, &manager_args(&m.url, &tf), &disk);
    assert_eq!(code, 1, "detections: exit 1; stderr: {stderr}");
    assert!(stderr.contains("Manager: report "), "{stderr}");
    assert_eq!(report["schema_version"], 1);
    let clean = clean_tree(dir.path());
    let (code, clean_report, stderr) = scan(&sigs, &manager_args(&m.url, &tf), &clean);
    assert_eq!(code, 0, "clean: exit 0; stderr: {stderr}");

    let scans = list_all(&m, "/api/v1/scans", "scans", &admin);
    assert_eq!(scans.len(), 2, "{scans:#?}");
    // Newest first.
    let (clean_scan, infected_scan) = (&scans[0], &scans[1]);
    assert_eq!(infected_scan["appliance"], "esx-01");
    assert_eq!(
        infected_scan["targets"],
        serde_json::json!([disk.display().to_string()])
    );
    assert_eq!(
        infected_scan["detections"].as_u64().unwrap(),
        expected.len() as u64
    );
    assert_eq!(infected_scan["files"], report["stats"]["files"]);
    assert_eq!(clean_scan["detections"], 0);

    // The stored report is the report as posted, plus id and appliance.
    let id = infected_scan["id"].as_i64().unwrap();
    let stored = get(&m, &format!("/api/v1/scans/{id}"), &admin);
    assert_eq!(stored.status, 200);
    let mut stored = stored.json;
    assert_eq!(stored["id"], id);
    assert_eq!(stored["appliance"], "esx-01");
    stored.as_object_mut().unwrap().remove("id");
    stored.as_object_mut().unwrap().remove("appliance");
    assert_eq!(stored, report);

    // Exactly the planted detections, under this scan, with the test signatures.
    let rows = list_all(
        &m,
        &format!("/api/v1/detections?scan={id}"),
        "detections",
        &admin,
    );
    assert_eq!(detection_set(&rows), expected);
    for d in &rows {
        assert_eq!(d["scan"], id);
        assert_eq!(d["target"], disk.display().to_string());
        let sig = d["signature"].as_str().unwrap();
        assert!(
            sig == testdb::EICAR_REPORTED || sig == testdb::CLAM_REPORTED,
            "{d}"
        );
    }
    let all = list_all(&m, "/api/v1/detections", "detections", &admin);
    assert_eq!(all.len(), expected.len(), "the clean scan added none");
    let eicar = list_all(
        &m,
        &format!("/api/v1/detections?signature={}", testdb::EICAR_REPORTED),
        "detections",
        &admin,
    );
    assert!(!eicar.is_empty() && eicar.len() < all.len());
    let clean_id = clean_scan["id"].as_i64().unwrap();
    let stored_clean = get(&m, &format!("/api/v1/scans/{clean_id}"), &admin).json;
    assert_eq!(stored_clean["stats"], clean_report["stats"]);

    // A crash (SIGKILL) and a restart on the same database lose nothing.
    let before = snapshot(&m, &admin);
    m.kill();
    let m = Manager::start(&db, &[]);
    assert_eq!(snapshot(&m, &admin), before);
    // And it goes on storing.
    let (code, _, stderr) = scan(&sigs, &manager_args(&m.url, &tf), &clean);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(list_all(&m, "/api/v1/scans", "scans", &admin).len(), 3);
}

#[test]
fn a_retried_report_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let sigs = testdb::write_test_db(&dir.path().join("sigs")).unwrap();
    let db = sqlite_db(dir.path());
    let appliance = token(&db, "appliance", "esx-01");
    let other = token(&db, "appliance", "esx-02");
    let admin = token(&db, "admin", "ops");
    let m = Manager::start(&db, &[]);

    let body = sample_report("/vm/a.qcow2").to_string();
    let first = post_report(&m, Some(&appliance), "key-1", body.as_bytes());
    assert_eq!(first.status, 201, "{}", first.json);
    let again = post_report(&m, Some(&appliance), "key-1", body.as_bytes());
    assert_eq!(again.status, 200, "{}", again.json);
    assert_eq!(again.json["id"], first.json["id"]);
    // Keys belong to their appliance: another appliance's key-1 is another report.
    let theirs = post_report(&m, Some(&other), "key-1", body.as_bytes());
    assert_eq!(theirs.status, 201);
    assert_ne!(theirs.json["id"], first.json["id"]);
    assert_eq!(list_all(&m, "/api/v1/scans", "scans", &admin).len(), 2);
    assert_eq!(
        list_all(&m, "/api/v1/detections", "detections", &admin).len(),
        2
    );

    // The real client delivering a spooled report again after a crash between the manager's
    // answer and the spool file's deletion: same key, nothing stored twice.
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(
        spool.join("00000000000000000001-key-1.json"),
        body.as_bytes(),
    )
    .unwrap();
    let tf = token_file(dir.path(), "token", &appliance);
    let mut args = manager_args(&m.url, &tf);
    args.extend(["--spool", spool.to_str().unwrap()]);
    let clean = clean_tree(dir.path());
    let (code, _, stderr) = scan(&sigs, &args, &clean);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("(already there)"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&spool).unwrap().count(),
        0,
        "spool emptied"
    );
    let scans = list_all(&m, "/api/v1/scans", "scans", &admin);
    assert_eq!(scans.len(), 3, "only the new clean report was added");
}

#[test]
fn refused_requests_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sigs = testdb::write_test_db(&dir.path().join("sigs")).unwrap();
    let db = sqlite_db(dir.path());
    let appliance = token(&db, "appliance", "esx-01");
    let revoked = token(&db, "appliance", "old-esx");
    let admin = token(&db, "admin", "ops");
    manager_cli(&db, &["token", "revoke", "old-esx"]);
    let m = Manager::start(&db, &[]);
    let body = sample_report("/vm/a.qcow2").to_string();
    let wrong = "x".repeat(43);

    for (who, token, status) in [
        ("no token", None, 401),
        ("wrong token", Some(wrong.as_str()), 401),
        ("revoked token", Some(revoked.as_str()), 401),
        (
            "admin token on an appliance call",
            Some(admin.as_str()),
            403,
        ),
    ] {
        let a = post_report(&m, token, &format!("k-{status}"), body.as_bytes());
        assert_eq!(a.status, status, "{who}: {}", a.json);
        assert!(a.json["error"].is_string(), "{who}: JSON error: {}", a.json);
        let hb = call(
            "POST",
            &format!("{}/api/v1/heartbeat", m.url),
            token,
            &[],
            Some(br#"{"status":"idle","version":"1","disks":[]}"#),
        );
        assert_eq!(hb.status, status, "{who} heartbeat");
        let claim = call(
            "POST",
            &format!("{}/api/v1/jobs/claim", m.url),
            token,
            &[],
            None,
        );
        assert_eq!(claim.status, status, "{who} claim");
    }
    let bad_scheme = call(
        "GET",
        &format!("{}/api/v1/scans", m.url),
        None,
        &[("Authorization", &format!("Basic {admin}"))],
        None,
    );
    assert_eq!(bad_scheme.status, 401);
    // Admin calls: an appliance token is 403, a revoked or wrong one 401.
    for (path, method) in [
        ("/api/v1/scans", "GET"),
        ("/api/v1/detections", "GET"),
        ("/api/v1/not-scanned", "GET"),
        ("/api/v1/targets", "GET"),
        ("/api/v1/appliances", "GET"),
        ("/api/v1/jobs", "GET"),
        ("/api/v1/deliveries", "GET"),
        ("/api/v1/scans/1", "GET"),
        ("/api/v1/jobs", "POST"),
    ] {
        let url = format!("{}{path}", m.url);
        let body: &[u8] = br#"{"target":"/vm/x.qcow2"}"#;
        for (token, status) in [
            (Some(appliance.as_str()), 403),
            (Some(revoked.as_str()), 401),
            (Some(wrong.as_str()), 401),
            (None, 401),
        ] {
            let a = call(method, &url, token, &[], Some(body));
            assert_eq!(a.status, status, "{method} {path}: {}", a.json);
        }
    }
    // The real client with a revoked token: refused, nothing stored, exit 2.
    let tf = token_file(dir.path(), "revoked", &revoked);
    let clean = clean_tree(dir.path());
    let (code, _, stderr) = scan(&sigs, &manager_args(&m.url, &tf), &clean);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("HTTP 401"), "{stderr}");

    assert!(list_all(&m, "/api/v1/scans", "scans", &admin).is_empty());
    assert!(list_all(&m, "/api/v1/jobs", "jobs", &admin).is_empty());
    let appliances = get(&m, "/api/v1/appliances", &admin).json;
    assert!(
        appliances["appliances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["last_heartbeat"].is_null()),
        "no heartbeat stored: {appliances}"
    );
}

#[test]
fn bad_bodies_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(dir.path());
    let appliance = token(&db, "appliance", "esx-01");
    let admin = token(&db, "admin", "ops");
    let m = Manager::start(&db, &["--body-limit", "64K"]);
    let mut v2 = sample_report("/vm/a.qcow2");
    v2["schema_version"] = serde_json::json!(2);
    let mut unversioned = sample_report("/vm/a.qcow2");
    unversioned
        .as_object_mut()
        .unwrap()
        .remove("schema_version");
    let mut no_detections = sample_report("/vm/a.qcow2");
    no_detections.as_object_mut().unwrap().remove("detections");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "malformed JSON",
            b"{\"schema_version\": 1,".to_vec(),
            "malformed",
        ),
        ("not an object", b"[1, 2]".to_vec(), "malformed"),
        (
            "invalid UTF-8",
            b"{\"tool\": \"\xff\xfe\"}".to_vec(),
            "malformed",
        ),
        (
            "unknown version",
            v2.to_string().into_bytes(),
            "unknown report schema_version 2",
        ),
        (
            "no version",
            unversioned.to_string().into_bytes(),
            "no schema_version",
        ),
        (
            "missing field",
            no_detections.to_string().into_bytes(),
            "detections",
        ),
    ];
    for (what, body, needle) in cases {
        let a = post_report(&m, Some(&appliance), &what.replace(' ', "-"), &body);
        assert_eq!(a.status, 400, "{what}: {}", a.json);
        let msg = a.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {}", a.json));
        assert!(msg.contains(needle), "{what}: {msg}");
    }
    // No Idempotency-Key.
    let a = call(
        "POST",
        &format!("{}/api/v1/reports", m.url),
        Some(&appliance),
        &[],
        Some(sample_report("/vm/a").to_string().as_bytes()),
    );
    assert_eq!(a.status, 400);
    assert!(a.json["error"]
        .as_str()
        .unwrap()
        .contains("Idempotency-Key"));
    // Over the body limit: 413 with a JSON error, before anything is stored.
    let mut big = sample_report("/vm/a.qcow2");
    big["padding"] = serde_json::json!("x".repeat(70_000));
    let a = post_report(&m, Some(&appliance), "big", big.to_string().as_bytes());
    assert_eq!(a.status, 413, "{}", a.json);
    assert!(
        a.json["error"].as_str().unwrap().contains("65536"),
        "{}",
        a.json
    );
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    // Without a valid token the body is not even read: 401, not 413.
    let a = post_report(&m, None, "big", big.to_string().as_bytes());
    assert_eq!(a.status, 401, "{}", a.json);
    assert!(list_all(&m, "/api/v1/scans", "scans", &admin).is_empty());
}

#[test]
fn a_spool_keeps_reports_while_the_manager_is_down_and_delivers_them_once() {
    let dir = tempfile::tempdir().unwrap();
    let sigs = testdb::write_test_db(&dir.path().join("sigs")).unwrap();
    let db = sqlite_db(dir.path());
    let appliance = token(&db, "appliance", "esx-01");
    let admin = token(&db, "admin", "ops");
    let tf = token_file(dir.path(), "token", &appliance);
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let spool = dir.path().join("spool");
    let mut args = manager_args(&url, &tf);
    args.extend(["--spool", spool.to_str().unwrap()]);
    let clean = clean_tree(dir.path());

    // Manager down: the report stays in the spool and the run says so (exit 2).
    let (code, first, stderr) = scan(&sigs, &args, &clean);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("kept in the spool"), "{stderr}");
    let spooled: Vec<_> = std::fs::read_dir(&spool).unwrap().collect();
    assert_eq!(spooled.len(), 1);

    // Manager up: the next run delivers the old report, then its own, each once.
    let m = Manager::start_on(&db, &format!("127.0.0.1:{port}"), &[]);
    let (code, second, stderr) = scan(&sigs, &args, &clean);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
    let scans = list_all(&m, "/api/v1/scans", "scans", &admin);
    assert_eq!(scans.len(), 2, "{scans:#?}");
    let stored_first = get(&m, &format!("/api/v1/scans/{}", scans[1]["id"]), &admin).json;
    assert_eq!(stored_first["started"], first["started"]);
    let stored_second = get(&m, &format!("/api/v1/scans/{}", scans[0]["id"]), &admin).json;
    assert_eq!(stored_second["started"], second["started"]);
    // A third run adds exactly its own.
    let (code, _, stderr) = scan(&sigs, &args, &clean);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(list_all(&m, "/api/v1/scans", "scans", &admin).len(), 3);
}

/// Heartbeats say which signature database an appliance scans with (the manager's version of
/// the database it fetched, or nothing while it uses its own); the listing shows it, and an
/// oversized one is refused without being stored.
#[test]
fn heartbeats_name_the_signatures_each_appliance_scans_with() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(dir.path());
    let esx1 = token(&db, "appliance", "esx-01");
    let esx2 = token(&db, "appliance", "esx-02");
    let admin = token(&db, "admin", "ops");
    let m = Manager::start(&db, &[]);
    let beat = |token: &str, body: serde_json::Value| {
        call(
            "POST",
            &format!("{}/api/v1/heartbeat", m.url),
            Some(token),
            &[],
            Some(body.to_string().as_bytes()),
        )
        .status
    };
    let hb = |sigs: Option<&str>| {
        let mut b = serde_json::json!({"status": "idle", "version": "1", "disks": []});
        if let Some(s) = sigs {
            b["signatures"] = s.into();
        }
        b
    };
    assert_eq!(beat(&esx1, hb(Some("2026-12-07.1"))), 204);
    assert_eq!(beat(&esx2, hb(None)), 204);
    assert_eq!(beat(&esx2, hb(Some(&"x".repeat(1025)))), 400);
    let listed = get(&m, "/api/v1/appliances", &admin).json;
    let sigs: Vec<(String, serde_json::Value)> = listed["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["signatures"].clone(),
            )
        })
        .collect();
    assert_eq!(
        sigs,
        [
            ("esx-01".to_string(), serde_json::json!("2026-12-07.1")),
            ("esx-02".to_string(), serde_json::Value::Null),
        ]
    );
    // A later heartbeat without one (the appliance went back to its own signatures) says so.
    assert_eq!(beat(&esx1, hb(None)), 204);
    let listed = get(&m, "/api/v1/appliances", &admin).json;
    assert!(listed["appliances"][0]["signatures"].is_null(), "{listed}");
}
