//! A test-only writer of Linux MD RAID1 members with a version 1.2 superblock (the kernel's
//! `include/uapi/linux/raid/md_p.h`, `struct mdp_superblock_1`): `mdadm --create` needs the md
//! driver, absent here. The writer's output is checked with `mdadm --examine`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::ensure;

use crate::cache;
use crate::images::{self, ExtOptions};
use crate::lvm::{LvmFixture, MANIFEST};
use crate::manifest;
use crate::tools::tool;
use crate::trees::{self, MIB};

/// Superblock magic.
const MD_MAGIC: u32 = 0xa92b_4efc;
/// Data offset of each member (sectors): 1 MiB, as mdadm chooses for small devices.
const DATA_OFFSET: u64 = 2048;

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// The 1.2 superblock (256 bytes + 2 device roles) of member `dev_number` of a RAID1 array of
/// `members` devices, each holding `data_sectors` of data.
pub fn superblock_1_2(dev_number: u32, members: u32, data_sectors: u64, name: &str) -> Vec<u8> {
    let mut b = vec![0u8; 256 + 2 * members as usize];
    put(&mut b, 0, &MD_MAGIC.to_le_bytes());
    put(&mut b, 4, &1u32.to_le_bytes());
    put(
        &mut b,
        16,
        &[
            0x0b, 0x5e, 0x55, 0xed, 0xad, 0x1d, 0x40, 0x00, 0x80, 0, 0, 0, 0, 0, 0, 0x01,
        ],
    );
    put(&mut b, 32, name.as_bytes());
    put(&mut b, 64, &1_700_000_000u64.to_le_bytes());
    put(&mut b, 72, &1u32.to_le_bytes()); // level 1
    put(&mut b, 80, &data_sectors.to_le_bytes()); // size (used per device)
    put(&mut b, 92, &members.to_le_bytes());
    put(&mut b, 128, &DATA_OFFSET.to_le_bytes());
    put(&mut b, 136, &data_sectors.to_le_bytes());
    put(&mut b, 144, &8u64.to_le_bytes()); // super_offset: 4 KiB
    put(&mut b, 160, &dev_number.to_le_bytes());
    put(&mut b, 168, &[0x11; 16]);
    b[168 + 15] = dev_number as u8;
    put(&mut b, 192, &1_700_000_000u64.to_le_bytes());
    put(&mut b, 200, &10u64.to_le_bytes()); // events
    put(&mut b, 208, &u64::MAX.to_le_bytes()); // resync_offset: clean
    put(&mut b, 220, &members.to_le_bytes()); // max_dev
    for i in 0..members {
        put(&mut b, 256 + 2 * i as usize, &(i as u16).to_le_bytes());
    }
    // calc_sb_1_csum: 32-bit little-endian words summed in 64 bits, folded.
    let sum: u64 = b
        .chunks(4)
        .map(|w| {
            let mut x = [0u8; 4];
            x[..w.len()].copy_from_slice(w);
            u64::from(u32::from_le_bytes(x))
        })
        .sum();
    let csum = ((sum & 0xffff_ffff) + (sum >> 32)) as u32;
    put(&mut b, 216, &csum.to_le_bytes());
    b
}

/// Two whole-disk RAID1 members (`disk1.img`, `disk2.img`, 1.2 superblocks) of array `md0`
/// holding an ext4 filesystem.
pub fn raid1() -> anyhow::Result<LvmFixture> {
    let dir = cache::cached("md-raid1", &|dir: &Path| {
        let mut tree = trees::rich_tree("md raid1");
        let size = 40 * MIB;
        let data = size - DATA_OFFSET * 512;
        let fs_img = dir.join("data.ext4");
        images::ext_image(&fs_img, data, &tree, &ExtOptions::ext4())?;
        tree.dir("/lost+found");
        for i in 0..2u32 {
            let disk = dir.join(format!("disk{}.img", i + 1));
            images::sparse_file(&disk, size)?;
            images::place(&disk, DATA_OFFSET * 512, &fs_img, data)?;
            images::patch(&disk, 4096, &superblock_1_2(i, 2, data / 512, "md0"))?;
            let out = tool("mdadm", &["--examine".as_ref(), disk.as_os_str()])?;
            let text = out.stdout_text();
            ensure!(
                text.contains("Raid Level : raid1")
                    && text.contains("Checksum : ")
                    && text.contains("correct"),
                "mdadm --examine does not accept the written superblock:\n{text}"
            );
        }
        fs::remove_file(&fs_img)?;
        manifest::write_jsonl(&dir.join(MANIFEST), &manifest::from_tree(0, "ext4", &tree))?;
        fs::write(dir.join(crate::lvm::DETECTIONS), "")?;
        Ok(())
    })?;
    let disks: Vec<PathBuf> = (1..=2).map(|i| dir.join(format!("disk{i}.img"))).collect();
    Ok(LvmFixture { dir, disks })
}
