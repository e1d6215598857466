//! Stream-optimized compressed sparse extents: VMware "Virtual Disk Format 1.1" (and 5.0),
//! section "Stream-Optimized Compressed Sparse Extents".
//!
//! Such an extent is written front to back: each grain is a *grain marker* (`lba: u64`,
//! `size: u32`) followed by `size` bytes of DEFLATE data in zlib framing (RFC 1950); grain
//! tables and the grain directory follow their grains, each after a metadata marker
//! (`numSectors: u64`, `size: u32 = 0`, `type: u32`). As the directory's location is unknown when
//! the header is written, the header may say `gdOffset = GD_AT_END`; the real header is then a
//! *footer* at the end of the file: footer marker, footer (a header copy), end-of-stream marker,
//! one sector each.

use flate2::{Decompress, FlushDecompress};

use crate::block::{le, read_vec, BlockSource};
use crate::error::{Error, Result};

use super::sparse_header::{SparseHeader, GD_AT_END, HEADER_SIZE, SECTOR};

/// Metadata marker type: end of stream.
pub const MARKER_EOS: u32 = 0;
/// Metadata marker type: grain table follows.
pub const MARKER_GT: u32 = 1;
/// Metadata marker type: grain directory follows.
pub const MARKER_GD: u32 = 2;
/// Metadata marker type: footer follows.
pub const MARKER_FOOTER: u32 = 3;
/// Size of a grain marker's header (`lba` + `size`).
pub const GRAIN_MARKER_SIZE: u64 = 12;

/// Reads the footer of a stream-optimized extent whose header says `GD_AT_END`: the last three
/// sectors are the footer marker, the footer header and the end-of-stream marker.
pub fn read_footer(file: &dyn BlockSource) -> Result<SparseHeader> {
    let object = file.name();
    let tail_len = 3 * SECTOR;
    let at = file
        .size()
        .checked_sub(tail_len)
        .filter(|&at| at >= SECTOR)
        .ok_or_else(|| {
            Error::corrupt(
                object,
                0,
                "stream-optimized extent with the grain directory at the end is too short to \
                 hold a footer",
            )
        })?;
    let tail = read_vec(file, at, tail_len, tail_len)?;
    let marker_type = |o: usize| le::u32(&tail, o + 12).unwrap_or(u32::MAX);
    let marker_size = |o: usize| le::u32(&tail, o + 8).unwrap_or(u32::MAX);
    if marker_type(0) != MARKER_FOOTER || marker_size(0) != 0 {
        return Err(Error::corrupt(
            object,
            at,
            "no footer marker before the end of the stream-optimized extent",
        ));
    }
    let eos = 2 * HEADER_SIZE;
    if marker_type(eos) != MARKER_EOS || marker_size(eos) != 0 {
        return Err(Error::corrupt(
            object,
            at + eos as u64,
            "no end-of-stream marker at the end of the stream-optimized extent",
        ));
    }
    let footer = tail.get(HEADER_SIZE..2 * HEADER_SIZE).unwrap_or(&[]);
    let header = SparseHeader::parse(footer, object, at + SECTOR)?;
    if header.gd_offset == GD_AT_END {
        return Err(Error::corrupt(
            object,
            at + SECTOR,
            "the footer's grain directory offset is GD_AT_END as well",
        ));
    }
    Ok(header)
}

/// Reads and inflates the compressed grain whose marker is at byte `at` of `file`, into a buffer
/// of `grain_bytes` (the tail beyond the decompressed data stays zero). `needed` is how many
/// bytes of the grain must be present (less than a grain only at the end of the extent).
pub fn read_compressed_grain(
    file: &dyn BlockSource,
    at: u64,
    grain_bytes: u64,
    needed: u64,
) -> Result<Vec<u8>> {
    let object = file.name();
    let marker = read_vec(file, at, GRAIN_MARKER_SIZE, GRAIN_MARKER_SIZE)?;
    let size = u64::from(le::u32(&marker, 8).unwrap_or(0));
    // Deflate never expands data much beyond its input; anything larger is corrupt.
    let max_compressed = grain_bytes.saturating_mul(2).saturating_add(4096);
    if size == 0 || size > max_compressed {
        return Err(Error::corrupt(
            object,
            at,
            format!("compressed grain of {size} bytes (a {grain_bytes}-byte grain)"),
        ));
    }
    let data_at = at + GRAIN_MARKER_SIZE;
    let data = read_vec(file, data_at, size, max_compressed).map_err(|e| match e {
        Error::OutOfBounds { .. } => Error::corrupt(
            object,
            at,
            format!("compressed grain of {size} bytes runs past the end of the file"),
        ),
        other => other,
    })?;
    let out_len = usize::try_from(grain_bytes)
        .map_err(|_| Error::limit(object, "grain does not fit in memory"))?;
    let mut out = vec![0u8; out_len];
    let mut inflater = Decompress::new(true);
    inflater
        .decompress(&data, &mut out, FlushDecompress::Finish)
        .map_err(|e| Error::corrupt(object, data_at, format!("compressed grain: {e}")))?;
    // A grain may decompress to less than a grain only at the end of the extent.
    let produced = inflater.total_out();
    if produced < needed {
        return Err(Error::corrupt(
            object,
            data_at,
            format!("compressed grain holds {produced} bytes, {needed} expected"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_a_grain_and_rejects_bad_sizes() {
        let grain: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        let z = zlib(&grain);
        let mut img = vec![0u8; 512];
        img.extend_from_slice(&0u64.to_le_bytes());
        img.extend_from_slice(&(z.len() as u32).to_le_bytes());
        img.extend_from_slice(&z);
        let src = MemSource::new(img.clone(), "s");
        assert_eq!(read_compressed_grain(&src, 512, 4096, 4096).unwrap(), grain);
        // A grain that decompresses to less than required.
        assert!(read_compressed_grain(&src, 512, 8192, 8192).is_err());
        // Size past the end of the file.
        img[520..524].copy_from_slice(&5000u32.to_le_bytes());
        let src = MemSource::new(img, "s");
        let err = read_compressed_grain(&src, 512, 4096, 4096).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
