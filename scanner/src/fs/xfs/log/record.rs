//! Log records: headers (`xlog_rec_header`, `xlog_rec_ext_header`), their cycle data, CRCs,
//! and the operations (`xlog_op_header`) that carry transactions.
//!
//! Follows "XFS Algorithms & Data Structures", chapter "Journaling Log", sections "Log Records"
//! and "Log Operations", and the kernel's `xlog_unpack_data`, `xlog_cksum` and
//! `xlog_recover_process_ophdr` (fs/xfs/xfs_log_recover.c). Record headers and operation
//! headers are big-endian; the log item formats inside operations are in the writer's byte
//! order (see [`Endian`]).

use std::collections::HashMap;

use crate::block::{be, SharedSource};
use crate::error::{Error, Result};

use super::BBSIZE;

/// `0xFEEDBABE`: the first word of a log record header.
pub const XLOG_HEADER_MAGIC: u32 = 0xfeed_babe;
/// Size of the cycle-data section covered by one header (`XLOG_HEADER_CYCLE_SIZE`).
pub const HEADER_CYCLE_SIZE: u64 = 32 * 1024;
/// Largest record data length accepted: `XLOG_MAX_RECORD_BSIZE` (256 KiB) plus the largest
/// log stripe unit roundoff (256 KiB).
pub const MAX_RECORD_BYTES: u32 = 512 * 1024;
/// `sizeof(struct xlog_rec_header)`: the bytes of the header covered by its CRC.
const REC_HEADER_SIZE: usize = 328;
/// `sizeof(struct xlog_rec_ext_header)`.
const EXT_HEADER_SIZE: usize = 260;
/// Offset of `h_crc` in the record header.
const H_CRC: usize = 32;
/// Size of an operation header (`xlog_op_header`).
const OP_HEADER_SIZE: usize = 12;
/// `oh_clientid` of transaction operations (`XFS_TRANSACTION`) and of log-internal ones.
const XFS_TRANSACTION: u8 = 0x69;
const XFS_LOG: u8 = 0xaa;

/// `oh_flags` bits.
pub mod op_flags {
    /// First operation of a transaction (carries no data).
    pub const START: u8 = 0x01;
    /// Last operation: the transaction is committed.
    pub const COMMIT: u8 = 0x02;
    /// The data continues in the next operation.
    pub const CONTINUE: u8 = 0x04;
    /// The data continues the previous operation.
    pub const WAS_CONT: u8 = 0x08;
    /// End of a log vector (ignored by recovery).
    pub const END: u8 = 0x10;
    /// An unmount record.
    pub const UNMOUNT: u8 = 0x20;
}

/// `XFS_TRANS_HEADER_MAGIC` ("TRAN"), in the writer's byte order.
pub const TRANS_HEADER_MAGIC: u32 = 0x5452_414e;
/// `sizeof(struct xfs_trans_header)`.
const TRANS_HEADER_SIZE: usize = 16;
/// Most regions in one log item (`XLOG_MAX_REGIONS_IN_ITEM`).
pub const MAX_REGIONS_IN_ITEM: usize = 65536 / 128 / 2 + 1;
/// Most transactions open at once during recovery.
pub const MAX_OPEN_TRANSACTIONS: usize = 1 << 16;
/// Most bytes held by open (not yet committed) transactions: a checkpoint can be as large as
/// half the log (the largest log is 2 GiB).
pub const MAX_PENDING_BYTES: usize = 1 << 30;

/// Byte order of log item formats: they are written in the host order of the machine that
/// wrote the log (little-endian on x86 and most arm64 guests). Told apart by the transaction
/// header's magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Little-endian writer.
    Little,
    /// Big-endian writer.
    Big,
}

impl Endian {
    /// `u16` at `at` in this order.
    pub fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let a: [u8; 2] = b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(match self {
            Endian::Little => u16::from_le_bytes(a),
            Endian::Big => u16::from_be_bytes(a),
        })
    }
    /// `u32` at `at` in this order.
    pub fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let a: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(match self {
            Endian::Little => u32::from_le_bytes(a),
            Endian::Big => u32::from_be_bytes(a),
        })
    }
    /// `u64` at `at` in this order.
    pub fn u64(self, b: &[u8], at: usize) -> Option<u64> {
        let a: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
        Some(match self {
            Endian::Little => u64::from_le_bytes(a),
            Endian::Big => u64::from_be_bytes(a),
        })
    }
}

/// The circular log area inside the volume.
#[derive(Debug)]
pub struct LogArea {
    /// The volume.
    pub src: SharedSource,
    /// Byte offset of the log in the volume.
    pub start: u64,
    /// Basic blocks in the log.
    pub bbs: u64,
    /// Name for errors.
    pub name: String,
    /// The filesystem has v2 logs (`XFS_SB_VERSION_LOGV2BIT` or v5).
    pub logv2: bool,
}

impl LogArea {
    /// Byte offset in the volume of log block `bb` (modulo the log size).
    pub fn byte(&self, bb: u64) -> u64 {
        self.start + (bb % self.bbs) * BBSIZE
    }

    /// Reads `buf.len() / BBSIZE` blocks from log block `bb`, wrapping at the end of the log.
    pub fn read(&self, bb: u64, buf: &mut [u8]) -> Result<()> {
        let bb = bb % self.bbs;
        let first = ((self.bbs - bb) * BBSIZE).min(buf.len() as u64) as usize;
        self.src.read_exact_at(self.byte(bb), &mut buf[..first])?;
        if first < buf.len() {
            self.src.read_exact_at(self.start, &mut buf[first..])?;
        }
        Ok(())
    }
}

/// A record header's fields.
#[derive(Debug, Clone)]
pub struct RecordHeader {
    /// Log block of the header.
    pub bb: u64,
    /// `h_len`: bytes of data.
    pub len: u32,
    /// `h_lsn`.
    pub lsn: u64,
    /// `h_tail_lsn`.
    pub tail_lsn: u64,
    /// `h_num_logops`.
    pub num_logops: u32,
    /// Header blocks (the header and its extended headers).
    pub hblks: u64,
    /// `h_crc` as stored (little-endian on disk).
    pub crc: u32,
    /// The header block and its extended header blocks.
    pub raw: Vec<u8>,
}

impl RecordHeader {
    /// Data blocks after the headers.
    pub fn data_bbs(&self) -> u64 {
        u64::from(self.len).div_ceil(BBSIZE)
    }

    /// Log blocks the whole record takes.
    pub fn total_bbs(&self) -> u64 {
        self.hblks + self.data_bbs()
    }
}

/// Reads and checks the record header at log block `bb` (`xlog_valid_rec_header`).
pub fn read_header(log: &LogArea, bb: u64) -> Result<RecordHeader> {
    let at = log.byte(bb);
    let bad = |d: String| Error::corrupt(&log.name, at, format!("log record header: {d}"));
    let mut h = vec![0u8; BBSIZE as usize];
    log.read(bb, &mut h)?;
    if be::u32(&h, 0) != Some(XLOG_HEADER_MAGIC) {
        return Err(bad("bad magic".into()));
    }
    let word = |at: usize| be::u32(&h, at).unwrap_or(0);
    let version = word(8);
    if version == 0 || version & !3 != 0 {
        return Err(bad(format!("unknown version {version:#x}")));
    }
    let len = word(12);
    if len == 0 || len > MAX_RECORD_BYTES {
        return Err(bad(format!("data length {len} is not valid")));
    }
    let h_size = u64::from(word(320));
    let hblks = if log.logv2 && version & 2 != 0 && h_size > HEADER_CYCLE_SIZE {
        h_size.div_ceil(HEADER_CYCLE_SIZE)
    } else {
        1
    };
    if hblks > u64::from(MAX_RECORD_BYTES) / HEADER_CYCLE_SIZE {
        return Err(bad(format!("record buffer size {h_size} is too large")));
    }
    let data_bbs = u64::from(len).div_ceil(BBSIZE);
    // Every data block needs a saved cycle word: one header covers 64 blocks.
    if data_bbs > hblks * (HEADER_CYCLE_SIZE / BBSIZE) {
        return Err(bad(format!(
            "{len} bytes of data need more cycle data than {hblks} header blocks hold"
        )));
    }
    if hblks + data_bbs > log.bbs {
        return Err(bad("record larger than the log".into()));
    }
    let mut raw = vec![0u8; (hblks * BBSIZE) as usize];
    raw[..BBSIZE as usize].copy_from_slice(&h);
    if hblks > 1 {
        log.read(bb + 1, &mut raw[BBSIZE as usize..])?;
    }
    Ok(RecordHeader {
        bb: bb % log.bbs,
        len,
        lsn: be::u64(&h, 16).unwrap_or(0),
        tail_lsn: be::u64(&h, 24).unwrap_or(0),
        num_logops: word(40),
        hblks,
        crc: crate::block::le::u32(&h, H_CRC).unwrap_or(0),
        raw,
    })
}

/// `crc32c(crc, data)` as the kernel computes it (no inversion around it).
fn crc32c(crc: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!crc, data)
}

/// Reads a record's data, puts back the first word of every block (saved in the headers'
/// cycle data) and returns it with whether its CRC matches (`xlog_cksum`).
pub fn read_data(log: &LogArea, hdr: &RecordHeader) -> Result<(Vec<u8>, bool)> {
    let mut data = vec![0u8; (hdr.data_bbs() * BBSIZE) as usize];
    log.read(hdr.bb + hdr.hblks, &mut data)?;
    // CRC over the packed data, as written.
    let mut crc = !0u32;
    let mut head = hdr.raw[..REC_HEADER_SIZE].to_vec();
    head[H_CRC..H_CRC + 4].fill(0);
    crc = crc32c(crc, &head);
    if log.logv2 {
        let xheads = u64::from(hdr.len).div_ceil(HEADER_CYCLE_SIZE);
        for i in 1..xheads.min(hdr.hblks) {
            let at = (i * BBSIZE) as usize;
            crc = crc32c(crc, &hdr.raw[at..at + EXT_HEADER_SIZE]);
        }
    }
    crc = crc32c(crc, &data[..hdr.len as usize]);
    let crc_ok = !crc == hdr.crc;
    let per = (HEADER_CYCLE_SIZE / BBSIZE) as usize;
    for (i, block) in data.chunks_exact_mut(BBSIZE as usize).enumerate() {
        let (j, k) = (i / per, i % per);
        // Header 0 keeps its cycle data at byte 44, extended headers at byte 4.
        let at = j * BBSIZE as usize + if j == 0 { 44 } else { 4 } + k * 4;
        if let Some(w) = hdr.raw.get(at..at + 4) {
            block[..4].copy_from_slice(w);
        }
    }
    data.truncate(hdr.len as usize);
    Ok((data, crc_ok))
}

/// One log item of a transaction: its regions (region 0 is the item's format structure).
#[derive(Debug, Default)]
pub struct Item {
    /// Regions the item announced (`ilf_size` / `blf_size`).
    pub total: usize,
    /// The regions seen.
    pub regions: Vec<Vec<u8>>,
}

/// A transaction being assembled from operations.
#[derive(Debug)]
pub struct Transaction {
    /// `oh_tid`.
    pub tid: u32,
    /// LSN of the record that started it (`r_lsn`): the LSN replay compares against.
    pub lsn: u64,
    /// Byte order of its item formats, known once its header is seen.
    pub endian: Option<Endian>,
    /// The transaction header bytes seen so far (it may be split across operations).
    header: Vec<u8>,
    /// Its items, in log order.
    pub items: Vec<Item>,
    /// Byte offset of its first record (for errors).
    pub offset: u64,
    bytes: usize,
}

/// Assembles transactions from the operations of consecutive records
/// (`xlog_recover_process_data` and its helpers), handing each committed one to a callback.
#[derive(Debug)]
pub struct Assembler {
    name: String,
    open: HashMap<u32, Transaction>,
    pending_bytes: usize,
    /// Operations skipped because their transaction started before the tail.
    pub orphan_ops: u64,
    /// Unmount records met inside the replayed range.
    pub unmounts: u64,
}

impl Assembler {
    /// An assembler for the log of volume `name`.
    pub fn new(name: &str) -> Self {
        Assembler {
            name: name.to_string(),
            open: HashMap::new(),
            pending_bytes: 0,
            orphan_ops: 0,
            unmounts: 0,
        }
    }

    /// Feeds the operations of one record (`data` at byte `at` of the volume); `commit` gets
    /// every transaction that commits here.
    pub fn record(
        &mut self,
        hdr: &RecordHeader,
        data: &[u8],
        at: u64,
        commit: &mut dyn FnMut(Transaction) -> Result<()>,
    ) -> Result<()> {
        let name = self.name.clone();
        let bad = |pos: usize, d: String| {
            Error::corrupt(&name, at + pos as u64, format!("log operation: {d}"))
        };
        let mut pos = 0usize;
        for _ in 0..hdr.num_logops {
            let oh = data
                .get(pos..pos + OP_HEADER_SIZE)
                .ok_or_else(|| bad(pos, "operation header past the record's data".into()))?;
            let tid = be::u32(oh, 0).unwrap_or(0);
            let len = be::u32(oh, 4).unwrap_or(0) as usize;
            let (client, flags) = (oh[8], oh[9]);
            let body_at = pos + OP_HEADER_SIZE;
            let body = body_at
                .checked_add(len)
                .and_then(|end| data.get(body_at..end))
                .ok_or_else(|| bad(pos, format!("operation of {len} bytes past the record")))?;
            if client != XFS_TRANSACTION && client != XFS_LOG {
                return Err(bad(pos, format!("unknown client id {client:#x}")));
            }
            pos = body_at + len;
            let Some(trans) = self.open.get_mut(&tid) else {
                if flags & op_flags::START != 0 {
                    if self.open.len() >= MAX_OPEN_TRANSACTIONS {
                        return Err(Error::limit(
                            &self.name,
                            format!("more than {MAX_OPEN_TRANSACTIONS} open transactions"),
                        ));
                    }
                    self.open.insert(
                        tid,
                        Transaction {
                            tid,
                            lsn: hdr.lsn,
                            endian: None,
                            header: Vec::new(),
                            items: Vec::new(),
                            offset: at,
                            bytes: 0,
                        },
                    );
                } else {
                    // The rest of a transaction that began before the tail.
                    self.orphan_ops += 1;
                }
                continue;
            };
            let mut f = flags & !op_flags::END;
            if f & op_flags::WAS_CONT != 0 {
                f &= !op_flags::CONTINUE;
            }
            match f {
                0 | op_flags::CONTINUE => {
                    self.pending_bytes += body.len();
                    trans.bytes += body.len();
                    add_to_trans(trans, body).map_err(|d| bad(pos - len, d))?;
                }
                op_flags::WAS_CONT => {
                    self.pending_bytes += body.len();
                    trans.bytes += body.len();
                    add_to_cont_trans(trans, body).map_err(|d| bad(pos - len, d))?;
                }
                op_flags::COMMIT => {
                    let t = self.open.remove(&tid).expect("present");
                    self.pending_bytes -= t.bytes;
                    commit(t)?;
                }
                op_flags::UNMOUNT => {
                    let t = self.open.remove(&tid).expect("present");
                    self.pending_bytes -= t.bytes;
                    self.unmounts += 1;
                }
                _ => return Err(bad(pos - len, format!("bad operation flags {flags:#x}"))),
            }
            if self.pending_bytes > MAX_PENDING_BYTES {
                return Err(Error::limit(
                    &self.name,
                    format!("open transactions hold more than {MAX_PENDING_BYTES} bytes"),
                ));
            }
        }
        Ok(())
    }

    /// Transactions never committed (their changes are not replayed, as the kernel does).
    pub fn uncommitted(&self) -> usize {
        self.open.len()
    }
}

/// `xlog_recover_add_to_trans`.
fn add_to_trans(t: &mut Transaction, dp: &[u8]) -> std::result::Result<(), String> {
    if dp.is_empty() {
        return Ok(());
    }
    if t.endian.is_none() {
        // The transaction header, possibly split across operations.
        let endian = if crate::block::le::u32(dp, 0) == Some(TRANS_HEADER_MAGIC) {
            Endian::Little
        } else if be::u32(dp, 0) == Some(TRANS_HEADER_MAGIC) {
            Endian::Big
        } else {
            return Err("bad transaction header magic".into());
        };
        if dp.len() > TRANS_HEADER_SIZE {
            return Err(format!("transaction header of {} bytes", dp.len()));
        }
        t.endian = Some(endian);
        t.header = dp.to_vec();
        if dp.len() == TRANS_HEADER_SIZE {
            t.items.push(Item::default());
        }
        return Ok(());
    }
    if t.items.is_empty() {
        return Err("log item before the end of the transaction header".into());
    }
    let endian = t.endian.unwrap_or(Endian::Little);
    let item = t.items.last_mut().expect("non-empty");
    let item = if item.total != 0 && item.total == item.regions.len() {
        t.items.push(Item::default());
        t.items.last_mut().expect("just pushed")
    } else {
        item
    };
    if item.total == 0 {
        let size = usize::from(endian.u16(dp, 2).unwrap_or(0));
        if size == 0 || size > MAX_REGIONS_IN_ITEM {
            return Err(format!("bad number of regions ({size}) in a log item"));
        }
        item.total = size;
    }
    if item.regions.len() >= item.total {
        return Err(format!(
            "log item region count ({}) overflowed its size ({})",
            item.regions.len(),
            item.total
        ));
    }
    item.regions.push(dp.to_vec());
    Ok(())
}

/// `xlog_recover_add_to_cont_trans`.
fn add_to_cont_trans(t: &mut Transaction, dp: &[u8]) -> std::result::Result<(), String> {
    if t.items.is_empty() {
        // The rest of a split transaction header.
        if t.header.len() + dp.len() != TRANS_HEADER_SIZE {
            return Err("split transaction header has the wrong length".into());
        }
        t.header.extend_from_slice(dp);
        t.items.push(Item::default());
        return Ok(());
    }
    let item = t.items.last_mut().expect("non-empty");
    match item.regions.last_mut() {
        Some(r) => {
            r.extend_from_slice(dp);
            Ok(())
        }
        None => Err("continued log item with no region to continue".into()),
    }
}
