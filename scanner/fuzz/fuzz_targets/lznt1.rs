//! LZNT1: the decoder on arbitrary bytes, into a compression-unit-sized buffer.
#![no_main]

use coldscan_scanner::fs::ntfs::lznt1;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the output size (1 to 16 chunks, sometimes not chunk-aligned).
    let (sel, input) = data.split_first().unwrap_or((&0, &[]));
    let len = (usize::from(sel % 16) + 1) * lznt1::CHUNK_SIZE - usize::from(sel / 128) * 100;
    let mut out = vec![0u8; len];
    let _ = lznt1::decompress(input, &mut out);
});
