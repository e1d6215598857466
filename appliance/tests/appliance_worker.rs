//! The appliance's scan worker on the host (the short appliance case of `make test`): the worker
//! hardens itself (landlock, no_new_privs, seccomp) and still scans a guest disk into a JSON
//! report; a worker that attempts a forbidden system call after hardening is killed by `SIGSYS`.
//! The full appliance runs under QEMU in `appliance_qemu.rs` (`make e2e`).

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use coldscan_tests::images::{ext_image, ExtOptions};
use coldscan_tests::testdb;
use coldscan_tests::tree::Tree;

fn worker() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coldscan"));
    c.arg("__appliance-worker");
    c
}

#[test]
fn hardened_worker_scans_and_forbidden_calls_kill_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = testdb::write_test_db(&dir.path().join("db")).unwrap();
    let img = dir.path().join("guest.img");
    let mut tree = Tree::new();
    tree.file("/home/user/eicar.com", &testdb::eicar());
    tree.file("/etc/hostname", b"guest\n");
    ext_image(&img, 8 << 20, &tree, &ExtOptions::ext4()).unwrap();
    let before = std::fs::read(&img).unwrap();

    let out = worker()
        .arg("--read")
        .arg(&db)
        .arg("--read")
        .arg(&img)
        .arg("--")
        .args(["scan", "--json", "-", "--db"])
        .arg(&db)
        .arg(&img)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let detections = report["detections"].as_array().unwrap();
    assert_eq!(detections.len(), 1, "{report}");
    assert_eq!(detections[0]["path"], "/home/user/eicar.com");
    assert_eq!(detections[0]["signature"], testdb::EICAR_REPORTED);
    assert_eq!(
        std::fs::read(&img).unwrap(),
        before,
        "the guest disk changed"
    );

    for call in ["socket", "execve"] {
        let out = worker()
            .args(["--selftest", call, "--", "scan", "--json", "-", "--db"])
            .arg(&db)
            .arg(&img)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(31), "{call}: {:?}", out.status);
        assert!(
            out.stdout.is_empty(),
            "{call}: a killed worker wrote a report"
        );
    }
}

#[test]
fn worker_refuses_unknown_options() {
    let out = worker().args(["--shell"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument"));
}
