//! RHEL-style disk, as Anaconda's default scheme lays it out: GPT with an EFI system partition
//! (FAT32, 1), `/boot` on XFS (2), and an LVM2 PV (3) whose VG `rhel` holds `root` (XFS),
//! `home` (XFS) and `swap`. The XFS volumes are written through loop mounts by the kernel
//! ([`crate::xfs::xfs_image`]); LVs are laid out by the real LVM tools and written at the PV
//! offsets they report ([`crate::lvm`]). The same disk as qcow2 in `disk.qcow2`.
//!
//! `root` carries what the ext4 and NTFS fixtures carry (deep trees, Unicode names, sparse and
//! large files, hard links, symlinks) plus a directory of 10,000 files (node directory), a file
//! of 3,000 extents (btree extent map), and Debian's clamav test files with EICAR.

use std::collections::BTreeMap;
use std::fs;

use crate::cache;
use crate::images::{self, PartSpec};
use crate::lvm::{
    layout, lvm, swap, with_volume, write_detections, write_lv, LoopDevice, LvmFixture,
    PlantedDetection, MANIFEST,
};
use crate::manifest;
use crate::tools::{check, command};
use crate::tree::{Flavour, Tree};
use crate::trees::{self, MIB};
use crate::xfs::{xfs_image, XfsOptions};

/// GPT partition type of the EFI system partition.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT partition type of an LVM PV.
const LVM_TYPE: &str = "E6D6D379-F507-44C2-A23C-238F2A3DF928";
/// GPT partition type of a Linux filesystem.
const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

const V5: XfsOptions = XfsOptions {
    crc: true,
    sector: 512,
};

/// The root LV's tree and the paths a scan must detect in it.
fn root_tree() -> anyhow::Result<(Tree, Vec<String>)> {
    let mut t = trees::rich_tree("rhel root");
    trees::add_deep_nesting(&mut t, 60);
    trees::add_many_files(&mut t, 10_000);
    trees::add_fragmented(&mut t, "/var/lib/fragmented.img", 3000);
    let (infected, malicious) = trees::infected_tree("rhel root")?;
    for (path, node) in infected.nodes {
        if !t.nodes.contains_key(&path) {
            t.add(&path, node);
        }
    }
    Ok((t.for_flavour(Flavour::Ext), malicious))
}

/// Builds (or reuses) the RHEL-style fixture.
pub fn rhel() -> anyhow::Result<LvmFixture> {
    let dir = cache::cached("lvm-rhel", &|dir| {
        let disk = dir.join("disk.img");
        images::sparse_file(&disk, 1000 * MIB)?;
        let part = |start_mib: u64, size_mib: u64, ptype: &str| PartSpec {
            start: start_mib * 2048,
            sectors: size_mib * 2048,
            ptype: ptype.into(),
            logical: false,
        };
        let placed = images::sfdisk_table(
            &disk,
            "gpt",
            &[
                part(1, 64, ESP_TYPE),
                part(65, 300, LINUX_TYPE),
                part(365, 620, LVM_TYPE),
            ],
        )?;
        let esp_tree = {
            let mut t = Tree::new();
            t.file("/EFI/BOOT/BOOTX64.EFI", b"not really a boot loader\n");
            t.random_file("/EFI/redhat/shimx64.efi", 900_000);
            t.file("/EFI/redhat/grub.cfg", b"set root=hd0,gpt2\n");
            t.for_flavour(Flavour::Fat)
        };
        let esp = dir.join("esp.img");
        images::fat_image(&esp, placed[0].size, 32, 512, &esp_tree)?;
        images::place(&disk, placed[0].start, &esp, placed[0].size)?;
        let boot_tree = {
            let mut t = trees::rich_tree("rhel boot");
            t.random_file("/vmlinuz-5.14.0-427.el9.x86_64", 12 * MIB + 5);
            t.for_flavour(Flavour::Ext)
        };
        let boot = dir.join("boot.xfs");
        xfs_image(&boot, placed[1].size, &boot_tree, V5)?;
        images::place(&disk, placed[1].start, &boot, placed[1].size)?;
        let (root_tree, malicious) = root_tree()?;
        let home_tree = trees::rich_tree("rhel home").for_flavour(Flavour::Ext);
        let pv = dir.join("pv.img");
        images::sparse_file(&pv, placed[2].size)?;
        {
            let l = LoopDevice::attach(&pv)?;
            lvm("pvcreate", &[&l], &["-q", &l.dev])?;
            lvm("vgcreate", &[&l], &["-q", "rhel", &l.dev])?;
            for (name, size) in [("swap", "32M"), ("home", "160M"), ("root", "400M")] {
                lvm(
                    "lvcreate",
                    &[&l],
                    &["-q", "-an", "-Zn", "-L", size, "-n", name, "rhel"],
                )?;
            }
            let lay = layout("rhel", &[&l])?;
            let files = BTreeMap::from([(l.dev.clone(), (pv.clone(), 0))]);
            let root = dir.join("root.xfs");
            xfs_image(&root, 400 * MIB, &root_tree, V5)?;
            write_lv(&lay, "root", &root, &files)?;
            fs::remove_file(&root)?;
            let home = dir.join("home.xfs");
            xfs_image(&home, 160 * MIB, &home_tree, V5)?;
            write_lv(&lay, "home", &home, &files)?;
            write_lv(&lay, "swap", &swap(dir, 32 * MIB)?, &files)?;
        }
        images::place(&disk, placed[2].start, &pv, placed[2].size)?;
        let mut records = with_volume(manifest::from_tree(1, "fat32", &esp_tree), 1, None);
        records.extend(with_volume(
            manifest::from_tree(2, "xfs", &boot_tree),
            2,
            None,
        ));
        records.extend(with_volume(
            manifest::from_tree(3, "xfs", &root_tree),
            3,
            Some("rhel/root"),
        ));
        records.extend(with_volume(
            manifest::from_tree(3, "xfs", &home_tree),
            3,
            Some("rhel/home"),
        ));
        records.sort();
        manifest::write_jsonl(&dir.join(MANIFEST), &records)?;
        let planted: Vec<PlantedDetection> = malicious
            .into_iter()
            .map(|path| PlantedDetection {
                partition: 3,
                volume: Some("rhel/root".into()),
                path,
            })
            .collect();
        write_detections(dir, &planted)?;
        for f in ["esp.img", "boot.xfs", "home.xfs", "swap.img", "pv.img"] {
            fs::remove_file(dir.join(f))?;
        }
        check(
            command("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&disk)
                .arg(dir.join("disk.qcow2")),
        )?;
        Ok(())
    })?;
    Ok(LvmFixture {
        disks: vec![dir.join("disk.img")],
        dir,
    })
}
