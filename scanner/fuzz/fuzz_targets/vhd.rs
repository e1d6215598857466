//! Fuzzes the vhd reader: parse an image from bytes (no backing/parent file is ever opened:
//! unallocated ranges read as zeros) and read its virtual disk, capped at a few MiB.
#![no_main]

use std::sync::Arc;

use coldscan_scanner::block::{BlockSource, MemSource, SharedSource};
use libfuzzer_sys::fuzz_target;

/// Bytes of the virtual disk read per input.
const READ_CAP: u64 = 8 << 20;

fuzz_target!(|data: &[u8]| {
    let file: SharedSource = Arc::new(MemSource::new(data.to_vec(), "fuzz.vhd"));
    let Ok(image) = coldscan_scanner::disk::vhd::VhdImage::parse(file) else {
        return;
    };
    let end = image.size().min(READ_CAP);
    let mut buf = vec![0u8; 256 * 1024];
    let mut pos = 0u64;
    while pos < end {
        let n = (end - pos).min(buf.len() as u64) as usize;
        if image.read_exact_at(pos, &mut buf[..n]).is_err() {
            // Keep going: later ranges may map elsewhere.
        }
        pos += n as u64;
    }
    // A read straddling the end must fail cleanly.
    let _ = image.read_exact_at(image.size().saturating_sub(1), &mut [0u8; 2]);
});
