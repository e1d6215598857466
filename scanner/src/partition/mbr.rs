//! Master boot record partition tables with extended/logical partitions.
//!
//! Layout as in the UEFI specification 2.10, section 5.2.1 (legacy MBR, table 5-1: four 16-byte
//! partition records at byte 446, signature 0xAA55 at byte 510) and the de-facto extended boot
//! record chain (as Linux `block/partitions/msdos.c` reads it): an extended partition (types
//! 0x05, 0x0F, 0x85) starts with an EBR whose first data record is relative to the EBR itself and
//! whose link record is relative to the start of the outermost extended partition. Logical
//! partitions are numbered from 5, as Linux does.
//!
//! The chain comes from an untrusted disk: EBRs already visited and chains longer than
//! [`MAX_LOGICAL_PARTITIONS`] stop it with a problem, keeping what was found so far.

use std::collections::HashSet;

use crate::block::{le, BlockSource};
use crate::error::Error;

use super::types::{is_mbr_extended, mbr_type_name};
use super::Partition;

/// Byte offset of the first partition record.
const RECORDS_OFFSET: usize = 446;
/// Size of one partition record.
const RECORD_SIZE: usize = 16;
/// Most logical partitions followed in an extended partition (Linux allows up to 256 minors
/// per disk in all; real disks rarely have more than a few dozen logicals).
pub const MAX_LOGICAL_PARTITIONS: usize = 128;
/// The GPT protective MBR type (UEFI 2.10 section 5.2.3).
pub const PROTECTIVE_TYPE: u8 = 0xee;

/// One 16-byte partition record (table 5-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrRecord {
    /// Boot indicator: 0x80 bootable, 0x00 not.
    pub status: u8,
    /// Partition type byte.
    pub kind: u8,
    /// Starting LBA (relative to a base that depends on where the record is).
    pub start_lba: u32,
    /// Size in sectors.
    pub sectors: u32,
}

impl MbrRecord {
    /// Whether the record is unused (type 0 or no sectors).
    pub fn is_empty(&self) -> bool {
        self.kind == 0 || self.sectors == 0
    }
}

/// The four records of an MBR or EBR sector, if it carries the 0x55 0xAA signature.
pub fn parse_records(sector: &[u8]) -> Option<[MbrRecord; 4]> {
    if sector.get(510..512) != Some([0x55, 0xaa].as_slice()) {
        return None;
    }
    let mut out = [MbrRecord {
        status: 0,
        kind: 0,
        start_lba: 0,
        sectors: 0,
    }; 4];
    for (i, rec) in out.iter_mut().enumerate() {
        let at = RECORDS_OFFSET + i * RECORD_SIZE;
        let r = sector.get(at..at + RECORD_SIZE)?;
        *rec = MbrRecord {
            status: r[0],
            kind: r[4],
            start_lba: le::u32(r, 8)?,
            sectors: le::u32(r, 12)?,
        };
    }
    Some(out)
}

/// Whether the records look like a partition table rather than boot code or BPB bytes of a
/// whole-disk filesystem: every used record has a valid boot indicator and starts after LBA 0,
/// and unused records are either all zero or only have a zero type.
pub fn records_are_sane(records: &[MbrRecord; 4]) -> bool {
    records.iter().all(|r| {
        if r.is_empty() {
            // An unused record may keep stale fields, but a garbage status byte says it is not a
            // partition record at all.
            r.status == 0 || r.status == 0x80
        } else {
            (r.status == 0 || r.status == 0x80) && r.start_lba > 0
        }
    }) && records.iter().any(|r| !r.is_empty())
}

/// The disk signature (bytes 440..444) as `0x12345678`.
pub fn disk_signature(sector: &[u8]) -> Option<String> {
    le::u32(sector, 440).map(|s| format!("{s:#010x}"))
}

fn partition(index: u32, kind: u8, start_lba: u64, sectors: u64, ss: u64) -> Partition {
    Partition {
        index,
        // u32 x u32 sectors x sector size (at most 64 KiB) cannot overflow u64... but the LBA
        // sum of an EBR base and a relative start can exceed u32, so saturate anyway.
        start: start_lba.saturating_mul(ss),
        size: sectors.saturating_mul(ss),
        type_id: format!("{kind:#04x}"),
        type_name: mbr_type_name(kind).map(str::to_string),
        label: None,
        guid: None,
    }
}

/// Reads the partitions of an MBR whose records were already parsed: primaries 1-4 (extended
/// containers are followed, not listed) and logicals from 5. Problems with the EBR chain are
/// appended to `problems`.
pub fn read_partitions(
    disk: &dyn BlockSource,
    records: &[MbrRecord; 4],
    sector_size: u32,
    problems: &mut Vec<Error>,
) -> Vec<Partition> {
    let ss = u64::from(sector_size);
    let mut parts = Vec::new();
    let mut next_logical = 5u32;
    for (i, r) in records.iter().enumerate() {
        if r.is_empty() {
            continue;
        }
        if is_mbr_extended(r.kind) {
            read_logicals(
                disk,
                u64::from(r.start_lba),
                u64::from(r.sectors),
                ss,
                &mut next_logical,
                &mut parts,
                problems,
            );
        } else {
            let index = u32::try_from(i).unwrap_or(0) + 1;
            parts.push(partition(
                index,
                r.kind,
                u64::from(r.start_lba),
                u64::from(r.sectors),
                ss,
            ));
        }
    }
    parts.sort_by_key(|p| p.index);
    parts
}

/// Follows the EBR chain of the extended partition at `ext_start` (LBA).
fn read_logicals(
    disk: &dyn BlockSource,
    ext_start: u64,
    ext_sectors: u64,
    ss: u64,
    next_logical: &mut u32,
    parts: &mut Vec<Partition>,
    problems: &mut Vec<Error>,
) {
    let name = disk.name();
    let mut visited = HashSet::new();
    let mut ebr_lba = ext_start;
    let mut count = 0usize;
    loop {
        let off = ebr_lba.saturating_mul(ss);
        if !visited.insert(ebr_lba) {
            problems.push(Error::corrupt(
                name,
                off,
                format!("extended partition chain loops back to the EBR at LBA {ebr_lba}; logical partitions after it are ignored"),
            ));
            return;
        }
        if count >= MAX_LOGICAL_PARTITIONS {
            problems.push(Error::limit(
                name,
                format!("more than {MAX_LOGICAL_PARTITIONS} logical partitions in the extended partition at byte {:#x}; the rest are ignored", ext_start.saturating_mul(ss)),
            ));
            return;
        }
        count += 1;
        let mut sector = [0u8; 512];
        if let Err(e) = disk.read_exact_at(off, &mut sector) {
            problems.push(Error::corrupt(
                name,
                off,
                format!("extended boot record at LBA {ebr_lba} is unreadable: {e}"),
            ));
            return;
        }
        let Some(records) = parse_records(&sector) else {
            // An empty extended partition (no logicals yet) has no EBR signature at its start:
            // that is normal for the first EBR only.
            if ebr_lba != ext_start {
                problems.push(Error::corrupt(
                    name,
                    off,
                    format!("extended boot record at LBA {ebr_lba} has no 0x55AA signature"),
                ));
            }
            return;
        };
        let mut link = None;
        let ext_end = ext_start.saturating_add(ext_sectors);
        for (slot, r) in records.iter().enumerate() {
            if r.is_empty() {
                continue;
            }
            // Records 3 and 4 of an EBR are unused by every partitioning tool but sometimes
            // hold garbage: like Linux, take them only if they lie inside the extended partition.
            if slot >= 2
                && ebr_lba
                    .saturating_add(u64::from(r.start_lba))
                    .saturating_add(u64::from(r.sectors))
                    > ext_end
            {
                continue;
            }
            if is_mbr_extended(r.kind) {
                // Only the first link counts (as in Linux).
                if link.is_none() {
                    link = Some(ext_start.saturating_add(u64::from(r.start_lba)));
                }
                continue;
            }
            let start = ebr_lba.saturating_add(u64::from(r.start_lba));
            if start >= ext_end {
                problems.push(Error::corrupt(
                    name,
                    off,
                    format!(
                        "logical partition {} starts at LBA {start}, outside its extended partition (LBA {ext_start}, {ext_sectors} sectors)",
                        *next_logical
                    ),
                ));
            }
            parts.push(partition(
                *next_logical,
                r.kind,
                start,
                u64::from(r.sectors),
                ss,
            ));
            *next_logical = next_logical.saturating_add(1);
        }
        match link {
            Some(next) => ebr_lba = next,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_status_bytes_are_not_a_table() {
        let mut s = [0u8; 512];
        s[510] = 0x55;
        s[511] = 0xaa;
        assert!(!records_are_sane(&parse_records(&s).unwrap()), "empty");
        s[446] = 0x80;
        s[446 + 4] = 0x83;
        s[446 + 8] = 1;
        s[446 + 12] = 10;
        assert!(records_are_sane(&parse_records(&s).unwrap()));
        s[446 + 16] = 0x12;
        assert!(!records_are_sane(&parse_records(&s).unwrap()));
        s[511] = 0;
        assert!(parse_records(&s).is_none());
    }
}
