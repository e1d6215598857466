//! The VHD block allocation table and data blocks ("Virtual Hard Disk Image Format
//! Specification", sections "Block Allocation Table and Data Blocks" and "Sector bitmap").
//!
//! The BAT holds one big-endian `u32` per block: the sector offset of the block in the file, or
//! `0xFFFFFFFF` when the block is not allocated. An allocated block starts with its sector bitmap
//! (one bit per sector, most significant bit first, padded to a 512-byte boundary) followed by
//! the block's data.

use crate::block::{be, read_vec, BlockSource};
use crate::error::{Error, Result};

/// Unallocated BAT entry.
pub const UNALLOCATED: u32 = 0xFFFF_FFFF;
/// Largest BAT read (128 MiB: 32 Mi blocks, 64 TiB with 2 MiB blocks).
pub const MAX_BAT_BYTES: u64 = 128 << 20;

/// A block allocation table.
#[derive(Debug, Clone)]
pub struct Bat {
    entries: Vec<u32>,
    block_size: u64,
    bitmap_size: u64,
}

impl Bat {
    /// Reads `entries` entries at `offset` for blocks of `block_size` bytes.
    pub fn read(file: &dyn BlockSource, offset: u64, entries: u32, block_size: u32) -> Result<Bat> {
        let bytes = u64::from(entries) * 4;
        if bytes > MAX_BAT_BYTES {
            return Err(Error::limit(
                file.name(),
                format!("VHD BAT of {entries} entries exceeds {MAX_BAT_BYTES} bytes"),
            ));
        }
        let past_end = || {
            Error::corrupt(
                file.name(),
                offset,
                format!("VHD BAT ({bytes} bytes at {offset:#x}) lies past the end of the file"),
            )
        };
        // Checked before allocating: the entry count comes from the image.
        if offset
            .checked_add(bytes)
            .is_none_or(|end| end > file.size())
        {
            return Err(past_end());
        }
        let raw = read_vec(file, offset, bytes, MAX_BAT_BYTES).map_err(|_| past_end())?;
        let sectors_per_block = u64::from(block_size / 512);
        let bitmap_size = sectors_per_block.div_ceil(8).div_ceil(512) * 512;
        Ok(Bat {
            entries: raw
                .chunks_exact(4)
                .map(|c| be::u32(c, 0).unwrap_or(0))
                .collect(),
            block_size: u64::from(block_size),
            bitmap_size,
        })
    }

    /// Bytes per block.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Bytes of the sector bitmap in front of each block.
    pub fn bitmap_size(&self) -> u64 {
        self.bitmap_size
    }

    /// Byte offset of block `index`'s sector bitmap, or `None` when it is not allocated (or
    /// outside the table).
    pub fn block_offset(&self, index: u64) -> Option<u64> {
        let e = *self.entries.get(usize::try_from(index).ok()?)?;
        (e != UNALLOCATED).then(|| u64::from(e) * 512)
    }

    /// Number of allocated blocks.
    pub fn allocated(&self) -> usize {
        self.entries.iter().filter(|&&e| e != UNALLOCATED).count()
    }
}
