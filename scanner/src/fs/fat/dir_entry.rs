//! FAT directory entries: 8.3 short entries and VFAT long-name entries.
//!
//! fatgen103 section 6 (directory structure: DIR_Name, DIR_Attr, DIR_NTRes, DIR_FstClusHI/LO,
//! DIR_FileSize; 0xE5 deleted, 0x00 end of directory, 0x05 standing for a leading 0xE5) and
//! section 7 (long file names: LDIR_Ord with the 0x40 last-entry flag, 13 UTF-16 units per
//! entry in LDIR_Name1/2/3, LDIR_Chksum over the 11-byte short name). DIR_NTRes bits 3 and 4
//! (lowercase base / extension, Windows NT) are not in fatgen103 but are written by Windows,
//! Linux and mtools for 8.3 names in lower case.

use crate::block::le;

/// Size of one directory entry.
pub const ENTRY_SIZE: usize = 32;
/// Attribute bits (fatgen103 section 6).
pub const ATTR_VOLUME_ID: u8 = 0x08;
/// Directory attribute.
pub const ATTR_DIRECTORY: u8 = 0x10;
/// The attribute combination that marks a long-name entry.
pub const ATTR_LONG_NAME: u8 = 0x0f;
/// DIR_NTRes: the base name is lower case.
const NT_LOWER_BASE: u8 = 0x08;
/// DIR_NTRes: the extension is lower case.
const NT_LOWER_EXT: u8 = 0x10;
/// A long name has at most 255 characters: 20 entries of 13 units.
const MAX_LFN_ENTRIES: u8 = 20;

/// A short (8.3) directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortEntry {
    /// DIR_Name as stored (with 0x05 already turned back into 0xE5).
    pub name: [u8; 11],
    /// DIR_Attr.
    pub attr: u8,
    /// DIR_NTRes (lowercase flags).
    pub nt_flags: u8,
    /// First cluster (FstClusHI only counts on FAT32; callers mask it for FAT12/16).
    pub first_cluster: u32,
    /// DIR_FileSize.
    pub size: u32,
}

impl ShortEntry {
    /// Whether this is a subdirectory.
    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIRECTORY != 0
    }

    /// Whether this is the volume label entry.
    pub fn is_volume_label(&self) -> bool {
        self.attr & ATTR_VOLUME_ID != 0 && self.attr & ATTR_LONG_NAME != ATTR_LONG_NAME
    }

    /// Whether this is `.` or `..`.
    pub fn is_dot(&self) -> bool {
        self.name[0] == b'.'
    }

    /// The 8.3 name as shown (`README.TXT`, `readme.txt` with the NT lowercase flags).
    pub fn display_name(&self) -> String {
        let trim = |s: &[u8]| {
            let end = s.iter().rposition(|&c| c != b' ').map_or(0, |p| p + 1);
            s[..end].to_vec()
        };
        let mut base = trim(&self.name[..8]);
        let mut ext = trim(&self.name[8..]);
        if self.nt_flags & NT_LOWER_BASE != 0 {
            base.make_ascii_lowercase();
        }
        if self.nt_flags & NT_LOWER_EXT != 0 {
            ext.make_ascii_lowercase();
        }
        let mut s = decode_oem(&base);
        if !ext.is_empty() {
            s.push('.');
            s.push_str(&decode_oem(&ext));
        }
        s
    }

    /// The volume label text of a label entry.
    pub fn label(&self) -> String {
        decode_oem(&self.name).trim_end().to_string()
    }
}

/// One 32-byte slot of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEntry {
    /// DIR_Name[0] == 0: this and all following slots are free.
    End,
    /// DIR_Name[0] == 0xE5: deleted.
    Deleted,
    /// A long-name entry.
    LongName {
        /// LDIR_Ord.
        ord: u8,
        /// LDIR_Chksum.
        checksum: u8,
        /// The 13 UTF-16 units it carries.
        units: [u16; 13],
    },
    /// A short entry.
    Short(ShortEntry),
}

/// Parses one 32-byte slot (`None` if shorter).
pub fn parse(b: &[u8]) -> Option<RawEntry> {
    let first = *b.first()?;
    let attr = *b.get(11)?;
    if first == 0 {
        return Some(RawEntry::End);
    }
    if first == 0xe5 {
        return Some(RawEntry::Deleted);
    }
    if attr & 0x3f == ATTR_LONG_NAME {
        let mut units = [0u16; 13];
        let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (u, at) in units.iter_mut().zip(offsets) {
            *u = le::u16(b, at)?;
        }
        return Some(RawEntry::LongName {
            ord: first,
            checksum: *b.get(13)?,
            units,
        });
    }
    let mut name: [u8; 11] = b.get(..11)?.try_into().ok()?;
    if name[0] == 0x05 {
        name[0] = 0xe5;
    }
    let hi = u32::from(le::u16(b, 20)?);
    let lo = u32::from(le::u16(b, 26)?);
    Some(RawEntry::Short(ShortEntry {
        name,
        attr,
        nt_flags: *b.get(12)?,
        first_cluster: (hi << 16) | lo,
        size: le::u32(b, 28)?,
    }))
}

/// The long-name checksum of an 11-byte short name (fatgen103 section 7).
pub fn lfn_checksum(name: &[u8; 11]) -> u8 {
    name.iter().fold(0u8, |sum, &c| {
        ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(c)
    })
}

/// Collects long-name entries preceding a short entry and checks them (order, checksum).
#[derive(Debug, Default)]
pub struct LongNameBuilder {
    /// Units of each entry in physical order (last part of the name first).
    parts: Vec<[u16; 13]>,
    /// Ordinal expected next (counts down to 1).
    expected: u8,
    checksum: u8,
    active: bool,
}

impl LongNameBuilder {
    /// Feeds a long-name entry.
    pub fn push(&mut self, ord: u8, checksum: u8, units: [u16; 13]) {
        let seq = ord & 0x1f;
        if ord & 0x40 != 0 {
            self.parts.clear();
            self.active = (1..=MAX_LFN_ENTRIES).contains(&seq);
            self.expected = seq;
            self.checksum = checksum;
        } else if !self.active || checksum != self.checksum {
            self.reset();
            return;
        }
        if seq != self.expected || seq == 0 {
            self.reset();
            return;
        }
        self.parts.push(units);
        self.expected = seq - 1;
    }

    /// Forgets a partial long name (after a deleted or unexpected entry).
    pub fn reset(&mut self) {
        self.parts.clear();
        self.active = false;
        self.expected = 0;
    }

    /// Finishes with the short entry that follows: the long name if it is complete and its
    /// checksum matches `short`, else `None` (callers fall back to the 8.3 name).
    pub fn finish(&mut self, short: &[u8; 11]) -> Option<String> {
        let ok = self.active && self.expected == 0 && self.checksum == lfn_checksum(short);
        let units: Vec<u16> = self
            .parts
            .iter()
            .rev()
            .flat_map(|p| p.iter().copied())
            .take_while(|&u| u != 0)
            .collect();
        self.reset();
        if !ok || units.is_empty() {
            return None;
        }
        Some(String::from_utf16_lossy(&units))
    }
}

/// Code page 437 characters 0x80..=0xFF (the OEM code page of short names and labels).
const CP437_HIGH: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u{a0}";

/// Decodes OEM (code page 437) bytes of a short name or label.
pub fn decode_oem(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&c| {
            if c < 0x80 {
                char::from(c)
            } else {
                CP437_HIGH
                    .chars()
                    .nth(usize::from(c - 0x80))
                    .unwrap_or('\u{fffd}')
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp437_table_has_128_characters() {
        assert_eq!(CP437_HIGH.chars().count(), 128);
        assert_eq!(decode_oem(&[0x80, b'A', 0xe1]), "ÇAß");
    }

    #[test]
    fn checksum_matches_fatgen103_example() {
        // Short name of "The quick brown.fox" as Windows makes it.
        let name = *b"THEQUI~1FOX";
        let mut sum = 0u8;
        for c in name {
            sum = (if sum & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(sum >> 1)
                .wrapping_add(c);
        }
        assert_eq!(lfn_checksum(&name), sum);
    }

    #[test]
    fn lowercase_flags_apply_to_base_and_extension() {
        let mut e = ShortEntry {
            name: *b"README  TXT",
            attr: 0x20,
            nt_flags: NT_LOWER_BASE,
            first_cluster: 0,
            size: 0,
        };
        assert_eq!(e.display_name(), "readme.TXT");
        e.nt_flags = NT_LOWER_BASE | NT_LOWER_EXT;
        assert_eq!(e.display_name(), "readme.txt");
        e.name = *b"NOEXT      ";
        e.nt_flags = 0;
        assert_eq!(e.display_name(), "NOEXT");
    }

    #[test]
    fn long_name_out_of_order_or_bad_checksum_is_dropped() {
        let short = *b"LONGNA~1TXT";
        let sum = lfn_checksum(&short);
        let units = |s: &str| {
            let mut u = [0xffffu16; 13];
            for (i, c) in s.encode_utf16().chain([0]).take(13).enumerate() {
                u[i] = c;
            }
            u
        };
        let mut b = LongNameBuilder::default();
        b.push(0x42, sum, units("e.txt"));
        b.push(0x01, sum, units("long name fil"));
        assert_eq!(b.finish(&short).as_deref(), Some("long name file.txt"));
        b.push(0x42, sum, units("e.txt"));
        assert_eq!(b.finish(&short), None, "missing entry 1");
        b.push(0x41, sum.wrapping_add(1), units("x"));
        assert_eq!(b.finish(&short), None, "bad checksum");
    }
}
