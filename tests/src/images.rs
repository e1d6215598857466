//! Filesystem images and partitioned disks, made as plain (sparse) files with the real tools:
//! `mke2fs -d`, `mkfs.vfat` + `mcopy -s`, `mkntfs` + the libntfs-3g populator, `sfdisk` /
//! `fdisk -b 4096`. No root, no mounts, no network.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};

use crate::tools::{check_with, command, tool};
use crate::tree::{Node, Tree};

/// Host path of a tree path inside `root`.
pub fn host_path(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Writes `tree` into the (new, empty) host directory `root`: directories, files, sparse files
/// with real holes, symlinks, then hard links.
pub fn materialize(tree: &Tree, root: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(root)?;
    for (path, node) in &tree.nodes {
        let host = host_path(root, path);
        match node {
            Node::Dir => fs::create_dir_all(&host)?,
            Node::File(c) => {
                let mut f =
                    File::create(&host).with_context(|| format!("creating {}", host.display()))?;
                c.for_each_chunk(&mut |b| f.write_all(b))?;
            }
            Node::Sparse { size, runs } => {
                let f = File::create(&host)?;
                f.set_len(*size)?;
                for (off, c) in runs {
                    let mut pos = *off;
                    c.for_each_chunk(&mut |b| {
                        f.write_all_at(b, pos)?;
                        pos += b.len() as u64;
                        Ok(())
                    })?;
                }
            }
            Node::Symlink(t) => std::os::unix::fs::symlink(t, &host)?,
            Node::HardLink(_) => {}
        }
    }
    for (path, node) in &tree.nodes {
        if let Node::HardLink(t) = node {
            fs::hard_link(host_path(root, t), host_path(root, path))?;
        }
    }
    Ok(())
}

/// Creates (or replaces) a sparse file of `size` bytes.
pub fn sparse_file(path: &Path, size: u64) -> anyhow::Result<()> {
    let _ = fs::remove_file(path);
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)?;
    Ok(())
}

/// Options for an ext2/3/4 image.
#[derive(Debug, Clone)]
pub struct ExtOptions {
    /// `-t` type: `ext2`, `ext3` or `ext4`.
    pub fs_type: &'static str,
    /// Block size.
    pub block_size: u32,
    /// Extra `mke2fs` arguments (`-O ^metadata_csum`, `-N 20000`...).
    pub extra: Vec<String>,
}

impl ExtOptions {
    /// Plain ext4 with 4096-byte blocks.
    pub fn ext4() -> ExtOptions {
        ExtOptions {
            fs_type: "ext4",
            block_size: 4096,
            extra: Vec::new(),
        }
    }
}

/// Makes an ext2/3/4 image of `size` bytes at `img` holding `tree` (`mke2fs -d`).
pub fn ext_image(img: &Path, size: u64, tree: &Tree, opts: &ExtOptions) -> anyhow::Result<()> {
    let staging = img.with_extension("staging");
    let _ = fs::remove_dir_all(&staging);
    materialize(tree, &staging)?;
    sparse_file(img, size)?;
    let mut cmd = command("mke2fs");
    cmd.env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args([
            "-F",
            "-q",
            "-t",
            opts.fs_type,
            "-b",
            &opts.block_size.to_string(),
        ])
        .args([
            "-U",
            "0b5e55ed-c01d-4a11-9e55-000000000001",
            "-E",
            "root_owner=0:0,hash_seed=0b5e55ed-c01d-4a11-9e55-000000000002",
        ])
        .args(&opts.extra)
        .arg("-d")
        .arg(&staging)
        .arg(img);
    crate::tools::check(&mut cmd)?;
    fs::remove_dir_all(&staging)?;
    Ok(())
}

/// Makes a FAT image of `size` bytes (`fat_bits` 12/16/32, logical sector size `sector`)
/// holding `tree`, with `mkfs.vfat` and `mcopy -s`.
pub fn fat_image(
    img: &Path,
    size: u64,
    fat_bits: u32,
    sector: u32,
    tree: &Tree,
) -> anyhow::Result<()> {
    let staging = img.with_extension("staging");
    let _ = fs::remove_dir_all(&staging);
    materialize(tree, &staging)?;
    let _ = fs::remove_file(img);
    tool(
        "mkfs.vfat",
        &[
            "-C".to_string(),
            "-F".into(),
            fat_bits.to_string(),
            "-S".into(),
            sector.to_string(),
            "-i".into(),
            "0b5e55ed".into(),
            "-n".into(),
            "COLDSCAN".into(),
            img.display().to_string(),
            (size / 1024).to_string(),
        ],
    )?;
    let mut top: Vec<PathBuf> = fs::read_dir(&staging)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    top.sort();
    if !top.is_empty() {
        let mut cmd = command("mcopy");
        cmd.arg("-s")
            .arg("-Q")
            .arg("-i")
            .arg(img)
            .args(&top)
            .arg("::/");
        crate::tools::check(&mut cmd)?;
    }
    fs::remove_dir_all(&staging)?;
    Ok(())
}

/// One partition to create.
#[derive(Debug, Clone)]
pub struct PartSpec {
    /// First sector.
    pub start: u64,
    /// Length in sectors.
    pub sectors: u64,
    /// sfdisk type (`L`, `U`, `0x83`, a GUID...); for GPT on 4K disks an fdisk type number.
    pub ptype: String,
    /// MBR: a logical partition inside the extended one.
    pub logical: bool,
}

/// A partition as created, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Partition index as Linux (and coldscan) numbers it.
    pub index: u32,
    /// Byte offset.
    pub start: u64,
    /// Byte length.
    pub size: u64,
}

/// Writes a partition table with `sfdisk` (512-byte sectors) and returns the partitions as
/// `sfdisk --json` reads them back. `label` is `gpt` or `dos`; for `dos`, an extended
/// partition covering every logical one is added after the primaries.
pub fn sfdisk_table(disk: &Path, label: &str, parts: &[PartSpec]) -> anyhow::Result<Vec<Placed>> {
    let mut script = format!("label: {label}\nunit: sectors\n");
    if label == "gpt" {
        script.push_str("label-id: 0B5E55ED-C01D-4A11-9E55-0000000000D1\n");
    } else {
        script.push_str("label-id: 0x0b5e55ed\n");
    }
    let logicals: Vec<&PartSpec> = parts.iter().filter(|p| p.logical).collect();
    for p in parts.iter().filter(|p| !p.logical) {
        script.push_str(&format!(
            "start={}, size={}, type={}\n",
            p.start, p.sectors, p.ptype
        ));
    }
    if let (Some(first), Some(last)) = (logicals.first(), logicals.last()) {
        // The extended partition starts one alignment unit before the first logical, leaving
        // room for its EBR.
        let ext_start = first.start - 2048;
        script.push_str(&format!(
            "start={ext_start}, size={}, type=5\n",
            last.start + last.sectors - ext_start
        ));
        for p in &logicals {
            script.push_str(&format!(
                "start={}, size={}, type={}\n",
                p.start, p.sectors, p.ptype
            ));
        }
    }
    check_with(
        command("sfdisk")
            .args(["-q", "--no-reread", "--no-tell-kernel", "--wipe", "never"])
            .arg(disk),
        script.as_bytes(),
    )?;
    read_back(disk)
}

/// Writes a GPT with 4096-byte logical sectors with `fdisk -b 4096` (sfdisk 2.38 cannot set
/// the sector size of an image file). `types` are fdisk's GPT type numbers (20 Linux
/// filesystem, 11 Microsoft basic data, 1 EFI System).
pub fn gpt_4k_table(disk: &Path, parts: &[PartSpec]) -> anyhow::Result<Vec<Placed>> {
    let mut script = String::from("g\n");
    for (i, p) in parts.iter().enumerate() {
        script.push_str(&format!(
            "n\n{}\n{}\n{}\n",
            i + 1,
            p.start,
            p.start + p.sectors - 1
        ));
    }
    for (i, p) in parts.iter().enumerate() {
        if parts.len() == 1 {
            script.push_str(&format!("t\n{}\n", p.ptype));
        } else {
            script.push_str(&format!("t\n{}\n{}\n", i + 1, p.ptype));
        }
    }
    script.push_str("w\n");
    check_with(
        command("fdisk").args(["-b", "4096"]).arg(disk),
        script.as_bytes(),
    )?;
    Ok(parts
        .iter()
        .zip(1u32..)
        .map(|(p, index)| Placed {
            index,
            start: p.start * 4096,
            size: p.sectors * 4096,
        })
        .collect())
}

/// The partitions of a 512-byte-sector table as `sfdisk --json` reads them.
fn read_back(disk: &Path) -> anyhow::Result<Vec<Placed>> {
    let mut cmd = command("sfdisk");
    cmd.arg("-J").arg(disk);
    let out = crate::tools::check(&mut cmd)?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let parts = v["partitiontable"]["partitions"]
        .as_array()
        .context("sfdisk -J: no partitions")?;
    let mut out = Vec::new();
    for p in parts {
        // The extended partition is a container, not a volume.
        if matches!(p["type"].as_str(), Some("5" | "f" | "85")) {
            continue;
        }
        let node = p["node"].as_str().context("node")?;
        let digits: String = node
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let index: u32 = digits.parse().context("partition number")?;
        let start = p["start"].as_u64().context("start")?;
        let size = p["size"].as_u64().context("size")?;
        out.push(Placed {
            index,
            start: start * 512,
            size: size * 512,
        });
    }
    Ok(out)
}

/// Copies the image `img` into `disk` at byte `offset`, skipping all-zero blocks so that the
/// disk stays sparse (the disk is new, so skipped blocks are zeros already).
pub fn place(disk: &Path, offset: u64, img: &Path, room: u64) -> anyhow::Result<()> {
    let src = File::open(img)?;
    let len = src.metadata()?.len();
    ensure!(
        len <= room,
        "{}: {len} bytes do not fit in {room}",
        img.display()
    );
    let dst = OpenOptions::new().write(true).open(disk)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut pos = 0u64;
    while pos < len {
        let n = usize::try_from((len - pos).min(buf.len() as u64))?;
        src.read_exact_at(&mut buf[..n], pos)?;
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], offset + pos)?;
        }
        pos += n as u64;
    }
    Ok(())
}

/// Overwrites bytes of a file in place (fixture corruption).
pub fn patch(path: &Path, offset: u64, bytes: &[u8]) -> anyhow::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.write_all_at(bytes, offset)?;
    Ok(())
}

/// Reads `len` bytes at `offset` of a file.
pub fn read_at(path: &Path, offset: u64, len: usize) -> anyhow::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Sets the last LBA of GPT entry `index` (0-based) in both the primary and the backup table
/// of `disk`, recomputing the entry-array and header CRC32s (UEFI 2.10 section 5.3) so that
/// the tables stay valid.
pub fn gpt_set_last_lba(disk: &Path, sector: u64, index: u64, last_lba: u64) -> anyhow::Result<()> {
    let primary = read_at(disk, sector, 512)?;
    ensure!(&primary[..8] == b"EFI PART", "no GPT header at LBA 1");
    let backup_lba = le64(&primary, 0x20);
    for header_lba in [1, backup_lba] {
        let mut h = read_at(disk, header_lba * sector, 512)?;
        ensure!(&h[..8] == b"EFI PART", "no GPT header at LBA {header_lba}");
        let entries_lba = le64(&h, 0x48);
        let count = u64::from(le32(&h, 0x50));
        let size = u64::from(le32(&h, 0x54));
        let mut entries = read_at(disk, entries_lba * sector, usize::try_from(count * size)?)?;
        let at = usize::try_from(index * size + 0x28)?;
        entries[at..at + 8].copy_from_slice(&last_lba.to_le_bytes());
        patch(disk, entries_lba * sector, &entries)?;
        h[0x58..0x5c].copy_from_slice(&crc32fast::hash(&entries).to_le_bytes());
        let header_size = usize::try_from(le32(&h, 0x0c))?;
        h[0x10..0x14].copy_from_slice(&[0; 4]);
        let crc = crc32fast::hash(&h[..header_size]);
        h[0x10..0x14].copy_from_slice(&crc.to_le_bytes());
        patch(disk, header_lba * sector, &h[..header_size])?;
    }
    Ok(())
}
