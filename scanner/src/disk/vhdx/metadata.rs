//! The VHDX metadata region ([MS-VHDX] section 2.6): the metadata table and the known items
//! (2.6.2.1 file parameters, 2.6.2.2 virtual disk size, 2.6.2.4 logical and 2.6.2.5 physical
//! sector size, 2.6.2.6 parent locator). Unknown items marked required are refused.

use crate::block::{le, read_vec, BlockSource};
use crate::disk::vhdx::header::{guid, guid_string, Guid};
use crate::disk::vhdx::region::Region;
use crate::error::{Error, Result};

/// Most entries allowed by the spec.
pub const MAX_ENTRIES: u16 = 2047;
/// Largest metadata item read (the spec's limit is 1 MiB).
pub const MAX_ITEM: u32 = 1 << 20;
/// Smallest block size (1 MiB).
pub const MIN_BLOCK_SIZE: u32 = 1 << 20;
/// Largest block size (256 MiB).
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;

const FILE_PARAMETERS: Guid = guid(
    0xcaa1_6737,
    0xfa36,
    0x4d43,
    [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
);
const VIRTUAL_DISK_SIZE: Guid = guid(
    0x2fa5_4224,
    0xcd1b,
    0x4876,
    [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
);
const VIRTUAL_DISK_ID: Guid = guid(
    0xbeca_12ab,
    0xb2e6,
    0x4523,
    [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
);
const LOGICAL_SECTOR_SIZE: Guid = guid(
    0x8141_bf1d,
    0xa96f,
    0x4709,
    [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
);
const PHYSICAL_SECTOR_SIZE: Guid = guid(
    0xcda3_48c7,
    0x445d,
    0x4471,
    [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
);
const PARENT_LOCATOR: Guid = guid(
    0xa8d3_5f2d,
    0xb30b,
    0x454d,
    [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
);
/// The VHDX parent locator type ([MS-VHDX] 2.6.2.6.1).
pub const VHDX_LOCATOR_TYPE: Guid = guid(
    0xb04a_efb7,
    0xd19e,
    0x4a81,
    [0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13],
);

/// What the metadata says about the virtual disk.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// Payload block size in bytes.
    pub block_size: u32,
    /// Blocks stay allocated (fixed VHDX).
    pub leave_blocks_allocated: bool,
    /// The disk is a differencing disk.
    pub has_parent: bool,
    /// Virtual disk size in bytes.
    pub virtual_size: u64,
    /// Logical sector size (512 or 4096).
    pub logical_sector_size: u32,
    /// Physical sector size (512 or 4096).
    pub physical_sector_size: u32,
    /// Virtual disk id (page 83 data), when present.
    pub disk_id: Option<Guid>,
    /// Parent locator key/value pairs (differencing disks).
    pub parent_locator: Vec<(String, String)>,
}

impl Metadata {
    /// Reads the metadata table and items in `region`.
    pub fn read(file: &dyn BlockSource, region: Region) -> Result<Metadata> {
        let name = file.name();
        let base = region.offset;
        let table = read_vec(file, base, (64 * 1024u64).min(region.length), 64 * 1024)?;
        if table.get(0..8) != Some(b"metadata") {
            return Err(Error::corrupt(
                name,
                base,
                "VHDX metadata table: bad signature",
            ));
        }
        let count = le::u16(&table, 10).unwrap_or(0);
        if count > MAX_ENTRIES {
            return Err(Error::corrupt(
                name,
                base + 10,
                format!("VHDX metadata table: {count} entries (at most {MAX_ENTRIES})"),
            ));
        }
        let mut md = Metadata {
            block_size: 0,
            leave_blocks_allocated: false,
            has_parent: false,
            virtual_size: 0,
            logical_sector_size: 0,
            physical_sector_size: 0,
            disk_id: None,
            parent_locator: Vec::new(),
        };
        let (mut have_params, mut have_size, mut have_lss) = (false, false, false);
        for i in 0..usize::from(count) {
            let at = 32 + i * 32;
            let entry_off = base + at as u64;
            let Some(e) = table.get(at..at + 32) else {
                return Err(Error::corrupt(
                    name,
                    entry_off,
                    "VHDX metadata entry past the table",
                ));
            };
            let mut id = [0u8; 16];
            id.copy_from_slice(&e[0..16]);
            let offset = le::u32(e, 16).unwrap_or(0);
            let length = le::u32(e, 20).unwrap_or(0);
            let required = le::u32(e, 24).unwrap_or(0) & 4 != 0;
            // Items lie after the 64 KiB table and inside the region.
            let fits = u64::from(offset) >= 64 * 1024
                && u64::from(offset) + u64::from(length) <= region.length
                && length <= MAX_ITEM;
            let known = [
                FILE_PARAMETERS,
                VIRTUAL_DISK_SIZE,
                VIRTUAL_DISK_ID,
                LOGICAL_SECTOR_SIZE,
                PHYSICAL_SECTOR_SIZE,
                PARENT_LOCATOR,
            ]
            .contains(&id);
            if !known {
                if required {
                    return Err(Error::unsupported(
                        name,
                        format!("VHDX required metadata item {}", guid_string(&id)),
                    ));
                }
                continue;
            }
            if !fits && length != 0 {
                return Err(Error::corrupt(
                    name,
                    entry_off,
                    format!(
                        "VHDX metadata item {} ({length} bytes at +{offset:#x}) lies outside its region",
                        guid_string(&id)
                    ),
                ));
            }
            let data = read_vec(
                file,
                base + u64::from(offset),
                u64::from(length),
                u64::from(MAX_ITEM),
            )?;
            let need = |n: usize| -> Result<()> {
                if data.len() < n {
                    Err(Error::corrupt(
                        name,
                        entry_off,
                        format!(
                            "VHDX metadata item {} is shorter than {n} bytes",
                            guid_string(&id)
                        ),
                    ))
                } else {
                    Ok(())
                }
            };
            if id == FILE_PARAMETERS {
                need(8)?;
                md.block_size = le::u32(&data, 0).unwrap_or(0);
                let flags = le::u32(&data, 4).unwrap_or(0);
                md.leave_blocks_allocated = flags & 1 != 0;
                md.has_parent = flags & 2 != 0;
                have_params = true;
            } else if id == VIRTUAL_DISK_SIZE {
                need(8)?;
                md.virtual_size = le::u64(&data, 0).unwrap_or(0);
                have_size = true;
            } else if id == VIRTUAL_DISK_ID {
                need(16)?;
                let mut g = [0u8; 16];
                g.copy_from_slice(&data[..16]);
                md.disk_id = Some(g);
            } else if id == LOGICAL_SECTOR_SIZE {
                need(4)?;
                md.logical_sector_size = le::u32(&data, 0).unwrap_or(0);
                have_lss = true;
            } else if id == PHYSICAL_SECTOR_SIZE {
                need(4)?;
                md.physical_sector_size = le::u32(&data, 0).unwrap_or(0);
            } else if id == PARENT_LOCATOR {
                md.parent_locator = parse_parent_locator(name, entry_off, &data)?;
            }
        }
        if !(have_params && have_size && have_lss) {
            return Err(Error::corrupt(
                name,
                base,
                "VHDX metadata lacks file parameters, virtual disk size or logical sector size",
            ));
        }
        if !md.block_size.is_power_of_two()
            || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&md.block_size)
        {
            return Err(Error::corrupt(
                name,
                base,
                format!(
                    "VHDX block size {} is not a power of two in 1 MiB..=256 MiB",
                    md.block_size
                ),
            ));
        }
        if md.logical_sector_size != 512 && md.logical_sector_size != 4096 {
            return Err(Error::corrupt(
                name,
                base,
                format!("VHDX logical sector size {}", md.logical_sector_size),
            ));
        }
        if md.virtual_size > crate::disk::MAX_VIRTUAL_SIZE {
            return Err(Error::corrupt(
                name,
                base,
                format!(
                    "VHDX virtual size {} exceeds the {}-byte limit",
                    md.virtual_size,
                    crate::disk::MAX_VIRTUAL_SIZE
                ),
            ));
        }
        Ok(md)
    }

    /// The value of parent locator key `key`.
    pub fn locator(&self, key: &str) -> Option<&str> {
        self.parent_locator
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a parent locator item ([MS-VHDX] 2.6.2.6): a header (locator type, key/value count)
/// and key/value entries whose UTF-16LE strings lie inside the item.
fn parse_parent_locator(name: &str, off: u64, d: &[u8]) -> Result<Vec<(String, String)>> {
    let bad = |why: &str| Error::corrupt(name, off, format!("VHDX parent locator: {why}"));
    if d.len() < 20 {
        return Err(bad("shorter than its header"));
    }
    if d.get(0..16) != Some(&VHDX_LOCATOR_TYPE[..]) {
        return Err(Error::unsupported(
            name,
            "VHDX parent locator of an unknown type",
        ));
    }
    let count = usize::from(le::u16(d, 18).unwrap_or(0));
    let mut out = Vec::new();
    for i in 0..count {
        let at = 20 + i * 12;
        let e = d
            .get(at..at + 12)
            .ok_or_else(|| bad("entry past the item"))?;
        let ko = le::u32(e, 0).unwrap_or(0) as usize;
        let vo = le::u32(e, 4).unwrap_or(0) as usize;
        let kl = usize::from(le::u16(e, 8).unwrap_or(0));
        let vl = usize::from(le::u16(e, 10).unwrap_or(0));
        let s = |o: usize, l: usize| -> Result<String> {
            let b = o
                .checked_add(l)
                .and_then(|end| d.get(o..end))
                .ok_or_else(|| bad("string past the item"))?;
            let units: Vec<u16> = b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            Ok(String::from_utf16_lossy(&units))
        };
        out.push((s(ko, kl)?, s(vo, vl)?));
    }
    Ok(out)
}
