//! Fuzzes the VMDK reader: descriptor text, hosted sparse / stream-optimized / COWD headers,
//! grain directories and tables, compressed grains, extents and parents, all in memory.
//!
//! Input: either one file (the top file and also the only other file), or `0xff`, a length byte
//! `n`, then a top file of `16 * n` bytes followed by the other file. The other file is offered
//! under the names `x.vmdk` (extent) and `p.vmdk` (parent), so descriptors can reach it.
#![no_main]

use std::sync::Arc;

use coldscan_scanner::block::{MemSource, SharedSource};
use coldscan_scanner::disk::vmdk::{open_source, MemoryFiles};
use libfuzzer_sys::fuzz_target;

/// Bytes read from the opened disk per input, spread over its whole size.
const READ_PIECES: u64 = 64;
const PIECE: usize = 16 * 1024;

fuzz_target!(|data: &[u8]| {
    let (top, other) = match data {
        [0xff, n, rest @ ..] => {
            let split = (usize::from(*n) * 16).min(rest.len());
            rest.split_at(split)
        }
        _ => (data, data),
    };
    let top: SharedSource = Arc::new(MemSource::new(top.to_vec(), "top.vmdk"));
    let other: SharedSource = Arc::new(MemSource::new(other.to_vec(), "x.vmdk"));
    let mut files = MemoryFiles::new(vec![
        ("x.vmdk".to_string(), other.clone()),
        ("p.vmdk".to_string(), other),
    ]);
    let Ok(disk) = open_source(top, &mut files) else {
        return;
    };
    let size = disk.source.size();
    let mut buf = vec![0u8; PIECE];
    for i in 0..READ_PIECES {
        let at = (size / READ_PIECES).saturating_mul(i);
        let n = (size - at).min(PIECE as u64) as usize;
        let _ = disk.source.read_exact_at(at, &mut buf[..n]);
    }
    // An unaligned read across pieces.
    if size > 3 {
        let n = (size - 3).min(PIECE as u64) as usize;
        let _ = disk.source.read_exact_at(3, &mut buf[..n]);
    }
});
