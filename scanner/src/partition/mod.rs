//! Partition tables: GPT, MBR (with extended/logical chains), or none (whole-disk filesystem).
//!
//! [`read_table`] never fails for a disk that merely has an odd table: problems that leave the
//! rest usable (a corrupt primary GPT header with a good backup, a partition past the end of the
//! disk, a looping extended chain) are returned as [`PartitionTable::problems`], and the
//! partitions that could be read are still listed.

use serde::Serialize;

use crate::block::{le, BlockSource};
use crate::error::{Error, Result};

pub mod gpt;
pub mod mbr;
pub mod types;

/// The partitioning scheme of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// GUID partition table (UEFI specification 2.10, section 5.3).
    Gpt,
    /// Master boot record with optional extended/logical partitions.
    Mbr,
    /// No partition table: the whole disk is one volume.
    None,
}

impl Scheme {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Gpt => "gpt",
            Scheme::Mbr => "mbr",
            Scheme::None => "none",
        }
    }
}

/// One partition (or the whole disk, for [`Scheme::None`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based index as users see it: GPT entry number, MBR primaries 1-4 and logicals from 5
    /// (as Linux numbers them); 0 for a whole-disk volume.
    pub index: u32,
    /// Byte offset of the first byte on the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// The partition type: a GPT type GUID (lowercase, hyphenated) or an MBR type as `0x83`.
    pub type_id: String,
    /// A human name for the type where known (`linux-data`, `efi-system`, `ntfs/exfat`...).
    pub type_name: Option<String>,
    /// GPT partition name (UTF-16 decoded), if any.
    pub label: Option<String>,
    /// GPT unique partition GUID, if any.
    pub guid: Option<String>,
}

/// The partitions of a disk as read from its table.
#[derive(Debug, Serialize)]
pub struct PartitionTable {
    /// Which scheme was found.
    pub scheme: Scheme,
    /// Logical sector size the table was read with (512 or 4096).
    pub sector_size: u32,
    /// Disk GUID (GPT) or disk signature (MBR, as `0x12345678`).
    pub disk_id: Option<String>,
    /// Partitions in index order. Empty entries are omitted.
    pub partitions: Vec<Partition>,
    /// Problems found while reading the table that did not stop it from being read.
    #[serde(skip)]
    pub problems: Vec<Error>,
}

/// Largest logical sector size considered (bytes).
pub const MAX_SECTOR_SIZE: u32 = 65_536;

/// Sector sizes to try, in order: the one the source reports, then 512 and 4096 (image files
/// of 4Kn disks report 512).
fn candidate_sector_sizes(disk: &dyn BlockSource) -> Vec<u32> {
    let mut v = Vec::with_capacity(3);
    for ss in [disk.logical_sector_size(), 512, 4096] {
        if ss.is_power_of_two() && (512..=MAX_SECTOR_SIZE).contains(&ss) && !v.contains(&ss) {
            v.push(ss);
        }
    }
    v
}

/// Whether the boot sector is that of a filesystem spanning the whole disk (FAT, NTFS, exFAT):
/// such a sector also ends in 0x55AA, and its boot code fills the MBR partition area with bytes
/// that must not be read as partitions.
fn is_whole_disk_filesystem(sector: &[u8]) -> bool {
    let oem = sector.get(3..11);
    oem == Some(b"NTFS    ".as_slice())
        || oem == Some(b"EXFAT   ".as_slice())
        || crate::fs::fat::probe_fat(sector).is_some()
}

/// Whether the bytes at `off` look like the start of a volume (a boot sector signature, an ext
/// superblock, an LVM label, a GPT header): used to choose between 512- and 4096-byte sectors
/// for an MBR found on an image file.
fn looks_like_volume_start(disk: &dyn BlockSource, off: u64) -> bool {
    let mut b = [0u8; 2048];
    let n = disk.size().saturating_sub(off).min(b.len() as u64);
    let Ok(n) = usize::try_from(n) else {
        return false;
    };
    let Some(buf) = b.get_mut(..n) else {
        return false;
    };
    if disk.read_exact_at(off, buf).is_err() {
        return false;
    }
    buf.get(510..512) == Some([0x55, 0xaa].as_slice())
        || le::u16(buf, 1080) == Some(0xef53)
        || buf.get(536..544) == Some(b"LVM2 001".as_slice())
        || buf.get(0..4) == Some(b"XFSB".as_slice())
}

fn whole_disk(disk: &dyn BlockSource, problems: Vec<Error>) -> PartitionTable {
    PartitionTable {
        scheme: Scheme::None,
        sector_size: disk.logical_sector_size(),
        disk_id: None,
        partitions: vec![Partition {
            index: 0,
            start: 0,
            size: disk.size(),
            type_id: String::new(),
            type_name: None,
            label: None,
            guid: None,
        }],
        problems,
    }
}

/// Reads the partition table of `disk`.
///
/// GPT is used when the MBR is protective (type 0xEE, hybrid MBRs included) or missing and a
/// valid GPT header (primary, else backup) is found at a plausible sector size; an MBR when
/// sector 0 has the 0x55AA signature, sane records, and is not the boot sector of a whole-disk
/// FAT/NTFS/exFAT filesystem; otherwise the whole disk is one volume ([`Scheme::None`], index 0).
/// Fails only when a protective MBR without other records announces a GPT and neither GPT
/// header is valid; a GPT signature without a protective MBR whose headers are both invalid
/// gives a whole-disk volume with a problem.
pub fn read_table(disk: &dyn BlockSource) -> Result<PartitionTable> {
    let mut sector0 = [0u8; 512];
    if disk.read_exact_at(0, &mut sector0).is_err() {
        // Smaller than a sector: nothing to partition.
        return Ok(whole_disk(disk, Vec::new()));
    }
    let records = mbr::parse_records(&sector0);
    let whole_fs = is_whole_disk_filesystem(&sector0);
    let protective = records
        .as_ref()
        .is_some_and(|r| r.iter().any(|r| r.kind == mbr::PROTECTIVE_TYPE));
    let sane_mbr = !whole_fs && records.as_ref().is_some_and(mbr::records_are_sane);
    let sizes = candidate_sector_sizes(disk);
    let primary_sig = sizes
        .iter()
        .copied()
        .find(|&ss| gpt::has_signature(disk, 1, ss));

    // GPT: announced by a protective MBR, or found where there is no valid MBR. A valid MBR
    // without a 0xEE record wins over a GPT header, silently, as in Linux and Windows: such a
    // GPT is left over from an earlier partitioning and what the guest sees is the MBR.
    let try_gpt =
        protective || (!sane_mbr && (primary_sig.is_some() || (records.is_none() && !whole_fs)));
    let mut gpt_error = None;
    if try_gpt {
        // Try the size with the primary signature first, then the others (backup headers).
        let mut order: Vec<u32> = primary_sig.into_iter().collect();
        order.extend(sizes.iter().copied().filter(|&s| Some(s) != primary_sig));
        for ss in order {
            match gpt::read_gpt(disk, ss) {
                Ok(Some((table, mut problems))) => {
                    problems.extend(table.problems);
                    let mut t = PartitionTable {
                        scheme: Scheme::Gpt,
                        sector_size: ss,
                        disk_id: Some(table.header.disk_guid),
                        partitions: table.partitions,
                        problems,
                    };
                    check_layout(disk, &mut t);
                    return Ok(t);
                }
                Ok(None) => {}
                Err(e) => {
                    if gpt_error.is_none() {
                        gpt_error = Some(e);
                    }
                }
            }
        }
    }
    let hybrid = protective
        && records.as_ref().is_some_and(|r| {
            r.iter()
                .any(|r| !r.is_empty() && r.kind != mbr::PROTECTIVE_TYPE)
        });
    if protective && !hybrid {
        return Err(gpt_error.unwrap_or_else(|| {
            Error::corrupt(
                disk.name(),
                0,
                "protective MBR (type 0xee) but no valid GPT header at any sector size",
            )
        }));
    }
    if let (Some(records), true) = (records.as_ref(), sane_mbr || hybrid) {
        let mut problems: Vec<Error> = gpt_error.into_iter().collect();
        let ss = mbr_sector_size(disk, records);
        let mut partitions = mbr::read_partitions(disk, records, ss, &mut problems);
        if hybrid {
            partitions.retain(|p| p.type_id != "0xee");
        }
        let mut t = PartitionTable {
            scheme: Scheme::Mbr,
            sector_size: ss,
            disk_id: mbr::disk_signature(&sector0),
            partitions,
            problems,
        };
        check_layout(disk, &mut t);
        return Ok(t);
    }
    Ok(whole_disk(disk, gpt_error.into_iter().collect()))
}

/// The sector size an MBR was written with: the reported one, unless the source reports 512,
/// no partition start (extended ones included: their first EBR) looks like a volume at 512-byte
/// LBAs, some does at 4096-byte LBAs, and every partition fits the disk at 4096 bytes per sector
/// (an image file of a 4Kn disk).
fn mbr_sector_size(disk: &dyn BlockSource, records: &[mbr::MbrRecord; 4]) -> u32 {
    let reported = disk.logical_sector_size();
    let reported = if reported.is_power_of_two() && (512..=MAX_SECTOR_SIZE).contains(&reported) {
        reported
    } else {
        512
    };
    if reported != 512 {
        return reported;
    }
    let used: Vec<&mbr::MbrRecord> = records
        .iter()
        .filter(|r| !r.is_empty() && r.kind != mbr::PROTECTIVE_TYPE)
        .collect();
    let any_at = |ss: u64| {
        used.iter()
            .any(|r| looks_like_volume_start(disk, u64::from(r.start_lba).saturating_mul(ss)))
    };
    let fits_4k = used.iter().all(|r| {
        (u64::from(r.start_lba) + u64::from(r.sectors)).saturating_mul(4096) <= disk.size()
    });
    if !used.is_empty() && fits_4k && !any_at(512) && any_at(4096) {
        4096
    } else {
        reported
    }
}

/// Adds problems for partitions that run past the end of the disk and for overlapping ones.
/// Such partitions stay listed: the volume layer reports each one's own error.
fn check_layout(disk: &dyn BlockSource, t: &mut PartitionTable) {
    let size = disk.size();
    for p in &t.partitions {
        match p.start.checked_add(p.size) {
            Some(end) if end <= size => {}
            end => t.problems.push(Error::corrupt(
                disk.name(),
                p.start,
                format!(
                    "partition {} (bytes {:#x}..{}) runs past the end of the disk ({size:#x} bytes)",
                    p.index,
                    p.start,
                    end.map_or_else(|| "overflow".to_string(), |e| format!("{e:#x}"))
                ),
            )),
        }
    }
    let mut by_start: Vec<&Partition> = t.partitions.iter().collect();
    by_start.sort_by_key(|p| (p.start, p.index));
    // Compare each partition with the furthest-reaching one before it: O(n log n) and reports
    // every partition that overlaps an earlier one.
    let mut reach: Option<&Partition> = None;
    for p in by_start {
        if let Some(r) = reach {
            let r_end = r.start.saturating_add(r.size);
            if p.start < r_end {
                t.problems.push(Error::corrupt(
                    disk.name(),
                    p.start,
                    format!(
                        "partition {} (byte {:#x}) overlaps partition {} (bytes {:#x}..{r_end:#x})",
                        p.index, p.start, r.index, r.start
                    ),
                ));
            }
            if p.start.saturating_add(p.size) > r_end {
                reach = Some(p);
            }
        } else {
            reach = Some(p);
        }
    }
}

#[cfg(test)]
mod tests;
