//! jbd2 journal replay, in memory only.
//!
//! Follows Documentation/filesystems/ext4, section 3.6 "Journal (jbd2)" (3.6.1 layout, 3.6.3
//! superblock, 3.6.4 descriptor block with `journal_block_tag_t` / `journal_block_tag3_t`, 3.6.6
//! revocation block, 3.6.7 commit block) and the kernel's `fs/jbd2/recovery.c` for the algorithm:
//! walk the log from `s_start` / `s_sequence` while block headers carry the expected sequence
//! number; a transaction counts only once its commit block is seen (and, with checksums v2/v3,
//! verifies; the first bad transaction ends the log, as the kernel does); blocks revoked by a
//! transaction at least as new as the one logging them are skipped; the rest are replayed in
//! order, later copies winning.
//!
//! Nothing is ever written: the replayed blocks become a [`JournalOverlay`], a [`BlockSource`]
//! that serves each replayed filesystem block from its copy inside the journal (restoring the
//! escaped magic number) and everything else from the volume. All journal fields are big-endian.

use std::collections::{BTreeMap, HashMap};

use crate::block::{be, check_bounds, BlockSource, SharedSource};
use crate::error::{Error, Result};

/// `h_magic` of every journal metadata block.
pub const JBD2_MAGIC: u32 = 0xC03B_3998;
const DESCRIPTOR_BLOCK: u32 = 1;
const COMMIT_BLOCK: u32 = 2;
const SUPERBLOCK_V1: u32 = 3;
const SUPERBLOCK_V2: u32 = 4;
const REVOKE_BLOCK: u32 = 5;

const FEATURE_INCOMPAT_REVOKE: u32 = 0x1;
const FEATURE_INCOMPAT_64BIT: u32 = 0x2;
const FEATURE_INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
const FEATURE_INCOMPAT_CSUM_V2: u32 = 0x8;
const FEATURE_INCOMPAT_CSUM_V3: u32 = 0x10;
const FEATURE_INCOMPAT_FAST_COMMIT: u32 = 0x20;
const KNOWN_INCOMPAT: u32 = FEATURE_INCOMPAT_REVOKE
    | FEATURE_INCOMPAT_64BIT
    | FEATURE_INCOMPAT_ASYNC_COMMIT
    | FEATURE_INCOMPAT_CSUM_V2
    | FEATURE_INCOMPAT_CSUM_V3
    | FEATURE_INCOMPAT_FAST_COMMIT;

const FLAG_ESCAPE: u32 = 0x1;
const FLAG_SAME_UUID: u32 = 0x2;
const FLAG_LAST_TAG: u32 = 0x8;

/// `JBD2_CRC32C_CHKSUM`, the only checksum type of v2/v3 journals.
const CRC32C_CHKSUM: u8 = 4;
/// Default number of fast-commit blocks at the end of the journal (`JBD2_DEFAULT_FAST_COMMIT_BLOCKS`).
const DEFAULT_FAST_COMMIT_BLOCKS: u32 = 256;

/// Most filesystem blocks the overlay may remap (each costs a few dozen bytes of memory, the
/// data itself stays in the journal): 4 Mi blocks, 16 GiB of 4 KiB blocks, far above any
/// journal mke2fs makes (at most 1 GiB by default).
pub const MAX_REPLAY_BLOCKS: usize = 1 << 22;
/// Most tags read from the log in one replay (descriptor tags across all transactions).
pub const MAX_LOG_TAGS: usize = 1 << 24;

/// Where a replayed filesystem block's content is.
#[derive(Debug, Clone, Copy)]
struct Remap {
    /// Byte offset of the journal copy in the volume.
    offset: u64,
    /// The copy's first four bytes were escaped (`JBD2_FLAG_ESCAPE`): restore the magic.
    escaped: bool,
}

/// The volume as the kernel would see it after replaying the journal: replayed blocks come from
/// their journal copies, everything else from the volume. Read-only, like every source.
#[derive(Debug)]
pub struct JournalOverlay {
    inner: SharedSource,
    block_size: u64,
    map: BTreeMap<u64, Remap>,
    name: String,
}

impl BlockSource for JournalOverlay {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(&self.name, offset, buf.len(), self.inner.size())?;
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64; // cannot overflow: checked above
        let first = offset / self.block_size;
        let last = (end - 1) / self.block_size;
        let mut pos = offset;
        for (&block, remap) in self.map.range(first..=last) {
            let b_start = block * self.block_size;
            let b_end = b_start + self.block_size;
            if pos < b_start {
                let (a, b) = ((pos - offset) as usize, (b_start - offset) as usize);
                self.inner.read_exact_at(pos, &mut buf[a..b])?;
                pos = b_start;
            }
            let seg_end = b_end.min(end);
            let within = pos - b_start;
            let (a, b) = ((pos - offset) as usize, (seg_end - offset) as usize);
            self.inner
                .read_exact_at(remap.offset + within, &mut buf[a..b])?;
            if remap.escaped && within < 4 {
                let magic = JBD2_MAGIC.to_be_bytes();
                for (i, &m) in magic.iter().enumerate().skip(within as usize) {
                    let at = b_start + i as u64;
                    if at < seg_end {
                        buf[(at - offset) as usize] = m;
                    }
                }
            }
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

/// What a replay did.
#[derive(Debug)]
pub struct Replay {
    /// The replayed view of the volume.
    pub overlay: JournalOverlay,
    /// Committed transactions replayed.
    pub transactions: u64,
    /// Distinct filesystem blocks replaced.
    pub blocks: u64,
    /// Things worth reporting (checksum failures, an aborted journal).
    pub notes: Vec<String>,
}

/// The journal superblock fields recovery needs.
#[derive(Debug)]
struct JournalSuper {
    first: u64,
    /// One past the last log block (`s_maxlen`, minus the fast-commit area).
    last: u64,
    sequence: u32,
    start: u64,
    incompat: u32,
    csum_seed: Option<u32>,
    errno: i32,
}

impl JournalSuper {
    fn csum_v2or3(&self) -> bool {
        self.incompat & (FEATURE_INCOMPAT_CSUM_V2 | FEATURE_INCOMPAT_CSUM_V3) != 0
    }

    /// Bytes per tag (the kernel's `journal_tag_bytes`).
    fn tag_bytes(&self) -> usize {
        if self.incompat & FEATURE_INCOMPAT_CSUM_V3 != 0 {
            return 16;
        }
        let mut sz = 12;
        if self.incompat & FEATURE_INCOMPAT_CSUM_V2 != 0 {
            sz += 2;
        }
        if self.incompat & FEATURE_INCOMPAT_64BIT != 0 {
            sz
        } else {
            sz - 4
        }
    }

    /// Wraps a log position past the end back into `first..last` (a descriptor's tags may
    /// run past the end of a tiny log more than once, hence the modulo).
    fn wrap(&self, b: u64) -> u64 {
        if b >= self.last {
            self.first + (b - self.first) % (self.last - self.first)
        } else {
            b
        }
    }
}

/// crc32c as the kernel's `crc32c(crc, data)` (no pre/post inversion).
fn kcrc(crc: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!crc, data)
}

/// Verifies a v2/v3 checksum stored big-endian at `at` over the whole block with it zeroed.
fn block_csum_ok(seed: u32, block: &mut [u8], at: usize) -> bool {
    let Some(stored) = be::u32(block, at) else {
        return false;
    };
    let saved = [block[at], block[at + 1], block[at + 2], block[at + 3]];
    block[at..at + 4].fill(0);
    let calc = kcrc(seed, block);
    block[at..at + 4].copy_from_slice(&saved);
    stored == calc
}

/// One tag of a descriptor block.
#[derive(Debug, Clone, Copy)]
struct Tag {
    fs_block: u64,
    log_block: u64,
    escaped: bool,
    checksum: u32,
}

#[derive(Debug, Default)]
struct Transaction {
    sequence: u32,
    tags: Vec<Tag>,
    revoked: Vec<u64>,
}

/// `tid_geq`: sequence numbers compare modulo 2^32.
fn tid_geq(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// Replays the journal whose log block `n` lives at byte `log_offset(n)` of `volume`.
///
/// `fs_block_size` and `fs_blocks` describe the filesystem (the journal's block size must
/// match; replayed blocks beyond the filesystem are skipped and noted). `journal_blocks` is the
/// journal's size in blocks. Returns `None` when the journal is clean (`s_start == 0`).
pub fn replay(
    volume: SharedSource,
    fs_block_size: u32,
    fs_blocks: u64,
    journal_blocks: u64,
    log_offset: &mut dyn FnMut(u64) -> Result<u64>,
) -> Result<Option<Replay>> {
    replay_bounded(
        volume,
        fs_block_size,
        fs_blocks,
        journal_blocks,
        log_offset,
        MAX_REPLAY_BLOCKS,
    )
}

/// [`replay`] with the remapped-block limit as a parameter (tests exercise the limit).
fn replay_bounded(
    volume: SharedSource,
    fs_block_size: u32,
    fs_blocks: u64,
    journal_blocks: u64,
    log_offset: &mut dyn FnMut(u64) -> Result<u64>,
    max_blocks: usize,
) -> Result<Option<Replay>> {
    let object = format!("{} journal", volume.name());
    let bs = fs_block_size as usize;
    let mut notes = Vec::new();
    let mut block = vec![0u8; bs];
    let sb_off = log_offset(0)?;
    volume.read_exact_at(sb_off, &mut block)?;
    let js = parse_super(&mut block, fs_block_size, journal_blocks, sb_off, &object)?;
    if js.start == 0 {
        return Ok(None);
    }
    if js.incompat & FEATURE_INCOMPAT_FAST_COMMIT != 0 {
        notes.push("journal has fast commits enabled: fast-commit blocks are not replayed".into());
    }
    if js.errno != 0 {
        notes.push(format!("journal was aborted (s_errno {})", js.errno));
    }

    // Pass 1 (the kernel's PASS_SCAN): find the committed transactions.
    let mut committed: Vec<Transaction> = Vec::new();
    let mut current = Transaction {
        sequence: js.sequence,
        ..Default::default()
    };
    let mut pos = js.start;
    let mut walked = 0u64;
    let log_len = js.last - js.first;
    let mut total_tags = 0usize;
    let tag_bytes = js.tag_bytes();
    let tail = if js.csum_v2or3() { 4 } else { 0 };
    loop {
        if walked >= log_len {
            notes.push("journal log wraps onto itself; stopped after one lap".into());
            break;
        }
        let off = log_offset(pos)?;
        volume.read_exact_at(off, &mut block)?;
        if be::u32(&block, 0) != Some(JBD2_MAGIC) || be::u32(&block, 8) != Some(current.sequence) {
            break; // end of the log
        }
        let blocktype = be::u32(&block, 4).unwrap_or(0);
        match blocktype {
            DESCRIPTOR_BLOCK => {
                if let Some(seed) = js.csum_seed {
                    if !block_csum_ok(seed, &mut block, bs - 4) {
                        notes.push(format!(
                            "journal descriptor block {pos} (transaction {}) has a bad checksum; log ends there",
                            current.sequence
                        ));
                        break;
                    }
                }
                let mut at = 12usize;
                let mut n = 0u64;
                let limit = bs - tail;
                while at + tag_bytes <= limit {
                    let lo = u64::from(be::u32(&block, at).unwrap_or(0));
                    let flags = u32::from(be::u16(&block, at + 6).unwrap_or(0));
                    let hi = if js.incompat & FEATURE_INCOMPAT_64BIT != 0 {
                        u64::from(be::u32(&block, at + 8).unwrap_or(0))
                    } else {
                        0
                    };
                    let checksum = if js.incompat & FEATURE_INCOMPAT_CSUM_V3 != 0 {
                        be::u32(&block, at + 12).unwrap_or(0)
                    } else {
                        u32::from(be::u16(&block, at + 4).unwrap_or(0))
                    };
                    n += 1;
                    let log_block = js.wrap(pos + n);
                    current.tags.push(Tag {
                        fs_block: lo | (hi << 32),
                        log_block,
                        escaped: flags & FLAG_ESCAPE != 0,
                        checksum,
                    });
                    at += tag_bytes;
                    if flags & FLAG_SAME_UUID == 0 {
                        at += 16;
                    }
                    if flags & FLAG_LAST_TAG != 0 {
                        break;
                    }
                }
                total_tags += n as usize;
                if total_tags > MAX_LOG_TAGS {
                    return Err(Error::limit(
                        &object,
                        format!("more than {MAX_LOG_TAGS} logged blocks"),
                    ));
                }
                walked += 1 + n;
                pos = js.wrap(pos + 1 + n);
            }
            COMMIT_BLOCK => {
                if let Some(seed) = js.csum_seed {
                    if !block_csum_ok(seed, &mut block, 16) {
                        notes.push(format!(
                            "journal commit block {pos} of transaction {} has a bad checksum; the transaction and the rest of the log are ignored",
                            current.sequence
                        ));
                        break;
                    }
                }
                let next = current.sequence.wrapping_add(1);
                committed.push(std::mem::replace(
                    &mut current,
                    Transaction {
                        sequence: next,
                        ..Default::default()
                    },
                ));
                walked += 1;
                pos = js.wrap(pos + 1);
            }
            REVOKE_BLOCK => {
                if let Some(seed) = js.csum_seed {
                    if !block_csum_ok(seed, &mut block, bs - 4) {
                        notes.push(format!(
                            "journal revoke block {pos} (transaction {}) has a bad checksum; log ends there",
                            current.sequence
                        ));
                        break;
                    }
                }
                let count = be::u32(&block, 12).unwrap_or(0) as usize;
                if count < 16 || count > bs - tail {
                    notes.push(format!(
                        "journal revoke block {pos} has a bad count {count}; log ends there"
                    ));
                    break;
                }
                let rec = if js.incompat & FEATURE_INCOMPAT_64BIT != 0 {
                    8
                } else {
                    4
                };
                let mut at = 16;
                while at + rec <= count {
                    let b = if rec == 8 {
                        be::u64(&block, at).unwrap_or(0)
                    } else {
                        u64::from(be::u32(&block, at).unwrap_or(0))
                    };
                    current.revoked.push(b);
                    at += rec;
                }
                walked += 1;
                pos = js.wrap(pos + 1);
            }
            _ => break,
        }
    }

    // Pass 2 (PASS_REVOKE): newest revoking transaction per block, committed ones only.
    let mut revoked: HashMap<u64, u32> = HashMap::new();
    for t in &committed {
        for &b in &t.revoked {
            let e = revoked.entry(b).or_insert(t.sequence);
            if tid_geq(t.sequence, *e) {
                *e = t.sequence;
            }
        }
    }

    // Pass 3 (PASS_REPLAY): map every surviving block to its newest journal copy.
    let mut map = BTreeMap::new();
    let mut bad_data = 0u64;
    let mut outside = 0u64;
    for t in &committed {
        for tag in &t.tags {
            if revoked
                .get(&tag.fs_block)
                .is_some_and(|&r| tid_geq(r, t.sequence))
            {
                continue;
            }
            if tag.fs_block >= fs_blocks {
                outside += 1;
                continue;
            }
            let offset = log_offset(tag.log_block)?;
            if let Some(seed) = js.csum_seed {
                volume.read_exact_at(offset, &mut block)?;
                let c = kcrc(kcrc(seed, &t.sequence.to_be_bytes()), &block);
                let ok = if js.incompat & FEATURE_INCOMPAT_CSUM_V3 != 0 {
                    c == tag.checksum
                } else {
                    c & 0xFFFF == tag.checksum
                };
                if !ok {
                    // recovery.c: "Invalid checksum recovering data block": skip that block.
                    bad_data += 1;
                    continue;
                }
            }
            map.insert(
                tag.fs_block,
                Remap {
                    offset,
                    escaped: tag.escaped,
                },
            );
            if map.len() > max_blocks {
                return Err(Error::limit(
                    &object,
                    format!("replay would replace more than {max_blocks} blocks"),
                ));
            }
        }
    }
    if bad_data > 0 {
        notes.push(format!(
            "{bad_data} journal data blocks with bad checksums were not replayed"
        ));
    }
    if outside > 0 {
        notes.push(format!(
            "{outside} journal blocks addressed past the filesystem end were not replayed"
        ));
    }
    let blocks = map.len() as u64;
    Ok(Some(Replay {
        overlay: JournalOverlay {
            name: format!("{} (journal replayed)", volume.name()),
            inner: volume,
            block_size: u64::from(fs_block_size),
            map,
        },
        transactions: committed.len() as u64,
        blocks,
        notes,
    }))
}

fn parse_super(
    b: &mut [u8],
    fs_block_size: u32,
    journal_blocks: u64,
    offset: u64,
    object: &str,
) -> Result<JournalSuper> {
    let bad = |d: String| Error::corrupt(object, offset, format!("journal superblock: {d}"));
    if be::u32(b, 0) != Some(JBD2_MAGIC) {
        return Err(bad("bad magic".into()));
    }
    let blocktype = be::u32(b, 4).unwrap_or(0);
    if blocktype != SUPERBLOCK_V1 && blocktype != SUPERBLOCK_V2 {
        return Err(bad(format!("block type {blocktype} is not a superblock")));
    }
    let blocksize = be::u32(b, 0xC).unwrap_or(0);
    if blocksize != fs_block_size {
        return Err(bad(format!(
            "block size {blocksize} differs from the filesystem's {fs_block_size}"
        )));
    }
    let maxlen = u64::from(be::u32(b, 0x10).unwrap_or(0));
    let first = u64::from(be::u32(b, 0x14).unwrap_or(0));
    let sequence = be::u32(b, 0x18).unwrap_or(0);
    let start = u64::from(be::u32(b, 0x1C).unwrap_or(0));
    let errno = be::u32(b, 0x20).unwrap_or(0) as i32;
    let (incompat, checksum_type, num_fc) = if blocktype == SUPERBLOCK_V2 {
        (
            be::u32(b, 0x28).unwrap_or(0),
            b.get(0x50).copied().unwrap_or(0),
            be::u32(b, 0x54).unwrap_or(0),
        )
    } else {
        (0, 0, 0)
    };
    if incompat & !KNOWN_INCOMPAT != 0 {
        return Err(Error::unsupported(
            object,
            format!(
                "journal incompatible feature flags {:#x}",
                incompat & !KNOWN_INCOMPAT
            ),
        ));
    }
    if maxlen > journal_blocks {
        return Err(bad(format!(
            "s_maxlen {maxlen} exceeds the journal's {journal_blocks} blocks"
        )));
    }
    let fc = if incompat & FEATURE_INCOMPAT_FAST_COMMIT != 0 {
        u64::from(if num_fc == 0 {
            DEFAULT_FAST_COMMIT_BLOCKS
        } else {
            num_fc
        })
    } else {
        0
    };
    let last = maxlen.saturating_sub(fc);
    if first == 0 || first >= last {
        return Err(bad(format!("log area {first}..{last} is empty")));
    }
    if start != 0 && (start < first || start >= last) {
        return Err(bad(format!(
            "s_start {start} outside the log area {first}..{last}"
        )));
    }
    let csum_seed = if incompat & (FEATURE_INCOMPAT_CSUM_V2 | FEATURE_INCOMPAT_CSUM_V3) != 0 {
        if checksum_type != CRC32C_CHKSUM {
            return Err(bad(format!("checksum type {checksum_type} is not crc32c")));
        }
        let sb = b.get_mut(..1024).ok_or_else(|| bad("short".into()))?;
        if !block_csum_ok(!0, sb, 0xFC) {
            return Err(bad("checksum mismatch".into()));
        }
        Some(kcrc(!0, sb.get(0x30..0x40).unwrap_or(&[])))
    } else {
        None
    };
    Ok(JournalSuper {
        first,
        last,
        sequence,
        start,
        incompat,
        csum_seed,
        errno,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;
    use std::sync::Arc;

    #[test]
    fn tid_comparison_wraps() {
        assert!(tid_geq(5, 5));
        assert!(tid_geq(0, u32::MAX));
        assert!(!tid_geq(u32::MAX, 0));
    }

    /// A 1 KiB-block journal of `n` blocks at the start of a memory source, no checksums.
    fn journal(n: usize, start: u32, seq: u32) -> Vec<u8> {
        let mut j = vec![0u8; n * 1024];
        let put =
            |j: &mut Vec<u8>, at: usize, v: u32| j[at..at + 4].copy_from_slice(&v.to_be_bytes());
        put(&mut j, 0, JBD2_MAGIC);
        put(&mut j, 4, SUPERBLOCK_V2);
        put(&mut j, 0xC, 1024);
        put(&mut j, 0x10, n as u32);
        put(&mut j, 0x14, 1);
        put(&mut j, 0x18, seq);
        put(&mut j, 0x1C, start);
        put(&mut j, 0x28, FEATURE_INCOMPAT_REVOKE);
        j
    }

    fn header(j: &mut [u8], block: usize, kind: u32, seq: u32) {
        let at = block * 1024;
        j[at..at + 4].copy_from_slice(&JBD2_MAGIC.to_be_bytes());
        j[at + 4..at + 8].copy_from_slice(&kind.to_be_bytes());
        j[at + 8..at + 12].copy_from_slice(&seq.to_be_bytes());
    }

    /// Descriptor at `block` logging fs blocks `targets` (32-bit tags, 8 bytes, UUID after the
    /// first).
    fn descriptor(j: &mut [u8], block: usize, seq: u32, targets: &[(u32, u16)]) {
        header(j, block, DESCRIPTOR_BLOCK, seq);
        let mut at = block * 1024 + 12;
        for (i, &(t, flags)) in targets.iter().enumerate() {
            let mut f = flags;
            if i > 0 {
                f |= FLAG_SAME_UUID as u16;
            }
            if i + 1 == targets.len() {
                f |= FLAG_LAST_TAG as u16;
            }
            j[at..at + 4].copy_from_slice(&t.to_be_bytes());
            j[at + 6..at + 8].copy_from_slice(&f.to_be_bytes());
            at += 8;
            if i == 0 {
                at += 16;
            }
        }
    }

    fn run(mut j: Vec<u8>) -> Option<Replay> {
        let blocks = (j.len() / 1024) as u64;
        // The filesystem blocks the tests replay lie after the journal.
        j.resize(300 * 1024, 0);
        let src: SharedSource = Arc::new(MemSource::new(j, "j"));
        replay(src, 1024, 1 << 20, blocks, &mut |n| Ok(n * 1024)).unwrap()
    }

    fn read_block(r: &Replay, b: u64) -> Vec<u8> {
        let mut v = vec![0u8; 1024];
        r.overlay.read_exact_at(b * 1024, &mut v).unwrap();
        v
    }

    #[test]
    fn committed_uncommitted_revoked_escaped_and_wrapping() {
        // 16-block journal, log starts at block 12 so the log wraps past block 15 to 1.
        let mut j = journal(16, 12, 7);
        // Transaction 7: descriptor at 12 logs fs blocks 100 (escaped) and 101; commit at 15.
        descriptor(&mut j, 12, 7, &[(100, FLAG_ESCAPE as u16), (101, 0)]);
        j[13 * 1024..14 * 1024].fill(0xAA);
        j[14 * 1024..15 * 1024].fill(0xBB);
        header(&mut j, 15, COMMIT_BLOCK, 7);
        // Transaction 8 wraps: descriptor at 1 logs 101 again, revoke of 100, commit at 4.
        descriptor(&mut j, 1, 8, &[(101, 0)]);
        j[2 * 1024..3 * 1024].fill(0xCC);
        header(&mut j, 3, REVOKE_BLOCK, 8);
        j[3 * 1024 + 12..3 * 1024 + 16].copy_from_slice(&20u32.to_be_bytes());
        j[3 * 1024 + 16..3 * 1024 + 20].copy_from_slice(&100u32.to_be_bytes());
        header(&mut j, 4, COMMIT_BLOCK, 8);
        // Transaction 9 never commits: its block must not appear.
        descriptor(&mut j, 5, 9, &[(102, 0)]);
        j[6 * 1024..7 * 1024].fill(0xDD);

        let r = run(j).expect("dirty journal");
        assert_eq!(r.transactions, 2);
        assert_eq!(
            r.blocks, 1,
            "100 revoked by 8, 101 replayed once, 102 uncommitted"
        );
        assert!(
            read_block(&r, 101).iter().all(|&b| b == 0xCC),
            "newest copy wins"
        );
        // Block 100 revoked: served from the volume (zeros past the journal).
        assert!(read_block(&r, 100).iter().all(|&b| b == 0));
        assert!(read_block(&r, 102).iter().all(|&b| b == 0));
    }

    #[test]
    fn escaped_block_gets_its_magic_back() {
        let mut j = journal(16, 1, 1);
        descriptor(&mut j, 1, 1, &[(200, FLAG_ESCAPE as u16)]);
        j[2 * 1024..3 * 1024].fill(0x11);
        j[2 * 1024..2 * 1024 + 4].fill(0);
        header(&mut j, 3, COMMIT_BLOCK, 1);
        let r = run(j).unwrap();
        let b = read_block(&r, 200);
        assert_eq!(&b[..4], &JBD2_MAGIC.to_be_bytes());
        assert!(b[4..].iter().all(|&x| x == 0x11));
        // A read starting inside the escaped word.
        let mut two = [0u8; 2];
        r.overlay.read_exact_at(200 * 1024 + 2, &mut two).unwrap();
        assert_eq!(two, [0x39, 0x98]);
    }

    #[test]
    fn tags_running_around_a_tiny_log_stay_inside_it() {
        // Log area 1..3 (two blocks); a descriptor at 1 with 40 tags wraps many times.
        let mut j = journal(3, 1, 1);
        j[0x10..0x14].copy_from_slice(&3u32.to_be_bytes());
        let targets: Vec<(u32, u16)> = (0..40).map(|i| (100 + i, 0)).collect();
        descriptor(&mut j, 1, 1, &targets);
        let js = parse_super(&mut j[..1024].to_vec(), 1024, 3, 0, "j").unwrap();
        for b in 0..100 {
            assert!((1..3).contains(&js.wrap(1 + b)));
        }
        // No commit block can follow: nothing is replayed, and nothing panics.
        let r = run(j).unwrap();
        assert_eq!(r.transactions, 0);
    }

    #[test]
    fn sequence_numbers_wrap_past_u32_max() {
        let mut j = journal(16, 1, u32::MAX);
        // Transaction u32::MAX logs 100; transaction 0 revokes it and logs 101.
        descriptor(&mut j, 1, u32::MAX, &[(100, 0)]);
        j[2 * 1024..3 * 1024].fill(0xAA);
        header(&mut j, 3, COMMIT_BLOCK, u32::MAX);
        header(&mut j, 4, REVOKE_BLOCK, 0);
        j[4 * 1024 + 12..4 * 1024 + 16].copy_from_slice(&20u32.to_be_bytes());
        j[4 * 1024 + 16..4 * 1024 + 20].copy_from_slice(&100u32.to_be_bytes());
        descriptor(&mut j, 5, 0, &[(101, 0)]);
        j[6 * 1024..7 * 1024].fill(0xBB);
        header(&mut j, 7, COMMIT_BLOCK, 0);
        let r = run(j).unwrap();
        assert_eq!(r.transactions, 2);
        assert_eq!(r.blocks, 1);
        assert!(
            read_block(&r, 100).iter().all(|&b| b == 0),
            "revoked by the newer transaction 0"
        );
        assert!(read_block(&r, 101).iter().all(|&b| b == 0xBB));
    }

    #[test]
    fn replay_over_the_block_limit_is_a_limit_error() {
        let mut j = journal(16, 1, 1);
        descriptor(&mut j, 1, 1, &[(100, 0), (101, 0)]);
        header(&mut j, 4, COMMIT_BLOCK, 1);
        j.resize(300 * 1024, 0);
        let src: SharedSource = Arc::new(MemSource::new(j, "j"));
        let err = replay_bounded(src, 1024, 300, 16, &mut |n| Ok(n * 1024), 1).unwrap_err();
        assert!(matches!(err, Error::Limit { .. }), "{err}");
    }

    #[test]
    fn clean_journal_is_none() {
        assert!(run(journal(16, 0, 1)).is_none());
    }
}
