//! XFS log recovery alone, from a sparse image (see `sparse_image.rs`) whose superblock is
//! valid: find the head and tail, replay, and read the replayed view back.
#![no_main]

mod sparse_image;

use std::sync::Arc;

use coldscan_scanner::block::{BlockSource, SharedSource};
use coldscan_scanner::fs::xfs::log;
use coldscan_scanner::fs::xfs::superblock::Superblock;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(img) = sparse_image::SparseImage::decode(data) else {
        return;
    };
    let mut b = vec![0u8; 512];
    if img.read_exact_at(0, &mut b).is_err() {
        return;
    }
    let Ok(sb) = Superblock::parse(&b, "fuzz") else {
        return;
    };
    let src: SharedSource = Arc::new(img);
    let Ok(Some(replay)) = log::recover(src, &sb, "fuzz") else {
        return;
    };
    let _ = replay.summary();
    // Reads straddling sector boundaries, spread over the whole volume.
    let size = replay.overlay.size();
    let mut buf = vec![0u8; 4096 + 300];
    let mut off = 0;
    while off + buf.len() as u64 <= size {
        let _ = replay.overlay.read_exact_at(off, &mut buf);
        off += 64 * 1024 - 77;
    }
});
