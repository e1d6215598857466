//! GUID Partition Table, parsed natively (UEFI specification 2.10, section 5.3).
//!
//! Section 5.3.2 (GPT header, table 5-5): signature `EFI PART`, header size, header CRC32 (taken
//! with its own field zeroed), MyLBA, AlternateLBA, usable range, disk GUID, partition entry
//! array LBA, number and size of entries, entry array CRC32. Section 5.3.3 (entry, table 5-6):
//! type GUID, unique GUID, first and last LBA (inclusive), attributes, UTF-16LE name.
//!
//! We parse GPT ourselves rather than with the `gpt` crate because that crate panics on entry
//! sizes other than 128 (DESIGN.md section 2). Every size read from disk is bounded by a named
//! limit before it sizes an allocation.

use crate::block::{le, read_vec, BlockSource};
use crate::error::{Error, Result};

use super::types::gpt_type_name;
use super::Partition;

/// The GPT header signature (section 5.3.2).
pub const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// Smallest valid header (the defined fields end at byte 92).
const MIN_HEADER_SIZE: u32 = 92;
/// Size of the partition entry of revision 1.0; entry sizes are multiples of it.
const BASE_ENTRY_SIZE: u32 = 128;
/// Largest partition entry size accepted (the spec allows 128 * 2^n; real disks use 128).
pub const MAX_ENTRY_SIZE: u32 = 4096;
/// Most partition entries accepted. The spec reserves at least 16 KiB (128 entries) and sets no
/// upper bound; tools create 128, a few use up to a few thousand.
pub const MAX_ENTRIES: u32 = 16_384;
/// Largest entry array read (entries x entry size).
pub const MAX_ENTRY_ARRAY_BYTES: u64 = 4 * 1024 * 1024;

/// A parsed, checksum-verified GPT header.
#[derive(Debug, Clone)]
pub struct GptHeader {
    /// LBA this header was read from (1 for the primary).
    pub my_lba: u64,
    /// LBA of the other copy of the header.
    pub alternate_lba: u64,
    /// First LBA usable by partitions.
    pub first_usable_lba: u64,
    /// Last LBA usable by partitions.
    pub last_usable_lba: u64,
    /// Disk GUID, lowercase and hyphenated.
    pub disk_guid: String,
    /// LBA of the partition entry array.
    pub entries_lba: u64,
    /// Number of partition entries.
    pub num_entries: u32,
    /// Size of one partition entry in bytes.
    pub entry_size: u32,
    /// CRC32 of the entry array.
    pub entries_crc32: u32,
}

/// A GPT read from one of its two headers.
#[derive(Debug)]
pub struct GptTable {
    /// The header that was used.
    pub header: GptHeader,
    /// Partitions, by entry number.
    pub partitions: Vec<Partition>,
    /// Problems with individual entries.
    pub problems: Vec<Error>,
}

/// Formats a GUID stored in the mixed-endian layout of UEFI (appendix A): the first three fields
/// are little-endian, the last two are bytes in order.
pub fn format_guid(b: &[u8; 16]) -> String {
    let d1 = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let d2 = u16::from_le_bytes([b[4], b[5]]);
    let d3 = u16::from_le_bytes([b[6], b[7]]);
    format!(
        "{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

fn guid_at(buf: &[u8], at: usize) -> Option<[u8; 16]> {
    buf.get(at..at.checked_add(16)?)?.try_into().ok()
}

/// Whether the sector at `lba` starts with the GPT signature.
pub fn has_signature(disk: &dyn BlockSource, lba: u64, sector_size: u32) -> bool {
    let Some(off) = lba.checked_mul(u64::from(sector_size)) else {
        return false;
    };
    let mut sig = [0u8; 8];
    disk.read_exact_at(off, &mut sig).is_ok() && &sig == GPT_SIGNATURE
}

/// Reads and validates the header at `lba` (section 5.3.2: signature, header size, header CRC,
/// MyLBA, and sane entry array geometry). Errors name the header's byte offset.
pub fn read_header(disk: &dyn BlockSource, lba: u64, sector_size: u32) -> Result<GptHeader> {
    let name = disk.name();
    let ss = u64::from(sector_size);
    let off = lba
        .checked_mul(ss)
        .ok_or_else(|| Error::corrupt(name, 0, format!("GPT header LBA {lba} overflows")))?;
    let bad = |detail: String| Error::corrupt(name, off, format!("GPT header: {detail}"));
    let mut buf = read_vec(disk, off, ss, u64::from(super::MAX_SECTOR_SIZE))?;
    if buf.get(..8) != Some(GPT_SIGNATURE.as_slice()) {
        return Err(bad("no \"EFI PART\" signature".into()));
    }
    let header_size = le::u32(&buf, 12).unwrap_or(0);
    if header_size < MIN_HEADER_SIZE || header_size > sector_size {
        return Err(bad(format!(
            "header size {header_size} outside {MIN_HEADER_SIZE}..={sector_size}"
        )));
    }
    let stored_crc = le::u32(&buf, 16).unwrap_or(0);
    // The CRC covers HeaderSize bytes with the CRC field itself taken as zero.
    buf.get_mut(16..20)
        .ok_or_else(|| bad("short header".into()))?
        .fill(0);
    let hs = usize::try_from(header_size).map_err(|_| bad("header size".into()))?;
    let computed = crc32fast::hash(buf.get(..hs).ok_or_else(|| bad("short header".into()))?);
    if computed != stored_crc {
        return Err(bad(format!(
            "header CRC32 {stored_crc:#010x} does not match the computed {computed:#010x}"
        )));
    }
    let q = |at| le::u64(&buf, at).unwrap_or(0);
    let field = |at| le::u32(&buf, at).unwrap_or(0);
    let header = GptHeader {
        my_lba: q(24),
        alternate_lba: q(32),
        first_usable_lba: q(40),
        last_usable_lba: q(48),
        disk_guid: format_guid(&guid_at(&buf, 56).unwrap_or([0; 16])),
        entries_lba: q(72),
        num_entries: field(80),
        entry_size: field(84),
        entries_crc32: field(88),
    };
    if header.my_lba != lba {
        return Err(bad(format!(
            "MyLBA {} but the header was read from LBA {lba}",
            header.my_lba
        )));
    }
    if header.entry_size < BASE_ENTRY_SIZE
        || header.entry_size % BASE_ENTRY_SIZE != 0
        || header.entry_size > MAX_ENTRY_SIZE
    {
        return Err(bad(format!(
            "partition entry size {} is not a multiple of {BASE_ENTRY_SIZE} up to {MAX_ENTRY_SIZE}",
            header.entry_size
        )));
    }
    if header.num_entries > MAX_ENTRIES {
        return Err(bad(format!(
            "{} partition entries exceed the limit of {MAX_ENTRIES}",
            header.num_entries
        )));
    }
    if header.entries_lba == lba {
        return Err(bad("partition entry array overlaps the header".into()));
    }
    if header.first_usable_lba > header.last_usable_lba.saturating_add(1) {
        return Err(bad(format!(
            "first usable LBA {} is after last usable LBA {}",
            header.first_usable_lba, header.last_usable_lba
        )));
    }
    Ok(header)
}

/// Reads the entry array of `header`, checks its CRC32 and decodes the used entries.
pub fn read_entries(
    disk: &dyn BlockSource,
    header: GptHeader,
    sector_size: u32,
) -> Result<GptTable> {
    let name = disk.name();
    let ss = u64::from(sector_size);
    let off = header.entries_lba.checked_mul(ss).ok_or_else(|| {
        Error::corrupt(
            name,
            0,
            format!("GPT entry array LBA {} overflows", header.entries_lba),
        )
    })?;
    let len = u64::from(header.num_entries) * u64::from(header.entry_size);
    let array = read_vec(disk, off, len, MAX_ENTRY_ARRAY_BYTES)?;
    let computed = crc32fast::hash(&array);
    if computed != header.entries_crc32 {
        return Err(Error::corrupt(
            name,
            off,
            format!(
                "GPT partition entry array CRC32 {:#010x} does not match the computed {computed:#010x}",
                header.entries_crc32
            ),
        ));
    }
    let mut partitions = Vec::new();
    let mut problems = Vec::new();
    let entry_size = usize::try_from(header.entry_size).unwrap_or(usize::MAX);
    for (i, entry) in array.chunks_exact(entry_size.max(1)).enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
        let entry_off = off.saturating_add((i as u64).saturating_mul(u64::from(header.entry_size)));
        let type_raw = guid_at(entry, 0).unwrap_or([0; 16]);
        if type_raw == [0; 16] {
            continue; // unused entry (section 5.3.3)
        }
        let first = le::u64(entry, 32).unwrap_or(0);
        let last = le::u64(entry, 40).unwrap_or(0);
        if last < first {
            problems.push(Error::corrupt(
                name,
                entry_off,
                format!("GPT partition {index}: last LBA {last} is before first LBA {first}"),
            ));
            continue;
        }
        let (Some(start), Some(size)) = (
            first.checked_mul(ss),
            (last - first)
                .checked_add(1)
                .and_then(|n| n.checked_mul(ss)),
        ) else {
            problems.push(Error::corrupt(
                name,
                entry_off,
                format!("GPT partition {index}: LBAs {first}..={last} overflow a byte offset"),
            ));
            continue;
        };
        if first < header.first_usable_lba || last > header.last_usable_lba {
            problems.push(Error::corrupt(
                name,
                entry_off,
                format!(
                    "GPT partition {index}: LBAs {first}..={last} outside the usable range {}..={}",
                    header.first_usable_lba, header.last_usable_lba
                ),
            ));
        }
        let type_id = format_guid(&type_raw);
        let unique = guid_at(entry, 16).unwrap_or([0; 16]);
        let label = decode_name(entry.get(56..128).unwrap_or(&[]));
        partitions.push(Partition {
            index,
            start,
            size,
            type_name: gpt_type_name(&type_id).map(str::to_string),
            type_id,
            label: (!label.is_empty()).then_some(label),
            guid: Some(format_guid(&unique)),
        });
    }
    Ok(GptTable {
        header,
        partitions,
        problems,
    })
}

/// Decodes a UTF-16LE partition name, stopping at the first NUL (unpaired surrogates become
/// U+FFFD rather than failing the entry).
fn decode_name(raw: &[u8]) -> String {
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Reads the GPT whose primary header is at LBA 1, falling back to the backup header when the
/// primary header or its entry array is invalid. `fallback` problems record why the backup was
/// used. Returns `Ok(None)` when neither header is valid and the primary has no signature.
pub fn read_gpt(
    disk: &dyn BlockSource,
    sector_size: u32,
) -> Result<Option<(GptTable, Vec<Error>)>> {
    let name = disk.name();
    let ss = u64::from(sector_size);
    let primary_err =
        match read_header(disk, 1, sector_size).and_then(|h| read_entries(disk, h, sector_size)) {
            Ok(t) => return Ok(Some((t, Vec::new()))),
            Err(e) => e,
        };
    let last_lba = (disk.size() / ss).checked_sub(1);
    // AlternateLBA from the primary header when its fields can be trusted (signature and CRC
    // good, entries bad); otherwise the last LBA of the disk, where the spec puts it.
    let mut candidates = Vec::new();
    if let Ok(h) = read_header(disk, 1, sector_size) {
        candidates.push(h.alternate_lba);
    } else if has_signature(disk, 1, sector_size) {
        // CRC failed: AlternateLBA is still the best guess if it is inside the disk.
        let mut b = [0u8; 8];
        if disk.read_exact_at(ss.saturating_add(32), &mut b).is_ok() {
            candidates.push(u64::from_le_bytes(b));
        }
    }
    if let Some(l) = last_lba {
        candidates.push(l);
    }
    candidates.retain(|&l| l > 1 && last_lba.is_some_and(|last| l <= last));
    candidates.dedup();
    let mut backup_err = None;
    for lba in candidates {
        match read_header(disk, lba, sector_size).and_then(|h| read_entries(disk, h, sector_size)) {
            Ok(t) => {
                let problem = Error::corrupt(
                    name,
                    ss,
                    format!(
                        "primary GPT at byte {ss:#x} is invalid ({primary_err}); using the backup GPT header at LBA {lba} (byte {:#x})",
                        lba.saturating_mul(ss)
                    ),
                );
                return Ok(Some((t, vec![problem])));
            }
            Err(e) => backup_err = Some(e),
        }
    }
    if has_signature(disk, 1, sector_size) {
        return Err(Error::corrupt(
            name,
            ss,
            format!(
                "both GPT headers are invalid: primary: {primary_err}; backup: {}",
                backup_err.map_or_else(|| "not found".to_string(), |e| e.to_string())
            ),
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_is_mixed_endian() {
        // EFI system partition as stored on disk.
        let raw = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        assert_eq!(format_guid(&raw), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    }

    #[test]
    fn name_stops_at_nul_and_survives_bad_surrogates() {
        let mut raw = Vec::new();
        for u in "boot".encode_utf16().chain([0xd800, 0, 0x41]) {
            raw.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(decode_name(&raw), "boot\u{fffd}");
    }
}
