//! LZX (WOF LZX, 32 KiB chunks): the chunk decoder on arbitrary bytes.
#![no_main]

use coldscan_scanner::fs::ntfs::lzx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the output size: 1 byte to a whole 32 KiB window.
    let (sel, input) = data.split_first().unwrap_or((&0, &[]));
    let len = (usize::from(*sel) * 129 + 1).min(lzx::WINDOW_SIZE);
    let mut out = vec![0u8; len];
    let _ = lzx::decompress(input, &mut out);
});
