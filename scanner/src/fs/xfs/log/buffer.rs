//! Buffer log items (`xfs_buf_log_format`, `XFS_LI_BUF`) and inode-chunk creation items
//! (`xfs_icreate_log`, `XFS_LI_ICREATE`), replayed as `xlog_recover_buf_commit_pass2` and
//! `xlog_recover_icreate_commit_pass2` do (fs/xfs/xfs_buf_item_recover.c,
//! fs/xfs/xfs_icreate_item.c): dirty 128-byte chunks copied in from the log, cancelled buffers
//! skipped, and on v5 filesystems a buffer whose own LSN is not older than the transaction left
//! as it is.

use crate::block::{be, BlockSource};
use crate::error::{Error, Result};

use super::record::Endian;
use super::replay::Replayer;

/// Bytes per dirty-bitmap chunk (`XFS_BLF_CHUNK`).
pub const BLF_CHUNK: usize = 128;
/// Words in the dirty bitmap (`XFS_BLF_DATAMAP_SIZE`).
pub const BLF_DATAMAP_SIZE: usize = 16;
/// Largest logged buffer in basic blocks (`XFS_MAX_BLOCKSIZE` / 512).
pub const MAX_BUF_BBS: u64 = 128;

/// `blf_flags` bits.
pub mod blf {
    /// Inode buffer: only the unlinked-list pointers are replayed.
    pub const INODE_BUF: u16 = 0x1;
    /// The buffer was freed: earlier copies in the log must not be replayed.
    pub const CANCEL: u16 = 0x2;
}

/// `XFS_DINODE_MAGIC` and the offset of `di_next_unlinked` in an inode.
const DINODE_MAGIC: u16 = 0x494e;
const NEXT_UNLINKED: usize = 96;
/// `NULLAGINO`.
const NULL_AGINO: u32 = u32::MAX;

/// The fields of a buffer log format.
#[derive(Debug, Clone, Copy)]
pub struct BufFormat {
    /// `blf_flags`.
    pub flags: u16,
    /// `blf_len` in basic blocks.
    pub len: u64,
    /// `blf_blkno` (daddr).
    pub blkno: u64,
    map: [u32; BLF_DATAMAP_SIZE],
    map_words: usize,
}

impl BufFormat {
    /// Parses region 0 of a buffer item.
    pub fn parse(r: &[u8], e: Endian) -> std::result::Result<BufFormat, String> {
        let flags = e.u16(r, 4).ok_or("buffer log format truncated")?;
        let len = u64::from(e.u16(r, 6).ok_or("buffer log format truncated")?);
        let blkno = e.u64(r, 8).ok_or("buffer log format truncated")?;
        let map_size = e.u32(r, 16).ok_or("buffer log format truncated")? as usize;
        if map_size > BLF_DATAMAP_SIZE {
            return Err(format!("dirty bitmap of {map_size} words"));
        }
        let mut map = [0u32; BLF_DATAMAP_SIZE];
        for (i, w) in map.iter_mut().enumerate().take(map_size) {
            *w = e.u32(r, 20 + 4 * i).ok_or("dirty bitmap truncated")?;
        }
        Ok(BufFormat {
            flags,
            len,
            blkno,
            map,
            map_words: map_size,
        })
    }

    fn bit(&self, b: usize) -> bool {
        b < self.map_words * 32 && self.map[b / 32] & (1 << (b % 32)) != 0
    }

    /// The logged ranges `(byte offset in the buffer, region index, bytes)`, in order, as
    /// `xlog_recover_do_reg_buffer` walks them (runs of set bits, trimmed to their region).
    pub fn ranges(
        &self,
        regions: &[Vec<u8>],
    ) -> std::result::Result<Vec<(usize, usize, usize)>, String> {
        let mut out = Vec::new();
        let mut bit = 0usize;
        let mut region = 1usize;
        let nbits_total = self.map_words * 32;
        while bit < nbits_total {
            if !self.bit(bit) {
                bit += 1;
                continue;
            }
            let mut n = 0;
            while self.bit(bit + n) {
                n += 1;
            }
            let r = regions
                .get(region)
                .ok_or_else(|| format!("dirty bitmap names region {region}, which is missing"))?;
            if r.len() < n * BLF_CHUNK {
                n = r.len() / BLF_CHUNK;
            }
            if n == 0 {
                return Err(format!("region {region} is shorter than one chunk"));
            }
            out.push((bit * BLF_CHUNK, region, n * BLF_CHUNK));
            region += 1;
            bit += n;
        }
        Ok(out)
    }
}

/// Where the LSN and UUID of a v5 metadata block are, by magic (`xlog_recover_get_buf_lsn`);
/// `None` means "replay regardless" (no LSN, or not a known self-describing block).
fn buf_lsn(b: &[u8], meta_uuid: &[u8; 16], has_meta_uuid: bool) -> Option<u64> {
    let m32 = be::u32(b, 0)?;
    let at = |lsn: usize, uuid: usize| -> Option<(u64, [u8; 16])> {
        Some((be::u64(b, lsn)?, b.get(uuid..uuid + 16)?.try_into().ok()?))
    };
    let found = match &m32.to_be_bytes() {
        b"AB3B" | b"AB3C" | b"ABTB" | b"ABTC" | b"RMB3" | b"R3FC" | b"FIB3" | b"FIBT" | b"IAB3"
        | b"IABT" => at(24, 32),
        b"BMA3" | b"BMAP" => at(32, 40),
        b"XAGF" => at(208, 64),
        b"XAFL" => at(24, 8),
        b"XAGI" => at(320, 296),
        b"XSLM" => at(48, 16),
        b"XDB3" | b"XDD3" | b"XDF3" => at(16, 24),
        b"XARM" => return None,
        b"XFSB" => at(240, if has_meta_uuid { 248 } else { 32 }),
        _ => match be::u16(b, 8)? {
            0x3df1 | 0x3dff | 0x3bee | 0x3ebe => at(24, 32),
            _ => None,
        },
    };
    let (lsn, uuid) = found?;
    (uuid == *meta_uuid).then_some(lsn)
}

impl Replayer<'_> {
    /// Replays one buffer item of a transaction at `lsn`.
    pub fn buffer(&mut self, regions: &[Vec<u8>], e: Endian, lsn: u64, at: u64) -> Result<()> {
        let bad = |d: String| Error::corrupt(&self.name, at, format!("buffer log item: {d}"));
        let f = BufFormat::parse(&regions[0], e).map_err(bad)?;
        if f.flags & blf::CANCEL != 0 {
            self.cancels.put(f.blkno, f.len);
            self.stats.cancelled += 1;
            return Ok(());
        }
        if self.cancels.is_cancelled(f.blkno, f.len) {
            self.stats.cancelled += 1;
            return Ok(());
        }
        if f.len == 0 || f.len > MAX_BUF_BBS {
            return Err(bad(format!("buffer of {} basic blocks", f.len)));
        }
        let start = f
            .blkno
            .checked_mul(512)
            .filter(|s| s.saturating_add(f.len * 512) <= self.overlay.size())
            .ok_or_else(|| {
                bad(format!(
                    "buffer at daddr {:#x} lies outside the volume",
                    f.blkno
                ))
            })?;
        let mut buf = vec![0u8; (f.len * 512) as usize];
        self.overlay.read_exact_at(start, &mut buf)?;
        if self.sb.has_crc() {
            if let Some(l) = buf_lsn(&buf, &self.meta_uuid, self.has_meta_uuid) {
                if l != 0 && l != u64::MAX && l >= lsn {
                    self.stats.skipped_newer += 1;
                    return Ok(());
                }
            }
        }
        let ranges = f.ranges(regions).map_err(bad)?;
        if f.flags & blf::INODE_BUF != 0 {
            // Only the unlinked-list pointers (`xlog_recover_do_inode_buffer`).
            let isize = usize::from(self.sb.inode_size);
            for i in 0..buf.len() / isize {
                let off = i * isize + NEXT_UNLINKED;
                let Some(&(start_in, region, _)) = ranges
                    .iter()
                    .find(|&&(o, _, n)| off >= o && off + 4 <= o + n)
                else {
                    continue;
                };
                let src = &regions[region][off - start_in..off - start_in + 4];
                self.overlay.write(start + off as u64, src)?;
            }
        } else {
            for (off, region, n) in ranges {
                if off + n > buf.len() {
                    return Err(bad(format!(
                        "logged range {off:#x}+{n:#x} past the {}-byte buffer",
                        buf.len()
                    )));
                }
                self.overlay
                    .write(start + off as u64, &regions[region][..n])?;
            }
        }
        self.stats.buffers += 1;
        Ok(())
    }

    /// Replays an inode-chunk creation item: the chunk's inodes are written as free inodes.
    pub fn icreate(&mut self, regions: &[Vec<u8>], at: u64) -> Result<()> {
        let bad = |d: String| Error::corrupt(&self.name, at, format!("inode create log item: {d}"));
        let r = &regions[0];
        let word = |o: usize| be::u32(r, o).ok_or_else(|| bad("truncated".into()));
        let (agno, agbno, count, isize, length, gen) = (
            word(4)?,
            word(8)?,
            word(12)?,
            word(16)?,
            word(20)?,
            word(24)?,
        );
        let sb = self.sb;
        let inopb = 1u32 << sb.inopb_log;
        if agno >= sb.ag_count
            || u64::from(agbno) + u64::from(length) > u64::from(sb.ag_blocks)
            || isize != u32::from(sb.inode_size)
            || count == 0
            || count > 64
            || length == 0
            || count != length * inopb
        {
            return Err(bad(format!(
                "AG {agno} block {agbno}: {count} inodes of {isize} bytes in {length} blocks is not valid"
            )));
        }
        let bs = u64::from(sb.block_size);
        let bpc = u64::from(self.blocks_per_cluster).min(u64::from(length));
        let agb_to_byte = |b: u64| (u64::from(agno) * u64::from(sb.ag_blocks) + b) * bs;
        let mut clusters = 0;
        let mut cancelled = 0;
        let mut b = u64::from(agbno);
        while b < u64::from(agbno) + u64::from(length) {
            clusters += 1;
            if self
                .cancels
                .is_cancelled(agb_to_byte(b) / 512, bpc * bs / 512)
            {
                cancelled += 1;
            }
            b += bpc;
        }
        if cancelled > 0 {
            self.stats.cancelled += 1;
            if cancelled != clusters {
                self.notes.push(format!(
                    "an inode chunk in AG {agno} at block {agbno} is only partly cancelled; not initialised"
                ));
            }
            return Ok(());
        }
        let start = agb_to_byte(u64::from(agbno));
        let mut chunk = vec![0u8; (u64::from(length) * bs) as usize];
        let version = if sb.has_crc() { 3 } else { 2 };
        let first_ino = (u64::from(agno) << (u32::from(sb.ag_blk_log) + u32::from(sb.inopb_log)))
            | (u64::from(agbno) << sb.inopb_log);
        for (i, ino) in chunk.chunks_exact_mut(isize as usize).enumerate() {
            ino[0..2].copy_from_slice(&DINODE_MAGIC.to_be_bytes());
            ino[4] = version;
            ino[92..96].copy_from_slice(&gen.to_be_bytes());
            ino[96..100].copy_from_slice(&NULL_AGINO.to_be_bytes());
            if version == 3 {
                ino[152..160].copy_from_slice(&(first_ino + i as u64).to_be_bytes());
                ino[160..176].copy_from_slice(&self.meta_uuid);
            }
        }
        if start.saturating_add(chunk.len() as u64) > self.overlay.size() {
            return Err(bad("the inode chunk lies outside the volume".into()));
        }
        self.overlay.write(start, &chunk)?;
        self.stats.icreates += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(map: &[u32]) -> Vec<u8> {
        let mut r = vec![0u8; 20 + 4 * map.len()];
        r[0..2].copy_from_slice(&0x123cu16.to_le_bytes());
        r[6..8].copy_from_slice(&8u16.to_le_bytes());
        r[8..16].copy_from_slice(&64u64.to_le_bytes());
        r[16..20].copy_from_slice(&(map.len() as u32).to_le_bytes());
        for (i, w) in map.iter().enumerate() {
            r[20 + 4 * i..24 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        r
    }

    #[test]
    fn dirty_bitmap_runs_map_to_regions_in_order() {
        // Chunks 0-1 and 4, then 31-32 across a word boundary.
        let f = BufFormat::parse(&format(&[0x8000_0013, 0x1]), Endian::Little).unwrap();
        assert_eq!((f.len, f.blkno), (8, 64));
        let regions = vec![vec![], vec![1; 256], vec![2; 128], vec![3; 256]];
        assert_eq!(
            f.ranges(&regions).unwrap(),
            vec![(0, 1, 256), (512, 2, 128), (31 * 128, 3, 256)]
        );
        // A run split over two regions (a page boundary): trimmed to the first region.
        let f = BufFormat::parse(&format(&[0x7]), Endian::Little).unwrap();
        let r = f.ranges(&[vec![], vec![0; 128], vec![0; 256]]).unwrap();
        assert_eq!(r, vec![(0, 1, 128), (128, 2, 256)]);
        // A region missing, a bitmap too long: errors.
        assert!(f.ranges(&[vec![]]).is_err());
        assert!(BufFormat::parse(&format(&[0; 17]), Endian::Little).is_err());
    }

    #[test]
    fn buffer_lsn_is_found_by_magic_and_ignored_for_another_filesystem() {
        let uuid = [7u8; 16];
        let mut b = vec![0u8; 4096];
        b[0..4].copy_from_slice(b"XDD3");
        b[16..24].copy_from_slice(&0x5_0000_0100u64.to_be_bytes());
        b[24..40].copy_from_slice(&uuid);
        assert_eq!(buf_lsn(&b, &uuid, false), Some(0x5_0000_0100));
        assert_eq!(buf_lsn(&b, &[8u8; 16], false), None);
        b[0..4].copy_from_slice(b"XARM");
        assert_eq!(buf_lsn(&b, &uuid, false), None);
        b[0..4].fill(0);
        b[8..10].copy_from_slice(&0x3ebeu16.to_be_bytes());
        b[24..32].copy_from_slice(&9u64.to_be_bytes());
        b[32..48].copy_from_slice(&uuid);
        assert_eq!(buf_lsn(&b, &uuid, false), Some(9));
    }
}
