//! LVM2 metadata areas: the 512-byte `mda_header` at the start of each metadata area and its
//! `raw_locn` slots, which point at the current text metadata inside the area's ring buffer.
//!
//! Follows lvm2's `lib/format_text/layout.h` (`struct mda_header`, `struct raw_locn`) and
//! `format-text.c` (`_vg_read_raw_area`: the text may wrap from the end of the area back to the
//! byte after the header; its CRC runs over both pieces), as described in libvslvm's format
//! document, section 3 (metadata area).

use super::label::{lvm_crc, DiskArea, INITIAL_CRC};
use crate::block::{le, BlockSource};
use crate::error::{Error, Result};

/// Size of the `mda_header` (lvm2's `MDA_HEADER_SIZE`).
pub const MDA_HEADER_SIZE: u64 = 512;
/// `mda_header` magic.
pub const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// The only `mda_header` version.
pub const MDA_VERSION: u32 = 1;
/// Largest metadata text read (lvm2 itself caps a VG's metadata well below this).
pub const MAX_METADATA_SIZE: u64 = 16 << 20;
/// `raw_locn` flag: this metadata area is ignored (`pvchange --metadataignore`).
pub const RAW_LOCN_IGNORED: u32 = 1;
/// Offset of the first `raw_locn` in the header.
const RAW_LOCN_AT: usize = 40;

/// The text metadata found in one metadata area, checksum verified.
#[derive(Debug, Clone)]
pub struct MetadataText {
    /// Byte offset of the metadata area on the PV.
    pub area_offset: u64,
    /// The text (without its terminating NUL).
    pub text: Vec<u8>,
}

/// Reads the current metadata text of the metadata area `area` on `dev`. `Ok(None)` when the
/// area holds no metadata or is marked ignored.
pub fn read_metadata(dev: &dyn BlockSource, area: DiskArea) -> Result<Option<MetadataText>> {
    let name = dev.name();
    let at = area.offset;
    let mut h = [0u8; MDA_HEADER_SIZE as usize];
    dev.read_exact_at(at, &mut h)?;
    let crc = le::u32(&h, 0).unwrap_or(0);
    let computed = lvm_crc(INITIAL_CRC, &h[4..]);
    if crc != computed {
        return Err(Error::corrupt(
            name,
            at,
            format!("LVM2 metadata area header checksum {crc:#010x}, computed {computed:#010x}"),
        ));
    }
    if h.get(4..20) != Some(MDA_MAGIC.as_slice()) {
        return Err(Error::corrupt(
            name,
            at + 4,
            "LVM2 metadata area magic is wrong",
        ));
    }
    let version = le::u32(&h, 20).unwrap_or(0);
    if version != MDA_VERSION {
        return Err(Error::unsupported(
            name,
            format!("LVM2 metadata area header version {version} at byte {at:#x}"),
        ));
    }
    let start = le::u64(&h, 24).unwrap_or(0);
    let size = le::u64(&h, 32).unwrap_or(0);
    if start != area.offset {
        return Err(Error::corrupt(
            name,
            at + 24,
            format!("metadata area header says it starts at {start:#x}, found at {at:#x}"),
        ));
    }
    if size <= MDA_HEADER_SIZE || at.checked_add(size).is_none_or(|e| e > dev.size()) {
        return Err(Error::corrupt(
            name,
            at + 32,
            format!("metadata area size {size:#x} does not fit the device"),
        ));
    }
    let offset = le::u64(&h, RAW_LOCN_AT).unwrap_or(0);
    let len = le::u64(&h, RAW_LOCN_AT + 8).unwrap_or(0);
    let checksum = le::u32(&h, RAW_LOCN_AT + 16).unwrap_or(0);
    let flags = le::u32(&h, RAW_LOCN_AT + 20).unwrap_or(0);
    if offset == 0 || flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    let locn_at = at + RAW_LOCN_AT as u64;
    if len == 0 || len > MAX_METADATA_SIZE || len > size - MDA_HEADER_SIZE {
        return Err(Error::corrupt(
            name,
            locn_at + 8,
            format!("metadata text size {len} does not fit the area ({size} bytes)"),
        ));
    }
    if offset < MDA_HEADER_SIZE || offset >= size {
        return Err(Error::corrupt(
            name,
            locn_at,
            format!("metadata text offset {offset:#x} is outside the area"),
        ));
    }
    // Ring buffer: what does not fit before the end of the area continues after the header.
    let first = len.min(size - offset);
    let wrapped = len - first;
    if wrapped > 0 && MDA_HEADER_SIZE + wrapped > offset {
        return Err(Error::corrupt(
            name,
            locn_at,
            format!("wrapped metadata text ({wrapped} bytes) overlaps its own start"),
        ));
    }
    let total = usize::try_from(len).map_err(|_| Error::limit(name, "metadata text size"))?;
    let mut text = vec![0u8; total];
    let first_len = usize::try_from(first).unwrap_or(total);
    dev.read_exact_at(at + offset, &mut text[..first_len])?;
    if wrapped > 0 {
        dev.read_exact_at(at + MDA_HEADER_SIZE, &mut text[first_len..])?;
    }
    let computed = lvm_crc(INITIAL_CRC, &text);
    if computed != checksum {
        return Err(Error::corrupt(
            name,
            locn_at + 16,
            format!("metadata text checksum {checksum:#010x}, computed {computed:#010x}"),
        ));
    }
    // lvm2 writes the text NUL-terminated; the NUL is not part of the length, but tolerate it.
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(Some(MetadataText {
        area_offset: at,
        text,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::block::MemSource;

    /// Writes an mda header at `at` whose text (at `offset` inside the area) is `text`, wrapping
    /// as lvm2 would when it does not fit.
    pub(crate) fn write_area(dev: &mut [u8], at: usize, size: usize, offset: usize, text: &[u8]) {
        let first = text.len().min(size - offset);
        dev[at + offset..at + offset + first].copy_from_slice(&text[..first]);
        let rest = &text[first..];
        dev[at + 512..at + 512 + rest.len()].copy_from_slice(rest);
        let h = &mut dev[at..at + 512];
        h.fill(0);
        h[4..20].copy_from_slice(MDA_MAGIC);
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[24..32].copy_from_slice(&(at as u64).to_le_bytes());
        h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
        h[40..48].copy_from_slice(&(offset as u64).to_le_bytes());
        h[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        h[56..60].copy_from_slice(&lvm_crc(INITIAL_CRC, text).to_le_bytes());
        let crc = lvm_crc(INITIAL_CRC, &h[4..]);
        h[0..4].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn reads_plain_and_wrapped_text() {
        let text: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for offset in [512usize, 2048, 7000] {
            let mut dev = vec![0u8; 16384];
            write_area(&mut dev, 4096, 8192, offset, &text);
            let src = MemSource::new(dev, "pv");
            let got = read_metadata(
                &src,
                DiskArea {
                    offset: 4096,
                    size: 8192,
                },
            )
            .unwrap()
            .unwrap();
            assert_eq!(got.text, text, "offset {offset}");
        }
    }

    #[test]
    fn bad_text_checksum_and_overlap_are_errors() {
        let text = vec![b'x'; 3000];
        let mut dev = vec![0u8; 16384];
        write_area(&mut dev, 4096, 8192, 2048, &text);
        dev[4096 + 2100] = b'y';
        let src = MemSource::new(dev, "pv");
        let e = read_metadata(
            &src,
            DiskArea {
                offset: 4096,
                size: 8192,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        // Text longer than the area's ring buffer would wrap over its own start.
        let text = vec![b'x'; 7000];
        let mut dev = vec![0u8; 16384];
        write_area(&mut dev, 4096, 8192, 2048, &text[..6000]);
        dev[4096 + 48..4096 + 56].copy_from_slice(&7800u64.to_le_bytes());
        let crc = lvm_crc(INITIAL_CRC, &dev[4096 + 4..4096 + 512]);
        dev[4096..4100].copy_from_slice(&crc.to_le_bytes());
        let src = MemSource::new(dev, "pv");
        let e = read_metadata(
            &src,
            DiskArea {
                offset: 4096,
                size: 8192,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
    }
}
