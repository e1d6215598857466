//! ext2/3/4: probe, open (with journal replay), walk, and read every file, from arbitrary bytes.
#![no_main]

use std::sync::Arc;

use coldscan_scanner::block::{MemSource, SharedSource};
use coldscan_scanner::fs::ext::{probe_ext, ExtVolume};
use coldscan_scanner::fs::{EntryKind, Filesystem, WalkEvent};
use libfuzzer_sys::fuzz_target;

/// Bytes read per file, so that a hostile 4 TiB sparse file does not stall the fuzzer.
const READ_PER_FILE: u64 = 256 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2048 {
        return;
    }
    if probe_ext(&data[1024..2048]).is_none() {
        return;
    }
    let src: SharedSource = Arc::new(MemSource::new(data.to_vec(), "fuzz"));
    let Ok(fs) = ExtVolume::open(src) else {
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
    if let Some(e) = entries.first() {
        let _ = fs.lookup(&e.path);
    }
});
