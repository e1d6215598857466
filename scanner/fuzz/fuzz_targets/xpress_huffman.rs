//! LZXPRESS Huffman (WOF XPRESS4K/8K/16K): the chunk decoder on arbitrary bytes.
#![no_main]

use coldscan_scanner::fs::ntfs::xpress;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the output size: up to the largest WOF chunk (16 KiB) and past it
    // to the 64 KiB an XPRESS block may hold, sometimes not a multiple of 4 KiB.
    let (sel, input) = data.split_first().unwrap_or((&0, &[]));
    let len = (usize::from(sel % 16) + 1) * 4096 - usize::from(sel / 128) * 777;
    let mut out = vec![0u8; len];
    let _ = xpress::decompress(input, &mut out);
});
