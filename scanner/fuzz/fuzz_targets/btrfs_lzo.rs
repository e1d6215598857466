//! Btrfs LZO: the segmented framing and the LZO1X decoder, from arbitrary bytes.
#![no_main]

use coldscan_scanner::fs::btrfs::lzo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = lzo::decompress_btrfs(data, 128 * 1024, 4096);
    let mut out = Vec::new();
    let _ = lzo::decompress(data, &mut out, 4096);
});
