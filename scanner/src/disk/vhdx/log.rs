//! The VHDX log ([MS-VHDX] section 2.3: 2.3.1 entries with zero and data descriptors and data
//! sectors, 2.3.2 log sequences, 2.3.3 replay).
//!
//! A non-zero log GUID in the current header means the log may hold metadata updates not yet
//! written to their final place (the image was not closed cleanly). Nothing is ever written: the
//! active sequence is found as section 2.3.3 describes and replayed into an in-memory overlay
//! ([`ReplayedFile`]) through which the rest of the image is read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::block::{check_bounds, le, read_vec, BlockSource, SharedSource};
use crate::disk::backing::read_lower;
use crate::disk::vhdx::header::{checksum, guid_string, Header};
use crate::error::{Error, Result};

/// Largest log read into memory (the spec allows up to 4 GiB; Hyper-V and QEMU use 1-32 MiB).
pub const MAX_LOG_BYTES: u64 = 256 << 20;
/// Log entries and their parts are 4 KiB sectors.
const SECTOR: u64 = 4096;

/// One update of an entry.
#[derive(Debug, Clone)]
enum Op {
    /// Zero `len` bytes at file offset `at`.
    Zero { at: u64, len: u64 },
    /// Write this 4 KiB sector at file offset `at`.
    Data { at: u64, data: Arc<[u8]> },
}

/// A parsed, valid log entry.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    tail: u64,
    len: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
    ops: Vec<Op>,
}

/// The log as a circular buffer.
struct Ring<'a> {
    log: &'a [u8],
}

impl Ring<'_> {
    fn bytes(&self, pos: u64, len: u64) -> Option<Vec<u8>> {
        let size = self.log.len() as u64;
        if len > size || pos >= size {
            return None;
        }
        let first = (size - pos).min(len);
        let mut v = self.log.get(pos as usize..(pos + first) as usize)?.to_vec();
        v.extend_from_slice(self.log.get(..(len - first) as usize)?);
        Some(v)
    }
}

fn parse_entry(ring: &Ring, pos: u64, log_guid: &[u8; 16]) -> Option<Entry> {
    let head = ring.bytes(pos, 64)?;
    if head.get(0..4)? != b"loge" {
        return None;
    }
    let len = u64::from(le::u32(&head, 8)?);
    let size = ring.log.len() as u64;
    if len < SECTOR || len % SECTOR != 0 || len > size {
        return None;
    }
    let b = ring.bytes(pos, len)?;
    if checksum(&b, 4) != le::u32(&b, 4)? || b.get(32..48)? != log_guid {
        return None;
    }
    let tail = u64::from(le::u32(&b, 12)?);
    let seq = le::u64(&b, 16)?;
    let count = u64::from(le::u32(&b, 24)?);
    if tail % SECTOR != 0 || tail >= size || seq == 0 {
        return None;
    }
    let desc_area = (64 + 32 * count).div_ceil(SECTOR) * SECTOR;
    if desc_area > len {
        return None;
    }
    let mut ops = Vec::new();
    let mut data_at = desc_area;
    for i in 0..count {
        let d = b.get((64 + 32 * i) as usize..(96 + 32 * i) as usize)?;
        if le::u64(d, 24)? != seq {
            return None;
        }
        let at = le::u64(d, 16)?;
        if at % SECTOR != 0 {
            return None;
        }
        match d.get(0..4)? {
            b"zero" => {
                let zlen = le::u64(d, 8)?;
                if zlen % SECTOR != 0 {
                    return None;
                }
                at.checked_add(zlen)?;
                ops.push(Op::Zero { at, len: zlen });
            }
            b"desc" => {
                let s = b.get(data_at as usize..(data_at + SECTOR) as usize)?;
                if s.get(0..4)? != b"data"
                    || u64::from(le::u32(s, 4)?) != seq >> 32
                    || u64::from(le::u32(s, 4092)?) != seq & 0xffff_ffff
                {
                    return None;
                }
                // Bytes 0-7 and 4092-4095 of the update live in the descriptor.
                let mut data = s.to_vec();
                data.get_mut(0..8)?.copy_from_slice(d.get(8..16)?);
                data.get_mut(4092..4096)?.copy_from_slice(d.get(4..8)?);
                at.checked_add(SECTOR)?;
                ops.push(Op::Data {
                    at,
                    data: data.into(),
                });
                data_at += SECTOR;
                if data_at > len {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(Entry {
        seq,
        tail,
        len,
        flushed_file_offset: le::u64(&b, 48)?,
        last_file_offset: le::u64(&b, 56)?,
        ops,
    })
}

/// Finds the active sequence (section 2.3.3): of every run of consecutive valid entries, the
/// one whose head has the largest sequence number and whose head's tail lies inside the run.
/// Returns its entries from the head's tail to the head.
fn active_sequence(log: &[u8], log_guid: &[u8; 16]) -> Vec<Entry> {
    let ring = Ring { log };
    let size = log.len() as u64;
    let mut cache: HashMap<u64, Option<Entry>> = HashMap::new();
    let mut parse = |pos: u64| -> Option<Entry> {
        cache
            .entry(pos)
            .or_insert_with(|| parse_entry(&ring, pos, log_guid))
            .clone()
    };
    let max_entries = (size / SECTOR) as usize;
    let mut best: Option<(u64, Vec<(u64, Entry)>)> = None;
    let mut start = 0u64;
    while start < size {
        let mut run: Vec<(u64, Entry)> = Vec::new();
        let mut pos = start;
        // Unwrapped end of the run, to resume the scan after it (as section 2.3.3 does): a
        // later start inside this run could only find a suffix of it, so the scan stays linear.
        let mut run_end = start;
        while run.len() < max_entries {
            let Some(e) = parse(pos) else { break };
            if let Some((_, last)) = run.last() {
                if last.seq.checked_add(1) != Some(e.seq) {
                    break;
                }
            }
            let next = (pos + e.len) % size;
            run_end += e.len;
            run.push((pos, e));
            pos = next;
        }
        // Valid when the head's tail is one of the run's entries; replay from there.
        if let Some((_, head)) = run.last() {
            if let Some(tail_index) = run.iter().position(|(p, _)| *p == head.tail) {
                let head_seq = head.seq;
                if best.as_ref().is_none_or(|(s, _)| head_seq > *s) {
                    best = Some((head_seq, run.split_off(tail_index)));
                }
            }
        }
        start = if run_end > start {
            run_end
        } else {
            start + SECTOR
        };
    }
    best.map(|(_, run)| run.into_iter().map(|(_, e)| e).collect())
        .unwrap_or_default()
}

/// The image file with the log's updates applied in memory.
#[derive(Debug)]
pub struct ReplayedFile {
    inner: SharedSource,
    size: u64,
    zeros: Vec<(u64, u64)>,
    pages: BTreeMap<u64, Arc<[u8]>>,
    /// Entries replayed.
    pub entries: usize,
    /// Sequence number of the head entry.
    pub head_sequence: u64,
    name: String,
}

impl BlockSource for ReplayedFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(&self.name, offset, buf.len(), self.size)?;
        // The file may have to be extended by the replay: beyond its end, zeros.
        read_lower(Some(&self.inner), offset, buf)?;
        let end = offset + buf.len() as u64;
        let mut fill = |at: u64, src: Option<&[u8]>, len: u64| {
            let (s, e) = (at.max(offset), (at + len).min(end));
            if s >= e {
                return;
            }
            let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
            match src {
                Some(d) => dst.copy_from_slice(&d[(s - at) as usize..(e - at) as usize]),
                None => dst.fill(0),
            }
        };
        // Zero ranges first, then data sectors (a later zero op removed earlier sectors).
        for &(at, len) in &self.zeros {
            fill(at, None, len);
        }
        for (&at, data) in self.pages.range(offset.saturating_sub(SECTOR - 1)..end) {
            fill(at, Some(data), SECTOR);
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Replays the log of `file` (whose current header is `header`) in memory, or refuses the
/// image when no valid sequence exists or the file was truncated.
pub fn replay(file: SharedSource, header: &Header) -> Result<ReplayedFile> {
    let name = file.name().to_string();
    let refuse = |why: String| {
        Error::unsupported(
            &name,
            format!(
                "VHDX log {} must be replayed but {why}",
                guid_string(&header.log_guid)
            ),
        )
    };
    let len = u64::from(header.log_length);
    if len == 0
        || len % (1 << 20) != 0
        || header.log_offset % (1 << 20) != 0
        || header.log_offset == 0
    {
        return Err(refuse(format!(
            "the log region ({len} bytes at {:#x}) is malformed",
            header.log_offset
        )));
    }
    if len > MAX_LOG_BYTES {
        return Err(Error::limit(
            &name,
            format!("VHDX log of {len} bytes (more than {MAX_LOG_BYTES})"),
        ));
    }
    let log = read_vec(file.as_ref(), header.log_offset, len, MAX_LOG_BYTES)
        .map_err(|_| refuse("the log lies past the end of the file".into()))?;
    let seq = active_sequence(&log, &header.log_guid);
    let Some(head) = seq.last() else {
        return Err(refuse(
            "it holds no valid log sequence (corrupt log)".into(),
        ));
    };
    if head.flushed_file_offset > file.size() {
        return Err(refuse(format!(
            "the file is truncated ({} bytes, the log says {})",
            file.size(),
            head.flushed_file_offset
        )));
    }
    let limit = file.size().saturating_add(crate::disk::MAX_VIRTUAL_SIZE);
    let mut size = file.size().max(head.last_file_offset);
    let mut zeros: Vec<(u64, u64)> = Vec::new();
    let mut pages: BTreeMap<u64, Arc<[u8]>> = BTreeMap::new();
    for e in &seq {
        for op in &e.ops {
            match op {
                Op::Zero { at, len } => {
                    let end = at + len;
                    let doomed: Vec<u64> = pages.range(*at..end).map(|(k, _)| *k).collect();
                    for k in doomed {
                        pages.remove(&k);
                    }
                    zeros.push((*at, *len));
                    size = size.max(end);
                }
                Op::Data { at, data } => {
                    pages.insert(*at, data.clone());
                    size = size.max(at + SECTOR);
                }
            }
        }
    }
    if size > limit {
        return Err(Error::corrupt(
            &name,
            header.log_offset,
            format!("VHDX log extends the file to {size} bytes"),
        ));
    }
    Ok(ReplayedFile {
        inner: file,
        size,
        zeros,
        pages,
        entries: seq.len(),
        head_sequence: head.seq,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;

    const GUID: [u8; 16] = [0x77; 16];

    enum TestOp {
        Zero(u64, u64),
        Data(u64, u8),
    }

    /// One log entry as [MS-VHDX] 2.3.1 lays it out.
    fn entry(seq: u64, tail: u32, ops: &[TestOp]) -> Vec<u8> {
        let data_count = ops.iter().filter(|o| matches!(o, TestOp::Data(..))).count();
        let desc_area = (64 + 32 * ops.len()).div_ceil(4096) * 4096;
        let len = desc_area + 4096 * data_count;
        let mut e = vec![0u8; len];
        e[0..4].copy_from_slice(b"loge");
        e[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        e[12..16].copy_from_slice(&tail.to_le_bytes());
        e[16..24].copy_from_slice(&seq.to_le_bytes());
        e[24..28].copy_from_slice(&(ops.len() as u32).to_le_bytes());
        e[32..48].copy_from_slice(&GUID);
        let mut data_at = desc_area;
        for (i, op) in ops.iter().enumerate() {
            let d = 64 + 32 * i;
            e[d + 24..d + 32].copy_from_slice(&seq.to_le_bytes());
            match *op {
                TestOp::Zero(at, n) => {
                    e[d..d + 4].copy_from_slice(b"zero");
                    e[d + 8..d + 16].copy_from_slice(&n.to_le_bytes());
                    e[d + 16..d + 24].copy_from_slice(&at.to_le_bytes());
                }
                TestOp::Data(at, fill) => {
                    e[d..d + 4].copy_from_slice(b"desc");
                    e[d + 4..d + 8].copy_from_slice(&[fill; 4]); // trailing bytes
                    e[d + 8..d + 16].copy_from_slice(&[fill; 8]); // leading bytes
                    e[d + 16..d + 24].copy_from_slice(&at.to_le_bytes());
                    let s = &mut e[data_at..data_at + 4096];
                    s[0..4].copy_from_slice(b"data");
                    s[4..8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
                    s[8..4092].fill(fill);
                    s[4092..4096].copy_from_slice(&(seq as u32).to_le_bytes());
                    data_at += 4096;
                }
            }
        }
        let c = checksum(&e, 4);
        e[4..8].copy_from_slice(&c.to_le_bytes());
        e
    }

    /// Places `entries` (position, bytes) in a circular log of `size` bytes.
    fn log_with(size: usize, entries: &[(usize, Vec<u8>)]) -> Vec<u8> {
        let mut log = vec![0u8; size];
        for (pos, e) in entries {
            for (i, b) in e.iter().enumerate() {
                log[(pos + i) % size] = *b;
            }
        }
        log
    }

    #[test]
    fn the_newest_complete_sequence_is_replayed_from_its_tail() {
        // An older session (seq 5-6), then seq 7 whose tail is seq 6: replay 6 and 7 only.
        let log = log_with(
            64 * 1024,
            &[
                (0, entry(5, 0, &[TestOp::Data(0x30_0000, 1)])),
                (8192, entry(6, 8192, &[TestOp::Data(0x30_1000, 2)])),
                (
                    16384,
                    entry(
                        7,
                        8192,
                        &[TestOp::Zero(0x30_1000, 4096), TestOp::Data(0x30_2000, 3)],
                    ),
                ),
                // A later-numbered entry with a bad checksum is ignored.
                (32768, {
                    let mut e = entry(8, 32768, &[]);
                    e[100] ^= 1;
                    e
                }),
            ],
        );
        let seq = active_sequence(&log, &GUID);
        assert_eq!(seq.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6, 7]);
    }

    #[test]
    fn a_log_full_of_entries_is_scanned_in_linear_time() {
        // 16 MiB of consecutive one-sector entries: a quadratic scan would take minutes.
        let size = 16usize << 20;
        let n = size / 4096;
        let entries: Vec<(usize, Vec<u8>)> = (0..n)
            .map(|i| (i * 4096, entry(i as u64 + 1, 0, &[])))
            .collect();
        let log = log_with(size, &entries);
        let t = std::time::Instant::now();
        let seq = active_sequence(&log, &GUID);
        assert_eq!(seq.len(), n);
        assert!(t.elapsed().as_secs() < 20);
    }

    #[test]
    fn a_sequence_wrapping_the_end_of_the_log_is_found_whole() {
        let size = 64 * 1024;
        let tail = size - 8192;
        let log = log_with(
            size,
            &[
                (tail, entry(3, tail as u32, &[])),
                (size - 4096, entry(4, tail as u32, &[])),
                (0, entry(5, tail as u32, &[])),
            ],
        );
        let seq = active_sequence(&log, &GUID);
        assert_eq!(seq.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
    }

    #[test]
    fn entries_wrap_around_the_end_of_the_log() {
        let size = 64 * 1024;
        let log = log_with(
            size,
            &[(
                size - 4096,
                entry(9, (size - 4096) as u32, &[TestOp::Data(0x20_0000, 4)]),
            )],
        );
        let seq = active_sequence(&log, &GUID);
        assert_eq!(seq.len(), 1);
        assert_eq!(seq[0].seq, 9);
    }

    #[test]
    fn replay_applies_data_and_zero_descriptors_in_order() {
        // A 3 MiB file of 0xee with a 1 MiB log at 1 MiB.
        let mut file = vec![0xeeu8; 3 << 20];
        let log = log_with(
            1 << 20,
            &[(
                0,
                entry(
                    1,
                    0,
                    &[
                        TestOp::Data(0x20_0000, 0x11),
                        TestOp::Data(0x20_1000, 0x22),
                        TestOp::Zero(0x20_1000, 8192),
                        TestOp::Data(0x30_0000, 0x33), // extends the file
                    ],
                ),
            )],
        );
        file[1 << 20..2 << 20].copy_from_slice(&log);
        let src: SharedSource = Arc::new(MemSource::new(file, "t"));
        let header = Header {
            index: 0,
            sequence: 1,
            data_write_guid: [0; 16],
            log_guid: GUID,
            log_length: 1 << 20,
            log_offset: 1 << 20,
        };
        let r = replay(src, &header).unwrap();
        assert_eq!(r.size(), (3 << 20) + 4096);
        let mut b = vec![0u8; 4 * 4096];
        r.read_exact_at(0x20_0000, &mut b).unwrap();
        assert!(b[..4096].iter().all(|&x| x == 0x11));
        assert!(b[4096..3 * 4096].iter().all(|&x| x == 0));
        assert!(b[3 * 4096..].iter().all(|&x| x == 0xee));
        let mut b = vec![0u8; 4096];
        r.read_exact_at(0x30_0000, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0x33));
        // A log GUID no entry carries: refused.
        let other = Header {
            log_guid: [1; 16],
            ..header
        };
        let src: SharedSource = Arc::new(MemSource::new(vec![0u8; 3 << 20], "t"));
        assert!(replay(src, &other).is_err());
    }
}
