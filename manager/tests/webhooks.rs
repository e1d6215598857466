//! Actions on detection through the real manager: a report with a detection makes exactly one
//! webhook delivery to a loopback receiver, retried while the receiver is down, signed with
//! HMAC-SHA256 that the receiver verifies; a local-command hook gets the same payload on its
//! standard input and is retried until it exits 0.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac};

const SECRET: &str = "s3cret-for-the-test-receiver";

/// What the receiver got: (signature header verified against the body, body).
type Received = Arc<Mutex<Vec<(bool, serde_json::Value)>>>;

/// Does `header` (`sha256=HEX`) sign `body` under `secret`? What a receiver does.
fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// A minimal HTTP/1.1 receiver on `listener`: verifies each POST's signature, answers 200.
fn receiver(listener: TcpListener, received: Received) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut signature = String::new();
            let mut length = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    match k.to_ascii_lowercase().as_str() {
                        "x-coldscan-signature" => signature = v.trim().to_string(),
                        "content-length" => length = v.trim().parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let ok = verify(SECRET, &signature, &body);
            let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            received.lock().unwrap().push((ok, json));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
}

fn deliveries(m: &Manager, admin: &str) -> Vec<serde_json::Value> {
    list_all(m, "/api/v1/deliveries", "deliveries", admin)
}

#[test]
fn one_detection_one_signed_delivery_retried_while_the_receiver_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(dir.path());
    let appliance = token(&db, "appliance", "esx-01");
    let admin = token(&db, "admin", "ops");
    // The receiver's port, with nothing listening yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let url = format!("http://127.0.0.1:{port}/hooks/coldscan");
    manager_cli(
        &db,
        &[
            "webhook",
            "add",
            &url,
            "--secret-file",
            secret_file.to_str().unwrap(),
        ],
    );
    let m = Manager::start(&db, &["--webhook-backoff-ms", "100"]);

    let report = sample_report("/vm/infected.qcow2");
    let a = post_report(&m, Some(&appliance), "k1", report.to_string().as_bytes());
    assert_eq!(a.status, 201);
    let scan = a.json["id"].as_i64().unwrap();
    // The same report again (a client retry) and a clean report: no further delivery.
    assert_eq!(
        post_report(&m, Some(&appliance), "k1", report.to_string().as_bytes()).status,
        200
    );
    let mut clean = sample_report("/vm/clean.qcow2");
    clean["detections"] = serde_json::json!([]);
    assert_eq!(
        post_report(&m, Some(&appliance), "k2", clean.to_string().as_bytes()).status,
        201
    );

    // Receiver down: the delivery is attempted, fails, and is retried.
    let failing = wait_for("two failed attempts", Duration::from_secs(60), || {
        let d = deliveries(&m, &admin);
        (d.len() == 1 && d[0]["attempts"].as_i64().unwrap() >= 2).then(|| d[0].clone())
    });
    assert_eq!(failing["state"], "pending", "{failing}");
    assert!(failing["last_error"].is_string(), "{failing}");
    assert!(failing["delivered"].is_null());

    // Receiver up: delivered once, with a signature it verifies.
    let received: Received = Arc::default();
    receiver(
        TcpListener::bind(("127.0.0.1", port)).unwrap(),
        received.clone(),
    );
    let done = wait_for("the delivery", Duration::from_secs(60), || {
        let d = deliveries(&m, &admin);
        (d[0]["state"] == "delivered").then(|| d[0].clone())
    });
    assert_eq!(done["last_status"], 200);
    // The log says delivered only after the receiver answered, so everything it will ever
    // get from this delivery is in: exactly one request.
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:#?}");
    let (signed, body) = &got[0];
    assert!(signed, "the receiver verifies the signature");
    assert_eq!(body["event"], "detection");
    assert_eq!(body["scan"], scan);
    assert_eq!(body["appliance"], "esx-01");
    assert_eq!(body["target"], "/vm/infected.qcow2");
    assert_eq!(body["detections"], report["detections"]);
    assert_eq!(deliveries(&m, &admin).len(), 1, "one delivery in the log");
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
