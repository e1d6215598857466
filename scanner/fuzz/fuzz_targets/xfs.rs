//! XFS: probe, open (with log replay), walk, and read every file, from a sparse image (see
//! `sparse_image.rs`).
#![no_main]

mod sparse_image;

use std::sync::Arc;

use coldscan_scanner::block::{BlockSource, SharedSource};
use coldscan_scanner::fs::xfs::{probe_xfs, XfsVolume};
use coldscan_scanner::fs::{EntryKind, Filesystem, WalkEvent};
use libfuzzer_sys::fuzz_target;

/// Bytes read per file, so that a hostile huge sparse file does not stall the fuzzer.
const READ_PER_FILE: u64 = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some(img) = sparse_image::SparseImage::decode(data) else {
        return;
    };
    let mut sb = vec![0u8; 512];
    if img.read_exact_at(0, &mut sb).is_err() || !probe_xfs(&sb) {
        return;
    }
    let src: SharedSource = Arc::new(img);
    let Ok(fs) = XfsVolume::open(src) else {
        return;
    };
    let _ = fs.label();
    let _ = fs.notes();
    let mut entries = Vec::new();
    let _ = fs.walk(&mut |ev| {
        if let WalkEvent::Entry(e) = ev {
            entries.push(e);
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    for e in &entries {
        if matches!(e.kind, EntryKind::File | EntryKind::Symlink) {
            if let Ok(mut r) = fs.open(e) {
                let end = r.size().min(READ_PER_FILE);
                let mut pos = 0;
                while pos < end {
                    match r.read_at(pos, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => pos += n as u64,
                    }
                }
            }
        }
    }
    if let Some(e) = entries.last() {
        let _ = fs.lookup(&e.path);
    }
});
