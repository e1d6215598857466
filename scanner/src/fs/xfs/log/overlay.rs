//! The replayed view of an XFS volume: the sectors log recovery changed, held in memory.
//!
//! XFS logs byte ranges of buffers (128-byte chunks) and whole inode cores, not whole blocks as
//! jbd2 does, so replay builds new sector contents instead of remapping to copies inside the
//! log. Only the 512-byte sectors (`daddr` units) actually written are kept; everything else is
//! read from the volume. Nothing is ever written to the volume.

use std::collections::BTreeMap;

use crate::block::{check_bounds, BlockSource, SharedSource};
use crate::error::{Error, Result};

/// Bytes per overlay sector (the log's basic block, `BBSIZE`).
const SECTOR: u64 = 512;

/// Most bytes of replayed sectors kept in memory (a replay needing more is refused with an
/// error, and the volume is read as it is on disk with a note). The largest log is 2 GiB and
/// each logged 128-byte chunk dirties at most one sector, so real logs stay far below this.
pub const MAX_OVERLAY_BYTES: u64 = 1 << 30;

/// The volume with replayed sectors laid over it. Read-only, like every source.
#[derive(Debug)]
pub struct LogOverlay {
    inner: SharedSource,
    sectors: BTreeMap<u64, Box<[u8]>>,
    name: String,
}

impl LogOverlay {
    /// An overlay that changes nothing yet.
    pub fn new(inner: SharedSource) -> Self {
        let name = inner.name().to_string();
        LogOverlay {
            inner,
            sectors: BTreeMap::new(),
            name,
        }
    }

    /// Sectors replaced so far.
    pub fn sectors(&self) -> usize {
        self.sectors.len()
    }

    /// Replaces the bytes at `offset` with `data` in the replayed view.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        check_bounds(&self.name, offset, data.len(), self.inner.size())?;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let sector = pos / SECTOR;
            let within = (pos % SECTOR) as usize;
            let n = (SECTOR as usize - within).min(data.len() - done);
            if !self.sectors.contains_key(&sector) {
                if (self.sectors.len() as u64 + 1) * SECTOR > MAX_OVERLAY_BYTES {
                    return Err(Error::limit(
                        &self.name,
                        format!("log replay changes more than {MAX_OVERLAY_BYTES} bytes"),
                    ));
                }
                let mut s = vec![0u8; SECTOR as usize];
                let avail = self
                    .inner
                    .size()
                    .saturating_sub(sector * SECTOR)
                    .min(SECTOR);
                self.inner
                    .read_exact_at(sector * SECTOR, &mut s[..avail as usize])?;
                self.sectors.insert(sector, s.into_boxed_slice());
            }
            if let Some(s) = self.sectors.get_mut(&sector) {
                s[within..within + n].copy_from_slice(&data[done..done + n]);
            }
            done += n;
        }
        Ok(())
    }
}

impl BlockSource for LogOverlay {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(&self.name, offset, buf.len(), self.inner.size())?;
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64; // cannot overflow: checked above
        let mut pos = offset;
        for (&sector, data) in self.sectors.range(offset / SECTOR..=(end - 1) / SECTOR) {
            let s_start = sector * SECTOR;
            if pos < s_start {
                let (a, b) = ((pos - offset) as usize, (s_start - offset) as usize);
                self.inner.read_exact_at(pos, &mut buf[a..b])?;
                pos = s_start;
            }
            let seg_end = (s_start + SECTOR).min(end);
            let within = (pos - s_start) as usize;
            let (a, b) = ((pos - offset) as usize, (seg_end - offset) as usize);
            buf[a..b].copy_from_slice(&data[within..within + (b - a)]);
            pos = seg_end;
        }
        if pos < end {
            let a = (pos - offset) as usize;
            self.inner.read_exact_at(pos, &mut buf[a..])?;
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn logical_sector_size(&self) -> u32 {
        self.inner.logical_sector_size()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::block::MemSource;

    #[test]
    fn writes_show_through_and_the_rest_reads_from_the_volume() {
        let base: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut o = LogOverlay::new(Arc::new(MemSource::new(base.clone(), "v")));
        o.write(500, &[0xaa; 30]).unwrap();
        o.write(2048, &[0xbb; 512]).unwrap();
        let mut want = base.clone();
        want[500..530].fill(0xaa);
        want[2048..2560].fill(0xbb);
        let mut got = vec![0u8; 4096];
        o.read_exact_at(0, &mut got).unwrap();
        assert_eq!(got, want);
        let mut part = vec![0u8; 100];
        o.read_exact_at(460, &mut part).unwrap();
        assert_eq!(part, want[460..560]);
        assert_eq!(o.sectors(), 3);
        assert!(o.write(4090, &[0; 10]).is_err(), "past the end");
    }
}
