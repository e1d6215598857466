//! Getting reports to the manager: daemon mode with the manager down at boot, jobs, a job whose
//! appliance died, the spool on the config disk, HTTPS with the config disk's CA bundle.

use std::collections::BTreeSet;

use coldscan_tests::images::{ext_image, ExtOptions};
use coldscan_tests::testdb::{self, EICAR_REPORTED};
use coldscan_tests::tls::{TestPki, TlsTerminator};
use coldscan_tests::tree::Tree;

use super::qemu::configdisk;
use super::qemu::guests::fat_clean;
use super::qemu::stored::{detections, report_for_target};
use super::qemu::{self, Manager, NbdServer, Vm, VmOptions};
use super::{binary, manager_cmdline, BOOT_LIMIT};

#[test]
#[ignore = "boots QEMU: make e2e"]
fn daemon_delivers_once_the_manager_is_up_and_runs_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let disk = fat_clean(dir.path(), "daemon.raw", "GUEST-DAEMON");
    // The manager's database and tokens exist, but nothing listens on its port yet.
    let mut manager = Manager::new();
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline(&manager, "coldscan.mode=daemon"),
            disks: vec![disk],
            manager_port: Some(manager.port),
            console_socket: false,
            ..VmOptions::default()
        },
    );
    // The boot scan's report waits in the spool while nobody listens; delivery is retried.
    vm.wait_for("disk virtio-GUEST-DAEMON:", BOOT_LIMIT);
    vm.wait_for("manager unreachable", BOOT_LIMIT);
    manager.serve(&[]);
    vm.wait_for("delivered to the manager as scan 1", BOOT_LIMIT);
    let job = manager.enqueue("GUEST-DAEMON");
    vm.wait_for(&format!("job {job}: scan GUEST-DAEMON"), BOOT_LIMIT);
    vm.wait_for("delivered to the manager as scan 2", BOOT_LIMIT);
    let done = manager.wait_job(job, BOOT_LIMIT, |j| {
        j["state"] != "claimed" && j["state"] != "queued"
    });
    assert_eq!(done["state"], "done", "{done:#}");
    assert_eq!(done["report"], 2, "{done:#}");
    assert_eq!(done["claimed_by"], qemu::APPLIANCE, "{done:#}");
    // Exactly once: however often delivery was retried, two reports are stored, both of the
    // disk, posted by this appliance.
    let scans = manager.scans();
    assert_eq!(scans.len(), 2, "{scans:#?}\n{}", vm.serial());
    for s in &scans {
        assert_eq!(
            s["targets"],
            serde_json::json!(["virtio-GUEST-DAEMON"]),
            "{s:#}"
        );
        assert_eq!(s["appliance"], qemu::APPLIANCE, "{s:#}");
    }
    let appliances = manager.appliances();
    let me = appliances
        .iter()
        .find(|a| a["name"] == qemu::APPLIANCE)
        .unwrap_or_else(|| panic!("no heartbeat: {appliances:#?}"));
    assert!(!me["last_heartbeat"].is_null(), "{me:#}");
}

/// A daemon-mode job naming an `nbd://` export (served by qemu-nbd on the host, reached through
/// a guestfwd) is scanned by a worker, reported under the URL, and completed.
#[test]
#[ignore = "boots QEMU: make e2e"]
fn daemon_scans_an_nbd_export_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::new();
    tree.file("/data/eicar.com", &testdb::eicar());
    let img = dir.path().join("export.raw");
    ext_image(&img, 16 << 20, &tree, &ExtOptions::ext4()).unwrap();
    let nbd = NbdServer::start(&img);
    let manager = Manager::started(&[]);
    let url = "nbd://10.0.2.101:10809/export";
    let job = manager.enqueue(url);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline(&manager, "coldscan.mode=daemon"),
            manager_port: Some(manager.port),
            forwards: vec![("10.0.2.101:10809".into(), nbd.port)],
            ..VmOptions::default()
        },
    );
    vm.wait_for(&format!("job {job}: scan nbd://"), BOOT_LIMIT);
    vm.wait_for("delivered to the manager as scan 1", BOOT_LIMIT);
    let done = manager.wait_job(job, BOOT_LIMIT, |j| j["state"] == "done");
    assert_eq!(done["report"], 1, "{done:#}");
    let r = report_for_target(&manager, url);
    assert_eq!(
        detections(&r),
        BTreeSet::from([("/data/eicar.com".into(), None, EICAR_REPORTED.into())]),
        "{r:#}"
    );
}

/// A job claimed by an appliance that dies mid-scan (its VM killed) is handed out again once
/// its lease runs out (`serve --lease`), scanned by the next appliance, and stored once.
#[test]
#[ignore = "boots QEMU: make e2e"]
fn job_of_a_killed_appliance_is_scanned_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    // Large enough that a scan under TCG takes many seconds: 40 MiB of random files.
    let mut tree = Tree::new();
    for i in 0..10 {
        tree.random_file(&format!("/data/blob{i}.bin"), 4 << 20);
    }
    tree.file("/data/eicar.com", &testdb::eicar());
    let img = dir.path().join("export.raw");
    ext_image(&img, 64 << 20, &tree, &ExtOptions::ext4()).unwrap();
    let nbd = NbdServer::start(&img);
    let manager = Manager::started(&["--lease", "30"]);
    let second = manager.create_token("appliance", "e2e-appliance-2");
    let url = "nbd://10.0.2.101:10809/export";
    let job = manager.enqueue(url);
    let boot = |token: &str| {
        Vm::start(
            &binary(),
            &VmOptions {
                cmdline: format!(
                    "coldscan.net=dhcp coldscan.manager=http://{} coldscan.token={token} coldscan.mode=daemon",
                    qemu::GUEST_MANAGER
                ),
                manager_port: Some(manager.port),
                forwards: vec![("10.0.2.101:10809".into(), nbd.port)],
                ..VmOptions::default()
            },
        )
    };
    let mut first = boot(&manager.token);
    first.wait_for(&format!("job {job}: scan nbd://"), BOOT_LIMIT);
    // Killed in the middle of the scan: no report, no completion.
    first.kill();
    let claimed = manager.jobs();
    assert!(
        manager.scans().is_empty(),
        "the scan finished before the kill"
    );
    assert_eq!(claimed[0]["state"], "claimed", "{claimed:#?}");
    assert_eq!(claimed[0]["claimed_by"], qemu::APPLIANCE, "{claimed:#?}");

    let mut next = boot(&second);
    next.wait_for(&format!("job {job}: scan nbd://"), BOOT_LIMIT);
    next.wait_for("delivered to the manager as scan", BOOT_LIMIT);
    let done = manager.wait_job(job, BOOT_LIMIT, |j| j["state"] == "done");
    assert_eq!(done["claims"], 2, "{done:#}");
    assert_eq!(done["claimed_by"], "e2e-appliance-2", "{done:#}");
    let r = report_for_target(&manager, url);
    assert_eq!(done["report"], r["id"], "{done:#}");
    assert_eq!(r["appliance"], "e2e-appliance-2");
    assert_eq!(manager.scans().len(), 1);
    assert!(
        detections(&r).contains(&("/data/eicar.com".into(), None, EICAR_REPORTED.into())),
        "{r:#}"
    );
}

/// `coldscan.toml` for a oneshot appliance reporting to `url` with `token` (DHCP).
fn oneshot_toml(url: &str, token: &str, extra_manager_keys: &str) -> String {
    format!(
        "mode = \"oneshot\"\n[manager]\nurl = \"{url}\"\ntoken = \"{token}\"\n{extra_manager_keys}"
    )
}

/// The spool lives on the config disk: a oneshot appliance whose manager is down powers off
/// with its report spooled there (the FAT left clean); the next boot with the same config disk
/// and the manager up delivers it, and every report is stored exactly once: the spooled report
/// is first posted under its key by the test, as if an appliance had died after the manager
/// stored it but before it deleted its copy, and the manager recognises the key.
#[test]
#[ignore = "boots QEMU: make e2e"]
fn spool_on_the_config_disk_survives_a_power_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut manager = Manager::new();
    let cfg = configdisk::fat_config_disk(
        dir.path(),
        "cfg.img",
        &oneshot_toml(
            &format!("http://{}", qemu::GUEST_MANAGER),
            &manager.token,
            "delivery_seconds = 15\n",
        ),
        &[],
    );
    let port = manager.port;
    let boot = |serial: &str| {
        let disk = fat_clean(dir.path(), &format!("{serial}.raw"), serial);
        Vm::start(
            &binary(),
            &VmOptions {
                extra_disks: vec![cfg.clone()],
                disks: vec![disk],
                manager_port: Some(port),
                ..VmOptions::default()
            },
        )
    };
    // Boot 1: nobody listens on the manager's port.
    let log = boot("GUEST-SPOOL-1").wait_powered_off(BOOT_LIMIT);
    assert!(
        log.contains("undelivered reports wait on the config disk"),
        "{log}"
    );
    assert!(
        log.contains("1 report(s) NOT DELIVERED to the manager"),
        "{log}"
    );
    assert!(
        log.contains("they wait in the spool on the config disk"),
        "{log}"
    );
    configdisk::assert_fat_clean(&cfg.path);
    let spooled = configdisk::spooled_reports(&cfg.path);
    assert_eq!(spooled.len(), 1, "{log}");
    let (name, bytes) = &spooled[0];
    let report: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(report["targets"][0]["target"], "virtio-GUEST-SPOOL-1");

    // Boot 2: the manager is up, and already holds the spooled report under its key. The
    // appliance delivers it again (the manager answers with the same scan), then this boot's.
    manager.serve(&[]);
    let (status, answer) = manager.post_report(bytes, configdisk::spool_key(name));
    assert_eq!(
        (status, &answer["id"]),
        (201, &serde_json::json!(1)),
        "{answer}"
    );
    let log = boot("GUEST-SPOOL-2").wait_powered_off(BOOT_LIMIT);
    assert!(
        log.contains("1 from an earlier boot waiting there"),
        "{log}"
    );
    assert!(
        log.contains("report for earlier scan delivered to the manager as scan 1 (already stored)"),
        "{log}"
    );
    // Its own report is new (ids need not be consecutive: the repeat above used one up).
    let own = log
        .lines()
        .find(|l| l.contains("report for virtio-GUEST-SPOOL-2 delivered to the manager as scan"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(!own.contains("already stored"), "{own}");
    assert!(configdisk::spooled_reports(&cfg.path).is_empty());
    configdisk::assert_fat_clean(&cfg.path);
    assert_eq!(manager.scans().len(), 2, "{log}");
    let first = report_for_target(&manager, "virtio-GUEST-SPOOL-1");
    assert_eq!(
        first["started"], report["started"],
        "the spooled report as made"
    );
    report_for_target(&manager, "virtio-GUEST-SPOOL-2");
}

/// HTTPS to the manager (a TLS terminator in front of it, its certificate signed by a test CA):
/// with the config disk's CA bundle the report is stored; with another CA's bundle the
/// appliance refuses the server, says why on the console, and stores nothing.
#[test]
#[ignore = "boots QEMU: make e2e"]
fn https_with_the_config_disk_ca_bundle_and_a_wrong_ca_refused() {
    let dir = tempfile::tempdir().unwrap();
    let guest_ip = qemu::GUEST_MANAGER.split(':').next().unwrap();
    let pki = TestPki::generate(&dir.path().join("pki"), "coldscan test CA", &[guest_ip]).unwrap();
    let wrong = TestPki::generate(&dir.path().join("wrong"), "some other CA", &[guest_ip]).unwrap();
    let manager = Manager::started(&[]);
    let tls = TlsTerminator::start(&pki, manager.port).unwrap();
    let url = format!("https://{}", qemu::GUEST_MANAGER);
    let boot = |name: &str, ca: &std::path::Path, serial: &str| {
        let cfg = configdisk::fat_config_disk(
            dir.path(),
            name,
            &oneshot_toml(
                &url,
                &manager.token,
                "ca_bundle = \"ca.pem\"\ndelivery_seconds = 60\n",
            ),
            &[("ca.pem", &std::fs::read(ca).unwrap())],
        );
        let disk = fat_clean(dir.path(), &format!("{serial}.raw"), serial);
        let mut vm = Vm::start(
            &binary(),
            &VmOptions {
                extra_disks: vec![cfg],
                disks: vec![disk],
                manager_port: Some(tls.port),
                ..VmOptions::default()
            },
        );
        vm.wait_powered_off(BOOT_LIMIT)
    };
    let log = boot("good.img", &pki.ca, "GUEST-TLS");
    assert!(log.contains(&format!("reports go to {url}")), "{log}");
    assert!(
        log.contains("report for virtio-GUEST-TLS delivered to the manager as scan 1"),
        "{log}"
    );
    report_for_target(&manager, "virtio-GUEST-TLS");

    let log = boot("wrong.img", &wrong.ca, "GUEST-TLS-WRONG");
    assert!(log.contains("invalid peer certificate"), "{log}");
    assert!(
        log.contains("1 report(s) NOT DELIVERED to the manager"),
        "{log}"
    );
    assert_eq!(manager.scans().len(), 1, "{log}");
}
