//! End-to-end tests of `coldscan-image build`: every format checked by real tools against the raw
//! disk, reproducibility across directories, one boot under QEMU + OVMF, and the errors.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use support::*;

const FORMATS: [&str; 5] = ["raw", "qcow2", "vmdk", "ova", "vhdx"];
/// The qcow2 image must stay under this size (the acceptance limit, without a real database).
const MAX_QCOW2: u64 = 40_000_000;

fn sha256(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A one-signature database (ClamAV's own test file's hash), generated, never committed.
fn test_db(dir: &Path) -> PathBuf {
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap();
    let hdb =
        tool(Command::new("sigtool").args(["--sha256", "/usr/share/clamav-testfiles/clam.exe"]));
    std::fs::write(db.join("test.hdb"), hdb).unwrap();
    db
}

/// The shared build (all five formats, with the test database), made once per test run.
fn image() -> &'static Path {
    static IMAGE: OnceLock<tempfile::TempDir> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let dir = tempfile::tempdir().unwrap();
            let db = test_db(dir.path());
            let out = build(&dir.path().join("out"), &["--db", db.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            dir
        })
        .path()
}

fn out_file(ext: &str) -> PathBuf {
    image().join("out").join(format!("coldscan.{ext}"))
}

#[test]
fn every_format_matches_the_raw_disk() {
    let raw = out_file("raw");
    for format in ["qcow2", "vmdk", "vhdx"] {
        let f = out_file(format);
        tool(
            Command::new("qemu-img")
                .args(["check", "-f", format])
                .arg(&f),
        );
        let same = tool(
            Command::new("qemu-img")
                .args(["compare", "-f", "raw", "-F", format])
                .arg(&raw)
                .arg(&f),
        );
        assert!(same.contains("identical"), "{format}: {same}");
    }
    let qcow2 = std::fs::metadata(out_file("qcow2")).unwrap().len();
    assert!(
        qcow2 <= MAX_QCOW2,
        "qcow2 is {qcow2} bytes, over {MAX_QCOW2}"
    );
}

#[test]
fn ova_holds_ovf_then_disk_then_a_verifying_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let ova = out_file("ova");
    let names = tool(Command::new("tar").arg("-tf").arg(&ova));
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(
        names,
        ["coldscan.ovf", "coldscan-disk1.vmdk", "coldscan.mf"]
    );
    tool(
        Command::new("tar")
            .arg("-xf")
            .arg(&ova)
            .arg("-C")
            .arg(dir.path()),
    );
    let mf = std::fs::read_to_string(dir.path().join("coldscan.mf")).unwrap();
    for name in &names[..2] {
        let line = format!("SHA256({name})= {}", sha256(&dir.path().join(name)));
        assert!(mf.contains(&line), "manifest lacks {line}:\n{mf}");
    }
    // Well-formed XML with the disk's capacity, EFI firmware, SCSI controller and VMXNET3 NIC.
    let raw_size = std::fs::metadata(out_file("raw")).unwrap().len();
    let check = format!(
        "import xml.etree.ElementTree as E, sys\n\
         r = E.parse(sys.argv[1]).getroot()\n\
         ns = '{{http://schemas.dmtf.org/ovf/envelope/1}}'\n\
         d = r.find(ns + 'DiskSection').find(ns + 'Disk')\n\
         assert d.get(ns + 'capacity') == '{raw_size}', d.attrib\n\
         t = E.tostring(r).decode()\n\
         assert 'VMXNET3' in t and 'lsilogic' in t and 'value=\"efi\"' in t\n"
    );
    tool(
        Command::new("python3")
            .args(["-c", &check])
            .arg(dir.path().join("coldscan.ovf")),
    );
    // The VMDK inside is the standalone one's disk.
    let same = tool(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .arg(out_file("raw"))
            .arg(dir.path().join("coldscan-disk1.vmdk")),
    );
    assert!(same.contains("identical"), "{same}");
}

#[test]
fn disk_is_a_valid_gpt_with_a_clean_fat32_esp() {
    let raw = out_file("raw");
    let v = tool(Command::new("sgdisk").arg("-v").arg(&raw));
    assert!(v.contains("No problems found"), "{v}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image().join("out/build.json")).unwrap()).unwrap();
    let esp_size = manifest["sizes"]["esp"].as_u64().unwrap() as usize;
    let disk = std::fs::read(&raw).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path().join("esp.img");
    std::fs::write(&esp, &disk[1 << 20..(1 << 20) + esp_size]).unwrap();
    let fsck = tool(Command::new("fsck.vfat").arg("-n").arg(&esp));
    assert!(!fsck.contains("uninitialized"), "{fsck}");
    // Our own reader: `coldscan info` shows the GPT, `coldscan ls` the loader on the ESP.
    let coldscan = coldscan_bin();
    let info = tool(Command::new(&coldscan).arg("info").arg(&raw));
    assert!(info.to_lowercase().contains("gpt"), "{info}");
    let disk_guid = manifest["disk"]["disk_guid"].as_str().unwrap();
    assert!(
        info.to_uppercase().contains(disk_guid),
        "{info} lacks {disk_guid}"
    );
    for format in FORMATS.iter().filter(|f| **f != "ova") {
        let ls = tool(Command::new(&coldscan).arg("ls").arg(out_file(format)));
        assert!(ls.contains("/EFI/BOOT/BOOTX64.EFI"), "{format}: {ls}");
    }
}

#[test]
fn build_json_records_inputs_and_sizes() {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image().join("out/build.json")).unwrap()).unwrap();
    let k = &m["inputs"]["kernel"];
    assert!(
        k["package"].as_str().unwrap().starts_with("linux-image-"),
        "{k}"
    );
    assert_eq!(k["sha256"].as_str().unwrap().len(), 64);
    let modules: Vec<&str> = k["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for needed in [
        "virtio_blk",
        "nvme",
        "vmw_pvscsi",
        "hv_storvsc",
        "vfat",
        "ext4",
    ] {
        assert!(
            modules.contains(&needed),
            "{needed} missing from {modules:?}"
        );
    }
    assert_eq!(m["inputs"]["stub"]["package"], "systemd-boot-efi");
    assert_eq!(m["inputs"]["db"][0]["name"], "test.hdb");
    let libs = m["inputs"]["libraries"].as_array().unwrap();
    assert!(
        libs.iter()
            .any(|l| l["name"] == "libclamav.so.12" && l["package"].is_string()),
        "{libs:?}"
    );
    for part in [
        "kernel",
        "modules",
        "libraries",
        "coldscan",
        "db",
        "initramfs_zstd",
        "uki",
    ] {
        assert!(m["sizes"][part].as_u64().unwrap() > 0, "size of {part}");
    }
    assert_eq!(m["source_date_epoch"], 1_700_000_000);
    assert_eq!(m["outputs"].as_array().unwrap().len(), 5);
    // Nothing but the outputs is left in the output directory.
    let mut left: Vec<String> = std::fs::read_dir(image().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "build.json",
            "coldscan.ova",
            "coldscan.qcow2",
            "coldscan.raw",
            "coldscan.vhdx",
            "coldscan.vmdk"
        ]
    );
}

#[test]
fn two_builds_in_different_directories_are_identical() {
    let first = image();
    let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let second = tempfile::tempdir().unwrap();
    let db = test_db(second.path());
    let out = build(
        &second.path().join("elsewhere/out"),
        &["--db", db.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ext in FORMATS {
        let a = sha256(&first.join("out").join(format!("coldscan.{ext}")));
        let b = sha256(&second.path().join(format!("elsewhere/out/coldscan.{ext}")));
        assert_eq!(a, b, "coldscan.{ext} differs between two builds");
    }
}

#[test]
fn image_boots_to_the_readiness_line_and_powers_off() {
    let work = tempfile::tempdir().unwrap();
    let b = boot(&out_file("qcow2"), "qcow2", work.path());
    assert_booted(&b);
}

/// The contents of section `name` of the shared image's UKI (taken from the ESP with mtools,
/// located with objdump).
fn uki_section(name: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let uki = dir.path().join("uki.efi");
    let raw = format!("{}@@1M", out_file("raw").display());
    tool(
        Command::new("mcopy")
            .args(["-i", &raw, "::/EFI/BOOT/BOOTX64.EFI"])
            .arg(&uki),
    );
    let headers = tool(Command::new("objdump").arg("-h").arg(&uki));
    let line = headers
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no {name} section:\n{headers}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    let size = usize::from_str_radix(f[2], 16).unwrap();
    let offset = usize::from_str_radix(f[5], 16).unwrap();
    std::fs::read(&uki).unwrap()[offset..offset + size].to_vec()
}

/// Unpacks the shared image's initramfs (zstd, then cpio) into a new directory.
fn unpack_initramfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let cpio = zstd::decode_all(&uki_section(".initrd")[..]).unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let mut child = Command::new("cpio")
        .args(["-i", "-d", "-m", "--quiet", "--no-absolute-filenames"])
        .current_dir(&root)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &cpio).unwrap();
    assert!(child.wait().unwrap().success());
    dir
}

#[test]
fn uki_carries_the_command_line_the_os_release_and_the_kernel() {
    assert_eq!(
        uki_section(".cmdline"),
        b"console=ttyS0 panic=-1 no_timer_check quiet"
    );
    let osrel = String::from_utf8(uki_section(".osrel")).unwrap();
    assert!(osrel.contains("ID=coldscan\n"), "{osrel}");
    let linux = uki_section(".linux");
    assert_eq!(&linux[..2], b"MZ");
    assert_eq!(&linux[0x202..0x206], b"HdrS", "not a Linux boot image");
}

#[test]
fn initramfs_runs_coldscan_with_only_its_own_libraries_and_database() {
    let dir = unpack_initramfs();
    let root = dir.path().join("root");
    // A chroot has no host library to fall back on: the closure must be complete. (Started as
    // `/init` coldscan would act as PID 1, so run it through another name.)
    std::os::unix::fs::symlink("/init", root.join("coldscan")).unwrap();
    let version = tool(
        Command::new("chroot")
            .arg(&root)
            .args(["/coldscan", "--version"]),
    );
    assert!(version.starts_with("coldscan "), "{version}");
    std::fs::create_dir(root.join("empty")).unwrap();
    let scan = tool(Command::new("chroot").arg(&root).args([
        "/coldscan",
        "scan",
        "--db",
        "/var/lib/coldscan/db",
        "/empty",
    ]));
    assert!(scan.contains("Known signatures: 1"), "{scan}");
    assert!(root.join("dev/console").exists());
}

#[test]
fn module_load_order_puts_dependencies_first_as_modprobe_does() {
    let dir = unpack_initramfs();
    let root = dir.path().join("root");
    let order = std::fs::read_to_string(root.join("etc/coldscan/modules")).unwrap();
    let order: Vec<&str> = order.lines().collect();
    for path in &order {
        assert!(
            root.join(path.trim_start_matches('/')).is_file(),
            "{path} missing"
        );
    }
    let position = |file: &str| order.iter().position(|p| p.ends_with(file));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image().join("out/build.json")).unwrap()).unwrap();
    let kernel = &m["inputs"]["kernel"];
    let unpacked = workspace()
        .join("target/image-cache/unpacked")
        .join(kernel["sha256"].as_str().unwrap());
    let release = kernel["release"].as_str().unwrap();
    for name in kernel["modules"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        let deps = tool(Command::new("modprobe").arg("-d").arg(&unpacked).args([
            "-S",
            release,
            "--show-depends",
            name,
        ]));
        // modprobe lists `insmod FILE` lines in load order, the module itself last.
        let files: Vec<&str> = deps
            .lines()
            .filter_map(|l| l.strip_prefix("insmod "))
            .map(|l| {
                l.split_whitespace()
                    .next()
                    .unwrap()
                    .rsplit("/lib/modules/")
                    .next()
                    .unwrap()
            })
            .collect();
        let me = position(files.last().unwrap().split_once('/').unwrap().1).unwrap();
        for dep in &files[..files.len() - 1] {
            let dep_rel = dep.split_once('/').unwrap().1;
            let at =
                position(dep_rel).unwrap_or_else(|| panic!("{name} needs {dep}, not in the image"));
            assert!(at < me, "{dep} must load before {name}");
        }
    }
}

#[test]
fn pinned_kernel_gone_from_the_archive_falls_back_with_a_warning_and_stale_outputs_go() {
    let dir = tempfile::tempdir().unwrap();
    let lock = std::fs::read_to_string(workspace().join("image/kernel.lock")).unwrap();
    let pinned = lock.lines().find(|l| l.starts_with("version")).unwrap();
    let lock = lock.replacen(pinned, "version = \"0.0.0-left-the-archive\"", 1);
    let lock_path = dir.path().join("kernel.lock");
    std::fs::write(&lock_path, lock).unwrap();
    // An earlier build's VHDX in the output directory must not survive beside the new raw disk.
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::write(out_dir.join("coldscan.vhdx"), b"stale").unwrap();
    let out = {
        let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        build(
            &out_dir,
            &["--lock", lock_path.to_str().unwrap(), "--format", "raw"],
        )
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: the pinned linux-image-"),
        "{stderr}"
    );
    assert!(stderr.contains("has left the archive"), "{stderr}");
    assert!(
        stderr.contains("to lock it, set package = \"linux-image-"),
        "{stderr}"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("build.json")).unwrap()).unwrap();
    assert_eq!(m["inputs"]["kernel"]["origin"], "archive-current");
    let mut left: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["build.json", "coldscan.raw"]);
}

#[test]
fn truncated_kernel_package_names_the_kernel_step_and_leaves_no_unpacked_tree() {
    image(); // the shared build fetched the locked kernel into the cache
    let cache = workspace().join("target/image-cache");
    let deb = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.to_string_lossy().contains("linux-image-")
                && p.extension().is_some_and(|e| e == "deb")
        })
        .expect("no kernel package in the cache");
    let data = std::fs::read(&deb).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join(deb.file_name().unwrap());
    std::fs::write(&truncated, &data[..data.len() / 2]).unwrap();
    assert_fails(
        &["--kernel-deb", truncated.to_str().unwrap()],
        "kernel",
        "cannot unpack",
    );
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("unpacked"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn kernel_version_builds_with_the_archives_build_of_that_release() {
    // The release the archive's `linux-image-amd64` currently points at.
    let show =
        tool(Command::new("apt-cache").args(["show", "--no-all-versions", "linux-image-amd64"]));
    let depends = show
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))
        .unwrap();
    let package = depends
        .split(',')
        .map(|d| d.trim().split(' ').next().unwrap())
        .find(|p| p.starts_with("linux-image-"))
        .unwrap();
    let release = package.strip_prefix("linux-image-").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = {
        let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        build(
            &dir.path().join("out"),
            &["--kernel-version", release, "--format", "qcow2"],
        )
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/build.json")).unwrap()).unwrap();
    assert_eq!(m["inputs"]["kernel"]["package"], package);
    assert_eq!(m["inputs"]["kernel"]["release"], release);
    // A release is a name, never a pattern.
    assert_fails(
        &["--kernel-version", "6.1.0-*-amd64"],
        "kernel",
        "bad kernel release",
    );
}
