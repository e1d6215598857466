//! A thin pool fixture: the VG is made by the real LVM tools, the thin pool and thin LVs added to
//! its metadata with `vgcfgrestore --force` (lvm2 refuses to create thin pools without
//! device-mapper), and the pool's metadata written by `thin_restore` and checked by
//! `thin_check` (thin-provisioning-tools).

use std::collections::BTreeMap;
use std::fs;

use anyhow::Context;

use crate::cache;
use crate::images;
use crate::lvm::{
    ext4, layout, lvm, with_volume, write_detections, write_lv, LoopDevice, LvmFixture, MANIFEST,
};
use crate::manifest;
use crate::tools::{check, command};
use crate::trees::{self, MIB};

/// The thin pool LV sections added to a VG's metadata by [`thin_pool`]: lvm2 refuses to create
/// thin pools without device-mapper, but `vgcfgrestore --force` accepts them.
fn thin_sections(pool_extents: u64, thins: &[(&str, u64, u64)]) -> String {
    let mut s = format!(
        "\t\tpool {{\n\t\t\tid = \"0b5e55-0000-0000-0000-0000-0000-000001\"\n\t\t\tstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\n\t\t\tflags = []\n\t\t\tsegment_count = 1\n\t\t\tsegment1 {{\n\t\t\t\tstart_extent = 0\n\t\t\t\textent_count = {pool_extents}\n\t\t\t\ttype = \"thin-pool\"\n\t\t\t\tmetadata = \"pool_tmeta\"\n\t\t\t\tpool = \"pool_tdata\"\n\t\t\t\ttransaction_id = {}\n\t\t\t\tchunk_size = 128\n\t\t\t\tdiscards = \"passdown\"\n\t\t\t\tzero_new_blocks = 0\n\t\t\t}}\n\t\t}}\n",
        thins.len()
    );
    for (i, (name, extents, dev)) in thins.iter().enumerate() {
        s.push_str(&format!(
            "\t\t{name} {{\n\t\t\tid = \"0b5e55-0000-0000-0000-0000-0000-00000{}\"\n\t\t\tstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\n\t\t\tflags = []\n\t\t\tsegment_count = 1\n\t\t\tsegment1 {{\n\t\t\t\tstart_extent = 0\n\t\t\t\textent_count = {extents}\n\t\t\t\ttype = \"thin\"\n\t\t\t\tthin_pool = \"pool\"\n\t\t\t\ttransaction_id = {i}\n\t\t\t\tdevice_id = {dev}\n\t\t\t}}\n\t\t}}\n",
            i + 2
        ));
    }
    s
}

/// A whole-disk PV whose VG `tvg` holds a thin pool (64 KiB blocks) with two thin LVs,
/// `thin1` and `thin2`, each an ext4 filesystem: the pool's metadata is written by
/// `thin_restore` from a mapping that scatters `thin1`'s blocks over the pool (block `v` at
/// `7v mod 512`) and leaves all-zero blocks unmapped; the VG metadata is the real tools' with
/// the pool and thin LVs added through `vgcfgrestore --force`.
pub fn thin_pool() -> anyhow::Result<LvmFixture> {
    let dir = cache::cached("lvm-thin", &|dir| {
        const BLOCK: u64 = 64 << 10;
        const THIN_BLOCKS: u64 = 512; // 32 MiB per thin LV
        let disk = dir.join("disk.img");
        images::sparse_file(&disk, 128 * MIB)?;
        let l = LoopDevice::attach(&disk)?;
        lvm("pvcreate", &[&l], &["-q", &l.dev])?;
        lvm("vgcreate", &[&l], &["-q", "tvg", &l.dev])?;
        lvm(
            "lvcreate",
            &[&l],
            &["-q", "-an", "-Zn", "-L", "4M", "-n", "tm", "tvg"],
        )?;
        lvm(
            "lvcreate",
            &[&l],
            &["-q", "-an", "-Zn", "-L", "64M", "-n", "td", "tvg"],
        )?;
        let backup = dir.join("tvg.txt");
        lvm(
            "vgcfgbackup",
            &[&l],
            &["-q", "-f", backup.to_str().context("path")?, "tvg"],
        )?;
        let text = fs::read_to_string(&backup)?
            .replacen("\t\ttm {", "\t\tpool_tmeta {", 1)
            .replacen("\t\ttd {", "\t\tpool_tdata {", 1)
            .replace(
                "status = [\"READ\", \"WRITE\", \"VISIBLE\"]",
                "status = [\"READ\", \"WRITE\"]",
            );
        let end = text
            .rfind("\t}\n\n}")
            .context("end of logical_volumes in vgcfgbackup")?;
        let text = format!(
            "{}{}{}",
            &text[..end],
            thin_sections(16, &[("thin1", 8, 1), ("thin2", 8, 2)]),
            &text[end..]
        );
        fs::write(&backup, text)?;
        lvm(
            "vgcfgrestore",
            &[&l],
            &[
                "-q",
                "--force",
                "-f",
                backup.to_str().context("path")?,
                "tvg",
            ],
        )?;
        let lay = layout("tvg", &[&l])?;
        let files = BTreeMap::from([(l.dev.clone(), (disk.clone(), 0))]);
        // The thin LVs' filesystems, their blocks placed in the pool's data LV.
        let data = dir.join("tdata.img");
        images::sparse_file(&data, 64 * MIB)?;
        let mut xml = String::from(
            "<superblock uuid=\"\" time=\"0\" transaction=\"2\" flags=\"0\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"1024\">\n",
        );
        let mut records = Vec::new();
        use std::os::unix::fs::FileExt;
        let data_file = fs::OpenOptions::new().write(true).open(&data)?;
        for (dev, name) in [(1u64, "thin1"), (2, "thin2")] {
            let mut tree = trees::rich_tree(&format!("thin lv {name}"));
            let img = ext4(dir, name, THIN_BLOCKS * BLOCK, &mut tree)?;
            let bytes = fs::read(&img)?;
            fs::remove_file(&img)?;
            xml.push_str(&format!(
                "<device dev_id=\"{dev}\" mapped_blocks=\"0\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n"
            ));
            for v in 0..THIN_BLOCKS {
                let chunk = &bytes[(v * BLOCK) as usize..((v + 1) * BLOCK) as usize];
                if chunk.iter().all(|&b| b == 0) {
                    continue;
                }
                let db = if dev == 1 {
                    v * 7 % THIN_BLOCKS
                } else {
                    THIN_BLOCKS + v
                };
                data_file.write_all_at(chunk, db * BLOCK)?;
                xml.push_str(&format!(
                    "<single_mapping origin_block=\"{v}\" data_block=\"{db}\" time=\"0\"/>\n"
                ));
            }
            xml.push_str("</device>\n");
            records.extend(with_volume(
                manifest::from_tree(0, "ext4", &tree),
                0,
                Some(&format!("tvg/{name}")),
            ));
        }
        xml.push_str("</superblock>\n");
        let xml_path = dir.join("thin.xml");
        fs::write(&xml_path, xml)?;
        let meta = dir.join("tmeta.img");
        images::sparse_file(&meta, 4 * MIB)?;
        check(
            command("thin_restore")
                .arg("-i")
                .arg(&xml_path)
                .arg("-o")
                .arg(&meta),
        )?;
        check(command("thin_check").arg(&meta))?;
        write_lv(&lay, "pool_tmeta", &meta, &files)?;
        write_lv(&lay, "pool_tdata", &data, &files)?;
        drop(l);
        for f in [meta, data, xml_path, backup] {
            fs::remove_file(f)?;
        }
        records.sort();
        manifest::write_jsonl(&dir.join(MANIFEST), &records)?;
        write_detections(dir, &[])?;
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
