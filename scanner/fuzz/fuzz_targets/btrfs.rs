//! Btrfs: open (with log replay, checksums off so mutations reach the parsers), walk, and read
//! every file, from a sparse image. Input: repeated records `block: u32 LE, 4096 bytes` placing
//! 4 KiB blocks in a 128 MiB zero image (`seed_btrfs.sh` turns real images into this form).
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;

use coldscan_scanner::block::{BlockSource, SharedSource};
use coldscan_scanner::fs::btrfs::{BtrfsVolume, OpenOptions};
use coldscan_scanner::fs::{EntryKind, Filesystem, WalkEvent};
use coldscan_scanner::Result;
use libfuzzer_sys::fuzz_target;

const BLOCK: usize = 4096;
const SIZE: u64 = 128 << 20;
const READ_PER_FILE: u64 = 256 * 1024;

#[derive(Debug)]
struct Sparse(BTreeMap<u64, Vec<u8>>);

impl BlockSource for Sparse {
    fn size(&self) -> u64 {
        SIZE
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        coldscan_scanner::block::check_bounds("fuzz", offset, buf.len(), SIZE)?;
        for (i, b) in buf.iter_mut().enumerate() {
            let pos = offset + i as u64;
            *b = self
                .0
                .get(&(pos / BLOCK as u64))
                .map_or(0, |blk| blk[(pos % BLOCK as u64) as usize]);
        }
        Ok(())
    }
    fn name(&self) -> &str {
        "fuzz"
    }
}

fuzz_target!(|data: &[u8]| {
    let mut blocks = BTreeMap::new();
    for rec in data.chunks_exact(4 + BLOCK) {
        let n = u64::from(u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]));
        if n < SIZE / BLOCK as u64 {
            blocks.insert(n, rec[4..].to_vec());
        }
    }
    let src: SharedSource = Arc::new(Sparse(blocks));
    let opts = OpenOptions {
        verify_checksums: false,
        replay_log: true,
    };
    let Ok(fs) = BtrfsVolume::open_with(src, opts) else {
        return;
    };
    let _ = fs.notes();
    let mut entries = Vec::new();
    let _ = fs.walk(&mut |ev| {
        if let WalkEvent::Entry(e) = ev {
            if entries.len() < 10_000 {
                entries.push(e);
            }
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
