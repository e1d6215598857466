//! Extent records (`xfs_bmbt_rec`) and the bmap btree (`xfs_bmdr_block` root in the inode,
//! `xfs_btree_block` long-format nodes and leaves on disk).
//!
//! Follows "XFS Algorithms & Data Structures", chapter "Data Extents" (sections "Extent List"
//! and "B+tree Extent List") and "B+trees" (long-format headers, v4 `BMAP` and v5 `BMA3`).
//! The whole map of one fork is loaded once, sorted and checked for overlaps; lookups are binary
//! searches. Work is bounded by [`MAX_EXTENTS`] records and [`MAX_BTREE_DEPTH`] levels, and a
//! block reached twice (a cycle) is an error.

use std::collections::HashSet;

use crate::block::{be, BlockSource};
use crate::error::{Error, Result};

use super::superblock::Superblock;

/// Most extents loaded for one fork (a 16 TiB file of 4 KiB extents, with room to spare).
pub const MAX_EXTENTS: u64 = 1 << 24;
/// Deepest bmap btree followed (the kernel's bound for 64-bit extent counts is 11).
pub const MAX_BTREE_DEPTH: u16 = 12;
/// `BMAP`: v4 bmap btree block.
pub const BMAP_MAGIC: u32 = 0x424d_4150;
/// `BMA3`: v5 bmap btree block.
pub const BMAP_CRC_MAGIC: u32 = 0x424d_4133;
/// Long-format btree block header size, v4.
const LBLOCK_LEN: usize = 24;
/// Long-format btree block header size, v5 (adds blkno, lsn, uuid, owner, crc).
const LBLOCK_CRC_LEN: usize = 72;
/// Size of one extent record.
const REC_SIZE: usize = 16;

/// One extent: `blockcount` file blocks from `startoff` stored from filesystem block
/// `startblock`, or reading as zeros when `unwritten`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First file block.
    pub startoff: u64,
    /// First filesystem block (AG number in the high bits).
    pub startblock: u64,
    /// Number of blocks.
    pub blockcount: u64,
    /// Preallocated but never written: reads as zeros.
    pub unwritten: bool,
}

/// Decodes one packed 128-bit extent record.
pub fn decode(rec: &[u8]) -> Option<Extent> {
    let l0 = be::u64(rec, 0)?;
    let l1 = be::u64(rec, 8)?;
    Some(Extent {
        unwritten: l0 >> 63 != 0,
        startoff: (l0 & ((1u64 << 63) - 1)) >> 9,
        startblock: ((l0 & 0x1ff) << 43) | (l1 >> 21),
        blockcount: l1 & ((1u64 << 21) - 1),
    })
}

/// A run of file blocks: consecutive filesystem bytes from `byte`, or zeros (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Byte offset in the volume of the first block, or `None` for a hole / unwritten extent.
    pub byte: Option<u64>,
    /// Number of blocks in the run (`u64::MAX` past the last extent).
    pub len: u64,
}

/// The sorted extent map of one fork.
#[derive(Debug, Clone, Default)]
pub struct ExtentMap {
    extents: Vec<Extent>,
}

impl ExtentMap {
    /// The extents, sorted by file offset, without overlaps.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Loads the map of an extents-format fork (`nextents` records in `fork`).
    pub fn from_extents(
        fork: &[u8],
        nextents: u64,
        fork_offset: u64,
        object: &str,
    ) -> Result<Self> {
        let fits = (fork.len() / REC_SIZE) as u64;
        if nextents > fits {
            return Err(Error::corrupt(
                object,
                fork_offset,
                format!(
                    "{nextents} extents do not fit a {}-byte data fork",
                    fork.len()
                ),
            ));
        }
        let mut out = Vec::new();
        for rec in fork.chunks_exact(REC_SIZE).take(nextents as usize) {
            out.extend(decode(rec));
        }
        Self::finish(out, fork_offset, object)
    }

    /// Loads the map of a btree-format fork whose root (`xfs_bmdr_block`) is `fork`.
    pub fn from_btree(
        src: &dyn BlockSource,
        sb: &Superblock,
        fork: &[u8],
        fork_offset: u64,
        object: &str,
    ) -> Result<Self> {
        let bad = |d: String| Error::corrupt(object, fork_offset, format!("bmap btree root: {d}"));
        let level = be::u16(fork, 0).ok_or_else(|| bad("truncated".into()))?;
        let numrecs = usize::from(be::u16(fork, 2).ok_or_else(|| bad("truncated".into()))?);
        if level == 0 || level > MAX_BTREE_DEPTH {
            return Err(bad(format!("level {level} is not valid for a root")));
        }
        let maxrecs = fork.len().saturating_sub(4) / 16;
        if numrecs == 0 || numrecs > maxrecs {
            return Err(bad(format!("{numrecs} records, at most {maxrecs} fit")));
        }
        let ptrs_at = 4 + maxrecs * 8;
        let mut ptrs = Vec::with_capacity(numrecs);
        for i in 0..numrecs {
            ptrs.push(be::u64(fork, ptrs_at + i * 8).ok_or_else(|| bad("truncated".into()))?);
        }
        let mut walk = Walk {
            src,
            sb,
            object,
            visited: HashSet::new(),
            out: Vec::new(),
        };
        for p in ptrs {
            walk.descend(p, level - 1)?;
        }
        Self::finish(walk.out, fork_offset, object)
    }

    fn finish(mut extents: Vec<Extent>, at: u64, object: &str) -> Result<Self> {
        extents.retain(|e| e.blockcount > 0);
        extents.sort_by_key(|e| e.startoff);
        for w in extents.windows(2) {
            if w[0].startoff.saturating_add(w[0].blockcount) > w[1].startoff {
                return Err(Error::corrupt(
                    object,
                    at,
                    format!(
                        "extents at file blocks {} and {} overlap",
                        w[0].startoff, w[1].startoff
                    ),
                ));
            }
        }
        Ok(ExtentMap { extents })
    }

    /// Maps file block `lblock` to the run it starts.
    pub fn map(&self, sb: &Superblock, lblock: u64) -> Run {
        let i = self.extents.partition_point(|e| e.startoff <= lblock);
        if i > 0 {
            let e = &self.extents[i - 1];
            let within = lblock - e.startoff;
            if within < e.blockcount {
                let len = e.blockcount - within;
                if e.unwritten {
                    return Run { byte: None, len };
                }
                let byte = e
                    .startblock
                    .checked_add(within)
                    .and_then(|b| sb.fsb_to_byte(b))
                    .filter(|_| {
                        // The whole run must stay inside one AG for a linear read.
                        let agmask = (1u64 << sb.ag_blk_log) - 1;
                        (e.startblock & agmask).saturating_add(e.blockcount)
                            <= u64::from(sb.ag_blocks)
                    });
                // An extent outside the filesystem reads as an error at read time, not zeros.
                return Run {
                    byte: Some(byte.unwrap_or(u64::MAX)),
                    len,
                };
            }
        }
        let len = self
            .extents
            .get(i)
            .map_or(u64::MAX, |n| n.startoff - lblock);
        Run { byte: None, len }
    }
}

struct Walk<'a> {
    src: &'a dyn BlockSource,
    sb: &'a Superblock,
    object: &'a str,
    visited: HashSet<u64>,
    out: Vec<Extent>,
}

impl Walk<'_> {
    /// Descends from the block `fsb` expected at `level`, with an explicit stack.
    fn descend(&mut self, fsb: u64, level: u16) -> Result<()> {
        let mut stack = vec![(fsb, level)];
        let bs = self.sb.block_size as usize;
        let hdr = if self.sb.has_crc() {
            LBLOCK_CRC_LEN
        } else {
            LBLOCK_LEN
        };
        let mut buf = vec![0u8; bs];
        while let Some((fsb, level)) = stack.pop() {
            let at = self.sb.fsb_to_byte(fsb).ok_or_else(|| {
                Error::corrupt(
                    self.object,
                    0,
                    format!("bmap btree pointer {fsb:#x} lies outside the filesystem"),
                )
            })?;
            if !self.visited.insert(fsb) {
                return Err(Error::corrupt(
                    self.object,
                    at,
                    "bmap btree block reached twice (a cycle)",
                ));
            }
            self.src.read_exact_at(at, &mut buf)?;
            let bad = |d: String| Error::corrupt(self.object, at, format!("bmap btree block: {d}"));
            let magic = be::u32(&buf, 0).unwrap_or(0);
            let want = if self.sb.has_crc() {
                BMAP_CRC_MAGIC
            } else {
                BMAP_MAGIC
            };
            if magic != want {
                return Err(bad(format!("bad magic {magic:#x}")));
            }
            let blevel = be::u16(&buf, 4).unwrap_or(u16::MAX);
            if blevel != level {
                return Err(bad(format!("level {blevel}, expected {level}")));
            }
            let numrecs = usize::from(be::u16(&buf, 6).unwrap_or(0));
            if level == 0 {
                let maxrecs = (bs - hdr) / REC_SIZE;
                if numrecs > maxrecs {
                    return Err(bad(format!("{numrecs} records, at most {maxrecs} fit")));
                }
                if (self.out.len() + numrecs) as u64 > MAX_EXTENTS {
                    return Err(Error::limit(
                        self.object,
                        format!("more than {MAX_EXTENTS} extents in one file"),
                    ));
                }
                for i in 0..numrecs {
                    let r = &buf[hdr + i * REC_SIZE..hdr + (i + 1) * REC_SIZE];
                    self.out.extend(decode(r));
                }
            } else {
                let maxrecs = (bs - hdr) / 16;
                if numrecs == 0 || numrecs > maxrecs {
                    return Err(bad(format!("{numrecs} records, at most {maxrecs} fit")));
                }
                let ptrs_at = hdr + maxrecs * 8;
                // Pushed in reverse so leaves are read in key order.
                for i in (0..numrecs).rev() {
                    let p =
                        be::u64(&buf, ptrs_at + i * 8).ok_or_else(|| bad("truncated".into()))?;
                    stack.push((p, level - 1));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(flag: bool, off: u64, blk: u64, cnt: u64) -> [u8; 16] {
        let l0 = (u64::from(flag) << 63) | (off << 9) | (blk >> 43);
        let l1 = (blk << 21) | cnt;
        let mut r = [0u8; 16];
        r[..8].copy_from_slice(&l0.to_be_bytes());
        r[8..].copy_from_slice(&l1.to_be_bytes());
        r
    }

    #[test]
    fn decodes_packed_records() {
        let e = decode(&rec(true, 123_456, (1 << 45) + 7, 2_000_000)).unwrap();
        assert_eq!(
            e,
            Extent {
                unwritten: true,
                startoff: 123_456,
                startblock: (1 << 45) + 7,
                blockcount: 2_000_000
            }
        );
    }

    #[test]
    fn overlapping_extents_are_corrupt() {
        let mut fork = Vec::new();
        fork.extend_from_slice(&rec(false, 0, 10, 5));
        fork.extend_from_slice(&rec(false, 3, 20, 5));
        assert!(ExtentMap::from_extents(&fork, 2, 0, "t").is_err());
        assert!(ExtentMap::from_extents(&fork, 3, 0, "t").is_err());
    }
}
