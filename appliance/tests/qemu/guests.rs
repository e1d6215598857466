//! Guest disks for the appliance's end-to-end tests, built by the fixture factory's helpers and
//! real tools (mkfs, qemu-img, libntfs-3g): planted EICAR (assembled at run time) and Debian's
//! clamav-testfiles `clam.exe`, never committed.

use std::path::{Path, PathBuf};
use std::process::Command;

use coldscan_tests::content::Content;
use coldscan_tests::images::{ext_image, fat_image, ExtOptions};
use coldscan_tests::ntfs::ntfs_image;
use coldscan_tests::testdb;
use coldscan_tests::tree::Tree;

use super::Disk;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn clam_exe() -> Vec<u8> {
    std::fs::read(Path::new(testdb::TESTFILES_DIR).join("clam.exe")).unwrap()
}

/// The qcow2 chain: a clean ext4 base and a top layer holding only what changed when the
/// planted files were added.
pub fn qcow2_chain(dir: &Path) -> (Disk, PathBuf) {
    let mut clean = Tree::new();
    clean.file("/etc/hostname", b"guest-one\n");
    clean.file("/home/user/notes.txt", b"nothing to see\n");
    let mut infected = clean.clone();
    infected.file("/home/user/eicar.com", &testdb::eicar());
    infected.file("/opt/tools/clam.exe", &clam_exe());
    let base_raw = dir.join("base.raw");
    let new_raw = dir.join("new.raw");
    ext_image(&base_raw, 16 << 20, &clean, &ExtOptions::ext4()).unwrap();
    std::fs::copy(&base_raw, &new_raw).unwrap();
    // Same filesystem, files added by debugfs-free means: rebuild with the same options.
    ext_image(&new_raw, 16 << 20, &infected, &ExtOptions::ext4()).unwrap();
    let base = dir.join("base.qcow2");
    let top = dir.join("top.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-O", "qcow2"])
        .arg(&base_raw)
        .arg(&base));
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(&top));
    coldscan_tests::layers::write_changes(&top, "qcow2", &base_raw, &new_raw, dir).unwrap();
    (
        Disk {
            path: top,
            format: "qcow2",
            serial: "GUEST-QCOW2".into(),
        },
        base,
    )
}

pub fn ntfs_vhdx(dir: &Path) -> Disk {
    let mut tree = Tree::new();
    tree.file("/Users/x/doc.txt", b"quarterly numbers\n");
    tree.stream(
        "/Users/x/doc.txt",
        "hidden",
        Content::Bytes(testdb::eicar()),
    );
    tree.dir("/Compressed");
    tree.compressed_dirs.insert("/Compressed".into());
    tree.file("/Compressed/clam.exe", &clam_exe());
    let raw = dir.join("ntfs.raw");
    ntfs_image(&raw, 32 << 20, 512, &tree).unwrap();
    let vhdx = dir.join("ntfs.vhdx");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-O", "vhdx"])
        .arg(&raw)
        .arg(&vhdx));
    Disk {
        path: vhdx,
        format: "vhdx",
        serial: "GUEST-NTFS".into(),
    }
}

pub fn fat_clean(dir: &Path, name: &str, serial: &str) -> Disk {
    let mut tree = Tree::new();
    tree.file("/README.TXT", b"clean disk\n");
    tree.file("/DOCS/LETTER.TXT", b"dear reader\n");
    let raw = dir.join(name);
    fat_image(&raw, 16 << 20, 16, 512, &tree).unwrap();
    Disk {
        path: raw,
        format: "raw",
        serial: serial.into(),
    }
}

/// Overwrites the inode table block holding the root directory's inode with garbage.
pub fn corrupt_ext_root(img: &Path) {
    let out = Command::new("debugfs")
        .args(["-R", "imap <2>"])
        .arg(img)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // "Inode 2 is part of block group 0\n\tlocated at block 1234, offset 0x0100"
    let block: u64 = text
        .split("located at block ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or_else(|| panic!("debugfs imap: {text}"));
    let garbage = vec![0xA5u8; 4096];
    coldscan_tests::images::patch(img, block * 4096, &garbage).unwrap();
}
