//! The input encoding shared by the XFS targets: XFS cannot be made smaller than 16 MiB, so an
//! input is a sparse image: a little-endian `u32` image size in 512-byte sectors, then records
//! of a `u32` sector number and the sector's 512 bytes (every other sector reads as zeros).
//! `seed_xfs.sh` encodes real images this way.

use std::collections::BTreeMap;

use coldscan_scanner::block::{check_bounds, BlockSource};
use coldscan_scanner::error::Result;

/// Largest image an input may describe (64 MiB).
const MAX_SECTORS: u64 = 1 << 17;
const SECTOR: u64 = 512;

/// A sparse image decoded from fuzzer bytes.
#[derive(Debug)]
pub struct SparseImage {
    size: u64,
    sectors: BTreeMap<u64, Vec<u8>>,
}

impl SparseImage {
    /// Decodes `data`; `None` when it is too short to describe anything.
    pub fn decode(data: &[u8]) -> Option<SparseImage> {
        let count =
            u64::from(u32::from_le_bytes(data.get(..4)?.try_into().ok()?)).clamp(1, MAX_SECTORS);
        let mut sectors = BTreeMap::new();
        for rec in data[4..].chunks_exact(4 + SECTOR as usize) {
            let n = u64::from(u32::from_le_bytes(rec[..4].try_into().ok()?)) % count;
            sectors.insert(n, rec[4..].to_vec());
        }
        Some(SparseImage {
            size: count * SECTOR,
            sectors,
        })
    }
}

impl BlockSource for SparseImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds("fuzz", offset, buf.len(), self.size)?;
        buf.fill(0);
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        for (&n, s) in self.sectors.range(offset / SECTOR..=(end - 1) / SECTOR) {
            let s_start = n * SECTOR;
            let from = offset.max(s_start);
            let to = end.min(s_start + SECTOR);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&s[(from - s_start) as usize..(to - s_start) as usize]);
        }
        Ok(())
    }

    fn name(&self) -> &str {
        "fuzz"
    }
}
