//! The WOF chunk reader and both decoders against real data: WIM resources written by wimlib
//! (`wimcapture`, Debian `wimtools`), whose non-solid resource layout (chunk table, then XPRESS
//! or LZX chunks, raw when they do not shrink) is the layout of `WofCompressedData`.

use super::*;
use std::path::Path;
use std::process::Command;

/// A file reader over bytes in memory.
struct Mem(Vec<u8>);

impl FileReader for Mem {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let start = (offset as usize).min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
}

/// Test contents of distinct sizes: text, x86-like code with E8 calls, noise, runs.
pub(crate) fn contents() -> Vec<Vec<u8>> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::new();
    for (i, size) in [
        1usize, 777, 4095, 4096, 4097, 8193, 16385, 32767, 32768, 32769, 70001, 200_003,
    ]
    .into_iter()
    .enumerate()
    {
        let mut v = Vec::with_capacity(size);
        while v.len() < size {
            match (rnd() % 5, i % 3) {
                (0, _) => v.extend_from_slice(b"The quick brown fox jumps over the lazy dog. "),
                (1, _) => {
                    v.push(0xE8);
                    v.extend_from_slice(&((rnd() % 40_000) as i32 - 20_000).to_le_bytes());
                }
                (2, 0) => v.extend(std::iter::repeat_n(0, (rnd() % 300) as usize)),
                (2, _) => v.extend((0..(rnd() % 64)).map(|_| rnd() as u8)),
                _ => v.extend_from_slice(&[0x55, 0x48, 0x89, 0xE5, 0xE8, 0x00, 0x00]),
            }
        }
        v.truncate(size);
        out.push(v);
    }
    out
}

/// Resources of a WIM file: (flags, uncompressed size, stored bytes).
fn wim_resources(wim: &[u8]) -> Vec<(u8, u64, Vec<u8>)> {
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let reshdr = |b: &[u8], at: usize| {
        let mut s = [0u8; 8];
        s[..7].copy_from_slice(&b[at..at + 7]);
        (
            u64::from_le_bytes(s),
            b[at + 7],
            u64_at(b, at + 8),
            u64_at(b, at + 16),
        )
    };
    assert_eq!(&wim[..8], b"MSWIM\0\0\0");
    let (size, _, offset, _) = reshdr(wim, 0x30);
    let table = &wim[offset as usize..(offset + size) as usize];
    table
        .chunks_exact(50)
        .map(|e| {
            let (stored, flags, off, usize_) = reshdr(e, 0);
            (
                flags,
                usize_,
                wim[off as usize..(off + stored) as usize].to_vec(),
            )
        })
        .collect()
}

fn check_algorithm(dir: &Path, algorithm: WofAlgorithm, compress: &str) {
    let src = dir.join(format!("src-{compress}-{}", algorithm.chunk_size()));
    std::fs::create_dir_all(&src).unwrap();
    let files = contents();
    for (i, c) in files.iter().enumerate() {
        std::fs::write(src.join(format!("f{i}")), c).unwrap();
    }
    let wim = dir.join(format!("{compress}-{}.wim", algorithm.chunk_size()));
    let out = Command::new("wimcapture")
        .arg(&src)
        .arg(&wim)
        .arg(format!("--compress={compress}"))
        .arg(format!("--chunk-size={}", algorithm.chunk_size()))
        .output()
        .expect("wimcapture (Debian package wimtools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut compressed_seen = 0;
    for (flags, size, stored) in wim_resources(&std::fs::read(&wim).unwrap()) {
        if flags & 0x02 != 0 {
            continue; // metadata
        }
        let Some(want) = files.iter().find(|f| f.len() as u64 == size) else {
            continue;
        };
        if flags & 0x04 == 0 {
            assert_eq!(&stored, want);
            continue;
        }
        compressed_seen += 1;
        let mut r = WofReader::new(Box::new(Mem(stored)), algorithm, size, "test".into()).unwrap();
        let mut got = vec![0u8; size as usize];
        // Odd-sized reads across chunk boundaries.
        let mut at = 0;
        while at < got.len() {
            let end = (at + 3001).min(got.len());
            let n = r.read_at(at as u64, &mut got[at..end]).unwrap();
            assert!(n > 0);
            at += n;
        }
        assert!(
            got == *want,
            "{compress} {} size {size}",
            algorithm.chunk_size()
        );
    }
    assert!(
        compressed_seen >= 8,
        "{compress}: only {compressed_seen} compressed resources"
    );
}

#[test]
fn decodes_wimlib_xpress_and_lzx_resources_of_every_wof_chunk_size() {
    let dir = tempfile::tempdir().unwrap();
    check_algorithm(dir.path(), WofAlgorithm::Xpress4K, "XPRESS");
    check_algorithm(dir.path(), WofAlgorithm::Xpress8K, "XPRESS");
    check_algorithm(dir.path(), WofAlgorithm::Xpress16K, "XPRESS");
    check_algorithm(dir.path(), WofAlgorithm::Lzx, "LZX");
}

#[test]
fn reparse_data_names_the_algorithm() {
    let data = |algo: u32, provider: u32| -> Vec<u8> {
        [1u32, provider, 1, algo]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    };
    assert_eq!(
        WofAlgorithm::from_reparse_data(&data(1, 2)),
        Some(WofAlgorithm::Lzx)
    );
    assert_eq!(
        WofAlgorithm::from_reparse_data(&data(3, 2)),
        Some(WofAlgorithm::Xpress16K)
    );
    assert_eq!(WofAlgorithm::from_reparse_data(&data(4, 2)), None);
    assert_eq!(WofAlgorithm::from_reparse_data(&data(0, 1)), None);
    assert_eq!(WofAlgorithm::from_reparse_data(&data(0, 2)[..12]), None);
}

#[test]
fn hostile_chunk_tables_are_errors() {
    // Offsets going backwards.
    let mut s = Vec::new();
    for o in [100u32, 50] {
        s.extend_from_slice(&o.to_le_bytes());
    }
    s.resize(300, 0);
    assert!(WofReader::new(
        Box::new(Mem(s)),
        WofAlgorithm::Xpress4K,
        3 * 4096,
        "t".into()
    )
    .is_err());
    // A table longer than the stream (a claimed size of terabytes).
    assert!(WofReader::new(
        Box::new(Mem(vec![0; 64])),
        WofAlgorithm::Lzx,
        1 << 40,
        "t".into()
    )
    .is_err());
    // Garbage chunks give errors, never panics.
    let mut s = 4096u32.to_le_bytes().to_vec();
    s.extend((0..5000u32).map(|i| (i * 7919 % 251) as u8));
    for a in [WofAlgorithm::Xpress4K, WofAlgorithm::Lzx] {
        if let Ok(mut r) = WofReader::new(Box::new(Mem(s.clone())), a, 8000, "t".into()) {
            let mut b = vec![0u8; 8000];
            let _ = r.read_at(0, &mut b);
            let _ = r.read_at(5000, &mut b);
        }
    }
}

/// `WofCompressedData` content for `data` compressed with `algorithm`, made by wimlib: the
/// resource `wimcapture` writes for a file holding `data` (which must compress).
pub(crate) fn wof_stream(dir: &Path, algorithm: WofAlgorithm, data: &[u8]) -> Vec<u8> {
    let compress = if algorithm == WofAlgorithm::Lzx {
        "LZX"
    } else {
        "XPRESS"
    };
    let src = dir.join(format!("wof-src-{}", algorithm.chunk_size()));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), data).unwrap();
    let wim = dir.join(format!("wof-{}.wim", algorithm.chunk_size()));
    let out = Command::new("wimcapture")
        .arg(&src)
        .arg(&wim)
        .arg(format!("--compress={compress}"))
        .arg(format!("--chunk-size={}", algorithm.chunk_size()))
        .output()
        .expect("wimcapture (Debian package wimtools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wim_resources(&std::fs::read(&wim).unwrap())
        .into_iter()
        .find(|(flags, size, _)| flags & 0x06 == 0x04 && *size == data.len() as u64)
        .expect("a compressed resource for the data")
        .2
}
