//! Configuration from a config disk, and the image `coldscan-image` builds.

use std::collections::BTreeSet;
use std::process::Command;

use coldscan_tests::images::{ext_image, ExtOptions};
use coldscan_tests::testdb::{self, EICAR_REPORTED};
use coldscan_tests::tree::Tree;

use super::qemu::guests::{clam_exe, fat_clean};
use super::qemu::stored::{detections, report_for};
use super::qemu::{self, Disk, Manager, Vm, VmOptions};
use super::{binary, run, BOOT_LIMIT};

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

    let manager = Manager::started(&[]);
    let cfg_tree = dir.path().join("cfg");
    std::fs::create_dir_all(cfg_tree.join("db")).unwrap();
    std::fs::write(
        cfg_tree.join("coldscan.toml"),
        format!(
            "mode = \"oneshot\"\n[manager]\nurl = \"http://{}\"\ntoken = \"{}\"\n[network]\nmode = \"static\"\naddress = \"10.0.2.20/24\"\ngateway = \"10.0.2.2\"\n",
            qemu::GUEST_MANAGER,
            manager.token
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
    assert_eq!(manager.scans().len(), 1, "{log}");
    let r = report_for(&manager, "GUEST-CFG");
    assert_eq!(
        detections(&r),
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
    let manager = Manager::started(&[]);
    let cfg_tree = dir.path().join("cfg");
    std::fs::create_dir_all(&cfg_tree).unwrap();
    std::fs::write(
        cfg_tree.join("coldscan.toml"),
        format!(
            "mode = \"oneshot\"\n[manager]\nurl = \"http://{}\"\ntoken = \"{}\"\n",
            qemu::GUEST_MANAGER,
            manager.token
        ),
    )
    .unwrap();
    let cfg = dir.path().join("cfg.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-L", "COLDSCAN-CFG", "-d"])
        .arg(&cfg_tree)
        .arg(&cfg)
        .arg("8M"));
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            image: Some(image),
            // DHCP on another driver than virtio-net (the image carries e1000e).
            nic: "e1000e",
            extra_disks: vec![Disk {
                path: cfg.clone(),
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
    assert_eq!(manager.scans().len(), 2, "{log}");
    let r = report_for(&manager, "GUEST-IMG-INFECTED");
    assert_eq!(
        detections(&r),
        BTreeSet::from([("/srv/www/eicar.com".into(), None, EICAR_REPORTED.into())]),
        "{r:#}"
    );
    assert!(detections(&report_for(&manager, "GUEST-IMG-CLEAN")).is_empty());
    // The image's modules mount the ext4 config disk for the spool, and it is left clean.
    assert!(
        log.contains("undelivered reports wait on the config disk"),
        "{log}"
    );
    run(Command::new("e2fsck").args(["-f", "-n"]).arg(&cfg));
}
