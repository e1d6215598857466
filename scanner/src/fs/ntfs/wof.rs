//! WOF (Windows Overlay Filter, "CompactOS") compressed files: the reparse data and the
//! `WofCompressedData` stream, read as the file's uncompressed content.
//!
//! Layout (Microsoft `ntifs.h` / wimlib's `wof.h`): the `IO_REPARSE_TAG_WOF` (0x80000017) reparse
//! data is `WOF_EXTERNAL_INFO { version = 1, provider }` followed, for the file provider (2), by
//! `FILE_PROVIDER_EXTERNAL_INFO_V1 { version = 1, algorithm }` with XPRESS4K = 0, LZX = 1,
//! XPRESS8K = 2, XPRESS16K = 3. The unnamed `$DATA` stream is sparse with the uncompressed size;
//! the named stream `WofCompressedData` holds a chunk table and then the chunks, exactly like a
//! non-solid WIM resource: one offset per chunk after the first (4-byte entries when the
//! uncompressed size is below 4 GiB, else 8-byte), relative to the end of the table; a chunk
//! whose stored size equals its uncompressed size is stored raw.

use super::huffman::DecodeError;
use super::{lzx, xpress};
use crate::error::{Error, Result};
use crate::fs::FileReader;

/// Name of the stream holding the compressed chunks.
pub const WOF_STREAM: &str = "WofCompressedData";
/// WOF provider number of per-file compression (CompactOS).
pub const PROVIDER_FILE: u32 = 2;
/// Largest chunk table read (a 16 GiB file in 4 KiB chunks with 8-byte entries is 32 MiB).
pub const MAX_CHUNK_TABLE_BYTES: u64 = 64 << 20;

/// A WOF compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WofAlgorithm {
    /// LZXPRESS Huffman, 4 KiB chunks.
    Xpress4K,
    /// LZX, 32 KiB chunks.
    Lzx,
    /// LZXPRESS Huffman, 8 KiB chunks.
    Xpress8K,
    /// LZXPRESS Huffman, 16 KiB chunks.
    Xpress16K,
}

impl WofAlgorithm {
    /// The algorithm with the given `FILE_PROVIDER_EXTERNAL_INFO_V1` number.
    pub fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(WofAlgorithm::Xpress4K),
            1 => Some(WofAlgorithm::Lzx),
            2 => Some(WofAlgorithm::Xpress8K),
            3 => Some(WofAlgorithm::Xpress16K),
            _ => None,
        }
    }

    /// Parses WOF reparse data (after the 8-byte reparse header): the algorithm of a
    /// file-provider reparse point, `None` for other providers and unknown algorithms.
    pub fn from_reparse_data(data: &[u8]) -> Option<Self> {
        let u32_at = |at: usize| {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if u32_at(0)? != 1 || u32_at(4)? != PROVIDER_FILE || u32_at(8)? != 1 {
            return None;
        }
        Self::from_id(u32_at(12)?)
    }

    /// Uncompressed bytes per chunk.
    pub fn chunk_size(self) -> usize {
        match self {
            WofAlgorithm::Xpress4K => 4096,
            WofAlgorithm::Lzx => 32768,
            WofAlgorithm::Xpress8K => 8192,
            WofAlgorithm::Xpress16K => 16384,
        }
    }

    /// Decompresses one chunk into `out` (its uncompressed size).
    pub fn decompress(self, input: &[u8], out: &mut [u8]) -> std::result::Result<(), DecodeError> {
        match self {
            WofAlgorithm::Lzx => lzx::decompress(input, out),
            _ => xpress::decompress(input, out),
        }
    }
}

/// Where each chunk lies in the compressed stream.
#[derive(Debug, Clone)]
pub struct ChunkTable {
    /// Start of every chunk in the stream, plus the stream end: `chunks + 1` entries.
    bounds: Vec<u64>,
    chunk_size: usize,
    size: u64,
}

impl ChunkTable {
    /// Parses the chunk table at the start of a stream of `stream_size` bytes, for content of
    /// `size` bytes in chunks of `chunk_size`. `read_exact(offset, buf)` reads the stream.
    pub fn parse(
        read_exact: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
        stream_size: u64,
        size: u64,
        chunk_size: usize,
        object: &str,
    ) -> Result<ChunkTable> {
        let chunks = size.div_ceil(chunk_size as u64);
        let entry: u64 = if size < 1 << 32 { 4 } else { 8 };
        let table_bytes = chunks.saturating_sub(1).saturating_mul(entry);
        if table_bytes > MAX_CHUNK_TABLE_BYTES {
            return Err(Error::limit(
                object,
                format!("WOF chunk table of {table_bytes} bytes exceeds {MAX_CHUNK_TABLE_BYTES}"),
            ));
        }
        if table_bytes > stream_size {
            return Err(Error::corrupt(
                object,
                0,
                format!("WOF chunk table of {table_bytes} bytes is longer than the {stream_size}-byte stream"),
            ));
        }
        let mut raw = vec![0u8; table_bytes as usize];
        read_exact(0, &mut raw)?;
        let mut bounds = Vec::with_capacity(chunks as usize + 1);
        if chunks > 0 {
            bounds.push(table_bytes);
        }
        for (i, e) in raw.chunks_exact(entry as usize).enumerate() {
            let mut v = [0u8; 8];
            v[..e.len()].copy_from_slice(e);
            let at = table_bytes.checked_add(u64::from_le_bytes(v));
            match at {
                Some(at) if at >= *bounds.last().unwrap_or(&0) && at <= stream_size => {
                    bounds.push(at)
                }
                _ => {
                    return Err(Error::corrupt(
                        object,
                        i as u64 * entry,
                        format!("WOF chunk {} offset out of order or past the stream", i + 1),
                    ))
                }
            }
        }
        if chunks > 0 {
            bounds.push(stream_size);
        }
        Ok(ChunkTable {
            bounds,
            chunk_size,
            size,
        })
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u64 {
        self.bounds.len().saturating_sub(1) as u64
    }

    /// Stream byte range of chunk `i` and its uncompressed size.
    fn chunk(&self, i: u64) -> Option<(u64, u64, usize)> {
        let i = usize::try_from(i).ok()?;
        let (start, end) = (*self.bounds.get(i)?, *self.bounds.get(i + 1)?);
        let first = i as u64 * self.chunk_size as u64;
        let len = (self.size - first).min(self.chunk_size as u64) as usize;
        Some((start, end, len))
    }
}

/// Reads a WOF file's uncompressed content from its `WofCompressedData` stream.
pub struct WofReader<'a> {
    stream: Box<dyn FileReader + 'a>,
    algorithm: WofAlgorithm,
    table: ChunkTable,
    object: String,
    /// The last decompressed chunk.
    cached: Option<(u64, Vec<u8>)>,
    input: Vec<u8>,
}

impl std::fmt::Debug for WofReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WofReader")
            .field("algorithm", &self.algorithm)
            .field("object", &self.object)
            .finish()
    }
}

/// Reads exactly `buf.len()` bytes at `offset` from `r`.
fn read_exact(
    r: &mut dyn FileReader,
    mut offset: u64,
    mut buf: &mut [u8],
    object: &str,
) -> Result<()> {
    while !buf.is_empty() {
        let n = r.read_at(offset, buf)?;
        if n == 0 {
            return Err(Error::corrupt(
                object,
                offset,
                "WofCompressedData ends early",
            ));
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

impl<'a> WofReader<'a> {
    /// A reader of `size` uncompressed bytes stored as `algorithm` chunks in `stream`.
    pub fn new(
        mut stream: Box<dyn FileReader + 'a>,
        algorithm: WofAlgorithm,
        size: u64,
        object: String,
    ) -> Result<Self> {
        let stream_size = stream.size();
        let table = ChunkTable::parse(
            &mut |at, buf| read_exact(stream.as_mut(), at, buf, &object),
            stream_size,
            size,
            algorithm.chunk_size(),
            &object,
        )?;
        Ok(WofReader {
            stream,
            algorithm,
            table,
            object,
            cached: None,
            input: Vec::new(),
        })
    }

    fn load(&mut self, index: u64) -> Result<&[u8]> {
        if self.cached.as_ref().map(|c| c.0) != Some(index) {
            let (start, end, len) = self.table.chunk(index).ok_or_else(|| {
                Error::corrupt(&self.object, 0, format!("WOF chunk {index} missing"))
            })?;
            let stored = end - start;
            if stored > self.algorithm.chunk_size() as u64 {
                return Err(Error::corrupt(
                    &self.object,
                    start,
                    format!("WOF chunk {index} stores {stored} bytes, more than a chunk"),
                ));
            }
            self.input.resize(stored as usize, 0);
            read_exact(self.stream.as_mut(), start, &mut self.input, &self.object)?;
            let mut out = self.cached.take().map(|c| c.1).unwrap_or_default();
            out.resize(len, 0);
            if stored == len as u64 {
                out.copy_from_slice(&self.input);
            } else {
                self.algorithm
                    .decompress(&self.input, &mut out)
                    .map_err(|e| {
                        Error::corrupt(
                            &self.object,
                            start + e.offset as u64,
                            format!("WOF {:?} chunk {index}: {}", self.algorithm, e.detail),
                        )
                    })?;
            }
            self.cached = Some((index, out));
        }
        Ok(self.cached.as_ref().map(|c| c.1.as_slice()).unwrap_or(&[]))
    }
}

impl FileReader for WofReader<'_> {
    fn size(&self) -> u64 {
        self.table.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= self.table.size || buf.is_empty() {
            return Ok(0);
        }
        let cs = self.algorithm.chunk_size() as u64;
        let index = offset / cs;
        let within = (offset % cs) as usize;
        let chunk = self.load(index)?;
        let n = buf.len().min(chunk.len().saturating_sub(within));
        buf[..n].copy_from_slice(&chunk[within..within + n]);
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests;
