//! The XFS log: finding its head and tail and deciding whether it needs recovery.
//!
//! Follows "XFS Algorithms & Data Structures", chapter "Journaling Log" (sections "Log Records",
//! "Log Operations") and the kernel's `xlog_find_head` / `xlog_find_tail` logic: every 512-byte
//! basic block of the log starts with the cycle number it was written in (for data blocks the
//! original first word is kept in the record header's `h_cycle_data`); the head is where the
//! cycle number drops, the last record before it says whether the log was cleanly unmounted.
//!
//! A log whose last record is an unmount record needs nothing. A dirty log is reported as an
//! error, which the volume turns into a visible note ("log NOT replayed"): in-memory replay of
//! its transactions is not implemented yet, and the volume is never presented as recovered.

use crate::block::{be, SharedSource};
use crate::error::{Error, Result};

use super::superblock::Superblock;

/// `0xFEEDBABE`: the first word of a log record header.
pub const XLOG_HEADER_MAGIC: u32 = 0xfeed_babe;
/// Log basic block size.
pub const BBSIZE: u64 = 512;
/// `XLOG_UNMOUNT_TRANS`: the operation is an unmount record.
pub const XLOG_UNMOUNT_TRANS: u8 = 0x20;
/// Largest log scanned (the kernel's maximum log size is 2 GiB).
pub const MAX_LOG_BYTES: u64 = 2 << 30;
/// Bytes read at once while scanning cycle numbers.
const SCAN_CHUNK: u64 = 256 * 1024;
/// Size of a log record header cycle section (`XLOG_HEADER_CYCLE_SIZE`).
const HEADER_CYCLE_SIZE: u64 = 32 * 1024;

/// What a replay did (only produced once replay is implemented).
#[derive(Debug)]
pub struct Replay {
    /// The replayed view of the volume.
    pub overlay: LogOverlay,
    /// Things worth telling the user.
    pub notes: Vec<String>,
}

impl Replay {
    /// One line saying what was replayed.
    pub fn summary(&self) -> String {
        "the volume as recovered".into()
    }
}

/// The replayed view of the volume.
pub type LogOverlay = crate::block::MemSource;

/// Where the log is and how big.
struct LogArea {
    src: SharedSource,
    start: u64,
    bbs: u64,
    name: String,
}

impl LogArea {
    fn read_bb(&self, bb: u64, buf: &mut [u8]) -> Result<()> {
        self.src
            .read_exact_at(self.start + (bb % self.bbs) * BBSIZE, buf)
    }

    /// The cycle number of every basic block, read in large chunks.
    fn cycles(&self) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(self.bbs as usize);
        let mut buf = vec![0u8; SCAN_CHUNK as usize];
        let mut bb = 0u64;
        while bb < self.bbs {
            let n = (self.bbs - bb).min(SCAN_CHUNK / BBSIZE);
            let chunk = &mut buf[..(n * BBSIZE) as usize];
            self.src.read_exact_at(self.start + bb * BBSIZE, chunk)?;
            for b in chunk.chunks_exact(BBSIZE as usize) {
                let cycle = if be::u32(b, 0) == Some(XLOG_HEADER_MAGIC) {
                    be::u32(b, 4).unwrap_or(0)
                } else {
                    be::u32(b, 0).unwrap_or(0)
                };
                out.push(cycle);
            }
            bb += n;
        }
        Ok(out)
    }
}

/// Examines the internal log. `Ok(None)`: clean (nothing to replay). An error: the log needs
/// recovery and was not replayed, or could not be read; the caller says so in a note.
pub fn recover(src: SharedSource, sb: &Superblock, name: &str) -> Result<Option<Replay>> {
    let start = sb
        .log_offset()
        .ok_or_else(|| Error::corrupt(name, 0, "the internal log lies outside the filesystem"))?;
    let bytes = u64::from(sb.log_blocks).saturating_mul(u64::from(sb.block_size));
    if !(64 * BBSIZE..=MAX_LOG_BYTES).contains(&bytes) {
        return Err(Error::corrupt(
            name,
            start,
            format!("log of {bytes} bytes is not a plausible size"),
        ));
    }
    let log = LogArea {
        src,
        start,
        bbs: bytes / BBSIZE,
        name: name.to_string(),
    };
    let cycles = log.cycles()?;
    let first = cycles[0];
    if first == 0 {
        // Never written (a zeroed log): nothing to recover.
        return Ok(None);
    }
    // The head is the first block written in an older cycle than block 0.
    let head = cycles.iter().position(|&c| c != first).unwrap_or(0) as u64;
    // The last record header before the head, in the head's cycle.
    let mut hdr = vec![0u8; BBSIZE as usize];
    let mut found = None;
    for back in 1..=log.bbs {
        let bb = (head + log.bbs - back) % log.bbs;
        log.read_bb(bb, &mut hdr)?;
        if be::u32(&hdr, 0) == Some(XLOG_HEADER_MAGIC) {
            found = Some(bb);
            break;
        }
    }
    let Some(rec) = found else {
        return Err(Error::corrupt(
            &log.name,
            start,
            "no log record header found before the log head",
        ));
    };
    let num_logops = be::u32(&hdr, 40).unwrap_or(0);
    let h_size = u64::from(be::u32(&hdr, 320).unwrap_or(0));
    let version = be::u32(&hdr, 8).unwrap_or(0);
    let hdr_bbs = if version & 2 != 0 && h_size > HEADER_CYCLE_SIZE {
        h_size.div_ceil(HEADER_CYCLE_SIZE)
    } else {
        1
    };
    let mut data = vec![0u8; BBSIZE as usize];
    log.read_bb(rec + hdr_bbs, &mut data)?;
    let flags = data[9];
    if num_logops == 1 && flags & XLOG_UNMOUNT_TRANS != 0 {
        return Ok(None);
    }
    Err(Error::unsupported(
        &log.name,
        format!(
            "the log was not cleanly unmounted (last record at log block {rec}, {num_logops} operations); replaying it in memory is not implemented"
        ),
    ))
}
