//! File extents (btrfs on-disk format documentation, "File extents":
//! `struct btrfs_file_extent_item`) and their decoding: inline, regular, prealloc, holes,
//! and zlib / LZO / zstd compression (`fs/btrfs/compression.c`, `zlib.c`, `lzo.c`, `zstd.c`).
//!
//! A file's content is the union of its EXTENT_DATA items keyed by file offset; bytes no item
//! covers are a hole (NO_HOLES filesystems write no hole items). Prealloc extents and regular
//! extents at disk address 0 read as zeros.

use std::io::Read;

use crate::block::le;

/// Bytes of the item header before inline data or the disk fields.
pub const HEADER_SIZE: usize = 21;
/// Bytes of a regular / prealloc item.
pub const REGULAR_SIZE: usize = 53;
/// Largest compressed extent decoded (the kernel writes at most 128 KiB).
pub const MAX_COMPRESSED: u64 = 1 << 20;
/// Largest decompressed extent (the kernel writes at most 128 KiB).
pub const MAX_RAM_BYTES: u64 = 1 << 20;

/// Compression of an extent (`btrfs_compression_type`).
pub mod compression {
    /// None.
    pub const NONE: u8 = 0;
    /// zlib.
    pub const ZLIB: u8 = 1;
    /// LZO (Btrfs framing).
    pub const LZO: u8 = 2;
    /// zstd.
    pub const ZSTD: u8 = 3;
}

/// How an extent's bytes are found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExtentBody {
    /// Data stored in the item (possibly compressed).
    Inline(Vec<u8>),
    /// Data in a disk extent; `disk_bytenr` 0 is a hole.
    Regular {
        /// Logical address of the disk extent.
        disk_bytenr: u64,
        /// Its stored (possibly compressed) size.
        disk_num_bytes: u64,
        /// Offset into the decoded extent where this file range starts.
        offset: u64,
        /// Bytes of the file this item covers.
        num_bytes: u64,
    },
    /// Preallocated, never written: zeros.
    Prealloc {
        /// Bytes of the file this item covers.
        num_bytes: u64,
    },
}

/// One EXTENT_DATA item.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileExtent {
    /// File offset (the key offset).
    pub file_offset: u64,
    /// Decoded size of the whole extent.
    pub ram_bytes: u64,
    /// Compression type.
    pub compression: u8,
    /// Encryption (must be 0).
    pub encryption: u8,
    /// Other encoding (must be 0).
    pub other_encoding: u16,
    /// Where the bytes are.
    pub body: ExtentBody,
}

impl FileExtent {
    /// Parses an EXTENT_DATA item's data at file offset `file_offset`.
    pub fn parse(b: &[u8], file_offset: u64) -> Result<Self, String> {
        if b.len() < HEADER_SIZE {
            return Err(format!("extent item of {} bytes is too short", b.len()));
        }
        let ty = b[20];
        let body = match ty {
            0 => ExtentBody::Inline(b[HEADER_SIZE..].to_vec()),
            1 | 2 => {
                if b.len() < REGULAR_SIZE {
                    return Err(format!(
                        "regular extent item of {} bytes is too short",
                        b.len()
                    ));
                }
                let num_bytes = le::u64(b, 45).unwrap_or(0);
                if ty == 2 {
                    ExtentBody::Prealloc { num_bytes }
                } else {
                    ExtentBody::Regular {
                        disk_bytenr: le::u64(b, 21).unwrap_or(0),
                        disk_num_bytes: le::u64(b, 29).unwrap_or(0),
                        offset: le::u64(b, 37).unwrap_or(0),
                        num_bytes,
                    }
                }
            }
            t => return Err(format!("unknown extent type {t}")),
        };
        Ok(FileExtent {
            file_offset,
            ram_bytes: le::u64(b, 8).unwrap_or(0),
            compression: b[16],
            encryption: b[17],
            other_encoding: le::u16(b, 18).unwrap_or(0),
            body,
        })
    }

    /// Bytes of the file this extent covers.
    pub fn len(&self) -> u64 {
        match &self.body {
            ExtentBody::Inline(d) => {
                if self.compression == compression::NONE {
                    d.len() as u64
                } else {
                    self.ram_bytes
                }
            }
            ExtentBody::Regular { num_bytes, .. } | ExtentBody::Prealloc { num_bytes } => {
                *num_bytes
            }
        }
    }

    /// Whether the extent covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Why this extent cannot be decoded, if so.
    pub fn unsupported(&self) -> Option<String> {
        if self.encryption != 0 {
            return Some(format!("encrypted extent (encryption {})", self.encryption));
        }
        if self.other_encoding != 0 {
            return Some(format!(
                "extent with other_encoding {}",
                self.other_encoding
            ));
        }
        if self.compression > compression::ZSTD && !matches!(self.body, ExtentBody::Prealloc { .. })
        {
            return Some(format!("unknown compression type {}", self.compression));
        }
        None
    }
}

/// Decodes `data` compressed with `compression` into exactly `ram_bytes` bytes (a short
/// result is zero-filled, as the kernel does for the tail of the last sector).
pub fn decompress(
    compression: u8,
    data: &[u8],
    ram_bytes: u64,
    sectorsize: u32,
) -> Result<Vec<u8>, String> {
    if ram_bytes > MAX_RAM_BYTES {
        return Err(format!(
            "decoded extent size {ram_bytes} exceeds the {MAX_RAM_BYTES}-byte limit"
        ));
    }
    let want = ram_bytes as usize;
    let mut out = match compression {
        compression::ZLIB => {
            let mut out = Vec::with_capacity(want);
            flate2::read::ZlibDecoder::new(data)
                .take(ram_bytes)
                .read_to_end(&mut out)
                .map_err(|e| format!("zlib: {e}"))?;
            out
        }
        compression::ZSTD => {
            let mut out = Vec::with_capacity(want);
            let dec = zstd::stream::read::Decoder::with_buffer(data)
                .map_err(|e| format!("zstd: {e}"))?
                .single_frame();
            dec.take(ram_bytes)
                .read_to_end(&mut out)
                .map_err(|e| format!("zstd: {e}"))?;
            out
        }
        compression::LZO => super::lzo::decompress_btrfs(data, want, sectorsize as usize)?,
        c => return Err(format!("unknown compression type {c}")),
    };
    out.resize(want, 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zlib_and_zstd_round_trip_and_are_bounded() {
        let plain = b"coldscan btrfs ".repeat(100);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, &plain).unwrap();
        let z = z.finish().unwrap();
        assert_eq!(decompress(1, &z, plain.len() as u64, 4096).unwrap(), plain);
        let mut padded = zstd::bulk::compress(&plain, 3).unwrap();
        padded.resize(padded.len() + 100, 0);
        assert_eq!(
            decompress(3, &padded, plain.len() as u64, 4096).unwrap(),
            plain
        );
        // A short limit truncates, never grows past ram_bytes.
        assert_eq!(decompress(1, &z, 10, 4096).unwrap(), &plain[..10]);
        assert!(decompress(1, &z, MAX_RAM_BYTES + 1, 4096).is_err());
    }

    #[test]
    fn parses_inline_and_regular_items() {
        let mut b = vec![0u8; HEADER_SIZE];
        b.extend_from_slice(b"hello");
        let e = FileExtent::parse(&b, 0).unwrap();
        assert_eq!(e.len(), 5);
        let mut b = vec![0u8; REGULAR_SIZE];
        b[20] = 2;
        b[45] = 16;
        let e = FileExtent::parse(&b, 4096).unwrap();
        assert_eq!(e.body, ExtentBody::Prealloc { num_bytes: 16 });
        b[20] = 9;
        assert!(FileExtent::parse(&b, 0).is_err());
    }
}
