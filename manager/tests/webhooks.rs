//! Actions on detection through the real manager: a report with a detection makes exactly one
//! webhook delivery to a loopback receiver, retried while the receiver is down, signed with
//! HMAC-SHA256 that the receiver verifies; a local-command hook gets the same payload on its
//! standard input and is retried until it exits 0.

mod common;

use std::time::Duration;

use common::hooks::{self, deliveries, verify, SECRET};
use common::*;

#[test]
fn one_detection_one_signed_delivery_retried_while_the_receiver_is_down() {
    let dir = tempfile::tempdir().unwrap();
    hooks::one_signed_delivery(&sqlite_db(dir.path()), 1);
}

#[test]
fn a_local_command_gets_the_payload_on_stdin_and_is_retried_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(dir.path());
    let appliance = token(&db, "appliance", "esx-01");
    let admin = token(&db, "admin", "ops");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Fails on its first run, then keeps what it was given.
    let script = dir.path().join("quarantine.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\ncd '{}'\nif [ ! -e first ]; then touch first; cat >/dev/null; \
             echo 'hypervisor busy' >&2; exit 3; fi\n\
             cat > \"payload-$COLDSCAN_DELIVERY.json\"\n\
             printf '%s' \"$COLDSCAN_SIGNATURE\" > \"signature-$COLDSCAN_DELIVERY\"\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    manager_cli(
        &db,
        &[
            "webhook",
            "add",
            "--command",
            script.to_str().unwrap(),
            "--secret-file",
            secret_file.to_str().unwrap(),
        ],
    );
    let m = Manager::start(&db, &["--webhook-backoff-ms", "100"]);
    let report = sample_report("/vm/infected.qcow2");
    assert_eq!(
        post_report(&m, Some(&appliance), "k1", report.to_string().as_bytes()).status,
        201
    );
    let done = wait_for("the command hook", Duration::from_secs(60), || {
        let d = deliveries(&m, &admin);
        (d.len() == 1 && d[0]["state"] == "delivered").then(|| d[0].clone())
    });
    assert_eq!(done["attempts"], 2, "{done}");
    let id = done["id"].as_i64().unwrap();
    let payload = std::fs::read(out.join(format!("payload-{id}.json"))).unwrap();
    let signature = std::fs::read_to_string(out.join(format!("signature-{id}"))).unwrap();
    assert!(verify(SECRET, &signature, &payload));
    let body: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(body["event"], "detection");
    assert_eq!(body["detections"], report["detections"]);
    let files = std::fs::read_dir(&out).unwrap().count();
    assert_eq!(files, 3, "first-run marker, one payload, one signature");
}
