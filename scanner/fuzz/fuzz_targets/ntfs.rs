//! NTFS: probe, open, walk and read every entry of an image given as bytes (bounded reads).
#![no_main]

use std::sync::Arc;

use coldscan_scanner::block::{MemSource, SharedSource};
use coldscan_scanner::fs::{self, FsKind, WalkEvent};
use libfuzzer_sys::fuzz_target;

/// Bytes read per entry at most, so one huge sparse file cannot stall an iteration.
const MAX_READ_PER_ENTRY: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let src: SharedSource = Arc::new(MemSource::new(data.to_vec(), "fuzz.img"));
    if !matches!(fs::probe(&src), Ok(Some(FsKind::Ntfs))) {
        return;
    }
    let Ok(vol) = fs::open(src, FsKind::Ntfs) else {
        return;
    };
    let _ = vol.label();
    let mut entries = Vec::new();
    let _ = vol.walk(&mut |ev| {
        if let WalkEvent::Entry(e) = ev {
            entries.push(e);
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    for e in entries.iter().take(256) {
        let Ok(mut r) = vol.open(e) else { continue };
        let end = r.size().min(MAX_READ_PER_ENTRY);
        let mut pos = 0u64;
        while pos < end {
            match r.read_at(pos, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => pos += n as u64,
            }
        }
    }
});
