//! CompactOS (WOF-compressed) files on NTFS, as Windows 10/11 stores many executables.
//!
//! Layout (Microsoft `ntifs.h`, wimlib's `wof.h`): an `IO_REPARSE_TAG_WOF` (0x80000017) reparse
//! point holding `WOF_EXTERNAL_INFO { version 1, provider 2 }` and
//! `FILE_PROVIDER_EXTERNAL_INFO_V1 { version 1, algorithm }`; the unnamed `$DATA` is sparse with
//! the uncompressed size; the named stream `WofCompressedData` holds a chunk table (one offset
//! per chunk after the first, relative to the table's end) and the chunks, which is exactly a
//! non-solid WIM resource. The compressed streams are therefore made by wimlib (`wimcapture`,
//! Debian `wimtools`, an independent XPRESS/LZX encoder) from a one-file directory, and written
//! with the NTFS populator's `wof` command (libntfs-3g).

use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, ensure, Context};

use crate::content::{sha256_hex, Xorshift};
use crate::manifest::Record;
use crate::tools::{check, check_with, command};

/// A WOF file-provider algorithm (`FILE_PROVIDER_EXTERNAL_INFO_V1.Algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WofAlgorithm {
    /// LZXPRESS Huffman in 4 KiB chunks (0).
    Xpress4K,
    /// LZX in 32 KiB chunks (1).
    Lzx,
    /// LZXPRESS Huffman in 8 KiB chunks (2).
    Xpress8K,
    /// LZXPRESS Huffman in 16 KiB chunks (3).
    Xpress16K,
}

impl WofAlgorithm {
    /// Every algorithm.
    pub const ALL: [WofAlgorithm; 4] = [
        WofAlgorithm::Xpress4K,
        WofAlgorithm::Lzx,
        WofAlgorithm::Xpress8K,
        WofAlgorithm::Xpress16K,
    ];

    /// The number stored in the reparse data.
    pub fn id(self) -> u32 {
        match self {
            WofAlgorithm::Xpress4K => 0,
            WofAlgorithm::Lzx => 1,
            WofAlgorithm::Xpress8K => 2,
            WofAlgorithm::Xpress16K => 3,
        }
    }

    /// Uncompressed bytes per chunk.
    pub fn chunk_size(self) -> u64 {
        match self {
            WofAlgorithm::Xpress4K => 4096,
            WofAlgorithm::Lzx => 32768,
            WofAlgorithm::Xpress8K => 8192,
            WofAlgorithm::Xpress16K => 16384,
        }
    }

    /// wimlib's name of the codec.
    fn wimlib_name(self) -> &'static str {
        match self {
            WofAlgorithm::Lzx => "LZX",
            _ => "XPRESS",
        }
    }
}

/// Size of the WIM resource header (`RESHDR_DISK_SHORT`).
const RESHDR_LEN: usize = 24;
/// Size of a WIM lookup table entry: resource header, part number, refcount, SHA-1.
const LOOKUP_ENTRY_LEN: usize = 50;
/// Resource flag: compressed.
const RESHDR_COMPRESSED: u8 = 0x04;
/// Resource flag: metadata (a directory tree, not file content).
const RESHDR_METADATA: u8 = 0x02;

/// `(stored size, flags, offset, uncompressed size)` of the resource header at `at`.
fn reshdr(b: &[u8], at: usize) -> anyhow::Result<(u64, u8, u64, u64)> {
    let h = b.get(at..at + RESHDR_LEN).context("WIM resource header")?;
    let mut stored = [0u8; 8];
    stored[..7].copy_from_slice(&h[..7]);
    Ok((
        u64::from_le_bytes(stored),
        h[7],
        u64::from_le_bytes(h[8..16].try_into()?),
        u64::from_le_bytes(h[16..24].try_into()?),
    ))
}

/// The `WofCompressedData` stream of `data` compressed with `algorithm`: the compressed
/// resource wimlib writes for a one-file directory holding `data`, checked to have the WOF
/// layout (a chunk table of increasing 4-byte offsets inside the resource).
pub fn compressed_stream(
    work: &Path,
    algorithm: WofAlgorithm,
    data: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let src = work.join(format!("wof-src-{}", algorithm.id()));
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("file"), data)?;
    let wim = work.join(format!("wof-{}.wim", algorithm.id()));
    let _ = std::fs::remove_file(&wim);
    check(
        command("wimcapture")
            .arg(&src)
            .arg(&wim)
            .arg(format!("--compress={}", algorithm.wimlib_name()))
            .arg(format!("--chunk-size={}", algorithm.chunk_size())),
    )
    .context("wimcapture (Debian package wimtools)")?;
    let bytes = std::fs::read(&wim)?;
    std::fs::remove_file(&wim)?;
    std::fs::remove_dir_all(&src)?;
    ensure!(bytes.starts_with(b"MSWIM\0\0\0"), "not a WIM file");
    // The lookup table's resource header sits at 0x30 of the WIM header.
    let (table_len, _, table_at, _) = reshdr(&bytes, 0x30)?;
    let table = bytes
        .get(usize::try_from(table_at)?..usize::try_from(table_at + table_len)?)
        .context("WIM lookup table")?;
    for e in table.chunks_exact(LOOKUP_ENTRY_LEN) {
        let (stored, flags, at, size) = reshdr(e, 0)?;
        if flags & RESHDR_METADATA != 0 || size != data.len() as u64 {
            continue;
        }
        ensure!(
            flags & RESHDR_COMPRESSED != 0,
            "wimlib stored the content uncompressed: it must compress"
        );
        let stream = bytes
            .get(usize::try_from(at)?..usize::try_from(at + stored)?)
            .context("WIM resource")?
            .to_vec();
        check_chunk_table(&stream, size, algorithm.chunk_size())?;
        return Ok(stream);
    }
    bail!("wimlib wrote no resource of {} bytes", data.len())
}

/// The WOF chunk table: one 4-byte offset per chunk after the first, increasing, inside
/// the stream (content under 4 GiB).
fn check_chunk_table(stream: &[u8], size: u64, chunk_size: u64) -> anyhow::Result<()> {
    let entries = usize::try_from(size.div_ceil(chunk_size).saturating_sub(1))?;
    let table = stream
        .get(..entries * 4)
        .context("chunk table past the stream")?;
    let mut last = 0u64;
    for e in table.chunks_exact(4) {
        let at = u64::from(u32::from_le_bytes(e.try_into()?));
        ensure!(
            at >= last && (entries * 4) as u64 + at <= stream.len() as u64,
            "chunk offset {at} out of order or past the stream"
        );
        last = at;
    }
    Ok(())
}

/// One CompactOS file to plant.
#[derive(Debug, Clone)]
pub struct WofFile {
    /// Absolute path in the volume (the parent must exist).
    pub path: String,
    /// Compression algorithm.
    pub algorithm: WofAlgorithm,
    /// Uncompressed content.
    pub content: Vec<u8>,
}

impl WofFile {
    /// The manifest record: a plain file with the uncompressed size and hash (no
    /// `WofCompressedData` stream).
    pub fn record(&self, partition: u32) -> Record {
        Record {
            partition,
            volume: None,
            fs: "ntfs".to_string(),
            path: self.path.clone(),
            stream: None,
            size: Some(self.content.len() as u64),
            sha256: Some(sha256_hex(&self.content)),
            kind: "file".to_string(),
        }
    }
}

/// Program-like content of `len` bytes: text, x86 calls (E8, which LZX translates), runs of
/// zeros and one incompressible 8 KiB block (chunks that wimlib stores raw), seeded by `seed`.
pub fn program_like(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Xorshift::new(seed);
    let mut out = Vec::with_capacity(len + 64);
    let mut noise_done = false;
    while out.len() < len {
        if !noise_done && out.len() >= len / 2 {
            noise_done = true;
            let mut noise = vec![0u8; 8192];
            rng.fill(&mut noise);
            out.extend_from_slice(&noise);
        }
        match rng.next_u64() % 5 {
            0 => out.extend_from_slice(b"This program cannot be run in DOS mode.\r\n"),
            1 => {
                out.push(0xE8);
                let rel = (rng.next_u64() % 40_000) as i32 - 20_000;
                out.extend_from_slice(&rel.to_le_bytes());
            }
            2 => out.extend(std::iter::repeat_n(0, (rng.next_u64() % 200) as usize)),
            _ => out.extend_from_slice(&[0x55, 0x48, 0x89, 0xE5, 0x48, 0x83, 0xEC, 0x20]),
        }
    }
    out.truncate(len);
    out
}

/// Writes `files` into the NTFS image `img` (whose parents exist) as CompactOS files, and
/// adds each `(file, stream name, content)` of `streams` as an alternate data stream.
/// `work` is a scratch directory.
pub fn plant(
    img: &Path,
    work: &Path,
    files: &[WofFile],
    streams: &[(&str, &str, &[u8])],
) -> anyhow::Result<()> {
    let bin = crate::ntfs::populator()?;
    let blobs = work.join("wof-blobs");
    let _ = std::fs::remove_dir_all(&blobs);
    std::fs::create_dir_all(&blobs)?;
    let mut script = String::new();
    for (i, f) in files.iter().enumerate() {
        ensure!(
            !f.path.contains(|c: char| c == '%' || c.is_whitespace()),
            "{}: the populator would need escapes",
            f.path
        );
        let stream = compressed_stream(work, f.algorithm, &f.content)
            .with_context(|| format!("compressing {}", f.path))?;
        let blob = blobs.join(format!("stream-{i}"));
        std::fs::File::create(&blob)?.write_all(&stream)?;
        script.push_str(&format!(
            "wof {} {} {} @{}\n",
            f.path,
            f.algorithm.id(),
            f.content.len(),
            blob.display()
        ));
    }
    for (i, (file, name, content)) in streams.iter().enumerate() {
        let blob = blobs.join(format!("ads-{i}"));
        std::fs::write(&blob, content)?;
        script.push_str(&format!("stream {file} {name} @{}\n", blob.display()));
    }
    check_with(
        command(&bin.display().to_string()).arg(img),
        script.as_bytes(),
    )
    .context("planting CompactOS files")?;
    std::fs::remove_dir_all(&blobs)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_tables_are_checked() {
        // 3 chunks: two offsets.
        let mut s = [10u32, 20]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>();
        s.resize(40, 0);
        assert!(check_chunk_table(&s, 3 * 4096, 4096).is_ok());
        // Backwards.
        let mut s = [20u32, 10]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>();
        s.resize(40, 0);
        assert!(check_chunk_table(&s, 3 * 4096, 4096).is_err());
        // Past the stream.
        assert!(check_chunk_table(&[0; 4], 3 * 4096, 4096).is_err());
    }

    #[test]
    fn program_like_content_is_deterministic() {
        assert_eq!(program_like(1, 70_001), program_like(1, 70_001));
        assert_ne!(program_like(1, 100), program_like(2, 100));
        assert_eq!(program_like(3, 12_345).len(), 12_345);
    }
}
