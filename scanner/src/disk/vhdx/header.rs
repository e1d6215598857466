//! The VHDX header section: file type identifier and the two headers ([MS-VHDX] sections 2.2.1,
//! 2.2.2 and 2.2.2.1). Little-endian; checksums are CRC-32C over the whole structure with the
//! checksum field taken as zero.

use crate::block::{le, read_vec, BlockSource};
use crate::error::{Error, Result};

/// `vhdxfile` at offset 0.
pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// Byte offsets of the two headers.
pub const HEADER_OFFSETS: [u64; 2] = [64 * 1024, 128 * 1024];
/// Bytes of a header covered by its checksum.
pub const HEADER_SIZE: u64 = 4096;
/// End of the header section (1 MiB): payload and metadata live beyond it.
pub const HEADER_SECTION_END: u64 = 1 << 20;

/// A GUID as stored on disk (Microsoft byte order).
pub type Guid = [u8; 16];

/// A GUID from its textual fields, in on-disk (Microsoft mixed-endian) byte order.
pub const fn guid(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// Formats an on-disk GUID as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lower case).
pub fn guid_string(g: &Guid) -> String {
    let d1 = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
    let d2 = u16::from_le_bytes([g[4], g[5]]);
    let d3 = u16::from_le_bytes([g[6], g[7]]);
    format!(
        "{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-{}",
        g[8],
        g[9],
        hex::encode(&g[10..16])
    )
}

/// CRC-32C of `bytes` with the four bytes at `at` taken as zero.
pub fn checksum(bytes: &[u8], at: usize) -> u32 {
    let end = at.saturating_add(4).min(bytes.len());
    let at = at.min(bytes.len());
    let c = crc32c::crc32c(bytes.get(..at).unwrap_or(&[]));
    let c = crc32c::crc32c_append(c, &[0u8; 4][..end - at]);
    crc32c::crc32c_append(c, bytes.get(end..).unwrap_or(&[]))
}

/// The current VHDX header.
#[derive(Debug, Clone)]
pub struct Header {
    /// Which of the two copies (0 or 1) is current.
    pub index: usize,
    /// Sequence number (the larger valid one wins).
    pub sequence: u64,
    /// Changes whenever the virtual disk's data is written; children record it as
    /// `parent_linkage`.
    pub data_write_guid: Guid,
    /// Non-zero when the log holds entries to replay.
    pub log_guid: Guid,
    /// Log size in bytes.
    pub log_length: u32,
    /// Log byte offset.
    pub log_offset: u64,
}

impl Header {
    /// Checks the file identifier and returns the current header.
    pub fn read(file: &dyn BlockSource) -> Result<Header> {
        let name = file.name();
        let sig = read_vec(file, 0, 8, 8)
            .map_err(|_| Error::corrupt(name, 0, "VHDX file shorter than its identifier"))?;
        if sig.as_slice() != FILE_SIGNATURE {
            return Err(Error::corrupt(
                name,
                0,
                "VHDX file identifier: bad signature",
            ));
        }
        let mut best: Option<Header> = None;
        let mut problems = Vec::new();
        for (index, &off) in HEADER_OFFSETS.iter().enumerate() {
            match Self::parse_one(file, index, off) {
                Ok(h) => {
                    if best.as_ref().is_none_or(|b| h.sequence > b.sequence) {
                        best = Some(h);
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        best.ok_or_else(|| {
            Error::corrupt(
                name,
                HEADER_OFFSETS[0],
                format!("no valid VHDX header: {}", problems.join("; ")),
            )
        })
    }

    fn parse_one(file: &dyn BlockSource, index: usize, off: u64) -> Result<Header> {
        let name = file.name();
        let b = read_vec(file, off, HEADER_SIZE, HEADER_SIZE)?;
        if b.get(0..4) != Some(b"head") {
            return Err(Error::corrupt(name, off, "VHDX header: bad signature"));
        }
        if checksum(&b, 4) != le::u32(&b, 4).unwrap_or(0) {
            return Err(Error::corrupt(name, off, "VHDX header: checksum mismatch"));
        }
        let version = le::u16(&b, 66).unwrap_or(0);
        if version != 1 {
            return Err(Error::unsupported(
                name,
                format!("VHDX header version {version}"),
            ));
        }
        let g = |at: usize| -> Guid {
            let mut out = [0u8; 16];
            out.copy_from_slice(b.get(at..at + 16).unwrap_or(&[0; 16]));
            out
        };
        Ok(Header {
            index,
            sequence: le::u64(&b, 8).unwrap_or(0),
            data_write_guid: g(32),
            log_guid: g(48),
            log_length: le::u32(&b, 68).unwrap_or(0),
            log_offset: le::u64(&b, 72).unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_round_trip_through_text() {
        let g = guid(
            0x2dc2_7766,
            0xf623,
            0x4200,
            [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
        );
        assert_eq!(guid_string(&g), "2dc27766-f623-4200-9d64-115e9bfd4a08");
        assert_eq!(&g[..4], &[0x66, 0x77, 0xc2, 0x2d]);
    }

    #[test]
    fn checksum_skips_its_own_field() {
        let mut b = vec![7u8; 64];
        let c = checksum(&b, 4);
        b[4..8].copy_from_slice(&c.to_le_bytes());
        assert_eq!(checksum(&b, 4), c);
    }
}
