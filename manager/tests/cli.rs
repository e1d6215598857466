//! The `coldscan-manager` commands that work on the database directly: tokens (shown once,
//! listed without the secret, revoked once), `enqueue`, `scans` and `detections` (text and
//! JSON), and hooks (`webhook add|list|remove`).

mod common;

use std::process::Command;

use common::*;

fn fails(db: &str, args: &[&str]) -> String {
    let out = Command::new(manager_bin())
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?} must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn database_commands() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(dir.path());
    let appliance = token(&db, "appliance", "esx-01");
    assert!(appliance.starts_with("coldscan_"));
    let admin = token(&db, "admin", "ops");
    assert_ne!(appliance, admin);
    assert!(fails(&db, &["token", "create", "--role", "admin", "ops"]).contains("already exists"));
    let listed = manager_cli(&db, &["token", "list"]);
    assert!(
        listed.contains("esx-01\tappliance") && listed.contains("ops\tadmin"),
        "{listed}"
    );
    assert!(
        !listed.contains(&appliance) && !listed.contains(&admin[9..]),
        "never the token"
    );

    // Jobs queued from the command line are what the API hands out.
    let id = manager_cli(&db, &["enqueue", "/vm/a.qcow2", "--appliance", "esx-01"]);
    let id: i64 = id.trim().parse().unwrap();
    let m = Manager::start(&db, &[]);
    let claimed = post_json(&m, "/api/v1/jobs/claim", &appliance, &serde_json::json!({}));
    assert_eq!(claimed.json["id"], id);
    assert_eq!(claimed.json["target"], "/vm/a.qcow2");

    let report = sample_report("/vm/a.qcow2");
    let scan = post_report(&m, Some(&appliance), "k", report.to_string().as_bytes());
    assert_eq!(scan.status, 201);
    let scans: serde_json::Value =
        serde_json::from_str(&manager_cli(&db, &["scans", "--json"])).unwrap();
    assert_eq!(scans[0]["id"], scan.json["id"]);
    assert_eq!(scans[0]["detections"], 1);
    let text = manager_cli(&db, &["scans"]);
    assert!(
        text.contains("esx-01") && text.contains("/vm/a.qcow2"),
        "{text}"
    );
    let dets: serde_json::Value =
        serde_json::from_str(&manager_cli(&db, &["detections", "--json"])).unwrap();
    assert_eq!(dets[0]["path"], report["detections"][0]["path"]);
    assert_eq!(dets[0]["signature"], report["detections"][0]["signature"]);
    let text = manager_cli(&db, &["detections"]);
    assert!(
        text.contains("/home/eicar.com") && text.contains("EICAR"),
        "{text}"
    );

    // Revoked: refused by the API from then on; revoking again is an error.
    manager_cli(&db, &["token", "revoke", "esx-01"]);
    assert!(fails(&db, &["token", "revoke", "esx-01"]).contains("no active token"));
    let refused = post_report(&m, Some(&appliance), "k2", report.to_string().as_bytes());
    assert_eq!(refused.status, 401);
    assert!(manager_cli(&db, &["token", "list"]).contains("esx-01\tappliance\tcreated"));

    // Hooks.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s\n").unwrap();
    let s = secret.to_str().unwrap();
    let web = manager_cli(
        &db,
        &[
            "webhook",
            "add",
            "https://soar.example/hook",
            "--secret-file",
            s,
        ],
    );
    manager_cli(
        &db,
        &["webhook", "add", "--command", "/usr/local/sbin/quarantine"],
    );
    assert!(fails(&db, &["webhook", "add", "ftp://x", "--secret-file", s]).contains("http"));
    assert!(fails(&db, &["webhook", "add", "--command", "relative"]).contains("absolute"));
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let e = empty.to_str().unwrap();
    assert!(fails(&db, &["webhook", "add", "http://x", "--secret-file", e]).contains("no secret"));
    manager_cli(&db, &["webhook", "remove", web.trim()]);
    let hooks = manager_cli(&db, &["webhook", "list"]);
    assert!(
        hooks.contains("https://soar.example/hook\tremoved"),
        "{hooks}"
    );
    assert!(
        hooks.contains("command:/usr/local/sbin/quarantine\tenabled"),
        "{hooks}"
    );
    assert!(fails(&db, &["webhook", "remove", web.trim()]).contains("no enabled webhook"));
    assert!(fails("mysql://x", &["scans"]).contains("sqlite:PATH or postgres://"));
}
