//! The VHDX block allocation table ([MS-VHDX] section 2.5): 64-bit entries, state in bits 0-2
//! and the file offset in MiB in bits 20-63, payload block entries interleaved with one sector
//! bitmap entry after every `chunk_ratio` payload entries (section 2.4).

use crate::block::{le, read_vec, BlockSource};
use crate::disk::vhdx::header::HEADER_SECTION_END;
use crate::disk::vhdx::region::Region;
use crate::error::{Error, Result};

/// Largest BAT read (256 MiB).
pub const MAX_BAT_BYTES: u64 = 256 << 20;
/// Sector bitmap blocks are 1 MiB.
pub const SECTOR_BITMAP_BLOCK: u64 = 1 << 20;

/// Payload block states (section 2.5.1.1) and sector bitmap states (2.5.1.2).
pub const NOT_PRESENT: u8 = 0;
/// Contents undefined.
pub const UNDEFINED: u8 = 1;
/// Reads as zeros.
pub const ZERO: u8 = 2;
/// Unmapped (trimmed): zeros.
pub const UNMAPPED: u8 = 3;
/// Fully in this file (also "present" for sector bitmap blocks).
pub const FULLY_PRESENT: u8 = 6;
/// Partly in this file, per the sector bitmap (differencing only).
pub const PARTIALLY_PRESENT: u8 = 7;

/// A block allocation table.
#[derive(Debug, Clone)]
pub struct Bat {
    entries: Vec<u64>,
    /// Payload blocks per sector bitmap block.
    pub chunk_ratio: u64,
    /// Number of payload blocks of the virtual disk.
    pub data_blocks: u64,
}

impl Bat {
    /// Reads and checks the BAT: every present block inside the file, after the header
    /// section, and overlapping neither another block nor the given `reserved` ranges (the BAT,
    /// metadata and log).
    pub fn read(
        file: &dyn BlockSource,
        region: Region,
        virtual_size: u64,
        block_size: u32,
        logical_sector_size: u32,
        differencing: bool,
        reserved: &[(u64, u64)],
    ) -> Result<Bat> {
        let name = file.name();
        let bs = u64::from(block_size);
        let chunk_ratio = ((1u64 << 23) * u64::from(logical_sector_size)) / bs;
        let data_blocks = virtual_size.div_ceil(bs);
        let count = if differencing {
            data_blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
        } else {
            data_blocks + data_blocks.saturating_sub(1) / chunk_ratio
        };
        let bytes = count * 8;
        if bytes > MAX_BAT_BYTES {
            return Err(Error::limit(
                name,
                format!("VHDX BAT of {count} entries exceeds {MAX_BAT_BYTES} bytes"),
            ));
        }
        if bytes > region.length {
            return Err(Error::corrupt(
                name,
                region.offset,
                format!(
                    "VHDX BAT region of {} bytes is smaller than the {bytes} bytes needed",
                    region.length
                ),
            ));
        }
        let raw = read_vec(file, region.offset, bytes, MAX_BAT_BYTES)?;
        let entries: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| le::u64(c, 0).unwrap_or(0))
            .collect();

        // Every allocated block: (start, end, BAT index).
        let mut used: Vec<(u64, u64, usize)> = Vec::new();
        for (i, &e) in entries.iter().enumerate() {
            let state = (e & 7) as u8;
            let is_bitmap = (i as u64 + 1) % (chunk_ratio + 1) == 0;
            let present = if is_bitmap {
                state == FULLY_PRESENT
            } else {
                state == FULLY_PRESENT || state == PARTIALLY_PRESENT
            };
            if !is_bitmap && state == PARTIALLY_PRESENT && !differencing {
                return Err(Error::corrupt(
                    name,
                    region.offset + i as u64 * 8,
                    format!(
                        "VHDX BAT entry {i}: partially present block in a non-differencing disk"
                    ),
                ));
            }
            if !present {
                continue;
            }
            let start = e & !0xF_FFFF;
            // The last payload block only needs to hold the rest of the virtual disk (fixed
            // images end right after it).
            let len = if is_bitmap {
                SECTOR_BITMAP_BLOCK
            } else {
                let block = i as u64 - i as u64 / (chunk_ratio + 1);
                bs.min(virtual_size.saturating_sub(block * bs)).max(1)
            };
            let end = start.checked_add(len).filter(|&end| end <= file.size());
            let Some(end) = end.filter(|_| start >= HEADER_SECTION_END) else {
                return Err(Error::corrupt(
                    name,
                    region.offset + i as u64 * 8,
                    format!(
                        "VHDX BAT entry {i}: block of {len} bytes at {start:#x} lies outside the file's data area ({} bytes)",
                        file.size()
                    ),
                ));
            };
            used.push((start, end, i));
        }
        for &(off, len) in reserved {
            used.push((off, off.saturating_add(len), usize::MAX));
        }
        used.sort_unstable();
        for w in used.windows(2) {
            if let [a, b] = w {
                if b.0 < a.1 {
                    let what = |i: usize| {
                        if i == usize::MAX {
                            "a VHDX structure (BAT, metadata or log)".to_string()
                        } else {
                            format!("BAT entry {i}")
                        }
                    };
                    return Err(Error::corrupt(
                        name,
                        b.0,
                        format!("VHDX {} overlaps {}", what(b.2), what(a.2)),
                    ));
                }
            }
        }
        Ok(Bat {
            entries,
            chunk_ratio,
            data_blocks,
        })
    }

    /// State and file offset of payload block `block`.
    pub fn payload(&self, block: u64) -> (u8, u64) {
        let index = block + block / self.chunk_ratio;
        self.entry(index)
    }

    /// State and file offset of the sector bitmap block of chunk `chunk`.
    pub fn sector_bitmap(&self, chunk: u64) -> (u8, u64) {
        let index = chunk * (self.chunk_ratio + 1) + self.chunk_ratio;
        self.entry(index)
    }

    fn entry(&self, index: u64) -> (u8, u64) {
        let e = usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i).copied())
            .unwrap_or(0);
        ((e & 7) as u8, e & !0xF_FFFF)
    }

    /// Number of payload blocks stored in the file.
    pub fn allocated(&self) -> u64 {
        (0..self.data_blocks)
            .filter(|&b| matches!(self.payload(b).0, FULLY_PRESENT | PARTIALLY_PRESENT))
            .count() as u64
    }
}
