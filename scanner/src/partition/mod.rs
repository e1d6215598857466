//! Partition tables: GPT, MBR (with extended/logical chains), or none (whole-disk filesystem).
//!
//! [`read_table`] never fails for a disk that merely has an odd table: problems that leave the
//! rest usable (a corrupt primary GPT header with a good backup, a partition past the end of the
//! disk, a looping extended chain) are returned as [`PartitionTable::problems`], and the
//! partitions that could be read are still listed.

use serde::Serialize;

use crate::block::BlockSource;
use crate::error::{Error, Result};

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

/// Reads the partition table of `disk`.
///
/// Placeholder until the GPT/MBR parsers land: treats every disk as a whole-disk volume.
pub fn read_table(disk: &dyn BlockSource) -> Result<PartitionTable> {
    Ok(PartitionTable {
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
        problems: Vec::new(),
    })
}
