//! MFT file records: header, update sequence array (fixups) and the attribute sequence.
//!
//! Layout from the Linux-NTFS "NTFS Documentation" ("Concepts -> File Record", "Concepts ->
//! Fixup") and libntfs-3g `layout.h` (`MFT_RECORD`, `NTFS_RECORD`, `ntfs_mst_post_read_fixup`):
//! magic `FILE` (0x00), update sequence array offset (0x04) and count (0x06), sequence number
//! (0x10), first attribute offset (0x14), flags (0x16: 1 in use, 2 directory), bytes in use
//! (0x18), base record reference (0x20, 48-bit record number + 16-bit sequence).
//!
//! Fixups: the last two bytes of every 512-byte stride of the record were replaced on write by
//! the update sequence number; the originals sit in the update sequence array. A stride whose
//! last two bytes differ from the number is a torn write and the record is corrupt.

use crate::block::le;
use crate::error::{Error, Result};

use super::attribute::Attribute;

/// Fixup stride: always 512 bytes, whatever the sector size (libntfs-3g `NTFS_BLOCK_SIZE`).
const FIXUP_STRIDE: usize = 512;
/// Record flag: the record is in use.
pub const FLAG_IN_USE: u16 = 0x0001;
/// Record flag: the record is a directory (has a `$I30` index).
pub const FLAG_DIRECTORY: u16 = 0x0002;
/// Minimum size of a file record header (up to and including the record number at 0x2C).
const HEADER_LEN: usize = 0x30;

/// The 48-bit record number of an MFT reference.
pub fn ref_record(reference: u64) -> u64 {
    reference & 0x0000_FFFF_FFFF_FFFF
}

/// The 16-bit sequence number of an MFT reference.
pub fn ref_sequence(reference: u64) -> u16 {
    (reference >> 48) as u16
}

/// Where a record lies, for error messages.
#[derive(Debug, Clone)]
pub struct RecordLocation<'a> {
    /// Name of the volume.
    pub volume: &'a str,
    /// Record number.
    pub number: u64,
    /// Byte offset of the record's start in the volume (of its first cluster if fragmented).
    pub volume_offset: u64,
}

impl RecordLocation<'_> {
    /// A corrupt-structure error at byte `at` of this record.
    pub fn corrupt(&self, at: usize, detail: impl std::fmt::Display) -> Error {
        Error::corrupt(
            self.volume,
            self.volume_offset.saturating_add(at as u64),
            format!(
                "MFT record {} (record offset {at:#x}): {detail}",
                self.number
            ),
        )
    }
}

/// A parsed, fixed-up, in-use or free MFT record.
#[derive(Debug, Clone)]
pub struct MftRecord {
    /// Record number.
    pub number: u64,
    /// Sequence number (incremented each time the record is reused).
    pub sequence: u16,
    /// Header flags ([`FLAG_IN_USE`], [`FLAG_DIRECTORY`]).
    pub flags: u16,
    /// Record number of the base record for an extension record (see
    /// [`MftRecord::is_extension`]: extension records of `$MFT` itself have base 0 too).
    pub base: u64,
    /// The raw base reference: 0 exactly for base records.
    pub base_ref: u64,
    /// The attributes, in record order.
    pub attributes: Vec<Attribute>,
}

impl MftRecord {
    /// Whether the record is in use.
    pub fn in_use(&self) -> bool {
        self.flags & FLAG_IN_USE != 0
    }

    /// Whether this is an extension record of another (base) record.
    pub fn is_extension(&self) -> bool {
        self.base_ref != 0
    }

    /// Parses the record in `buf` (exactly one record, fixups not yet applied; they are applied
    /// in place). Returns `Ok(None)` for a slot that never held a record (no `FILE` magic).
    pub fn parse(buf: &mut [u8], loc: &RecordLocation<'_>) -> Result<Option<MftRecord>> {
        match buf.get(0..4) {
            Some(b"FILE") => {}
            Some(b"BAAD") => return Err(loc.corrupt(0, "marked BAAD by chkdsk (torn write)")),
            _ => return Ok(None),
        }
        if buf.len() < HEADER_LEN {
            return Err(loc.corrupt(0, "record shorter than its header"));
        }
        // Header fields before 0x1FE are outside every fixup position: read the flags first so
        // that free (deleted) records are skipped without judging their fixups.
        let sequence = le::u16(buf, 0x10).unwrap_or(0);
        let flags = le::u16(buf, 0x16).unwrap_or(0);
        if flags & FLAG_IN_USE == 0 {
            return Ok(Some(MftRecord {
                number: loc.number,
                sequence,
                flags,
                base: 0,
                base_ref: 0,
                attributes: Vec::new(),
            }));
        }
        apply_fixups(buf, loc)?;
        let base_ref = le::u64(buf, 0x20).unwrap_or(0);
        let base = ref_record(base_ref);
        let used = le::u32(buf, 0x18).unwrap_or(0) as usize;
        if used > buf.len() || used < HEADER_LEN {
            return Err(loc.corrupt(0x18, format!("bytes in use {used} outside the record")));
        }
        let first = usize::from(le::u16(buf, 0x14).unwrap_or(0));
        if first < HEADER_LEN - 8 || first >= used {
            return Err(loc.corrupt(0x14, format!("first attribute offset {first:#x}")));
        }
        let mut record = MftRecord {
            number: loc.number,
            sequence,
            flags,
            base,
            base_ref,
            attributes: Vec::new(),
        };
        let body = buf.get(..used).unwrap_or(&[]);
        let mut at = first;
        // Each attribute is at least 0x18 bytes, so this loop ends within used / 0x18 steps.
        loop {
            let Some(type_code) = le::u32(body, at) else {
                return Err(loc.corrupt(
                    at,
                    "attribute list runs past the bytes in use without an end marker",
                ));
            };
            if type_code == 0xFFFF_FFFF {
                break;
            }
            let attr = Attribute::parse(body, at, loc)?;
            at += attr.record_length;
            record.attributes.push(attr);
        }
        Ok(Some(record))
    }
}

/// Verifies and undoes the update sequence array of a multi-sector-protected record.
pub fn apply_fixups(buf: &mut [u8], loc: &RecordLocation<'_>) -> Result<()> {
    let usa_ofs = usize::from(le::u16(buf, 4).unwrap_or(0));
    let usa_count = usize::from(le::u16(buf, 6).unwrap_or(0));
    let strides = buf.len() / FIXUP_STRIDE;
    if usa_count != strides + 1 || usa_ofs % 2 != 0 {
        return Err(loc.corrupt(
            4,
            format!("update sequence array at {usa_ofs:#x} with {usa_count} entries for {strides} strides"),
        ));
    }
    usa_ofs
        .checked_add(usa_count * 2)
        .filter(|&e| e <= FIXUP_STRIDE - 2)
        .ok_or_else(|| {
            loc.corrupt(
                4,
                format!("update sequence array at {usa_ofs:#x} overlaps the first fixup"),
            )
        })?;
    let usn = le::u16(buf, usa_ofs).unwrap_or(0);
    for i in 1..usa_count {
        let tail = i * FIXUP_STRIDE - 2;
        let found = le::u16(buf, tail).unwrap_or(0);
        if found != usn {
            return Err(loc.corrupt(
                tail,
                format!("fixup mismatch: update sequence number {usn:#06x}, found {found:#06x}"),
            ));
        }
        let original = usa_ofs + i * 2;
        let (a, b) = (buf[original], buf[original + 1]);
        buf[tail] = a;
        buf[tail + 1] = b;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc() -> RecordLocation<'static> {
        RecordLocation {
            volume: "vol",
            number: 42,
            volume_offset: 0x10000,
        }
    }

    /// A 1 KiB in-use record with a resident $STANDARD_INFORMATION-like attribute.
    fn record() -> Vec<u8> {
        let mut r = vec![0u8; 1024];
        r[0..4].copy_from_slice(b"FILE");
        r[4..6].copy_from_slice(&0x30u16.to_le_bytes());
        r[6..8].copy_from_slice(&3u16.to_le_bytes());
        r[0x10..0x12].copy_from_slice(&1u16.to_le_bytes());
        r[0x14..0x16].copy_from_slice(&0x38u16.to_le_bytes());
        r[0x16..0x18].copy_from_slice(&FLAG_IN_USE.to_le_bytes());
        r[0x18..0x1C].copy_from_slice(&0x70u32.to_le_bytes());
        r[0x1C..0x20].copy_from_slice(&1024u32.to_le_bytes());
        // Attribute: type 0x10, length 0x30, resident, value 0x18 bytes at 0x18.
        let a = 0x38;
        r[a..a + 4].copy_from_slice(&0x10u32.to_le_bytes());
        r[a + 4..a + 8].copy_from_slice(&0x30u32.to_le_bytes());
        r[a + 0x10..a + 0x14].copy_from_slice(&0x18u32.to_le_bytes());
        r[a + 0x14..a + 0x16].copy_from_slice(&0x18u16.to_le_bytes());
        r[0x68..0x6C].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        // Fixups: USN 7, originals 0xAAAA / 0xBBBB.
        r[0x30..0x32].copy_from_slice(&7u16.to_le_bytes());
        r[0x32..0x34].copy_from_slice(&0xAAAAu16.to_le_bytes());
        r[0x34..0x36].copy_from_slice(&0xBBBBu16.to_le_bytes());
        r[510..512].copy_from_slice(&7u16.to_le_bytes());
        r[1022..1024].copy_from_slice(&7u16.to_le_bytes());
        r
    }

    #[test]
    fn parses_and_fixes_up() {
        let mut r = record();
        let rec = MftRecord::parse(&mut r, &loc()).unwrap().unwrap();
        assert!(rec.in_use());
        assert_eq!(rec.attributes.len(), 1);
        assert_eq!(&r[510..512], &[0xAA, 0xAA]);
        assert_eq!(&r[1022..1024], &[0xBB, 0xBB]);
    }

    #[test]
    fn fixup_mismatch_names_record_and_offset() {
        let mut r = record();
        r[1022] = 8;
        let e = MftRecord::parse(&mut r, &loc()).unwrap_err().to_string();
        assert!(
            e.contains("MFT record 42") && e.contains("fixup mismatch"),
            "{e}"
        );
        assert!(e.contains(&format!("{:#x}", 0x10000 + 1022)), "{e}");
    }

    #[test]
    fn attribute_past_the_record_end_is_corrupt() {
        let mut r = record();
        r[0x38 + 4..0x38 + 8].copy_from_slice(&0x400u32.to_le_bytes());
        let e = MftRecord::parse(&mut r, &loc()).unwrap_err().to_string();
        assert!(e.contains("MFT record 42") && e.contains("0x38"), "{e}");
    }

    #[test]
    fn four_kib_records_have_eight_strides() {
        let mut r = record();
        r.resize(4096, 0);
        r[6..8].copy_from_slice(&9u16.to_le_bytes());
        r[0x1C..0x20].copy_from_slice(&4096u32.to_le_bytes());
        // Stride tails 3..=8 carry USN 7; their originals are i, i.
        for i in 3..=8usize {
            r[0x30 + 2 * i..0x32 + 2 * i].copy_from_slice(&[i as u8, i as u8]);
            r[i * 512 - 2..i * 512].copy_from_slice(&7u16.to_le_bytes());
        }
        // (The longer USA overlaps the sample attribute; only the fixup check matters here.)
        r[0x1000 - 2..0x1000].copy_from_slice(&7u16.to_le_bytes());
        let mut bad = r.clone();
        bad[3 * 512 - 2] = 9;
        let e = MftRecord::parse(&mut bad, &loc()).unwrap_err().to_string();
        assert!(e.contains(&format!("{:#x}", 0x10000 + 3 * 512 - 2)), "{e}");
    }

    #[test]
    fn free_slots_and_garbage() {
        let mut z = vec![0u8; 1024];
        assert!(MftRecord::parse(&mut z, &loc()).unwrap().is_none());
        let mut r = record();
        r[6] = 200;
        assert!(MftRecord::parse(&mut r, &loc()).is_err());
        let mut r = record();
        r[0x14] = 0xFF;
        r[0x15] = 0xFF;
        assert!(MftRecord::parse(&mut r, &loc()).is_err());
    }
}
