//! Inode log items (`xfs_inode_log_format`, `XFS_LI_INODE`), replayed as
//! `xlog_recover_inode_commit_pass2` does (fs/xfs/xfs_inode_item_recover.c): the logged core
//! (`xfs_log_dinode`, in the writer's byte order) converted to the on-disk big-endian core
//! (`xfs_log_dinode_to_disk`), then the data and attribute forks named by `ilf_fields`; a
//! bmap btree root is converted from its in-memory block form (`xfs_bmbt_to_bmdr`).

use crate::block::{be, BlockSource};
use crate::error::{Error, Result};

use super::record::Endian;
use super::replay::Replayer;

/// `ilf_fields` bits.
pub mod ilog {
    /// The inode core.
    pub const CORE: u32 = 0x001;
    /// Local data fork.
    pub const DDATA: u32 = 0x002;
    /// Extent-list data fork.
    pub const DEXT: u32 = 0x004;
    /// Btree-root data fork.
    pub const DBROOT: u32 = 0x008;
    /// Device number.
    pub const DEV: u32 = 0x010;
    /// Local attribute fork.
    pub const ADATA: u32 = 0x040;
    /// Extent-list attribute fork.
    pub const AEXT: u32 = 0x080;
    /// Btree-root attribute fork.
    pub const ABROOT: u32 = 0x100;
    /// Data fork fields.
    pub const DFORK: u32 = DDATA | DEXT | DBROOT;
    /// Attribute fork fields.
    pub const AFORK: u32 = ADATA | AEXT | ABROOT;
}

const DINODE_MAGIC: u16 = 0x494e;
/// `di_flags2` bits used by the conversion.
const DIFLAG2_BIGTIME: u64 = 1 << 3;
const DIFLAG2_NREXT64: u64 = 1 << 4;
/// On-disk core sizes (v1/v2 and v3) and logged core sizes (v2 without `di_next_unlinked`).
const CORE_V2: usize = 100;
const CORE_V3: usize = 176;
const LOG_CORE_V2: usize = 96;
/// `DI_MAX_FLUSH`.
const DI_MAX_FLUSH: u16 = 0xffff;
/// Header lengths of an in-memory bmap btree root block (v5 and v4).
const BMBT_CRC_BLOCK_LEN: usize = 72;
const BMBT_BLOCK_LEN: usize = 24;

/// The fields of an inode log format (64-bit layout of 56 bytes or the packed 52-byte one).
#[derive(Debug, Clone, Copy)]
struct InodeFormat {
    size: u16,
    fields: u32,
    rdev: u32,
    blkno: u64,
    len: u64,
    boffset: u64,
}

impl InodeFormat {
    fn parse(r: &[u8], e: Endian) -> std::result::Result<InodeFormat, String> {
        let t = || "inode log format truncated".to_string();
        // `xfs_inode_item_format_convert`: the 32-bit layout has no padding before ilf_ino.
        let tail = match r.len() {
            56 => 0,
            52 => 4,
            n => return Err(format!("inode log format of {n} bytes")),
        };
        Ok(InodeFormat {
            size: e.u16(r, 2).ok_or_else(t)?,
            fields: e.u32(r, 4).ok_or_else(t)?,
            rdev: e.u32(r, 24 - tail).ok_or_else(t)?,
            blkno: e.u64(r, 40 - tail).ok_or_else(t)?,
            len: u64::from(e.u32(r, 48 - tail).ok_or_else(t)?),
            boffset: u64::from(e.u32(r, 52 - tail).ok_or_else(t)?),
        })
    }
}

/// Writes the logged core `l` (writer's order) over the on-disk core `d` (big-endian).
fn log_dinode_to_disk(l: &[u8], d: &mut [u8], e: Endian, lsn: u64) -> Option<()> {
    let version = *l.get(4)?;
    let flags2 = if version >= 3 { e.u64(l, 120)? } else { 0 };
    let put16 = |d: &mut [u8], at: usize, v: u16| d[at..at + 2].copy_from_slice(&v.to_be_bytes());
    let put32 = |d: &mut [u8], at: usize, v: u32| d[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let put64 = |d: &mut [u8], at: usize, v: u64| d[at..at + 8].copy_from_slice(&v.to_be_bytes());
    let ts = |d: &mut [u8], at: usize| -> Option<()> {
        if flags2 & DIFLAG2_BIGTIME != 0 {
            put64(d, at, e.u64(l, at)?);
        } else {
            put32(d, at, e.u32(l, at)?);
            put32(d, at + 4, e.u32(l, at + 4)?);
        }
        Some(())
    };
    put16(d, 0, e.u16(l, 0)?);
    put16(d, 2, e.u16(l, 2)?);
    d[4] = version;
    d[5] = *l.get(5)?;
    put16(d, 6, 0);
    for at in [8, 12, 16] {
        put32(d, at, e.u32(l, at)?);
    }
    put16(d, 20, e.u16(l, 20)?);
    put16(d, 22, e.u16(l, 22)?);
    for at in [32, 40, 48] {
        ts(d, at)?;
    }
    put64(d, 56, e.u64(l, 56)?);
    put64(d, 64, e.u64(l, 64)?);
    put32(d, 72, e.u32(l, 72)?);
    d[82] = *l.get(82)?;
    d[83] = *l.get(83)?;
    put32(d, 84, e.u32(l, 84)?);
    put16(d, 88, e.u16(l, 88)?);
    put16(d, 90, e.u16(l, 90)?);
    put32(d, 92, e.u32(l, 92)?);
    if version >= 3 {
        put64(d, 104, e.u64(l, 104)?);
        ts(d, 144)?;
        put64(d, 120, flags2);
        put32(d, 128, e.u32(l, 128)?);
        put64(d, 152, e.u64(l, 152)?);
        put64(d, 112, lsn);
        d[132..144].fill(0);
        d[160..176].copy_from_slice(l.get(160..176)?);
        put64(d, 24, 0);
    } else {
        put16(d, 30, e.u16(l, 30)?);
        d[24..30].fill(0);
    }
    if version >= 3 && flags2 & DIFLAG2_NREXT64 != 0 {
        put64(d, 24, e.u64(l, 24)?);
        put32(d, 76, e.u32(l, 76)?);
        put16(d, 80, e.u16(l, 80)?);
    } else {
        put32(d, 76, e.u32(l, 76)?);
        put16(d, 80, e.u16(l, 80)?);
    }
    Some(())
}

/// `xfs_bmbt_to_bmdr`: the in-memory root block `src` (big-endian btree block with its full
/// header, keys and pointers spaced for `src.len()`) into the on-disk root of `dsize` bytes.
fn bmbt_to_bmdr(src: &[u8], crc: bool, dst: &mut [u8]) -> std::result::Result<(), String> {
    let hdr = if crc {
        BMBT_CRC_BLOCK_LEN
    } else {
        BMBT_BLOCK_LEN
    };
    let level = be::u16(src, 4).ok_or("btree root truncated")?;
    let numrecs = usize::from(be::u16(src, 6).ok_or("btree root truncated")?);
    if level == 0 {
        return Err("a btree root at level 0".into());
    }
    let rmax = src.len().saturating_sub(hdr) / 16;
    let dmax = dst.len().saturating_sub(4) / 16;
    if numrecs > rmax || numrecs > dmax {
        return Err(format!("btree root with {numrecs} records does not fit"));
    }
    dst[0..2].copy_from_slice(&level.to_be_bytes());
    dst[2..4].copy_from_slice(&(numrecs as u16).to_be_bytes());
    let keys = &src[hdr..hdr + numrecs * 8];
    let ptrs = &src[hdr + rmax * 8..hdr + rmax * 8 + numrecs * 8];
    dst[4..4 + numrecs * 8].copy_from_slice(keys);
    dst[4 + dmax * 8..4 + dmax * 8 + numrecs * 8].copy_from_slice(ptrs);
    Ok(())
}

impl Replayer<'_> {
    /// Replays one inode item of a transaction at `lsn`.
    pub fn inode(&mut self, regions: &[Vec<u8>], e: Endian, lsn: u64, at: u64) -> Result<()> {
        let bad = |d: String| Error::corrupt(&self.name, at, format!("inode log item: {d}"));
        let f = InodeFormat::parse(&regions[0], e).map_err(bad)?;
        if self.cancels.is_cancelled(f.blkno, f.len) {
            self.stats.cancelled += 1;
            return Ok(());
        }
        let isize = usize::from(self.sb.inode_size);
        let pos = f
            .blkno
            .checked_mul(512)
            .and_then(|b| b.checked_add(f.boffset))
            .filter(|p| {
                f.boffset + isize as u64 <= f.len * 512
                    && p.saturating_add(isize as u64) <= self.overlay.size()
            })
            .ok_or_else(|| {
                bad(format!(
                    "inode at daddr {:#x} + {:#x} lies outside its buffer or the volume",
                    f.blkno, f.boffset
                ))
            })?;
        let ldip = regions
            .get(1)
            .ok_or_else(|| bad("no logged inode core".into()))?;
        let mut dip = vec![0u8; isize];
        self.overlay.read_exact_at(pos, &mut dip)?;
        if be::u16(&dip, 0) != Some(DINODE_MAGIC) {
            return Err(bad(format!("no inode at byte {pos:#x} to replay onto")));
        }
        if e.u16(ldip, 0) != Some(DINODE_MAGIC) {
            return Err(bad("bad magic in the logged inode core".into()));
        }
        if dip[4] >= 3 {
            let disk_lsn = be::u64(&dip, 112).unwrap_or(0);
            if disk_lsn != 0 && disk_lsn != u64::MAX && disk_lsn > lsn {
                self.stats.skipped_newer += 1;
                return Ok(());
            }
        }
        let core_log = if self.sb.has_crc() {
            CORE_V3
        } else {
            LOG_CORE_V2
        };
        if ldip.len() < core_log || ldip.len() > CORE_V3 {
            return Err(bad(format!("logged inode core of {} bytes", ldip.len())));
        }
        if !self.sb.has_crc() {
            let log_iter = e.u16(ldip, 30).unwrap_or(0);
            let disk_iter = be::u16(&dip, 30).unwrap_or(0);
            if log_iter < disk_iter && !(disk_iter == DI_MAX_FLUSH && log_iter < DI_MAX_FLUSH >> 1)
            {
                self.stats.skipped_newer += 1;
                return Ok(());
            }
        }
        let mut core = ldip.clone();
        if !self.sb.has_crc() {
            // Flush counter reset, as recovery does.
            core[30..32].fill(0);
        }
        log_dinode_to_disk(&core, &mut dip, e, lsn)
            .ok_or_else(|| bad("logged inode core truncated".into()))?;
        let core_disk = if dip[4] >= 3 { CORE_V3 } else { CORE_V2 };
        if core_disk > isize {
            return Err(bad("inode core larger than the inode".into()));
        }
        if f.fields & ilog::DEV != 0 {
            dip[core_disk..core_disk + 4].copy_from_slice(&f.rdev.to_be_bytes());
        }
        let forkoff = usize::from(dip[82]) * 8;
        let dsize = if forkoff == 0 {
            isize - core_disk
        } else {
            forkoff
        };
        if core_disk + dsize > isize {
            return Err(bad(format!(
                "attribute fork offset {forkoff} past the inode"
            )));
        }
        let mut next = 2;
        if f.size > 2 && f.fields & ilog::DFORK != 0 {
            let src = regions
                .get(next)
                .ok_or_else(|| bad("data fork region missing".into()))?;
            next += 1;
            match f.fields & ilog::DFORK {
                ilog::DDATA | ilog::DEXT => {
                    let n = src.len().min(isize - core_disk);
                    if src.len() > dsize && src.len() - dsize >= 4 {
                        return Err(bad(format!(
                            "{} bytes of data fork in a {dsize}-byte fork",
                            src.len()
                        )));
                    }
                    dip[core_disk..core_disk + n].copy_from_slice(&src[..n]);
                }
                ilog::DBROOT => bmbt_to_bmdr(
                    src,
                    self.sb.has_crc(),
                    &mut dip[core_disk..core_disk + dsize],
                )
                .map_err(bad)?,
                x => return Err(bad(format!("data fork fields {x:#x} are contradictory"))),
            }
        }
        if f.size > 2 && f.fields & ilog::AFORK != 0 {
            let src = regions
                .get(next)
                .ok_or_else(|| bad("attribute fork region missing".into()))?;
            let aoff = core_disk + forkoff;
            if forkoff == 0 || aoff >= isize {
                return Err(bad("attribute fork logged for an inode without one".into()));
            }
            match f.fields & ilog::AFORK {
                ilog::ADATA | ilog::AEXT => {
                    let n = src.len().min(isize - aoff);
                    dip[aoff..aoff + n].copy_from_slice(&src[..n]);
                }
                ilog::ABROOT => {
                    bmbt_to_bmdr(src, self.sb.has_crc(), &mut dip[aoff..]).map_err(bad)?
                }
                x => {
                    return Err(bad(format!(
                        "attribute fork fields {x:#x} are contradictory"
                    )))
                }
            }
        }
        self.overlay.write(pos, &dip)?;
        self.stats.inodes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A logged core written by a little-endian machine.
    fn log_core(version: u8, flags2: u64) -> Vec<u8> {
        let mut l = vec![0u8; 176];
        l[0..2].copy_from_slice(&DINODE_MAGIC.to_le_bytes());
        l[2..4].copy_from_slice(&0o100644u16.to_le_bytes());
        l[4] = version;
        l[5] = 2;
        l[16..20].copy_from_slice(&3u32.to_le_bytes());
        l[30..32].copy_from_slice(&7u16.to_le_bytes());
        l[32..36].copy_from_slice(&1_700_000_000u32.to_le_bytes());
        l[36..40].copy_from_slice(&5u32.to_le_bytes());
        l[56..64].copy_from_slice(&123_456u64.to_le_bytes());
        l[76..80].copy_from_slice(&9u32.to_le_bytes());
        l[90..92].copy_from_slice(&0x20u16.to_le_bytes());
        l[112..120].copy_from_slice(&0xdead_beefu64.to_le_bytes());
        l[120..128].copy_from_slice(&flags2.to_le_bytes());
        l[152..160].copy_from_slice(&4242u64.to_le_bytes());
        l
    }

    #[test]
    fn logged_cores_become_big_endian_disk_cores() {
        for (version, flags2) in [(3u8, 0u64), (3, DIFLAG2_BIGTIME), (2, 0)] {
            let l = log_core(version, flags2);
            let mut d = vec![0xaau8; 512];
            log_dinode_to_disk(&l, &mut d, Endian::Little, 0x1_0000_0020).unwrap();
            assert_eq!(be::u16(&d, 0), Some(DINODE_MAGIC));
            assert_eq!(be::u16(&d, 2), Some(0o100644));
            assert_eq!((d[4], d[5]), (version, 2));
            assert_eq!(be::u32(&d, 16), Some(3));
            assert_eq!(be::u64(&d, 56), Some(123_456));
            assert_eq!(be::u32(&d, 76), Some(9));
            assert_eq!(be::u16(&d, 90), Some(0x20));
            assert_eq!(d[96..100], [0xaa; 4], "di_next_unlinked is not logged");
            if flags2 & DIFLAG2_BIGTIME != 0 {
                assert_eq!(
                    be::u64(&d, 32),
                    Some(u64::from(1_700_000_000u32) | (5 << 32))
                );
            } else {
                assert_eq!(be::u32(&d, 32), Some(1_700_000_000));
                assert_eq!(be::u32(&d, 36), Some(5));
            }
            if version == 3 {
                assert_eq!(
                    be::u64(&d, 112),
                    Some(0x1_0000_0020),
                    "LSN of the transaction"
                );
                assert_eq!(be::u64(&d, 152), Some(4242));
            } else {
                assert_eq!(be::u16(&d, 30), Some(7), "flush counter");
            }
        }
        assert!(log_dinode_to_disk(&[0u8; 40], &mut [0u8; 512], Endian::Little, 0).is_none());
    }

    #[test]
    fn btree_root_keys_and_pointers_are_respaced() {
        // In-memory root: v4 header (24 bytes), room for 3 records, 2 used.
        let mut src = vec![0u8; 24 + 3 * 16];
        src[4..6].copy_from_slice(&1u16.to_be_bytes());
        src[6..8].copy_from_slice(&2u16.to_be_bytes());
        src[24..32].copy_from_slice(&10u64.to_be_bytes());
        src[32..40].copy_from_slice(&20u64.to_be_bytes());
        src[48..56].copy_from_slice(&111u64.to_be_bytes());
        src[56..64].copy_from_slice(&222u64.to_be_bytes());
        let mut dst = vec![0u8; 4 + 5 * 16];
        bmbt_to_bmdr(&src, false, &mut dst).unwrap();
        assert_eq!(be::u16(&dst, 2), Some(2));
        assert_eq!(be::u64(&dst, 4), Some(10));
        assert_eq!(be::u64(&dst, 12), Some(20));
        assert_eq!(be::u64(&dst, 4 + 5 * 8), Some(111));
        assert_eq!(be::u64(&dst, 4 + 6 * 8), Some(222));
        let mut tiny = vec![0u8; 20];
        assert!(bmbt_to_bmdr(&src, false, &mut tiny).is_err());
    }
}
