//! WOF (CompactOS): the reparse data parser, the `WofCompressedData` chunk table and the
//! chunk reader on arbitrary bytes.
#![no_main]

use coldscan_scanner::fs::ntfs::wof::{WofAlgorithm, WofReader};
use coldscan_scanner::fs::FileReader;
use coldscan_scanner::Result;
use libfuzzer_sys::fuzz_target;

/// The stream, in memory.
struct Mem<'a>(&'a [u8]);

impl FileReader for Mem<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
}

/// Largest uncompressed size read back completely (bigger claims are only parsed).
const MAX_READ: u64 = 4 << 20;

fuzz_target!(|data: &[u8]| {
    // 16 bytes of reparse data, 8 bytes of claimed size, then the stream.
    if data.len() < 24 {
        return;
    }
    let (reparse, rest) = data.split_at(16);
    let (size, stream) = rest.split_at(8);
    let size = u64::from_le_bytes(size.try_into().unwrap());
    // The reparse parser on its own, then an algorithm whatever it said, so that every
    // decoder sees the chunk reader's input.
    let algorithm = WofAlgorithm::from_reparse_data(reparse)
        .or_else(|| WofAlgorithm::from_id(u32::from(reparse[12] % 4)))
        .unwrap();
    let Ok(mut r) = WofReader::new(Box::new(Mem(stream)), algorithm, size, "fuzz".into()) else {
        return;
    };
    assert_eq!(r.size(), size);
    let mut buf = vec![0u8; 5000];
    let mut at = if size > MAX_READ { size - MAX_READ } else { 0 };
    while at < size {
        match r.read_at(at, &mut buf) {
            Ok(0) => panic!("read of 0 bytes at {at} before the end {size}"),
            Ok(n) => at += n as u64,
            Err(_) => break,
        }
    }
});
