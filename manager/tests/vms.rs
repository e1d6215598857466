//! The hypervisor side without a daemon: libvirt's built-in test driver (`test:///default`,
//! in-process, one running domain `test`) as a registered connection of the real
//! `coldscan-manager serve`. The inventory lists its VM; a VM scan fails with the driver's reason
//! (it has no backup jobs) and that is what the API, the CLI and the VMs page show; connections
//! are added and removed through the CLI and the API. On SQLite and on PostgreSQL.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const TEST_UUID: &str = "6695eb01-f6a4-8304-79aa-97f2502e193f";

/// The VMs page as a logged-in admin sees it.
fn vms_page(m: &Manager, admin: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let login = agent
        .post(&format!("{}/login", m.url))
        .send_form([("token", admin)])
        .unwrap();
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    agent
        .get(&format!("{}/vms", m.url))
        .header("Cookie", &cookie)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

#[test]
fn the_test_driver_vm_is_inventoried_and_a_failed_scan_says_why() {
    let dir = tempfile::tempdir().unwrap();
    test_driver_scenario(&sqlite_db(dir.path()), dir.path());
}

/// The same on PostgreSQL (its SQL dialect and the VM job table lock).
#[test]
fn postgres_the_test_driver_vm_is_inventoried_and_a_failed_scan_says_why() {
    let dir = tempfile::tempdir().unwrap();
    test_driver_scenario(&common::postgres::cluster().new_database(), dir.path());
}

fn test_driver_scenario(db: &str, dir: &std::path::Path) {
    let db = db.to_string();
    let admin = token(&db, "admin", "ops");
    manager_cli(&db, &["hypervisor", "add", "lab", "test:///default"]);
    let listed = manager_cli(&db, &["hypervisor", "list"]);
    assert!(
        listed.starts_with("lab\ttest:///default\tmax backups 4"),
        "{listed}"
    );
    let work = dir.join("work");
    let m = Manager::start(
        &db,
        &[
            "--inventory-interval",
            "1",
            "--vm-tick-ms",
            "100",
            "--work-dir",
            work.to_str().unwrap(),
        ],
    );
    let vm = wait_for("the test VM", Duration::from_secs(60), || {
        get(&m, "/api/v1/vms", &admin).json["vms"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["uuid"] == TEST_UUID).cloned())
    });
    assert_eq!(
        (&vm["name"], &vm["hypervisor"], &vm["state"]),
        (
            &Value::from("test"),
            &Value::from("lab"),
            &Value::from("running")
        )
    );
    assert_eq!(vm["disks"][0]["target"], "vda");

    // A scan by name through the API: the test driver has no backup jobs, so the manager falls
    // back to a disk-only snapshot, which the test driver's disk (no format stated) cannot
    // have: it fails, saying both.
    let a = post_json(&m, "/api/v1/vms/test/scan", &admin, &serde_json::json!({}));
    assert_eq!(a.status, 201, "{}", a.json);
    let job = a.json["id"].as_i64().unwrap();
    let failed = wait_for("the VM job to fail", Duration::from_secs(60), || {
        let one = get(&m, &format!("/api/v1/vms/{TEST_UUID}"), &admin).json;
        (one["jobs"][0]["state"] == "failed").then_some(one)
    });
    assert_eq!(failed["jobs"][0]["id"], job);
    let why = failed["jobs"][0]["error"].as_str().unwrap();
    assert!(
        why.contains("the disk-only snapshot could not be taken") && why.contains("no format"),
        "{why}"
    );
    assert_eq!(failed["vm"]["last_job"]["state"], "failed");
    assert!(failed["events"][0]["event"] == "created", "{failed}");
    let log = get(&m, "/api/v1/vm-jobs/log", &admin).json;
    let events: Vec<&str> = log["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["begin", "fallback", "begin-failed"]);
    let fallback = &log["log"][1]["detail"];
    assert!(
        fallback
            .as_str()
            .unwrap()
            .contains("backup jobs are not supported here"),
        "{fallback}"
    );
    assert_eq!(
        std::fs::read_dir(&work).map(|d| d.count()).unwrap_or(0),
        0,
        "nothing left in the work directory"
    );
    let text = manager_cli(&db, &["vms"]);
    assert!(
        text.contains(TEST_UUID) && text.contains("failed"),
        "{text}"
    );
    let page = vms_page(&m, &admin);
    assert!(
        page.contains(TEST_UUID) && page.contains("could not be taken"),
        "{page}"
    );
    // Unknown VMs and connections.
    assert_eq!(
        post_json(&m, "/api/v1/vms/nope/scan", &admin, &serde_json::json!({})).status,
        404
    );
    let dup = post_json(
        &m,
        "/api/v1/hypervisors",
        &admin,
        &serde_json::json!({"name": "lab", "uri": "test:///default"}),
    );
    assert_eq!(dup.status, 409, "{}", dup.json);
    // Removed: its VM is shown as gone.
    let gone = call(
        "DELETE",
        &format!("{}/api/v1/hypervisors/lab", m.url),
        Some(&admin),
        &[],
        None,
    );
    assert_eq!(gone.status, 204);
    let vm = get(&m, &format!("/api/v1/vms/{TEST_UUID}"), &admin).json;
    assert_eq!(vm["vm"]["state"], "gone", "{vm}");
}
