//! Oneshot scans: three guest disks, one stored report each; a seccomp-killed worker and a
//! corrupt disk; the boot-to-first-report benchmark.

use std::collections::BTreeSet;
use std::time::Duration;

use coldscan_tests::images::{ext_image, ExtOptions};
use coldscan_tests::testdb::{self, CLAM_REPORTED, EICAR_REPORTED};
use coldscan_tests::tree::Tree;

use super::qemu::guests::{corrupt_ext_root, fat_clean, ntfs_vhdx, qcow2_chain};
use super::qemu::stored::{detections, report_for};
use super::qemu::{self, Disk, Manager, Vm, VmOptions};
use super::{binary, manager_cmdline, BOOT_LIMIT};

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

    let manager = Manager::started(&[]);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline(&manager, "coldscan.mode=oneshot"),
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
    let r = report_for(&manager, "GUEST-QCOW2");
    assert_eq!(r["appliance"], qemu::APPLIANCE);
    assert_eq!(
        detections(&r),
        BTreeSet::from([
            ("/home/user/eicar.com".into(), None, EICAR_REPORTED.into()),
            ("/opt/tools/clam.exe".into(), None, CLAM_REPORTED.into()),
        ]),
        "{r:#}"
    );
    let r = report_for(&manager, "GUEST-NTFS");
    assert_eq!(
        detections(&r),
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
    let r = report_for(&manager, "GUEST-FAT");
    assert!(detections(&r).is_empty(), "{r:#}");
    assert!(r["not_scanned"].as_array().unwrap().is_empty(), "{r:#}");
    assert!(r["stats"]["files"].as_u64().unwrap() >= 2, "{r:#}");
    for rec in &reports {
        let text = rec.to_string();
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
    let manager = Manager::started(&[]);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline(
                &manager,
                "coldscan.mode=oneshot coldscan.selftest=seccomp-socket",
            ),
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
    assert_eq!(manager.scans().len(), 3, "{log}");
    let victim = report_for(&manager, "GUEST-VICTIM");
    let ns = &victim["not_scanned"][0];
    assert_eq!(ns["reason"], "engine-error", "{victim:#}");
    assert!(
        ns["detail"].as_str().unwrap().contains("SIGSYS"),
        "{victim:#}"
    );
    let corrupt = report_for(&manager, "GUEST-CORRUPT");
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
    let fine = report_for(&manager, "GUEST-FINE");
    assert!(
        fine["not_scanned"].as_array().unwrap().is_empty(),
        "{fine:#}"
    );
    assert!(fine["stats"]["files"].as_u64().unwrap() >= 2, "{fine:#}");
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
    let manager = Manager::started(&[]);
    let start = std::time::Instant::now();
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline(&manager, "coldscan.mode=oneshot"),
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
    while manager.scans().is_empty() {
        assert!(start.elapsed() < BOOT_LIMIT, "{}", vm.serial());
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = start.elapsed().as_secs_f64();
    vm.wait_powered_off(BOOT_LIMIT);
    println!("boot_to_ready_seconds={ready:.1}");
    println!("boot_to_first_report_seconds={first:.1}");
}
