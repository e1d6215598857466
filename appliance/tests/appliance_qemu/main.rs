//! The appliance end to end under QEMU (TCG): `coldscan` as PID 1 with guest disks attached and
//! a manager reached through user networking (`restrict=on`, `guestfwd`). Slow (each boot is
//! tens of seconds under emulation): `#[ignore]`d, run by `make e2e`.
//!
//! - oneshot: three guest disks (a qcow2 chain whose top layer holds ext4 with planted files,
//!   NTFS in VHDX with EICAR in an alternate data stream and clam.exe in a compressed folder, a
//!   clean FAT disk): one report per disk with exactly the planted detections and the disk's
//!   serial, the VM powers off by itself, every disk file is byte-identical afterwards;
//! - a worker killed by its seccomp filter (the `coldscan.selftest` hook) and a corrupt disk do
//!   not stop the others, and their reports say why (with the offset for the corrupt disk);
//! - daemon mode with the manager down at boot: reports are delivered once it starts, each
//!   exactly once; a job for an attached disk is scanned, reported and completed;
//! - the serial console menu, driven through a unix socket: status, disks, power off; input that
//!   looks like a shell command or a path is refused.

mod qemu;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use coldscan_tests::images::{ext_image, ExtOptions};
use coldscan_tests::testdb::{self, CLAM_REPORTED, EICAR_REPORTED};
use coldscan_tests::tree::Tree;
use qemu::guests::{clam_exe, corrupt_ext_root, fat_clean, ntfs_vhdx, qcow2_chain};
use qemu::{Disk, TestManager, Vm, VmOptions, TOKEN};

const BOOT_LIMIT: Duration = Duration::from_secs(600);

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coldscan"))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The (path, stream, signature) set of a report.
fn detections(report: &serde_json::Value) -> BTreeSet<(String, Option<String>, String)> {
    report["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["stream"].as_str().map(String::from),
                d["signature"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn report_for<'a>(reports: &'a [qemu::Received], serial: &str) -> &'a serde_json::Value {
    let want = format!("virtio-{serial}");
    let found: Vec<&qemu::Received> = reports
        .iter()
        .filter(|r| r.report["targets"][0]["target"] == want.as_str())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "reports for {want}: {:#?}",
        reports
            .iter()
            .map(|r| &r.report["targets"])
            .collect::<Vec<_>>()
    );
    &found[0].report
}

fn manager_cmdline(extra: &str) -> String {
    format!(
        "coldscan.net=dhcp coldscan.manager=http://{} coldscan.token={TOKEN} {extra}",
        qemu::GUEST_MANAGER
    )
}

#[test]
#[ignore = "boots QEMU: make e2e"]
fn oneshot_three_disks_one_report_each_and_power_off() {
    let dir = tempfile::tempdir().unwrap();
    let (chain, base) = qcow2_chain(dir.path());
    let ntfs = ntfs_vhdx(dir.path());
    let fat = fat_clean(dir.path(), "fat.raw", "GUEST-FAT");
    let files = [
        chain.path.clone(),
        base.clone(),
        ntfs.path.clone(),
        fat.path.clone(),
    ];
    let before: Vec<String> = files.iter().map(|f| qemu::sha256_file(f)).collect();

    let manager = TestManager::start(0);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline("coldscan.mode=oneshot"),
            disks: vec![chain, ntfs, fat],
            manager_port: Some(manager.port),
            console_socket: false,
            ..VmOptions::default()
        },
    );
    let log = vm.wait_powered_off(BOOT_LIMIT);
    assert!(log.contains("coldscan appliance ready"), "{log}");
    assert!(
        log.contains("oneshot finished: 3 disk(s), 4 detection(s), exit status 1"),
        "{log}"
    );
    assert!(log.contains("network: eth0 10.0.2.15/24 (dhcp"), "{log}");
    assert!(!log.contains("Kernel panic"), "{log}");

    let reports = manager.reports();
    assert_eq!(reports.len(), 3, "{log}");
    let r = report_for(&reports, "GUEST-QCOW2");
    assert_eq!(
        detections(r),
        BTreeSet::from([
            ("/home/user/eicar.com".into(), None, EICAR_REPORTED.into()),
            ("/opt/tools/clam.exe".into(), None, CLAM_REPORTED.into()),
        ]),
        "{r:#}"
    );
    let r = report_for(&reports, "GUEST-NTFS");
    assert_eq!(
        detections(r),
        BTreeSet::from([
            (
                "/Users/x/doc.txt:hidden".into(),
                Some("hidden".into()),
                EICAR_REPORTED.into()
            ),
            ("/Compressed/clam.exe".into(), None, CLAM_REPORTED.into()),
        ]),
        "{r:#}"
    );
    let r = report_for(&reports, "GUEST-FAT");
    assert!(detections(r).is_empty(), "{r:#}");
    assert!(r["not_scanned"].as_array().unwrap().is_empty(), "{r:#}");
    assert!(r["stats"]["files"].as_u64().unwrap() >= 2, "{r:#}");
    for rec in &reports {
        let text = rec.report.to_string();
        assert!(
            !text.contains("/dev/vd"),
            "a report names a kernel device: {text}"
        );
    }
    let after: Vec<String> = files.iter().map(|f| qemu::sha256_file(f)).collect();
    assert_eq!(before, after, "a guest disk file changed");
}

#[test]
#[ignore = "boots QEMU: make e2e"]
fn killed_worker_and_corrupt_disk_do_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    // vda: its worker tries socket() after hardening (self-test) and must die by SIGSYS.
    let victim = fat_clean(dir.path(), "victim.raw", "GUEST-VICTIM");
    // vdb: an ext4 disk whose root inode table is overwritten.
    let mut tree = Tree::new();
    tree.file("/etc/hostname", b"broken\n");
    let corrupt = dir.path().join("corrupt.raw");
    ext_image(&corrupt, 16 << 20, &tree, &ExtOptions::ext4()).unwrap();
    corrupt_ext_root(&corrupt);
    // vdc: fine.
    let fine = fat_clean(dir.path(), "fine.raw", "GUEST-FINE");
    let manager = TestManager::start(0);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline("coldscan.mode=oneshot coldscan.selftest=seccomp-socket"),
            disks: vec![
                victim,
                Disk {
                    path: corrupt,
                    format: "raw",
                    serial: "GUEST-CORRUPT".into(),
                },
                fine,
            ],
            manager_port: Some(manager.port),
            console_socket: false,
            ..VmOptions::default()
        },
    );
    let log = vm.wait_powered_off(BOOT_LIMIT);
    assert!(log.contains("SIGSYS"), "{log}");
    assert!(
        log.contains("oneshot finished: 3 disk(s), 0 detection(s), exit status 2"),
        "{log}"
    );
    let reports = manager.reports();
    assert_eq!(reports.len(), 3, "{log}");
    let victim = report_for(&reports, "GUEST-VICTIM");
    let ns = &victim["not_scanned"][0];
    assert_eq!(ns["reason"], "engine-error", "{victim:#}");
    assert!(
        ns["detail"].as_str().unwrap().contains("SIGSYS"),
        "{victim:#}"
    );
    let corrupt = report_for(&reports, "GUEST-CORRUPT");
    let details: Vec<&str> = corrupt["not_scanned"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["detail"].as_str())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("0x")),
        "no offset in the corrupt disk's errors: {corrupt:#}"
    );
    let fine = report_for(&reports, "GUEST-FINE");
    assert!(
        fine["not_scanned"].as_array().unwrap().is_empty(),
        "{fine:#}"
    );
    assert!(fine["stats"]["files"].as_u64().unwrap() >= 2, "{fine:#}");
}

#[test]
#[ignore = "boots QEMU: make e2e"]
fn daemon_delivers_once_the_manager_is_up_and_runs_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let disk = fat_clean(dir.path(), "daemon.raw", "GUEST-DAEMON");
    let port = TestManager::free_port();
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline("coldscan.mode=daemon"),
            disks: vec![disk],
            manager_port: Some(port),
            console_socket: false,
            ..VmOptions::default()
        },
    );
    // The boot scan's report waits in the spool while nobody listens.
    vm.wait_for("disk virtio-GUEST-DAEMON:", BOOT_LIMIT);
    vm.wait_for("manager unreachable", BOOT_LIMIT);
    let manager = TestManager::start(port);
    vm.wait_for("delivered to the manager as scan 1", BOOT_LIMIT);
    manager.add_job(7, "GUEST-DAEMON");
    vm.wait_for("job 7: scan GUEST-DAEMON", BOOT_LIMIT);
    vm.wait_for("delivered to the manager as scan 2", BOOT_LIMIT);
    let start = std::time::Instant::now();
    while manager.completed().is_empty() && start.elapsed() < BOOT_LIMIT {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(manager.completed(), [(7, serde_json::json!({"report": 2}))]);
    let reports = manager.reports();
    assert_eq!(reports.len(), 2);
    let keys: BTreeSet<&str> = reports.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys.len(), 2, "each report under its own key");
    assert!(manager.heartbeats() >= 1);
}

/// Sends `line` on the console socket and reads until `needle` appears.
fn console_exchange(sock: &mut UnixStream, line: &str, needle: &str) -> String {
    sock.write_all(line.as_bytes()).unwrap();
    sock.write_all(b"\n").unwrap();
    let mut seen = String::new();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    while !seen.contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {needle:?} after {line:?}:\n{seen}"
        );
        match sock.read(&mut buf) {
            Ok(0) => panic!("console closed:\n{seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
    }
    seen
}

#[test]
#[ignore = "boots QEMU: make e2e"]
fn console_menu_status_disks_power_off() {
    let dir = tempfile::tempdir().unwrap();
    let disk = fat_clean(dir.path(), "menu.raw", "GUEST-MENU");
    let manager = TestManager::start(0);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline("coldscan.mode=daemon"),
            disks: vec![disk],
            manager_port: Some(manager.port),
            console_socket: true,
            ..VmOptions::default()
        },
    );
    vm.wait_for("delivered to the manager as scan 1", BOOT_LIMIT);
    let mut sock = UnixStream::connect(vm.socket.as_ref().unwrap()).unwrap();
    console_exchange(&mut sock, "", "8 power off");
    let status = console_exchange(&mut sock, "1", "spool:");
    assert!(status.contains("mode: daemon"), "{status}");
    // The layout comes from a hardened worker running `coldscan info`.
    let disks = console_exchange(&mut sock, "2", "fat16");
    assert!(
        disks.contains("disk virtio-GUEST-MENU (vda, 16.0 MiB): guest"),
        "{disks}"
    );
    assert!(!disks.contains("SIGSYS"), "{disks}");
    console_exchange(&mut sock, "", "choice:");
    for hostile in ["/bin/sh", "$(reboot)", "../../etc/passwd", "2; poweroff"] {
        console_exchange(&mut sock, hostile, "unknown choice");
    }
    console_exchange(&mut sock, "8", "type yes");
    console_exchange(&mut sock, "yes", "powering off");
    let log = vm.wait_powered_off(Duration::from_secs(120));
    assert!(log.contains("power off from the console menu"), "{log}");
    assert!(!log.contains("Kernel panic"), "{log}");
}

#[test]
#[ignore = "boots QEMU: make e2e"]
fn acpi_power_button_powers_off() {
    let manager = TestManager::start(0);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline("coldscan.mode=daemon"),
            manager_port: Some(manager.port),
            ..VmOptions::default()
        },
    );
    vm.wait_for("press Enter on this console", BOOT_LIMIT);
    vm.wait_for("reports go to", BOOT_LIMIT);
    vm.monitor("system_powerdown");
    let log = vm.wait_powered_off(Duration::from_secs(120));
    assert!(log.contains("ACPI power button: powering off"), "{log}");
}

/// A FAT config disk (label COLDSCANCFG) with coldscan.toml (static network, the manager) and a
/// signature database that replaces the baked one: only EICAR is known then, so clam.exe on
/// the guest disk is not detected; the config disk itself is not scanned.
#[test]
#[ignore = "boots QEMU: make e2e"]
fn config_disk_sets_network_manager_and_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let mut guest_tree = Tree::new();
    guest_tree.file("/eicar.com", &testdb::eicar());
    guest_tree.file("/clam.exe", &clam_exe());
    let guest = dir.path().join("guest.raw");
    ext_image(&guest, 16 << 20, &guest_tree, &ExtOptions::ext4()).unwrap();

    let cfg_tree = dir.path().join("cfg");
    std::fs::create_dir_all(cfg_tree.join("db")).unwrap();
    std::fs::write(
        cfg_tree.join("coldscan.toml"),
        format!(
            "mode = \"oneshot\"\n[manager]\nurl = \"http://{}\"\ntoken = \"{TOKEN}\"\n[network]\nmode = \"static\"\naddress = \"10.0.2.20/24\"\ngateway = \"10.0.2.2\"\n",
            qemu::GUEST_MANAGER
        ),
    )
    .unwrap();
    std::fs::write(cfg_tree.join("db/site.ndb"), testdb::eicar_ndb()).unwrap();
    let cfg = dir.path().join("cfg.img");
    run(Command::new("truncate").arg("-s").arg("8M").arg(&cfg));
    run(Command::new("mkfs.vfat")
        .args(["-n", "COLDSCANCFG"])
        .arg(&cfg));
    for f in ["coldscan.toml", "db"] {
        run(Command::new("mcopy")
            .args(["-s", "-i"])
            .arg(&cfg)
            .arg(cfg_tree.join(f))
            .arg("::"));
    }
    let manager = TestManager::start(0);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: String::new(),
            extra_disks: vec![Disk {
                path: cfg,
                format: "raw",
                serial: "CONFIG".into(),
            }],
            disks: vec![Disk {
                path: guest,
                format: "raw",
                serial: "GUEST-CFG".into(),
            }],
            manager_port: Some(manager.port),
            ..VmOptions::default()
        },
    );
    let log = vm.wait_powered_off(BOOT_LIMIT);
    assert!(log.contains("config disk (not scanned)"), "{log}");
    assert!(
        log.contains("network: eth0 10.0.2.20/24 (static) gateway 10.0.2.2"),
        "{log}"
    );
    assert!(
        log.contains("signatures from /run/coldscan/config/db"),
        "{log}"
    );
    let reports = manager.reports();
    assert_eq!(reports.len(), 1, "{log}");
    let r = report_for(&reports, "GUEST-CFG");
    assert_eq!(
        detections(r),
        BTreeSet::from([("/eicar.com".into(), None, EICAR_REPORTED.into())]),
        "{r:#}"
    );
}

/// The image `coldscan-image` builds, booted under OVMF (UKI on a GPT/FAT32 ESP) with an e1000e
/// NIC: the appliance disk is recognised and not scanned, the config disk (ext4 this time) gives the mode, the
/// manager and the network, two guest disks get one report each, and the VM powers off.
#[test]
#[ignore = "boots QEMU: make e2e"]
fn built_image_under_ovmf_scans_and_reports() {
    let image = qemu::appliance_image(
        &binary(),
        "console=ttyS0 panic=-1 loglevel=4 no_timer_check",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::new();
    tree.file("/srv/www/eicar.com", &testdb::eicar());
    let infected = dir.path().join("infected.raw");
    ext_image(&infected, 16 << 20, &tree, &ExtOptions::ext4()).unwrap();
    let clean = fat_clean(dir.path(), "clean.raw", "GUEST-IMG-CLEAN");
    let cfg_tree = dir.path().join("cfg");
    std::fs::create_dir_all(&cfg_tree).unwrap();
    std::fs::write(
        cfg_tree.join("coldscan.toml"),
        format!(
            "mode = \"oneshot\"\n[manager]\nurl = \"http://{}\"\ntoken = \"{TOKEN}\"\n",
            qemu::GUEST_MANAGER
        ),
    )
    .unwrap();
    let cfg = dir.path().join("cfg.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-L", "COLDSCAN-CFG", "-d"])
        .arg(&cfg_tree)
        .arg(&cfg)
        .arg("8M"));
    let manager = TestManager::start(0);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            image: Some(image),
            // DHCP on another driver than virtio-net (the image carries e1000e).
            nic: "e1000e",
            extra_disks: vec![Disk {
                path: cfg,
                format: "raw",
                serial: "CONFIG".into(),
            }],
            disks: vec![
                Disk {
                    path: infected,
                    format: "raw",
                    serial: "GUEST-IMG-INFECTED".into(),
                },
                clean,
            ],
            manager_port: Some(manager.port),
            ..VmOptions::default()
        },
    );
    let log = vm.wait_powered_off(BOOT_LIMIT);
    assert!(log.contains("coldscan appliance ready"), "{log}");
    assert!(log.contains("appliance disk (not scanned)"), "{log}");
    assert!(log.contains("config disk (not scanned)"), "{log}");
    assert!(
        log.contains("signatures from /var/lib/coldscan/db"),
        "{log}"
    );
    assert!(log.contains("(dhcp from 10.0.2.2"), "{log}");
    assert!(
        log.contains("oneshot finished: 2 disk(s), 1 detection(s), exit status 1"),
        "{log}"
    );
    let reports = manager.reports();
    assert_eq!(reports.len(), 2, "{log}");
    let r = report_for(&reports, "GUEST-IMG-INFECTED");
    assert_eq!(
        detections(r),
        BTreeSet::from([("/srv/www/eicar.com".into(), None, EICAR_REPORTED.into())]),
        "{r:#}"
    );
    assert!(detections(report_for(&reports, "GUEST-IMG-CLEAN")).is_empty());
}

/// `qemu-nbd` serving an image read-only on a loopback port; killed on drop.
struct NbdServer(std::process::Child);

impl Drop for NbdServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let nbd_port = TestManager::free_port();
    let _nbd = NbdServer(
        Command::new("qemu-nbd")
            .args([
                "--read-only",
                "--persistent",
                "--shared=4",
                "-f",
                "raw",
                "-x",
                "export",
            ])
            .args(["-b", "127.0.0.1", "-p", &nbd_port.to_string()])
            .arg(&img)
            .spawn()
            .unwrap(),
    );
    let manager = TestManager::start(0);
    let url = "nbd://10.0.2.101:10809/export";
    manager.add_job(11, url);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline("coldscan.mode=daemon"),
            manager_port: Some(manager.port),
            forwards: vec![("10.0.2.101:10809".into(), nbd_port)],
            ..VmOptions::default()
        },
    );
    vm.wait_for("job 11: scan nbd://", BOOT_LIMIT);
    vm.wait_for("delivered to the manager as scan 1", BOOT_LIMIT);
    let start = std::time::Instant::now();
    while manager.completed().is_empty() && start.elapsed() < BOOT_LIMIT {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        manager.completed(),
        [(11, serde_json::json!({"report": 1}))]
    );
    let reports = manager.reports();
    assert_eq!(reports[0].report["targets"][0]["target"], url);
    assert_eq!(
        detections(&reports[0].report),
        BTreeSet::from([("/data/eicar.com".into(), None, EICAR_REPORTED.into())]),
        "{:#}",
        reports[0].report
    );
}

/// `make bench` (with `COLDSCAN_BENCH=1`; a no-op otherwise): boot-to-first-report time under TCG
/// for one 1 GiB guest disk (ext4 with 256 MiB of files and EICAR), direct kernel boot, the
/// manager on loopback. Prints `boot_to_ready_seconds` and `boot_to_first_report_seconds`.
#[test]
#[ignore = "boots QEMU: make bench"]
fn bench_boot_to_first_report_1gib() {
    if std::env::var_os("COLDSCAN_BENCH").is_none() {
        eprintln!("set COLDSCAN_BENCH=1 to run this benchmark (make bench does)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut tree = Tree::new();
    for i in 0..64 {
        tree.random_file(&format!("/data/blob{i:02}.bin"), 4 << 20);
    }
    tree.file("/data/eicar.com", &testdb::eicar());
    let img = dir.path().join("bench.raw");
    ext_image(&img, 1 << 30, &tree, &ExtOptions::ext4()).unwrap();
    let manager = TestManager::start(0);
    let start = std::time::Instant::now();
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline("coldscan.mode=oneshot"),
            disks: vec![Disk {
                path: img,
                format: "raw",
                serial: "BENCH-1G".into(),
            }],
            manager_port: Some(manager.port),
            ..VmOptions::default()
        },
    );
    vm.wait_for("coldscan appliance ready", BOOT_LIMIT);
    let ready = start.elapsed().as_secs_f64();
    while manager.reports().is_empty() {
        assert!(start.elapsed() < BOOT_LIMIT, "{}", vm.serial());
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = start.elapsed().as_secs_f64();
    vm.wait_powered_off(BOOT_LIMIT);
    println!("boot_to_ready_seconds={ready:.1}");
    println!("boot_to_first_report_seconds={first:.1}");
}
