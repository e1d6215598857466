//! Attribute records inside an MFT record and the attribute values coldscan interprets.
//!
//! Layout from the Linux-NTFS "NTFS Documentation" ("Concepts -> Attribute Header", "Files ->
//! Attributes") and libntfs-3g `layout.h` (`ATTR_RECORD`, `FILE_NAME_ATTR`, `ATTR_LIST_ENTRY`,
//! `REPARSE_POINT`): common header (type 0x00, length 0x04, non-resident flag 0x08, name
//! length/offset 0x09/0x0A, flags 0x0C, id 0x0E); resident: value length 0x10, value offset
//! 0x14; non-resident: lowest/highest VCN 0x10/0x18, mapping pairs offset 0x20, compression unit
//! 0x22, allocated/data/initialized size 0x28/0x30/0x38.

use crate::block::le;
use crate::error::Result;

use super::record::RecordLocation;

/// `$STANDARD_INFORMATION`.
pub const AT_STANDARD_INFORMATION: u32 = 0x10;
/// `$ATTRIBUTE_LIST`.
pub const AT_ATTRIBUTE_LIST: u32 = 0x20;
/// `$FILE_NAME`.
pub const AT_FILE_NAME: u32 = 0x30;
/// `$VOLUME_NAME`.
pub const AT_VOLUME_NAME: u32 = 0x60;
/// `$DATA`.
pub const AT_DATA: u32 = 0x80;
/// `$REPARSE_POINT`.
pub const AT_REPARSE_POINT: u32 = 0xC0;
/// `$LOGGED_UTILITY_STREAM` (holds `$EFS` on encrypted files).
pub const AT_LOGGED_UTILITY_STREAM: u32 = 0x100;

/// Attribute flag mask: compression method (1 = LZNT1).
pub const ATTR_COMPRESSION_MASK: u16 = 0x00FF;
/// Attribute flag: encrypted (EFS).
pub const ATTR_ENCRYPTED: u16 = 0x4000;
/// File attribute flag (`$STANDARD_INFORMATION`, `$FILE_NAME`): encrypted.
pub const FILE_ATTR_ENCRYPTED: u32 = 0x4000;

/// Longest attribute name (255 UTF-16 units).
const MAX_NAME_UNITS: usize = 255;

/// Decodes UTF-16LE bytes, replacing unpaired surrogates (names are display strings here).
pub fn utf16_name(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Where an attribute's value lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrBody {
    /// Stored in the record.
    Resident {
        /// The value bytes.
        value: Vec<u8>,
    },
    /// Stored in clusters described by mapping pairs.
    NonResident {
        /// First VCN this extent maps.
        lowest_vcn: u64,
        /// Last VCN this extent maps.
        highest_vcn: u64,
        /// The raw mapping pairs (data runs).
        mapping_pairs: Vec<u8>,
        /// log2 of the compression unit in clusters (0: not compressed).
        compression_unit: u8,
        /// Allocated size (valid in the extent with lowest VCN 0).
        allocated_size: u64,
        /// Data (logical) size (valid in the extent with lowest VCN 0).
        data_size: u64,
        /// Initialized size (valid in the extent with lowest VCN 0).
        initialized_size: u64,
        /// Byte offset of the mapping pairs in the volume, for error messages.
        pairs_position: u64,
    },
}

/// One attribute record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute type code (`AT_*`).
    pub type_code: u32,
    /// Attribute name (empty for unnamed).
    pub name: String,
    /// Attribute flags (compression mask, encrypted, sparse).
    pub flags: u16,
    /// Attribute instance id.
    pub id: u16,
    /// Resident value or non-resident description.
    pub body: AttrBody,
    /// Length of the attribute record in its MFT record.
    pub record_length: usize,
}

impl Attribute {
    /// Parses the attribute at `at` of `body` (the record's bytes in use), bounds-checking every
    /// offset against the attribute's own length and the attribute against `body`.
    pub fn parse(body: &[u8], at: usize, loc: &RecordLocation<'_>) -> Result<Attribute> {
        let type_code = le::u32(body, at).unwrap_or(0);
        let length = le::u32(body, at + 4).unwrap_or(0) as usize;
        let end = at.saturating_add(length);
        if length < 0x18 || end > body.len() {
            return Err(loc.corrupt(
                at,
                format!("attribute {type_code:#x} of length {length} runs past the record end ({} bytes in use)", body.len()),
            ));
        }
        let a = &body[at..end];
        let non_resident = a[8] != 0;
        let name_units = usize::from(a[9]);
        let name_off = usize::from(le::u16(a, 0x0A).unwrap_or(0));
        let flags = le::u16(a, 0x0C).unwrap_or(0);
        let id = le::u16(a, 0x0E).unwrap_or(0);
        let name = if name_units == 0 {
            String::new()
        } else {
            let bytes = a
                .get(name_off..name_off + name_units.min(MAX_NAME_UNITS) * 2)
                .ok_or_else(|| loc.corrupt(at + 0x0A, "attribute name outside the attribute"))?;
            utf16_name(bytes)
        };
        let body = if !non_resident {
            let len = le::u32(a, 0x10).unwrap_or(0) as usize;
            let off = usize::from(le::u16(a, 0x14).unwrap_or(0));
            let value = off
                .checked_add(len)
                .and_then(|e| a.get(off..e))
                .ok_or_else(|| {
                    loc.corrupt(
                        at + 0x10,
                        format!("resident value of {len} bytes at {off:#x} outside the attribute"),
                    )
                })?;
            AttrBody::Resident {
                value: value.to_vec(),
            }
        } else {
            if length < 0x40 {
                return Err(loc.corrupt(at, "non-resident attribute shorter than its header"));
            }
            let pairs_off = usize::from(le::u16(a, 0x20).unwrap_or(0));
            let pairs = a
                .get(pairs_off..)
                .filter(|_| pairs_off >= 0x40)
                .ok_or_else(|| {
                    loc.corrupt(
                        at + 0x20,
                        format!("mapping pairs offset {pairs_off:#x} outside the attribute"),
                    )
                })?;
            AttrBody::NonResident {
                lowest_vcn: le::u64(a, 0x10).unwrap_or(0),
                highest_vcn: le::u64(a, 0x18).unwrap_or(0),
                mapping_pairs: pairs.to_vec(),
                compression_unit: a[0x22],
                allocated_size: le::u64(a, 0x28).unwrap_or(0),
                data_size: le::u64(a, 0x30).unwrap_or(0),
                initialized_size: le::u64(a, 0x38).unwrap_or(0),
                pairs_position: loc.volume_offset.saturating_add((at + pairs_off) as u64),
            }
        };
        Ok(Attribute {
            type_code,
            name,
            flags,
            id,
            body,
            record_length: length,
        })
    }

    /// The resident value, if resident.
    pub fn resident_value(&self) -> Option<&[u8]> {
        match &self.body {
            AttrBody::Resident { value } => Some(value),
            AttrBody::NonResident { .. } => None,
        }
    }

    /// First VCN mapped (0 for resident attributes).
    pub fn lowest_vcn(&self) -> u64 {
        match &self.body {
            AttrBody::Resident { .. } => 0,
            AttrBody::NonResident { lowest_vcn, .. } => *lowest_vcn,
        }
    }
}

/// A `$FILE_NAME` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// Reference of the parent directory (record number + sequence).
    pub parent: u64,
    /// The name.
    pub name: String,
    /// Namespace: 0 POSIX, 1 Win32, 2 DOS (8.3), 3 Win32 and DOS.
    pub namespace: u8,
}

/// Namespace of a DOS-only 8.3 name.
pub const NAMESPACE_DOS: u8 = 2;

impl FileName {
    /// Parses a `$FILE_NAME` value (None if too short for its declared name).
    pub fn parse(v: &[u8]) -> Option<FileName> {
        let parent = le::u64(v, 0)?;
        let units = usize::from(*v.get(0x40)?);
        let namespace = *v.get(0x41)?;
        let bytes = v.get(0x42..0x42 + units * 2)?;
        Some(FileName {
            parent,
            name: utf16_name(bytes),
            namespace,
        })
    }
}

/// One `$ATTRIBUTE_LIST` entry: which record holds (part of) which attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrListEntry {
    /// Attribute type.
    pub type_code: u32,
    /// Record number holding the attribute extent.
    pub record: u64,
}

/// Most entries accepted in one attribute list.
const MAX_ATTR_LIST_ENTRIES: usize = 65_536;

/// Parses an `$ATTRIBUTE_LIST` value; stops at the first malformed entry (its offset returned
/// as the error) so the entries before it still count.
pub fn parse_attribute_list(v: &[u8]) -> (Vec<AttrListEntry>, Option<usize>) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < v.len() && out.len() < MAX_ATTR_LIST_ENTRIES {
        let (Some(type_code), Some(len), Some(reference)) =
            (le::u32(v, at), le::u16(v, at + 4), le::u64(v, at + 0x10))
        else {
            return (out, Some(at));
        };
        let len = usize::from(len);
        if len < 0x1A || at + len > v.len() {
            return (out, Some(at));
        }
        out.push(AttrListEntry {
            type_code,
            record: super::record::ref_record(reference),
        });
        at += len;
    }
    (out, None)
}

/// Reparse tag of a symbolic link.
pub const IO_REPARSE_TAG_SYMLINK: u32 = 0xA000_000C;
/// Reparse tag of a junction / mount point.
pub const IO_REPARSE_TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// Reparse tag of a WSL symbolic link.
pub const IO_REPARSE_TAG_LX_SYMLINK: u32 = 0xA000_001D;
/// Reparse tag of Windows Overlay Filter (CompactOS) compressed files.
pub const IO_REPARSE_TAG_WOF: u32 = 0x8000_0017;
/// Reparse tag of Data Deduplication.
pub const IO_REPARSE_TAG_DEDUP: u32 = 0x8000_0013;
/// WSL special files: AF_UNIX socket, FIFO, character and block device.
pub const IO_REPARSE_TAGS_LX_SPECIAL: [u32; 4] =
    [0x8000_0023, 0x8000_0024, 0x8000_0025, 0x8000_0026];

/// A `$REPARSE_POINT` value, reduced to what coldscan needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReparsePoint {
    /// The reparse tag.
    pub tag: u32,
    /// Tag-specific data.
    pub data: Vec<u8>,
}

impl ReparsePoint {
    /// Parses a reparse point value (tag 0x00, data length 0x04, data from 0x08).
    pub fn parse(v: &[u8]) -> Option<ReparsePoint> {
        let tag = le::u32(v, 0)?;
        let len = usize::from(le::u16(v, 4)?);
        let data = v.get(8..8 + len).unwrap_or(v.get(8..).unwrap_or(&[]));
        Some(ReparsePoint {
            tag,
            data: data.to_vec(),
        })
    }

    /// The print name (or else the substitute name) of a symlink or junction.
    pub fn link_target(&self) -> Option<String> {
        // Symlinks have a 4-byte flags field before the path buffer; junctions do not.
        let buffer_start = match self.tag {
            IO_REPARSE_TAG_SYMLINK => 12,
            IO_REPARSE_TAG_MOUNT_POINT => 8,
            IO_REPARSE_TAG_LX_SYMLINK => {
                // Version (4 bytes) then the UTF-8 target.
                return self
                    .data
                    .get(4..)
                    .map(|t| String::from_utf8_lossy(t).into_owned());
            }
            _ => return None,
        };
        let d = &self.data;
        let name = |off: usize, len: usize| {
            d.get(buffer_start + off..buffer_start + off + len)
                .map(utf16_name)
                .filter(|s| !s.is_empty())
        };
        let (so, sl) = (usize::from(le::u16(d, 0)?), usize::from(le::u16(d, 2)?));
        let (po, pl) = (usize::from(le::u16(d, 4)?), usize::from(le::u16(d, 6)?));
        name(po, pl).or_else(|| name(so, sl))
    }

    /// For a WOF reparse point, the compression algorithm's name (MS "WOF_EXTERNAL_INFO" +
    /// "FILE_PROVIDER_EXTERNAL_INFO_V1": version, provider 2 = file, then version, algorithm).
    pub fn wof_algorithm(&self) -> String {
        let provider = le::u32(&self.data, 4);
        match provider {
            Some(1) => "CompactOS WIM-backed file".to_string(),
            Some(2) => match le::u32(&self.data, 12) {
                Some(0) => "CompactOS XPRESS4K".to_string(),
                Some(1) => "CompactOS LZX".to_string(),
                Some(2) => "CompactOS XPRESS8K".to_string(),
                Some(3) => "CompactOS XPRESS16K".to_string(),
                Some(n) => format!("CompactOS algorithm {n}"),
                None => "CompactOS (unknown algorithm)".to_string(),
            },
            _ => "CompactOS (unknown provider)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_and_reparse_values() {
        let mut v = vec![0u8; 0x42];
        v[0..8].copy_from_slice(&(5u64 | (5u64 << 48)).to_le_bytes());
        v[0x40] = 2;
        v[0x41] = 1;
        v.extend_from_slice(&[b'h', 0, b'i', 0]);
        let f = FileName::parse(&v).unwrap();
        assert_eq!((f.name.as_str(), f.namespace), ("hi", 1));
        assert!(FileName::parse(&v[..0x43]).is_none());

        let mut r = IO_REPARSE_TAG_WOF.to_le_bytes().to_vec();
        r.extend_from_slice(&16u16.to_le_bytes());
        r.extend_from_slice(&[0, 0]);
        for x in [1u32, 2, 1, 3] {
            r.extend_from_slice(&x.to_le_bytes());
        }
        let rp = ReparsePoint::parse(&r).unwrap();
        assert_eq!(rp.wof_algorithm(), "CompactOS XPRESS16K");
    }

    #[test]
    fn attribute_list_stops_at_bad_entry() {
        let mut v = vec![0u8; 0x20];
        v[0..4].copy_from_slice(&AT_DATA.to_le_bytes());
        v[4..6].copy_from_slice(&0x20u16.to_le_bytes());
        v[0x10..0x18].copy_from_slice(&77u64.to_le_bytes());
        v.extend_from_slice(&[1, 0, 0, 0, 0xFF, 0xFF]);
        let (e, bad) = parse_attribute_list(&v);
        assert_eq!(
            e,
            vec![AttrListEntry {
                type_code: AT_DATA,
                record: 77
            }]
        );
        assert_eq!(bad, Some(0x20));
    }
}
