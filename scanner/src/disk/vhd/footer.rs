//! The VHD hard disk footer ("Virtual Hard Disk Image Format Specification", Microsoft, 2006,
//! section "Hard Disk Footer Format"). 512 bytes, big-endian, at the end of every VHD and (for
//! dynamic and differencing disks) copied at offset 0.

use crate::block::{be, read_vec, BlockSource};
use crate::error::{Error, Result};

/// Size of the footer.
pub const FOOTER_SIZE: u64 = 512;
/// `conectix`.
pub const COOKIE: &[u8; 8] = b"conectix";
/// Disk type 2.
pub const TYPE_FIXED: u32 = 2;
/// Disk type 3.
pub const TYPE_DYNAMIC: u32 = 3;
/// Disk type 4.
pub const TYPE_DIFFERENCING: u32 = 4;
/// The largest CHS geometry (65535 cylinders, 16 heads, 255 sectors): QEMU then uses the
/// current size field whatever the creator.
const MAX_GEOMETRY_SECTORS: u64 = 65535 * 16 * 255;

/// A parsed footer.
#[derive(Debug, Clone)]
pub struct Footer {
    /// Byte offset of the dynamic disk header (`u64::MAX` for fixed disks).
    pub data_offset: u64,
    /// Creator application (`qemu`, `vpc `, `win `, ...).
    pub creator_app: [u8; 4],
    /// Current size field in bytes.
    pub current_size: u64,
    /// Cylinders, heads, sectors per track.
    pub geometry: (u16, u8, u8),
    /// 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: u32,
    /// Whether the stored checksum matched.
    pub checksum_ok: bool,
    /// Unique id (checked by differencing children).
    pub unique_id: [u8; 16],
}

/// Ones' complement of the byte sum with the checksum field (bytes 64-67) taken as zero.
pub fn checksum(bytes: &[u8], skip: std::ops::Range<usize>) -> u32 {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .fold(0u32, |s, (_, &b)| s.wrapping_add(u32::from(b)));
    !sum
}

impl Footer {
    /// Parses the 512 footer bytes `b` found at `offset` of `name`.
    pub fn parse(name: &str, offset: u64, b: &[u8]) -> Result<Footer> {
        if b.len() < FOOTER_SIZE as usize || b.get(0..8) != Some(&COOKIE[..]) {
            return Err(Error::corrupt(name, offset, "VHD footer: bad cookie"));
        }
        let stored = be::u32(b, 64).unwrap_or(0);
        let mut creator_app = [0u8; 4];
        creator_app.copy_from_slice(b.get(28..32).unwrap_or(&[0; 4]));
        let mut unique_id = [0u8; 16];
        unique_id.copy_from_slice(b.get(68..84).unwrap_or(&[0; 16]));
        let disk_type = be::u32(b, 60).unwrap_or(0);
        if !(TYPE_FIXED..=TYPE_DIFFERENCING).contains(&disk_type) {
            return Err(Error::unsupported(
                name,
                format!("VHD disk type {disk_type} (2 fixed, 3 dynamic, 4 differencing)"),
            ));
        }
        Ok(Footer {
            data_offset: be::u64(b, 16).unwrap_or(0),
            creator_app,
            current_size: be::u64(b, 48).unwrap_or(0),
            geometry: (
                be::u16(b, 56).unwrap_or(0),
                b.get(58).copied().unwrap_or(0),
                b.get(59).copied().unwrap_or(0),
            ),
            disk_type,
            checksum_ok: checksum(&b[..FOOTER_SIZE as usize], 64..68) == stored,
            unique_id,
        })
    }

    /// Reads the footer of `file`: the copy at offset 0 if valid (dynamic disks), else the one in
    /// the last 512 bytes. A copy with a good checksum is preferred.
    pub fn read(file: &dyn BlockSource) -> Result<Footer> {
        let size = file.size();
        if size < FOOTER_SIZE {
            return Err(Error::corrupt(
                file.name(),
                0,
                "VHD smaller than its footer",
            ));
        }
        let end = size - FOOTER_SIZE;
        let at_end = read_vec(file, end, FOOTER_SIZE, FOOTER_SIZE)
            .and_then(|b| Footer::parse(file.name(), end, &b));
        let at_start = read_vec(file, 0, FOOTER_SIZE, FOOTER_SIZE)
            .and_then(|b| Footer::parse(file.name(), 0, &b));
        match (at_start, at_end) {
            (Ok(s), _) if s.checksum_ok => Ok(s),
            (_, Ok(e)) if e.checksum_ok => Ok(e),
            (Ok(s), _) => Ok(s),
            (_, e) => e,
        }
    }

    /// Virtual disk size as QEMU computes it (`block/vpc.c`): the CHS geometry for images made
    /// by Virtual PC and older QEMU, the current size field for Hyper-V, disk2vhd, XenServer and
    /// newer QEMU (`qem2`), and always when the geometry is the maximum one.
    pub fn virtual_size(&self) -> u64 {
        let (c, h, s) = self.geometry;
        let chs = u64::from(c) * u64::from(h) * u64::from(s);
        let current_size_apps: [&[u8; 4]; 5] = [b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0"];
        let use_chs = !current_size_apps.contains(&&self.creator_app);
        if !use_chs || chs >= MAX_GEOMETRY_SECTORS {
            // QEMU truncates to whole sectors.
            self.current_size & !511
        } else {
            chs * 512
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer(app: &[u8; 4], geometry: (u16, u8, u8), current: u64) -> Footer {
        Footer {
            data_offset: u64::MAX,
            creator_app: *app,
            current_size: current,
            geometry,
            disk_type: TYPE_FIXED,
            checksum_ok: true,
            unique_id: [0; 16],
        }
    }

    #[test]
    fn virtual_size_follows_qemus_creator_rules() {
        // Virtual PC and old QEMU: CHS geometry.
        assert_eq!(
            footer(b"vpc ", (100, 16, 63), 1 << 30).virtual_size(),
            100 * 16 * 63 * 512
        );
        assert_eq!(
            footer(b"qemu", (100, 16, 63), 1 << 30).virtual_size(),
            100 * 16 * 63 * 512
        );
        // Hyper-V, disk2vhd, newer QEMU: the current size field.
        for app in [b"win ", b"d2v ", b"qem2", b"tap\0", b"CTXS"] {
            assert_eq!(footer(app, (100, 16, 63), 1 << 30).virtual_size(), 1 << 30);
        }
        // The maximum geometry means "larger than CHS can say".
        assert_eq!(
            footer(b"vpc ", (65535, 16, 255), 1 << 40).virtual_size(),
            1 << 40
        );
    }

    #[test]
    fn checksum_is_the_ones_complement_of_the_byte_sum() {
        let mut b = [0u8; 512];
        b[0] = 1;
        b[511] = 2;
        b[64] = 0xff; // inside the skipped checksum field
        assert_eq!(checksum(&b, 64..68), !3u32);
    }
}
