//! A FAT32 writer for the ESP's few files (Microsoft "FAT: General Overview of On-Disk Format"
//! 1.03: section 3 boot sector and BPB, 4 FAT, 5 FSInfo, 6 directory entries).
//!
//! The whole volume is laid out at once: every directory and file gets contiguous clusters in
//! path order, names are 8.3 short names only (the ESP needs no long names), and every timestamp
//! is the same fixed one. (The `fatfs` crate 0.3 writes long-name entries for `.`/`..` and a wrong
//! `..` cluster under the root, which `fsck.vfat` rejects.)

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};

const SECTOR: usize = 512;
const RESERVED_SECTORS: u32 = 32;
const FATS: u32 = 2;
/// FAT32 needs at least this many clusters (fewer makes it FAT16 by definition).
const MIN_CLUSTERS: u32 = 65_525;
const END_OF_CHAIN: u32 = 0x0fff_ffff;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_VOLUME_ID: u8 = 0x08;
const ROOT_CLUSTER: u32 = 2;

/// A FAT date and time (local time fields as FAT stores them).
#[derive(Debug, Clone, Copy)]
pub struct FatTime {
    pub date: u16,
    pub time: u16,
}

impl FatTime {
    /// From a civil date and time, clamped to FAT's 1980-2107 range.
    pub fn new(year: i64, month: u32, day: u32, secs_of_day: u64) -> Self {
        let (year, month, day, secs) = match year {
            y if y < 1980 => (1980, 1, 1, 0),
            y if y > 2107 => (2107, 12, 31, 86_399),
            y => (y, month, day, secs_of_day),
        };
        let date = (((year - 1980) as u16) << 9) | ((month as u16) << 5) | day as u16;
        let time = (((secs / 3600) as u16) << 11)
            | ((((secs / 60) % 60) as u16) << 5)
            | ((secs % 60) / 2) as u16;
        Self { date, time }
    }
}

/// A node of the tree to write.
enum Node<'a> {
    Dir(BTreeMap<String, Node<'a>>),
    File(&'a [u8]),
}

/// Formats `volume` as FAT32 holding `files` (`EFI/BOOT/BOOTX64.EFI` style paths).
pub fn write(
    volume: &mut [u8],
    files: &[(&str, &[u8])],
    cluster_size: u32,
    volume_id: u32,
    label: &[u8; 11],
    hidden_sectors: u32,
    time: FatTime,
) -> Result<()> {
    ensure!(
        volume.len() % SECTOR == 0,
        "volume size not a multiple of {SECTOR}"
    );
    let total_sectors = u32::try_from(volume.len() / SECTOR).context("volume too large")?;
    let spc = cluster_size / SECTOR as u32;
    ensure!(
        spc.is_power_of_two() && spc <= 128,
        "bad cluster size {cluster_size}"
    );
    let fat_sectors = ((total_sectors - RESERVED_SECTORS) / spc + 2).div_ceil(SECTOR as u32 / 4);
    let data_start = RESERVED_SECTORS + FATS * fat_sectors;
    let clusters = (total_sectors - data_start) / spc;
    ensure!(
        clusters >= MIN_CLUSTERS,
        "{clusters} clusters of {cluster_size} bytes are too few for FAT32"
    );

    let mut root = BTreeMap::new();
    for (path, data) in files {
        let parts: Vec<&str> = path.split('/').collect();
        let mut dir = &mut root;
        for (i, part) in parts.iter().enumerate() {
            short_name(part)?;
            if i + 1 == parts.len() {
                ensure!(!dir.contains_key(*part), "{path} given twice");
                dir.insert(part.to_string(), Node::File(data));
            } else {
                let Node::Dir(d) = dir
                    .entry(part.to_string())
                    .or_insert_with(|| Node::Dir(BTreeMap::new()))
                else {
                    bail!("{path}: {part} is a file");
                };
                dir = d;
            }
        }
    }

    volume.fill(0);
    let mut fat = vec![0u32; clusters as usize + 2];
    fat[0] = 0x0fff_fff8;
    fat[1] = END_OF_CHAIN;
    let mut next = ROOT_CLUSTER;
    let mut w = Layout {
        volume,
        fat: &mut fat,
        next: &mut next,
        clusters,
        spc,
        data_start,
        time,
    };
    let root_cluster = w.alloc(0)?;
    w.dir(&root, root_cluster, 0, Some(label))?;
    let used = next - ROOT_CLUSTER;

    // Boot sector and its backup at sector 6.
    let mut bs = [0u8; SECTOR];
    bs[0..3].copy_from_slice(&[0xeb, 0x58, 0x90]);
    bs[3..11].copy_from_slice(b"COLDSCAN");
    bs[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    bs[13] = spc as u8;
    bs[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
    bs[16] = FATS as u8;
    bs[21] = 0xf8;
    bs[24..26].copy_from_slice(&63u16.to_le_bytes());
    bs[26..28].copy_from_slice(&255u16.to_le_bytes());
    bs[28..32].copy_from_slice(&hidden_sectors.to_le_bytes());
    bs[32..36].copy_from_slice(&total_sectors.to_le_bytes());
    bs[36..40].copy_from_slice(&fat_sectors.to_le_bytes());
    bs[44..48].copy_from_slice(&ROOT_CLUSTER.to_le_bytes());
    bs[48..50].copy_from_slice(&1u16.to_le_bytes()); // FSInfo sector
    bs[50..52].copy_from_slice(&6u16.to_le_bytes()); // backup boot sector
    bs[64] = 0x80;
    bs[66] = 0x29;
    bs[67..71].copy_from_slice(&volume_id.to_le_bytes());
    bs[71..82].copy_from_slice(label);
    bs[82..90].copy_from_slice(b"FAT32   ");
    bs[510] = 0x55;
    bs[511] = 0xaa;
    let mut info = [0u8; SECTOR];
    info[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    info[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    info[488..492].copy_from_slice(&(clusters - used).to_le_bytes());
    info[492..496].copy_from_slice(&next.to_le_bytes());
    info[508..512].copy_from_slice(&0xaa55_0000u32.to_le_bytes());
    for base in [0usize, 6] {
        volume[base * SECTOR..(base + 1) * SECTOR].copy_from_slice(&bs);
        volume[(base + 1) * SECTOR..(base + 2) * SECTOR].copy_from_slice(&info);
        volume[(base + 2) * SECTOR + 508..(base + 3) * SECTOR]
            .copy_from_slice(&0xaa55_0000u32.to_le_bytes());
    }
    let fat_bytes: Vec<u8> = fat.iter().flat_map(|e| e.to_le_bytes()).collect();
    for i in 0..FATS {
        let start = (RESERVED_SECTORS + i * fat_sectors) as usize * SECTOR;
        volume[start..start + fat_bytes.len()].copy_from_slice(&fat_bytes);
    }
    Ok(())
}

struct Layout<'v> {
    volume: &'v mut [u8],
    fat: &'v mut [u32],
    next: &'v mut u32,
    clusters: u32,
    spc: u32,
    data_start: u32,
    time: FatTime,
}

impl Layout<'_> {
    fn cluster_bytes(&self) -> usize {
        self.spc as usize * SECTOR
    }

    /// Allocates a contiguous chain for `len` bytes (at least one cluster); returns its first.
    fn alloc(&mut self, len: usize) -> Result<u32> {
        let n = len.div_ceil(self.cluster_bytes()).max(1) as u32;
        let first = *self.next;
        ensure!(
            first - ROOT_CLUSTER + n <= self.clusters,
            "the files do not fit the volume"
        );
        for c in first..first + n {
            self.fat[c as usize] = if c + 1 == first + n {
                END_OF_CHAIN
            } else {
                c + 1
            };
        }
        *self.next = first + n;
        Ok(first)
    }

    fn put(&mut self, cluster: u32, data: &[u8]) {
        let off = (self.data_start as usize
            + (cluster - ROOT_CLUSTER) as usize * self.spc as usize)
            * SECTOR;
        self.volume[off..off + data.len()].copy_from_slice(data);
    }

    fn entry(&self, name: &[u8; 11], attr: u8, cluster: u32, size: u32) -> [u8; 32] {
        let mut e = [0u8; 32];
        e[0..11].copy_from_slice(name);
        e[11] = attr;
        if attr != ATTR_VOLUME_ID {
            e[14..16].copy_from_slice(&self.time.time.to_le_bytes());
            e[16..18].copy_from_slice(&self.time.date.to_le_bytes());
            e[18..20].copy_from_slice(&self.time.date.to_le_bytes());
            e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
        }
        e[22..24].copy_from_slice(&self.time.time.to_le_bytes());
        e[24..26].copy_from_slice(&self.time.date.to_le_bytes());
        e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
        e[28..32].copy_from_slice(&size.to_le_bytes());
        e
    }

    /// Writes directory `dir` at `cluster` (already allocated) and everything below it.
    fn dir(
        &mut self,
        dir: &BTreeMap<String, Node>,
        cluster: u32,
        parent: u32,
        label: Option<&[u8; 11]>,
    ) -> Result<()> {
        let mut entries: Vec<[u8; 32]> = Vec::new();
        match label {
            Some(l) => entries.push(self.entry(l, ATTR_VOLUME_ID, 0, 0)),
            None => {
                entries.push(self.entry(b".          ", ATTR_DIRECTORY, cluster, 0));
                // `..` of a directory in the root points at cluster 0 (section 6.1).
                let up = if parent == ROOT_CLUSTER { 0 } else { parent };
                entries.push(self.entry(b"..         ", ATTR_DIRECTORY, up, 0));
            }
        }
        // Children's clusters follow this directory's, in name order.
        let own_len = (entries.len() + dir.len()) * 32;
        ensure!(
            own_len <= self.cluster_bytes(),
            "too many entries in one directory"
        );
        let mut subdirs = Vec::new();
        for (name, node) in dir {
            let short = short_name(name)?;
            match node {
                Node::Dir(d) => {
                    let c = self.alloc(0)?;
                    entries.push(self.entry(&short, ATTR_DIRECTORY, c, 0));
                    subdirs.push((d, c));
                }
                Node::File(data) => {
                    let size = u32::try_from(data.len()).context("file larger than 4 GiB")?;
                    let c = if data.is_empty() {
                        0
                    } else {
                        self.alloc(data.len())?
                    };
                    if c != 0 {
                        self.put(c, data);
                    }
                    entries.push(self.entry(&short, ATTR_ARCHIVE, c, size));
                }
            }
        }
        let bytes: Vec<u8> = entries.concat();
        self.put(cluster, &bytes);
        for (d, c) in subdirs {
            self.dir(d, c, cluster, None)?;
        }
        Ok(())
    }
}

/// The 8.3 directory-entry name of `name` (upper case letters, digits, `_-`; 8 + 3 characters).
fn short_name(name: &str) -> Result<[u8; 11]> {
    let (base, ext) = name.split_once('.').unwrap_or((name, ""));
    let ok = |s: &str, max: usize| {
        s.len() <= max
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    ensure!(
        !base.is_empty() && ok(base, 8) && ok(ext, 3),
        "{name:?} is not an upper-case 8.3 name"
    );
    let mut out = [b' '; 11];
    out[..base.len()].copy_from_slice(base.as_bytes());
    out[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(&short_name("BOOTX64.EFI").unwrap(), b"BOOTX64 EFI");
        assert_eq!(&short_name("EFI").unwrap(), b"EFI        ");
        assert!(short_name("bootx64.efi").is_err());
        assert!(short_name("TOOLONGNAME.EFI").is_err());
    }

    #[test]
    fn too_small_for_fat32_is_refused() {
        let mut v = vec![0u8; 8 << 20];
        let e = write(
            &mut v,
            &[],
            512,
            1,
            b"NO NAME    ",
            0,
            FatTime::new(2000, 1, 1, 0),
        )
        .unwrap_err();
        assert!(e.to_string().contains("too few"), "{e}");
    }
}
