//! The XFS log: finding its head and tail, and replaying it in memory.
//!
//! Follows "XFS Algorithms & Data Structures", chapter "Journaling Log" (sections "Log Records",
//! "Log Operations", "Log Items"), and the kernel's fs/xfs/xfs_log_recover.c for the algorithm
//! and its corner cases:
//! - every 512-byte basic block of the log starts with the cycle number it was written in (a
//!   data block's original first word is kept in its record header's cycle data); the head is
//!   the first block written in an older cycle than block 0, which also stops at a hole left
//!   by log buffers written out of order (`xlog_find_head`); a last record that does not end
//!   exactly at the head is incomplete and dropped (`xlog_find_verify_log_record`);
//! - the tail is `h_tail_lsn` of the last record; a last record that is an unmount record, or a
//!   tail equal to the head, means a clean log (`xlog_find_tail`);
//! - a record among the last [`MAX_ICLOGS`] whose CRC fails was torn by the crash: the head moves
//!   back to it (`xlog_verify_head`); a CRC failure further back is corruption;
//! - pass 1 collects cancelled buffers, pass 2 replays each committed transaction in log order
//!   ([`replay`]): buffers ([`buffer`]), inodes ([`inode`]), inode-chunk creation; quota items
//!   are skipped (quota is not read) and unfinished intents are noted.
//!
//! The result is a [`LogOverlay`]: the volume as the kernel would see it after recovery. Any
//! error means the log is not replayed at all; the caller then reads the volume as it is on disk
//! and says so in a note, never silently.

pub mod buffer;
pub mod inode;
pub mod overlay;
pub mod record;
pub mod replay;

use crate::block::{be, SharedSource};
use crate::error::{Error, Result};

use self::record::{op_flags, read_data, read_header, Assembler, LogArea, RecordHeader};
use self::replay::{Replayer, Stats};
use super::superblock::Superblock;

pub use self::overlay::LogOverlay;

/// Log basic block size.
pub const BBSIZE: u64 = 512;
/// Largest log scanned (the kernel's maximum log size is 2 GiB).
pub const MAX_LOG_BYTES: u64 = 2 << 30;
/// Smallest log accepted (64 basic blocks).
pub const MIN_LOG_BYTES: u64 = 64 * BBSIZE;
/// Log buffers that may be in flight at a crash (`XLOG_MAX_ICLOGS`): the records that may be
/// torn.
pub const MAX_ICLOGS: usize = 8;
/// Bytes read at once while scanning cycle numbers.
const SCAN_CHUNK: u64 = 256 * 1024;
/// `XFS_SB_VERSION_LOGV2BIT`.
const SB_VERSION_LOGV2: u16 = 0x0400;

/// What a replay did.
#[derive(Debug)]
pub struct Replay {
    /// The replayed view of the volume.
    pub overlay: LogOverlay,
    /// Things worth telling the user.
    pub notes: Vec<String>,
    /// Counters.
    pub stats: Stats,
    /// Log records replayed.
    pub records: usize,
}

impl Replay {
    /// One line saying what was replayed.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "{} transactions in {} records ({} buffers, {} inodes, {} inode chunks; {} cancelled, {} older than the disk)",
            s.transactions, self.records, s.buffers, s.inodes, s.icreates, s.cancelled, s.skipped_newer
        )
    }
}

/// The cycle number of every basic block, read in large chunks.
fn cycles(log: &LogArea) -> Result<Vec<u32>> {
    let mut out = Vec::with_capacity(log.bbs as usize);
    let mut buf = vec![0u8; SCAN_CHUNK as usize];
    let mut bb = 0u64;
    while bb < log.bbs {
        let n = (log.bbs - bb).min(SCAN_CHUNK / BBSIZE);
        let chunk = &mut buf[..(n * BBSIZE) as usize];
        log.src.read_exact_at(log.byte(bb), chunk)?;
        for b in chunk.chunks_exact(BBSIZE as usize) {
            let at = if be::u32(b, 0) == Some(record::XLOG_HEADER_MAGIC) {
                4
            } else {
                0
            };
            out.push(be::u32(b, at).unwrap_or(0));
        }
        bb += n;
    }
    Ok(out)
}

/// The last record header before `head`, searching back at most the whole log.
fn last_record_before(log: &LogArea, head: u64) -> Result<u64> {
    let mut hdr = vec![0u8; BBSIZE as usize];
    for back in 1..=log.bbs {
        let bb = (head + log.bbs - back) % log.bbs;
        log.read(bb, &mut hdr)?;
        if be::u32(&hdr, 0) == Some(record::XLOG_HEADER_MAGIC) {
            return Ok(bb);
        }
    }
    Err(Error::corrupt(
        &log.name,
        log.start,
        "no log record header found before the log head",
    ))
}

/// Distance from log block `a` forward to `b`.
fn dist(log: &LogArea, a: u64, b: u64) -> u64 {
    (b + log.bbs - a) % log.bbs
}

/// The records from `tail` up to `head`, each header checked.
fn records(log: &LogArea, tail: u64, head: u64) -> Result<Vec<RecordHeader>> {
    let want = dist(log, tail, head);
    let mut out = Vec::new();
    let mut walked = 0u64;
    let mut pos = tail;
    while walked < want {
        let h = read_header(log, pos)?;
        walked += h.total_bbs();
        if walked > want {
            return Err(Error::corrupt(
                &log.name,
                log.byte(pos),
                "a log record runs past the log head",
            ));
        }
        pos = (pos + h.total_bbs()) % log.bbs;
        out.push(h);
    }
    Ok(out)
}

/// Examines the internal log. `Ok(None)`: clean (nothing to replay). `Ok(Some)`: the replayed
/// view. An error: the log needs recovery and could not be replayed; the caller says so.
pub fn recover(src: SharedSource, sb: &Superblock, name: &str) -> Result<Option<Replay>> {
    let start = sb
        .log_offset()
        .ok_or_else(|| Error::corrupt(name, 0, "the internal log lies outside the filesystem"))?;
    let bytes = u64::from(sb.log_blocks).saturating_mul(u64::from(sb.block_size));
    if !(MIN_LOG_BYTES..=MAX_LOG_BYTES).contains(&bytes) || start.saturating_add(bytes) > src.size()
    {
        return Err(Error::corrupt(
            name,
            start,
            format!("log of {bytes} bytes does not fit the volume"),
        ));
    }
    let log = LogArea {
        src: src.clone(),
        start,
        bbs: bytes / BBSIZE,
        name: name.to_string(),
        logv2: sb.has_crc() || sb.versionnum & SB_VERSION_LOGV2 != 0,
    };
    let cycles = cycles(&log)?;
    let first = cycles[0];
    if first == 0 {
        // Never written (a zeroed log): nothing to recover.
        return Ok(None);
    }
    // The head: the first block written in another cycle than block 0.
    let mut head = cycles.iter().position(|&c| c != first).unwrap_or(0) as u64;
    let mut notes = Vec::new();
    let mut recs;
    let mut rounds = 0;
    loop {
        rounds += 1;
        if rounds > MAX_ICLOGS + 2 {
            return Err(Error::corrupt(
                name,
                start,
                "the log head could not be settled (too many torn records)",
            ));
        }
        let last = last_record_before(&log, head)?;
        let hdr = read_header(&log, last)?;
        if (last + hdr.total_bbs()) % log.bbs != head {
            // The last record is incomplete: it was being written at the crash.
            head = last;
            continue;
        }
        let mut first_op = vec![0u8; BBSIZE as usize];
        log.read(last + hdr.hblks, &mut first_op)?;
        if hdr.num_logops == 1 && first_op[9] & op_flags::UNMOUNT != 0 {
            return Ok(None);
        }
        let tail = hdr.tail_lsn & 0xffff_ffff;
        if tail >= log.bbs {
            return Err(Error::corrupt(
                name,
                log.byte(last),
                format!("tail block {tail} lies outside the {}-block log", log.bbs),
            ));
        }
        if tail == head {
            return Ok(None);
        }
        recs = records(&log, tail, head)?;
        // Torn writes: the first bad record among the last ones ends the log.
        let from = recs.len().saturating_sub(MAX_ICLOGS);
        let mut torn = None;
        for (i, r) in recs.iter().enumerate().skip(from) {
            let (_, ok) = read_data(&log, r)?;
            if !ok && (r.crc != 0 || sb.has_crc()) {
                torn = Some(i);
                break;
            }
        }
        match torn {
            Some(0) => return Ok(None),
            Some(i) => {
                notes.push(format!(
                    "the log's last {} record(s) were torn by the crash and are not replayed",
                    recs.len() - i
                ));
                head = recs[i].bb;
            }
            None => break,
        }
    }
    replay(&log, sb, &recs, notes).map(Some)
}

/// Runs both passes over `recs`.
fn replay(
    log: &LogArea,
    sb: &Superblock,
    recs: &[RecordHeader],
    notes: Vec<String>,
) -> Result<Replay> {
    let mut r = Replayer::new(sb, LogOverlay::new(log.src.clone()), sb.meta_uuid);
    r.notes = notes;
    // Pass 1: CRCs and cancelled buffers.
    let mut asm = Assembler::new(&log.name);
    for h in recs {
        let (data, ok) = read_data(log, h)?;
        if !ok && (h.crc != 0 || sb.has_crc()) {
            return Err(Error::corrupt(
                &log.name,
                log.byte(h.bb),
                "log record CRC mismatch inside the log (not a torn write at its head)",
            ));
        }
        asm.record(h, &data, log.byte(h.bb + h.hblks), &mut |t| {
            r.pass1(&t);
            Ok(())
        })?;
    }
    // Pass 2: apply.
    let mut asm = Assembler::new(&log.name);
    for h in recs {
        let (data, _) = read_data(log, h)?;
        asm.record(h, &data, log.byte(h.bb + h.hblks), &mut |t| r.pass2(&t))?;
    }
    if asm.uncommitted() > 0 {
        r.notes.push(format!(
            "{} transaction(s) at the log head were not committed and are not replayed (as the kernel does)",
            asm.uncommitted()
        ));
    }
    r.intent_notes();
    Ok(Replay {
        stats: r.stats,
        notes: r.notes,
        overlay: r.overlay,
        records: recs.len(),
    })
}
