//! FAT12/16/32 on arbitrary bytes: probe, open, walk, then open and read every file (bounded).
//! Never panics, never hangs.
#![no_main]

use std::sync::Arc;

use coldscan_scanner::block::{MemSource, SharedSource};
use coldscan_scanner::fs::{self, EntryKind, WalkEvent};
use libfuzzer_sys::fuzz_target;

/// Bytes read per file at most, so a huge declared size does not make one input slow.
const MAX_READ_PER_FILE: u64 = 1 << 20;
/// Files read per input at most.
const MAX_FILES: usize = 256;

fuzz_target!(|data: &[u8]| {
    let src: SharedSource = Arc::new(MemSource::new(data.to_vec(), "fuzz"));
    let Ok(Some(kind)) = fs::probe(&src) else {
        return;
    };
    let Ok(volume) = fs::open(src, kind) else {
        return;
    };
    let _ = volume.label();
    let mut files = Vec::new();
    let _ = volume.walk(&mut |ev| {
        if let WalkEvent::Entry(e) = ev {
            if e.kind == EntryKind::File && files.len() < MAX_FILES {
                files.push(e);
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    for e in &files {
        let Ok(mut r) = volume.open(e) else {
            continue;
        };
        let mut pos = 0u64;
        while pos < r.size().min(MAX_READ_PER_FILE) {
            match r.read_at(pos, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => pos += n as u64,
            }
        }
    }
});
