use std::os::unix::fs::symlink;
use std::process::Command;

use super::*;

/// One fake device: kernel name, files relative to its class entry, `device` link target.
type FakeDev<'a> = (&'a str, &'a [(&'a str, &'a [u8])], Option<&'a str>);

/// A fake sysfs block class: (name, files relative to the class entry, device link target).
fn fake_sysfs(root: &Path, devs: &[FakeDev<'_>]) {
    for (name, files, link) in devs {
        let dir = root.join("class/block").join(name);
        fs::create_dir_all(&dir).unwrap();
        for (file, content) in *files {
            let p = dir.join(file);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        if let Some(target) = link {
            let t = root.join("devices").join(target);
            fs::create_dir_all(&t).unwrap();
            if !dir.join("device").exists() {
                symlink(&t, dir.join("device")).unwrap();
            }
        }
    }
}

fn vpd80(serial: &str) -> Vec<u8> {
    let mut v = vec![0, 0x80, 0, serial.len() as u8];
    v.extend_from_slice(serial.as_bytes());
    v
}

#[test]
fn enumerates_whole_disks_with_identities() {
    let tmp = tempfile::tempdir().unwrap();
    let pg80 = vpd80("  SCSI-SER-7 ");
    let ata80 = vpd80("WD-12345");
    fake_sysfs(
        tmp.path(),
        &[
            (
                "vda",
                &[("size", b"2048\n"), ("serial", b"appliance\n")],
                None,
            ),
            (
                "vdb",
                &[("size", b"4096\n"), ("serial", b"guest-disk-1\n")],
                None,
            ),
            ("vdb1", &[("size", b"100\n"), ("partition", b"1\n")], None),
            ("loop0", &[("size", b"8\n")], None),
            ("zram0", &[("size", b"8\n")], None),
            ("sr0", &[("size", b"8\n")], None),
            (
                "sda",
                &[
                    ("size", b"8\n"),
                    ("device/vendor", b"QEMU    \n"),
                    ("device/vpd_pg80", &pg80),
                ],
                None,
            ),
            (
                "sdb",
                &[
                    ("size", b"8\n"),
                    ("device/vendor", b"ATA     \n"),
                    ("device/model", b"WDC WD10 \n"),
                    ("device/vpd_pg80", &ata80),
                ],
                None,
            ),
            (
                "sdc",
                &[("size", b"8\n"), ("device/wwid", b"naa.5000c500a1b2c3d4\n")],
                None,
            ),
            (
                "nvme0n1",
                &[("size", b"8\n"), ("wwid", b"eui.0011\n")],
                Some("nvme0"),
            ),
            ("xvda", &[("size", b"8\n")], Some("vbd-51712")),
        ],
    );
    // NVMe serial and model live on the controller (the `device` link).
    fs::write(tmp.path().join("devices/nvme0/serial"), "NV-99  \n").unwrap();
    fs::write(tmp.path().join("devices/nvme0/model"), "QEMU NVMe Ctrl\n").unwrap();

    let devs = enumerate(tmp.path(), Path::new("/dev")).unwrap();
    let ids: Vec<(String, String)> = devs
        .iter()
        .map(|d| (d.kernel_name.clone(), d.identity()))
        .collect();
    assert_eq!(
        ids,
        [
            ("nvme0n1", "nvme-QEMU_NVMe_Ctrl_NV-99"),
            ("sda", "scsi-SCSI-SER-7"),
            ("sdb", "ata-WDC_WD10_WD-12345"),
            ("sdc", "wwn-naa.5000c500a1b2c3d4"),
            ("vda", "virtio-appliance"),
            ("vdb", "virtio-guest-disk-1"),
            ("xvda", "path-vbd-51712"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let vdb = devs.iter().find(|d| d.kernel_name == "vdb").unwrap();
    assert_eq!(vdb.size, 4096 * 512);
    assert_eq!(vdb.dev_path, Path::new("/dev/vdb"));
    assert_eq!(vdb.transport, Transport::Virtio);
    assert_eq!(
        devs.iter()
            .find(|d| d.kernel_name == "nvme0n1")
            .unwrap()
            .wwn
            .as_deref(),
        Some("eui.0011")
    );
    // The kernel name is never part of an identity.
    for d in &devs {
        if d.kernel_name != "vda" {
            assert!(!d.identity().contains(&d.kernel_name), "{}", d.identity());
        }
    }
}

#[test]
fn vpd80_is_bounded() {
    assert_eq!(vpd80_serial(&[0, 0x80, 0, 200, b'A']), Some("A".into()));
    assert_eq!(vpd80_serial(&[0, 0x83, 0, 1, b'A']), None);
    assert_eq!(vpd80_serial(&[0, 0x80]), None);
    assert_eq!(vpd80_serial(&[0, 0x80, 0, 2, 0, 0]), None);
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A GPT disk with a fixed disk GUID and one FAT partition with `label`.
fn gpt_disk(dir: &Path, name: &str, guid: &str, label: &str) -> PathBuf {
    let disk = dir.join(name);
    let f = fs::File::create(&disk).unwrap();
    f.set_len(8 << 20).unwrap();
    let script = format!("label: gpt\nlabel-id: {guid}\nstart=2048, size=12288, type=L\n");
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let part = dir.join(format!("{name}.part"));
    let _ = fs::remove_file(&part);
    // ext4: a FAT label holds at most 11 characters, one fewer than `COLDSCAN-CFG`.
    fs::File::create(&part).unwrap().set_len(6 << 20).unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label])
        .arg(&part));
    run(Command::new("dd")
        .arg(format!("if={}", part.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=512", "seek=2048", "conv=notrunc", "status=none"]));
    disk
}

#[test]
fn roles_by_disk_guid_and_label() {
    let tmp = tempfile::tempdir().unwrap();
    let own = "6c0dd5ca-7b1e-4a7e-9c41-000000000001";
    let boot = gpt_disk(tmp.path(), "boot.img", own, "ESP");
    let cfg = gpt_disk(
        tmp.path(),
        "cfg.img",
        "6c0dd5ca-7b1e-4a7e-9c41-000000000002",
        CONFIG_LABEL,
    );
    let guest = gpt_disk(
        tmp.path(),
        "guest.img",
        "6c0dd5ca-7b1e-4a7e-9c41-000000000003",
        "DATA",
    );
    assert_eq!(role_of_path(&boot, Some(own)), DiskRole::Appliance);
    assert_eq!(
        role_of_path(&boot, Some(&own.to_uppercase())),
        DiskRole::Appliance
    );
    // Without a known own GUID the boot disk is not silently skipped.
    assert_eq!(role_of_path(&boot, None), DiskRole::Guest);
    assert_eq!(
        role_of_path(&cfg, Some(own)),
        DiskRole::Config { partition: 1 }
    );
    assert_eq!(role_of_path(&guest, Some(own)), DiskRole::Guest);
    // The image's ESP label marks the appliance disk without coldscan.self.
    let image = gpt_disk(
        tmp.path(),
        "image.img",
        "6c0dd5ca-7b1e-4a7e-9c41-000000000004",
        APPLIANCE_ESP_LABEL,
    );
    assert_eq!(role_of_path(&image, None), DiskRole::Appliance);

    // A whole-disk ext4 config disk, and garbage.
    let whole = tmp.path().join("whole.img");
    fs::File::create(&whole).unwrap().set_len(4 << 20).unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", CONFIG_LABEL])
        .arg(&whole));
    assert_eq!(
        role_of_path(&whole, Some(own)),
        DiskRole::Config { partition: 0 }
    );
    let junk = tmp.path().join("junk.img");
    fs::write(&junk, vec![0xa5u8; 1 << 16]).unwrap();
    assert_eq!(role_of_path(&junk, Some(own)), DiskRole::Guest);
    // Guest disk files are never written.
    let before = fs::read(&guest).unwrap();
    let _ = role_of_path(&guest, Some(own));
    assert_eq!(fs::read(&guest).unwrap(), before);
}

#[test]
fn partition_nodes_come_from_sysfs() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    for (name, part) in [("vdb1", "1"), ("vdb2", "2"), ("nvme0n1p1", "1")] {
        let disk = if name.starts_with("vdb") {
            "vdb"
        } else {
            "nvme0n1"
        };
        let d = sys.join("class/block").join(disk).join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("partition"), format!("{part}\n")).unwrap();
    }
    std::fs::create_dir_all(sys.join("class/block/vdb/queue")).unwrap();
    let dev = Path::new("/dev");
    assert_eq!(
        partition_node(&sys, dev, "vdb", 2),
        Some(PathBuf::from("/dev/vdb2"))
    );
    assert_eq!(
        partition_node(&sys, dev, "nvme0n1", 1),
        Some(PathBuf::from("/dev/nvme0n1p1"))
    );
    assert_eq!(
        partition_node(&sys, dev, "vdb", 0),
        Some(PathBuf::from("/dev/vdb"))
    );
    assert_eq!(partition_node(&sys, dev, "vdb", 3), None);
}
