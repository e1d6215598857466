//! Config disks for the appliance's end-to-end tests, made as an operator would: `mkfs.vfat -n
//! COLDSCANCFG` and `mcopy`; and the report spool on such a disk read back with `mdir`/`mtype`
//! after the VM powered off.

use std::path::Path;
use std::process::Command;

use super::Disk;

/// The spool directory on the config disk (the appliance's `spooldisk::SPOOL_SUBDIR`).
pub const SPOOL_DIR: &str = "coldscan-spool";

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A FAT config disk `name` in `dir` holding `coldscan.toml` and `files` (name, content) at
/// its root; attached with the serial `CONFIG`.
pub fn fat_config_disk(dir: &Path, name: &str, toml: &str, files: &[(&str, &[u8])]) -> Disk {
    let tree = dir.join(format!("{name}.tree"));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("coldscan.toml"), toml).unwrap();
    for (f, content) in files {
        std::fs::write(tree.join(f), content).unwrap();
    }
    let img = dir.join(name);
    output(Command::new("truncate").arg("-s").arg("16M").arg(&img));
    output(
        Command::new("mkfs.vfat")
            .args(["-n", "COLDSCANCFG"])
            .arg(&img),
    );
    for entry in std::fs::read_dir(&tree).unwrap() {
        output(
            Command::new("mcopy")
                .args(["-s", "-i"])
                .arg(&img)
                .arg(entry.unwrap().path())
                .arg("::"),
        );
    }
    Disk {
        path: img,
        format: "raw",
        serial: "CONFIG".into(),
    }
}

/// The reports waiting in the spool of a FAT config disk: (file name, report bytes as spooled).
pub fn spooled_reports(img: &Path) -> Vec<(String, Vec<u8>)> {
    let listing = Command::new("mdir")
        .args(["-b", "-i"])
        .arg(img)
        .arg(format!("::/{SPOOL_DIR}"))
        .output()
        .unwrap();
    if !listing.status.success() {
        // No spool directory at all.
        return Vec::new();
    }
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let path = line.trim();
        let Some(name) = path.rsplit('/').next() else {
            continue;
        };
        if !name.ends_with(".json") {
            continue;
        }
        let text = output(
            Command::new("mtype")
                .arg("-i")
                .arg(img)
                .arg(format!("::/{SPOOL_DIR}/{name}")),
        );
        out.push((name.to_string(), text.into_bytes()));
    }
    out
}

/// The idempotency key in a spool file name `NANOS-KEY.json`.
pub fn spool_key(name: &str) -> &str {
    let stem = name.strip_suffix(".json").unwrap();
    stem.split_once('-').unwrap().1
}

/// `fsck.vfat -n`: the filesystem is clean (the appliance unmounted it before power off).
pub fn assert_fat_clean(img: &Path) {
    let out = Command::new("fsck.vfat")
        .arg("-n")
        .arg(img)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "fsck.vfat -n: {text}");
    assert!(!text.contains("Dirty bit"), "left mounted: {text}");
}
