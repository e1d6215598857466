//! The LVM2 physical volume label: a `LABELONE` label header in one of the first four 512-byte
//! sectors, followed (at `offset_xl` inside that sector) by the PV header with the PV UUID, the
//! device size and two zero-terminated lists of disk locations: data areas and metadata areas.
//!
//! Follows lvm2's `lib/label/label.h` (`struct label_header`) and `lib/format_text/layout.h`
//! (`struct pv_header`, `struct disk_locn`), as described in libvslvm's "Logical Volume Manager
//! (LVM) format" document, section 2 (physical volume label).

use crate::block::{le, BlockSource};
use crate::error::{Error, Result};

/// Size of a label sector (lvm2's `LABEL_SIZE`, always 512 bytes whatever the device's sectors).
pub const LABEL_SIZE: usize = 512;
/// The label may sit in any of the first `LABEL_SCAN_SECTORS` sectors.
pub const LABEL_SCAN_SECTORS: u64 = 4;
/// Label header signature.
pub const LABEL_ID: &[u8; 8] = b"LABELONE";
/// The label type of LVM2 text-format PVs.
pub const LVM2_TYPE: &[u8; 8] = b"LVM2 001";
/// Initial value of lvm2's CRC-32 (`INITIAL_CRC`).
pub const INITIAL_CRC: u32 = 0xf597_a6cf;
/// Length of a PV UUID without dashes.
pub const UUID_LEN: usize = 32;
/// Size of one `disk_locn` (offset u64, size u64).
const DISK_LOCN_SIZE: usize = 16;

/// lvm2's CRC-32 (`calc_crc`): the reflected 0xedb88320 polynomial without the final inversion,
/// continuing from `crc`.
pub fn lvm_crc(crc: u32, data: &[u8]) -> u32 {
    // crc32fast inverts its state before and after each update; undo both inversions.
    let mut h = crc32fast::Hasher::new_with_initial(!crc);
    h.update(data);
    !h.finalize()
}

/// One `disk_locn`: a byte range of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskArea {
    /// Byte offset on the PV.
    pub offset: u64,
    /// Byte length; 0 for a data area means "to the end of the device".
    pub size: u64,
}

/// A parsed PV label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// Sector (of 512 bytes) holding the label.
    pub sector: u64,
    /// The PV UUID as stored (32 characters, no dashes).
    pub uuid: String,
    /// Device size recorded at `pvcreate` time, in bytes.
    pub device_size: u64,
    /// Data areas (one in practice; its offset is `pe_start`).
    pub data_areas: Vec<DiskArea>,
    /// Metadata areas (zero, one or two).
    pub metadata_areas: Vec<DiskArea>,
}

impl PvLabel {
    /// The UUID in lvm2's display form (`xxxxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxxxx`).
    pub fn display_uuid(&self) -> String {
        display_uuid(&self.uuid)
    }
}

/// Formats a 32-character UUID the way lvm2 prints it (groups of 6-4-4-4-4-4-6).
pub fn display_uuid(raw: &str) -> String {
    if raw.len() != UUID_LEN || !raw.is_ascii() {
        return raw.to_string();
    }
    let groups = [6usize, 4, 4, 4, 4, 4, 6];
    let mut out = String::with_capacity(UUID_LEN + groups.len());
    let mut at = 0;
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(raw.get(at..at + g).unwrap_or(""));
        at += g;
    }
    out
}

/// Whether any of the first four sectors of `dev` holds an LVM2 label; cheap, for probing.
pub fn has_label(dev: &dyn BlockSource) -> Result<bool> {
    Ok(find_label_sector(dev)?.is_some())
}

fn find_label_sector(dev: &dyn BlockSource) -> Result<Option<(u64, [u8; LABEL_SIZE])>> {
    for sector in 0..LABEL_SCAN_SECTORS {
        let off = sector * LABEL_SIZE as u64;
        if off + LABEL_SIZE as u64 > dev.size() {
            break;
        }
        let mut b = [0u8; LABEL_SIZE];
        dev.read_exact_at(off, &mut b)?;
        if b.get(..8) == Some(LABEL_ID.as_slice()) && b.get(24..32) == Some(LVM2_TYPE.as_slice()) {
            return Ok(Some((sector, b)));
        }
    }
    Ok(None)
}

/// The display UUID of the LVM2 label of `dev` when it has one, even if the label does not
/// check out (the PV is then reported with the label's error by [`read_label`]).
pub fn read_label_lenient(dev: &dyn BlockSource) -> Result<Option<String>> {
    Ok(find_label_sector(dev)?.map(|(_, b)| {
        let raw: String = b
            .get(32..64)
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap_or_default();
        display_uuid(&raw)
    }))
}

/// Reads and checks the PV label of `dev`; `Ok(None)` when there is no LVM2 label.
pub fn read_label(dev: &dyn BlockSource) -> Result<Option<PvLabel>> {
    let Some((sector, b)) = find_label_sector(dev)? else {
        return Ok(None);
    };
    let name = dev.name();
    let at = sector * LABEL_SIZE as u64;
    parse_label(&b, sector, name, at).map(Some)
}

/// Parses a label sector read from sector `sector` (`at` is its byte offset, for errors).
pub fn parse_label(b: &[u8; LABEL_SIZE], sector: u64, name: &str, at: u64) -> Result<PvLabel> {
    let bad = |off: usize, what: String| Error::corrupt(name, at + off as u64, what);
    let recorded_sector = le::u64(b, 8).unwrap_or(0);
    if recorded_sector != sector {
        return Err(bad(
            8,
            format!("LVM2 label in sector {sector} says it is in sector {recorded_sector}"),
        ));
    }
    let crc = le::u32(b, 16).unwrap_or(0);
    let computed = lvm_crc(INITIAL_CRC, &b[20..]);
    if crc != computed {
        return Err(bad(
            16,
            format!("LVM2 label checksum {crc:#010x}, computed {computed:#010x}"),
        ));
    }
    let hdr = usize::try_from(le::u32(b, 20).unwrap_or(0)).unwrap_or(usize::MAX);
    // The PV header needs its UUID, device size and at least the two list terminators.
    let min = UUID_LEN + 8 + 2 * DISK_LOCN_SIZE;
    if hdr < 32 || hdr.checked_add(min).is_none_or(|end| end > LABEL_SIZE) {
        return Err(bad(
            20,
            format!("PV header offset {hdr} is outside the label sector"),
        ));
    }
    let uuid_bytes = &b[hdr..hdr + UUID_LEN];
    if !uuid_bytes.iter().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad(hdr, "PV UUID is not 32 alphanumeric characters".into()));
    }
    let uuid = String::from_utf8_lossy(uuid_bytes).into_owned();
    let device_size = le::u64(b, hdr + UUID_LEN).unwrap_or(0);
    let mut pos = hdr + UUID_LEN + 8;
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        loop {
            let (Some(offset), Some(size)) = (le::u64(b, pos), le::u64(b, pos + 8)) else {
                return Err(bad(
                    pos,
                    "PV header area list runs past the label sector".into(),
                ));
            };
            pos += DISK_LOCN_SIZE;
            if offset == 0 {
                break;
            }
            list.push(DiskArea { offset, size });
        }
    }
    let [data_areas, metadata_areas] = lists;
    Ok(PvLabel {
        sector,
        uuid,
        device_size,
        data_areas,
        metadata_areas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A label sector as lvm2 writes it (header at 32, one data area, one metadata area).
    pub(crate) fn label_sector(
        sector: u64,
        uuid: &str,
        pe_start: u64,
        mda: (u64, u64),
    ) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[..8].copy_from_slice(LABEL_ID);
        b[8..16].copy_from_slice(&sector.to_le_bytes());
        b[20..24].copy_from_slice(&32u32.to_le_bytes());
        b[24..32].copy_from_slice(LVM2_TYPE);
        b[32..64].copy_from_slice(uuid.as_bytes());
        b[64..72].copy_from_slice(&(64u64 << 20).to_le_bytes());
        b[72..80].copy_from_slice(&pe_start.to_le_bytes());
        b[104..112].copy_from_slice(&mda.0.to_le_bytes());
        b[112..120].copy_from_slice(&mda.1.to_le_bytes());
        let crc = lvm_crc(INITIAL_CRC, &b[20..]);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn parses_a_label() {
        let uuid = "AbCdEf0123456789AbCdEf0123456789";
        let b = label_sector(1, uuid, 1 << 20, (4096, 1044480));
        let l = parse_label(&b, 1, "pv", 512).unwrap();
        assert_eq!(l.uuid, uuid);
        assert_eq!(
            l.data_areas,
            vec![DiskArea {
                offset: 1 << 20,
                size: 0
            }]
        );
        assert_eq!(
            l.metadata_areas,
            vec![DiskArea {
                offset: 4096,
                size: 1044480
            }]
        );
        assert_eq!(l.display_uuid(), "AbCdEf-0123-4567-89Ab-CdEf-0123-456789");
    }

    #[test]
    fn rejects_bad_checksum_and_wrong_sector() {
        let uuid = "AbCdEf0123456789AbCdEf0123456789";
        let mut b = label_sector(1, uuid, 1 << 20, (4096, 4096));
        let e = parse_label(&b, 2, "pv", 1024).unwrap_err().to_string();
        assert!(e.contains("says it is in sector 1"), "{e}");
        b[40] ^= 1;
        let e = parse_label(&b, 1, "pv", 512).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains("0x210"), "{e}");
    }

    #[test]
    fn unterminated_area_list_is_an_error() {
        let mut b = [0u8; 512];
        b[..8].copy_from_slice(LABEL_ID);
        b[20..24].copy_from_slice(&32u32.to_le_bytes());
        b[24..32].copy_from_slice(LVM2_TYPE);
        b[32..64].copy_from_slice(&[b'a'; 32]);
        for i in (72..512).step_by(8) {
            b[i] = 1;
        }
        let crc = lvm_crc(INITIAL_CRC, &b[20..]);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
        assert!(parse_label(&b, 0, "pv", 0).is_err());
    }
}
