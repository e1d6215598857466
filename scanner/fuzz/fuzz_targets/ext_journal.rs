//! jbd2 replay from arbitrary bytes: the input is the journal (1 KiB blocks, contiguous) and
//! the filesystem it replays into; every replayed block is read back through the overlay.
#![no_main]

use std::sync::Arc;

use coldscan_scanner::block::{BlockSource, MemSource, SharedSource};
use coldscan_scanner::fs::ext::journal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let blocks = (data.len() / 1024) as u64;
    if blocks < 2 {
        return;
    }
    let src: SharedSource = Arc::new(MemSource::new(data.to_vec(), "fuzz"));
    let Ok(Some(replay)) = journal::replay(src, 1024, blocks, blocks, &mut |n| Ok(n * 1024)) else {
        return;
    };
    let mut buf = vec![0u8; 3000];
    let size = replay.overlay.size();
    let mut off = 0;
    while off + buf.len() as u64 <= size {
        let _ = replay.overlay.read_exact_at(off, &mut buf);
        off += 2999;
    }
});
