//! Signature updates end to end: the appliance boots under QEMU (TCG) in daemon mode against
//! the real `coldscan-manager serve`, and
//! - loads the manager's database A at start; a job's report names A and finds only EICAR;
//! - after `coldscan-manager signatures set` of database B (A plus a generated body signature
//!   for a marker file that A does not detect) it loads B between jobs; the next job's report
//!   names B, with the digest the manager computed, and finds the marker file too;
//! - a database C that libclamav refuses is not loaded: the console says why, the appliance keeps
//!   B, and the next job still names B.
//!
//! Ignored by `cargo test` (boots QEMU); `make e2e` runs it.

// The shared QEMU harness (its manager module gives the manager binary).
#[allow(unused_imports)]
mod qemu;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coldscan_tests::images::fat_image;
use coldscan_tests::testdb::{self, EICAR_REPORTED};
use coldscan_tests::tree::Tree;
use qemu::manager_binary;
use qemu::{Disk, Vm, VmOptions};

const BOOT_LIMIT: Duration = Duration::from_secs(600);
/// Name of the signature only database B has.
const UPDATE_REPORTED: &str = "Coldscan.Test.Update.UNOFFICIAL";

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coldscan"))
}

/// Content only database B detects (assembled at run time like every test pattern).
fn marker() -> Vec<u8> {
    format!("coldscan signature update test marker {}\n", 0x5eed_u32).into_bytes()
}

/// `coldscan-manager --db URL ARGS...`; its stdout.
fn manager_cli(db: &str, args: &[&str]) -> String {
    let out = Command::new(manager_binary())
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "coldscan-manager {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `coldscan-manager serve`, stopped on drop.
struct Manager {
    child: Child,
    port: u16,
}

impl Manager {
    fn start(db: &str) -> Manager {
        let mut child = Command::new(manager_binary())
            .arg("--db")
            .arg(db)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        // Keep draining its stdout so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Manager { child, port }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Database A: the generated test database (EICAR body signature, clam.exe hash).
fn database_a(dir: &Path) -> PathBuf {
    testdb::write_test_db(&dir.join("db-a")).unwrap()
}

/// Database B: A plus a body signature for [`marker`].
fn database_b(dir: &Path) -> PathBuf {
    let b = testdb::write_test_db(&dir.join("db-b")).unwrap();
    std::fs::write(
        b.join("update.ndb"),
        format!("Coldscan.Test.Update:0:*:{}\n", hex::encode(marker())),
    )
    .unwrap();
    b
}

/// Database C: B plus a file libclamav refuses (not hex where hex belongs).
fn database_c(dir: &Path) -> PathBuf {
    let c = database_b(&dir.join("c"));
    std::fs::write(c.join("broken.ndb"), "Coldscan.Test.Broken:0:*:zz\n").unwrap();
    c
}

/// The scans the manager stored, as its CLI lists them.
fn scans(db: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&manager_cli(db, &["scans", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Signatures found in scan `id`, sorted.
fn found(db: &str, id: i64) -> Vec<(String, String)> {
    let all: serde_json::Value =
        serde_json::from_str(&manager_cli(db, &["detections", "--json"])).unwrap();
    let mut v: Vec<(String, String)> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["scan"].as_i64() == Some(id))
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["signature"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Enqueues a job for the disk and waits until the manager holds its report; returns the
/// report's scan row.
fn run_job(vm: &mut Vm, db: &str, serial: &str) -> serde_json::Value {
    let before = scans(db).len();
    let job = manager_cli(db, &["enqueue", serial]).trim().to_string();
    vm.wait_for(&format!("job {job}: scan {serial}"), BOOT_LIMIT);
    let start = Instant::now();
    loop {
        let rows = scans(db);
        if rows.len() > before {
            return rows[0].clone();
        }
        assert!(
            start.elapsed() < BOOT_LIMIT,
            "job {job}'s report never reached the manager:\n{}",
            vm.serial()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The digest the manager computed for its current set.
fn manager_digest(db: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&manager_cli(db, &["signatures", "show", "--json"])).unwrap();
    v["sha256"].as_str().unwrap().to_string()
}

#[test]
#[ignore = "boots QEMU: make e2e"]
fn a_daemon_loads_the_managers_new_signatures_between_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("manager.db").display());
    let token = manager_cli(&db, &["token", "create", "--role", "appliance", "sigs-e2e"])
        .trim()
        .to_string();
    manager_cli(
        &db,
        &[
            "signatures",
            "set",
            "--version",
            "A",
            database_a(dir.path()).to_str().unwrap(),
        ],
    );
    let digest_a = manager_digest(&db);

    let mut tree = Tree::new();
    tree.file("/EICAR.COM", &testdb::eicar());
    tree.file("/MARKER.BIN", &marker());
    tree.file("/README.TXT", b"clean\n");
    let raw = dir.path().join("guest.raw");
    fat_image(&raw, 16 << 20, 16, 512, &tree).unwrap();
    let serial = "GUEST-SIGS";

    let manager = Manager::start(&db);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: format!(
                "coldscan.net=dhcp coldscan.manager=http://{} coldscan.token={token} coldscan.mode=daemon",
                qemu::GUEST_MANAGER
            ),
            disks: vec![Disk {
                path: raw.clone(),
                format: "raw",
                serial: serial.into(),
            }],
            manager_port: Some(manager.port),
            ..VmOptions::default()
        },
    );
    vm.wait_for("signatures A (", BOOT_LIMIT);
    // The boot scan already used A.
    vm.wait_for("delivered to the manager as scan 1", BOOT_LIMIT);

    let with_a = run_job(&mut vm, &db, serial);
    assert_eq!(with_a["db"]["manager_version"], "A", "{with_a}");
    assert_eq!(with_a["db"]["sha256"], digest_a.as_str(), "{with_a}");
    assert_eq!(with_a["db"]["version"], 0, "no daily database: {with_a}");
    let id_a = with_a["id"].as_i64().unwrap();
    assert_eq!(
        found(&db, id_a),
        [("/EICAR.COM".to_string(), EICAR_REPORTED.to_string())]
    );

    let out = manager_cli(
        &db,
        &[
            "signatures",
            "set",
            "--version",
            "B",
            database_b(dir.path()).to_str().unwrap(),
        ],
    );
    let digest_b = manager_digest(&db);
    assert!(out.contains(&digest_b), "{out}");
    assert_ne!(digest_a, digest_b);
    vm.wait_for("signatures B (", BOOT_LIMIT);
    let with_b = run_job(&mut vm, &db, serial);
    assert_eq!(with_b["db"]["manager_version"], "B", "{with_b}");
    assert_eq!(with_b["db"]["sha256"], digest_b.as_str(), "{with_b}");
    assert_eq!(
        found(&db, with_b["id"].as_i64().unwrap()),
        [
            ("/EICAR.COM".to_string(), EICAR_REPORTED.to_string()),
            ("/MARKER.BIN".to_string(), UPDATE_REPORTED.to_string())
        ]
    );

    // A database libclamav refuses: the appliance keeps B and says why.
    manager_cli(
        &db,
        &[
            "signatures",
            "set",
            "--version",
            "C",
            database_c(dir.path()).to_str().unwrap(),
        ],
    );
    let log = vm.wait_for(
        "signatures C from the manager NOT loaded, keeping signatures B",
        BOOT_LIMIT,
    );
    assert!(log.contains("Malformed database"), "{log}");
    let still_b = run_job(&mut vm, &db, serial);
    assert_eq!(still_b["db"]["manager_version"], "B", "{still_b}");
    assert_eq!(
        found(&db, still_b["id"].as_i64().unwrap()).len(),
        2,
        "{still_b}"
    );
    // Every report reached the manager once: the boot scan and three jobs.
    assert_eq!(scans(&db).len(), 4);
    drop(vm);
    drop(manager);
}
