//! The file allocation table: cluster chains.
//!
//! fatgen103 section 4 ("FAT Data Structure"): FAT12 entries are 12 bits packed in 1.5 bytes
//! (an even cluster takes the low 12 bits of the 16-bit word at `n + n/2`, an odd one the high
//! 12 bits), FAT16 entries 16 bits, FAT32 entries 32 bits of which the high 4 are reserved and
//! ignored. Values at or above the end-of-chain mark end a chain; the bad-cluster mark, free
//! entries and cluster numbers outside the data region are errors in a chain.

use std::collections::HashSet;

use crate::block::{le, BlockSource};
use crate::error::{Error, Result};
use crate::fs::FsKind;

use super::boot_sector::BootSector;

/// What a FAT entry says comes after a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The chain goes on at this cluster (checked to be a valid data cluster).
    Cluster(u32),
    /// End of chain.
    End,
}

/// Byte offset in the volume of the FAT entry of `cluster`.
pub fn entry_offset(bs: &BootSector, cluster: u32) -> u64 {
    let c = u64::from(cluster);
    let within = match bs.kind {
        FsKind::Fat12 => c + c / 2,
        FsKind::Fat16 => c * 2,
        _ => c * 4,
    };
    bs.active_fat_offset() + within
}

/// Reads the FAT entry of `cluster` and interprets it. `object` names the volume in errors.
pub fn next(src: &dyn BlockSource, bs: &BootSector, cluster: u32) -> Result<Next> {
    let at = entry_offset(bs, cluster);
    let mut b = [0u8; 4];
    let width = match bs.kind {
        FsKind::Fat32 => 4,
        _ => 2,
    };
    src.read_exact_at(at, &mut b[..width])?;
    let raw = le::u32(&b, 0).unwrap_or(0);
    let (value, bad, eoc) = match bs.kind {
        FsKind::Fat12 => {
            let v = if cluster % 2 == 0 {
                raw & 0x0fff
            } else {
                (raw >> 4) & 0x0fff
            };
            (v, 0x0ff7, 0x0ff8)
        }
        FsKind::Fat16 => (raw & 0xffff, 0xfff7, 0xfff8),
        _ => (raw & 0x0fff_ffff, 0x0fff_fff7, 0x0fff_fff8),
    };
    let bad_entry = |detail: String| {
        Error::corrupt(
            src.name(),
            at,
            format!("FAT entry of cluster {cluster}: {detail}"),
        )
    };
    if value >= eoc {
        Ok(Next::End)
    } else if value == bad {
        Err(bad_entry("cluster is marked bad".into()))
    } else if value == 0 {
        Err(bad_entry("chain runs into a free cluster".into()))
    } else if value < 2 || value >= bs.cluster_count.saturating_add(2) {
        Err(bad_entry(format!(
            "next cluster {value} is outside the data region (2..{})",
            bs.cluster_count.saturating_add(2)
        )))
    } else {
        Ok(Next::Cluster(value))
    }
}

/// Checks that `cluster` is a valid data cluster number.
pub fn check_cluster(src: &dyn BlockSource, bs: &BootSector, cluster: u32, at: u64) -> Result<()> {
    if cluster < 2 || cluster >= bs.cluster_count.saturating_add(2) {
        return Err(Error::corrupt(
            src.name(),
            at,
            format!(
                "cluster {cluster} is outside the data region (2..{})",
                bs.cluster_count.saturating_add(2)
            ),
        ));
    }
    Ok(())
}

/// A cluster chain followed incrementally, with loop detection: each cluster may appear once.
/// Stored as runs of consecutive clusters so that contiguous files cost little memory.
#[derive(Debug)]
pub struct Chain {
    /// (index in the chain, first cluster, number of clusters) runs, in chain order.
    runs: Vec<(u64, u32, u32)>,
    /// Clusters in the chain so far.
    len: u64,
    /// Every cluster seen (loop detection).
    seen: HashSet<u32>,
    /// Whether the end-of-chain mark was reached.
    ended: bool,
}

impl Chain {
    /// A chain starting at `first` (already checked with [`check_cluster`]).
    pub fn new(first: u32) -> Self {
        let mut seen = HashSet::new();
        seen.insert(first);
        Chain {
            runs: vec![(0, first, 1)],
            len: 1,
            seen,
            ended: false,
        }
    }

    /// Clusters known so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the chain has no clusters (never: a chain has its first cluster).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the end of the chain was reached.
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn last(&self) -> u32 {
        self.runs
            .last()
            .map_or(0, |&(_, f, n)| f.saturating_add(n.saturating_sub(1)))
    }

    /// Follows the chain until it has `want` clusters or ends. Errors (loop, bad or free
    /// cluster, out of range) name the FAT entry's byte offset.
    pub fn extend_to(&mut self, src: &dyn BlockSource, bs: &BootSector, want: u64) -> Result<()> {
        while self.len < want && !self.ended {
            let last = self.last();
            match next(src, bs, last)? {
                Next::End => self.ended = true,
                Next::Cluster(c) => {
                    if !self.seen.insert(c) {
                        return Err(Error::corrupt(
                            src.name(),
                            entry_offset(bs, last),
                            format!(
                                "cluster chain loops: cluster {last} links back to cluster {c} (after {} clusters)",
                                self.len
                            ),
                        ));
                    }
                    match self.runs.last_mut() {
                        Some((_, f, n)) if f.checked_add(*n) == Some(c) => *n += 1,
                        _ => self.runs.push((self.len, c, 1)),
                    }
                    self.len += 1;
                }
            }
        }
        Ok(())
    }

    /// The cluster at position `index` of the chain and how many clusters follow it
    /// contiguously on disk (itself included), if known.
    pub fn locate(&self, index: u64) -> Option<(u32, u64)> {
        // Runs are sorted by their chain index: binary search for the one holding `index`.
        let pos = self.runs.partition_point(|&(base, _, _)| base <= index);
        let &(base, first, n) = self.runs.get(pos.checked_sub(1)?)?;
        let k = index.checked_sub(base)?;
        if k >= u64::from(n) {
            return None;
        }
        Some((first.checked_add(u32::try_from(k).ok()?)?, u64::from(n) - k))
    }
}
