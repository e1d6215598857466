//! The VHDX region table ([MS-VHDX] section 2.2.3): two 64 KiB copies at 192 KiB and 256 KiB,
//! listing the BAT and metadata regions. Unknown regions marked required make the file
//! unreadable by the spec's rule.

use crate::block::{le, read_vec, BlockSource};
use crate::disk::vhdx::header::{checksum, guid, guid_string, Guid, HEADER_SECTION_END};
use crate::error::{Error, Result};

/// Byte offsets of the two copies.
pub const TABLE_OFFSETS: [u64; 2] = [192 * 1024, 256 * 1024];
/// Size of a copy.
pub const TABLE_SIZE: u64 = 64 * 1024;
/// Most entries allowed by the spec.
pub const MAX_ENTRIES: u32 = 2047;
/// The BAT region.
pub const BAT_GUID: Guid = guid(
    0x2dc2_7766,
    0xf623,
    0x4200,
    [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
);
/// The metadata region.
pub const METADATA_GUID: Guid = guid(
    0x8b7c_a206,
    0x4790,
    0x4b9a,
    [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e],
);

/// A region: where it lies in the file.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    /// Byte offset (a multiple of 1 MiB, after the header section).
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
}

/// The regions this reader needs.
#[derive(Debug, Clone)]
pub struct RegionTable {
    /// The block allocation table.
    pub bat: Region,
    /// The metadata region.
    pub metadata: Region,
}

impl RegionTable {
    /// Reads the first valid copy of the region table.
    pub fn read(file: &dyn BlockSource) -> Result<RegionTable> {
        let mut last = None;
        for off in TABLE_OFFSETS {
            match Self::parse_one(file, off) {
                Ok(t) => return Ok(t),
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| Error::corrupt(file.name(), TABLE_OFFSETS[0], "no region table")))
    }

    fn parse_one(file: &dyn BlockSource, off: u64) -> Result<RegionTable> {
        let name = file.name();
        let b = read_vec(file, off, TABLE_SIZE, TABLE_SIZE)?;
        if b.get(0..4) != Some(b"regi") {
            return Err(Error::corrupt(
                name,
                off,
                "VHDX region table: bad signature",
            ));
        }
        if checksum(&b, 4) != le::u32(&b, 4).unwrap_or(0) {
            return Err(Error::corrupt(
                name,
                off,
                "VHDX region table: checksum mismatch",
            ));
        }
        let count = le::u32(&b, 8).unwrap_or(0);
        if count > MAX_ENTRIES {
            return Err(Error::corrupt(
                name,
                off + 8,
                format!("VHDX region table: {count} entries (at most {MAX_ENTRIES})"),
            ));
        }
        let (mut bat, mut metadata) = (None, None);
        for i in 0..count as usize {
            let at = 16 + i * 32;
            let e = b.get(at..at + 32).unwrap_or(&[]);
            let mut id = [0u8; 16];
            id.copy_from_slice(e.get(0..16).unwrap_or(&[0; 16]));
            let region = Region {
                offset: le::u64(e, 16).unwrap_or(0),
                length: u64::from(le::u32(e, 24).unwrap_or(0)),
            };
            let required = le::u32(e, 28).unwrap_or(0) & 1 != 0;
            let entry_off = off + at as u64;
            let in_file = region
                .offset
                .checked_add(region.length)
                .is_some_and(|end| end <= file.size());
            if id == BAT_GUID || id == METADATA_GUID {
                if region.offset < HEADER_SECTION_END || region.offset % (1 << 20) != 0 || !in_file
                {
                    return Err(Error::corrupt(
                        name,
                        entry_off,
                        format!(
                            "VHDX region {} ({} bytes at {:#x}) is misplaced or past the end of the file",
                            guid_string(&id),
                            region.length,
                            region.offset
                        ),
                    ));
                }
                if id == BAT_GUID {
                    bat = Some(region);
                } else {
                    metadata = Some(region);
                }
            } else if required {
                return Err(Error::unsupported(
                    name,
                    format!("VHDX required region {}", guid_string(&id)),
                ));
            }
        }
        match (bat, metadata) {
            (Some(bat), Some(metadata)) => Ok(RegionTable { bat, metadata }),
            _ => Err(Error::corrupt(
                name,
                off,
                "VHDX region table lacks the BAT or metadata region",
            )),
        }
    }
}
