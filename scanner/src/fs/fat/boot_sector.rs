//! The FAT boot sector and BIOS parameter block.
//!
//! Follows Microsoft's "FAT: General Overview of On-Disk Format" (fatgen103, version 1.03):
//! section 3.1 (BPB fields common to FAT12/16/32), 3.2 (FAT12/16 extended fields), 3.3 (FAT32
//! extended fields), 3.5 (FAT type determination by count of clusters only) and 4 (FAT size and
//! data region computations).

use crate::block::le;
use crate::fs::FsKind;

/// Largest cluster count of FAT12 + 1 (fatgen103 section 3.5: fewer than 4085 clusters).
pub const FAT12_MAX_CLUSTERS: u32 = 4085;
/// FAT16 has fewer than 65525 clusters (fatgen103 section 3.5).
pub const FAT16_MAX_CLUSTERS: u32 = 65525;
/// FAT32 cluster numbers are 28 bits; 0x0FFFFFF7 is the bad-cluster mark, so the highest
/// usable cluster number is 0x0FFFFFF6 and the largest count 0x0FFFFFF5.
pub const FAT32_MAX_CLUSTERS: u32 = 0x0fff_fff5;

/// The volume geometry derived from the BPB, with every value checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSector {
    /// FAT12, FAT16 or FAT32, by cluster count (FAT32 layout if the BPB has FAT32 fields).
    pub kind: FsKind,
    /// BPB_BytsPerSec: 512, 1024, 2048 or 4096.
    pub bytes_per_sector: u32,
    /// BPB_SecPerClus: a power of two up to 128.
    pub sectors_per_cluster: u32,
    /// Cluster size in bytes.
    pub cluster_size: u32,
    /// Byte offset of the first FAT.
    pub fat_offset: u64,
    /// Size of one FAT in bytes.
    pub fat_size: u64,
    /// BPB_NumFATs.
    pub num_fats: u32,
    /// Which FAT to read (FAT32 BPB_ExtFlags when mirroring is off, else 0).
    pub active_fat: u32,
    /// Byte offset of the FAT12/16 fixed root directory (0 for FAT32).
    pub root_dir_offset: u64,
    /// Number of 32-byte entries in the FAT12/16 root directory (0 for FAT32).
    pub root_entries: u32,
    /// First cluster of the FAT32 root directory (0 for FAT12/16).
    pub root_cluster: u32,
    /// Byte offset of cluster 2 (the data region).
    pub data_offset: u64,
    /// Number of data clusters: valid cluster numbers are `2..cluster_count + 2`.
    pub cluster_count: u32,
    /// Total size in bytes the BPB declares.
    pub volume_size: u64,
    /// Volume label from the extended boot signature fields, if present and not "NO NAME".
    pub label: Option<String>,
    /// Notes on oddities that did not stop parsing (clamped cluster count...).
    pub notes: Vec<String>,
}

/// Parses and validates a boot sector (at least 512 bytes). `None` when the bytes are not a
/// plausible FAT boot sector.
pub fn parse(b: &[u8]) -> Option<BootSector> {
    // fatgen103 3.1: BS_jmpBoot is EB xx 90 or E9 xx xx. Some formatters leave byte 2 other
    // than 0x90, so only the opcode is checked.
    if !matches!(b.first(), Some(0xeb) | Some(0xe9)) {
        return None;
    }
    let bytes_per_sector = u32::from(le::u16(b, 11)?);
    if !bytes_per_sector.is_power_of_two() || !(512..=4096).contains(&bytes_per_sector) {
        return None;
    }
    let sectors_per_cluster = u32::from(*b.get(13)?);
    if sectors_per_cluster == 0 || !sectors_per_cluster.is_power_of_two() {
        return None;
    }
    let cluster_size = bytes_per_sector.checked_mul(sectors_per_cluster)?;
    let reserved = u32::from(le::u16(b, 14)?);
    if reserved == 0 {
        return None;
    }
    let num_fats = u32::from(*b.get(16)?);
    if !(1..=2).contains(&num_fats) {
        return None;
    }
    let root_entries = u32::from(le::u16(b, 17)?);
    let media = *b.get(21)?;
    if media != 0xf0 && media < 0xf8 {
        return None;
    }
    let tot16 = u32::from(le::u16(b, 19)?);
    let total_sectors = if tot16 != 0 { tot16 } else { le::u32(b, 32)? };
    let fat16_size = u32::from(le::u16(b, 22)?);
    let fat32_layout = fat16_size == 0;
    let fat_sectors = if fat32_layout {
        le::u32(b, 36)?
    } else {
        fat16_size
    };
    if fat_sectors == 0 || total_sectors == 0 {
        return None;
    }
    if fat32_layout && root_entries != 0 {
        return None;
    }
    let bps = u64::from(bytes_per_sector);
    let root_dir_sectors = (u64::from(root_entries) * 32).div_ceil(bps);
    let meta_sectors = u64::from(reserved)
        .checked_add(u64::from(num_fats).checked_mul(u64::from(fat_sectors))?)?
        .checked_add(root_dir_sectors)?;
    let data_sectors = u64::from(total_sectors).checked_sub(meta_sectors)?;
    let count = data_sectors / u64::from(sectors_per_cluster);
    if count == 0 {
        return None;
    }
    let mut notes = Vec::new();
    let kind = if fat32_layout {
        if count < u64::from(FAT16_MAX_CLUSTERS) {
            // fatgen103 says such a volume is FAT16, but its BPB has FAT32's layout (no fixed
            // root directory, FAT size at byte 36): read it as FAT32, as Linux does.
            notes.push(format!(
                "FAT32 layout with only {count} clusters (fewer than {FAT16_MAX_CLUSTERS})"
            ));
        }
        FsKind::Fat32
    } else if count < u64::from(FAT12_MAX_CLUSTERS) {
        FsKind::Fat12
    } else if count < u64::from(FAT16_MAX_CLUSTERS) {
        FsKind::Fat16
    } else {
        // A FAT16 layout cannot address this many clusters.
        return None;
    };
    let fat_size = u64::from(fat_sectors) * bps;
    // The FAT must hold an entry for every cluster; clamp to what it can address (as Linux).
    let entries_in_fat = match kind {
        FsKind::Fat12 => fat_size * 2 / 3,
        FsKind::Fat16 => fat_size / 2,
        _ => fat_size / 4,
    };
    let max_count = match kind {
        FsKind::Fat32 => u64::from(FAT32_MAX_CLUSTERS),
        _ => u64::from(FAT16_MAX_CLUSTERS),
    };
    let mut cluster_count = count.min(max_count);
    if entries_in_fat < cluster_count + 2 {
        notes.push(format!(
            "FAT of {fat_size} bytes holds only {entries_in_fat} entries for {cluster_count} clusters"
        ));
        cluster_count = entries_in_fat.saturating_sub(2);
        if cluster_count == 0 {
            return None;
        }
    }
    let cluster_count = u32::try_from(cluster_count).ok()?;
    let fat_offset = u64::from(reserved) * bps;
    let root_dir_offset;
    let data_offset = meta_sectors * bps;
    let mut root_cluster = 0;
    let mut active_fat = 0;
    let label_at;
    if kind == FsKind::Fat32 {
        root_dir_offset = 0;
        root_cluster = le::u32(b, 44)? & 0x0fff_ffff;
        if root_cluster < 2 || root_cluster >= cluster_count.checked_add(2)? {
            return None;
        }
        let ext_flags = le::u16(b, 40)?;
        // Bit 7 set: only the FAT in bits 0-3 is active (fatgen103 3.3, BPB_ExtFlags).
        if ext_flags & 0x80 != 0 {
            let n = u32::from(ext_flags & 0x0f);
            if n < num_fats {
                active_fat = n;
            } else {
                notes.push(format!("active FAT {n} does not exist; using FAT 0"));
            }
        }
        label_at = (*b.get(66)? == 0x29).then_some(71);
    } else {
        root_dir_offset =
            (u64::from(reserved) + u64::from(num_fats) * u64::from(fat_sectors)) * bps;
        label_at = (*b.get(38)? == 0x29).then_some(43);
    }
    let label = label_at
        .and_then(|at| b.get(at..at + 11))
        .map(super::dir_entry::decode_oem)
        .map(|s| s.trim_end().to_string())
        .filter(|s| !s.is_empty() && s != "NO NAME");
    Some(BootSector {
        kind,
        bytes_per_sector,
        sectors_per_cluster,
        cluster_size,
        fat_offset,
        fat_size,
        num_fats,
        active_fat,
        root_dir_offset,
        root_entries: if kind == FsKind::Fat32 {
            0
        } else {
            root_entries
        },
        root_cluster,
        data_offset,
        cluster_count,
        volume_size: u64::from(total_sectors) * bps,
        label,
        notes,
    })
}

impl BootSector {
    /// Byte offset of cluster `n` (2-based), if it is a valid data cluster.
    pub fn cluster_offset(&self, n: u32) -> Option<u64> {
        if n < 2 || n >= self.cluster_count.checked_add(2)? {
            return None;
        }
        u64::from(n - 2)
            .checked_mul(u64::from(self.cluster_size))?
            .checked_add(self.data_offset)
    }

    /// Byte offset of the active FAT.
    pub fn active_fat_offset(&self) -> u64 {
        self.fat_offset + u64::from(self.active_fat) * self.fat_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FAT12/16-layout BPB: 512-byte sectors, 1 sector per cluster, 1 reserved sector,
    /// 2 FATs of `fat_sectors`, 512 root entries (32 sectors), and `clusters` data clusters.
    fn bpb16(clusters: u32, fat_sectors: u16) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0] = 0xeb;
        b[2] = 0x90;
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = 1;
        b[14..16].copy_from_slice(&1u16.to_le_bytes());
        b[16] = 2;
        b[17..19].copy_from_slice(&512u16.to_le_bytes());
        b[21] = 0xf8;
        b[22..24].copy_from_slice(&fat_sectors.to_le_bytes());
        let total = 1 + 2 * u32::from(fat_sectors) + 32 + clusters;
        b[32..36].copy_from_slice(&total.to_le_bytes());
        b
    }

    #[test]
    fn fat_type_is_decided_by_cluster_count_alone() {
        let kind = |clusters| parse(&bpb16(clusters, 256)).map(|b| b.kind);
        assert_eq!(kind(4084), Some(FsKind::Fat12));
        assert_eq!(kind(4085), Some(FsKind::Fat16));
        assert_eq!(kind(65524), Some(FsKind::Fat16));
        // A FAT16 layout cannot address 65525 clusters.
        assert_eq!(kind(65525), None);
        // The type string says nothing.
        let mut b = bpb16(100, 256);
        b[54..62].copy_from_slice(b"FAT32   ");
        assert_eq!(parse(&b).map(|b| b.kind), Some(FsKind::Fat12));
    }

    #[test]
    fn geometry_and_insane_fields() {
        let bs = parse(&bpb16(5000, 20)).unwrap();
        assert_eq!(bs.fat_offset, 512);
        assert_eq!(bs.root_dir_offset, 512 * 41);
        assert_eq!(bs.data_offset, 512 * 73);
        assert_eq!(bs.cluster_offset(2), Some(512 * 73));
        assert_eq!(bs.cluster_offset(1), None);
        // 20 sectors of FAT16 hold 5120 entries: 5000 clusters fit.
        assert_eq!(bs.cluster_count, 5000);
        // A FAT too small for the clusters is clamped, with a note.
        let bs = parse(&bpb16(5000, 16)).unwrap();
        assert_eq!(bs.cluster_count, 16 * 256 - 2);
        assert_eq!(bs.notes.len(), 1);
        for (at, v) in [
            (12usize, 0u8),
            (13, 3),
            (14, 0),
            (16, 3),
            (21, 0x12),
            (0, 0),
        ] {
            let mut b = bpb16(5000, 20);
            b[at] = v;
            if at == 14 {
                b[15] = 0;
            }
            assert_eq!(parse(&b), None, "byte {at} = {v}");
        }
        assert_eq!(parse(&bpb16(5000, 20)[..30]), None);
    }
}
