//! Linux MD RAID member superblocks: version 0.90 (at the last 64 KiB-aligned 64 KiB of the
//! device) and 1.x (1.0 near the end, 1.1 at byte 0, 1.2 at byte 4096), as in the kernel's
//! `include/uapi/linux/raid/md_p.h` (`mdp_superblock_s`, `mdp_superblock_1`).
//!
//! A RAID1 member holds the whole array's data at its data offset, so it is read as that data;
//! other levels are recognised and reported, not read.

use crate::block::{le, BlockSource};
use crate::error::Result;

/// Superblock magic (both versions, little-endian on the x86 and arm hosts that write them).
pub const MD_MAGIC: u32 = 0xa92b_4efc;
/// Size of the 0.90 reserved area at the end of the device.
const RESERVED_090: u64 = 64 * 1024;

/// A recognised MD member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdMember {
    /// `0.90`, `1.0`, `1.1` or `1.2`.
    pub version: &'static str,
    /// Array UUID.
    pub array_uuid: String,
    /// Array name (1.x), if set.
    pub name: Option<String>,
    /// RAID level (0, 1, 4, 5, 6, 10; -1 linear).
    pub level: i32,
    /// Number of devices in the array.
    pub raid_disks: u32,
    /// Event count (the member with the highest one is the freshest).
    pub events: u64,
    /// Byte offset and length of the array data on this member.
    pub data_offset: u64,
    /// Length in bytes of the data each member holds.
    pub data_size: u64,
}

fn uuid_string(b: &[u8]) -> String {
    let x = hex::encode(b);
    if x.len() == 32 {
        format!(
            "{}-{}-{}-{}-{}",
            &x[..8],
            &x[8..12],
            &x[12..16],
            &x[16..20],
            &x[20..]
        )
    } else {
        x
    }
}

/// Recognises an MD member superblock on `dev`.
pub fn probe(dev: &dyn BlockSource) -> Result<Option<MdMember>> {
    let size = dev.size();
    let mut b = [0u8; 256];
    // 1.1 at 0, 1.2 at 4 KiB, 1.0 at ((sectors - 16) & !7) sectors.
    let end_sb = (size / 512).checked_sub(16).map(|s| (s & !7) * 512);
    for (version, at) in [("1.1", Some(0)), ("1.2", Some(4096)), ("1.0", end_sb)] {
        let Some(at) = at else { continue };
        if at + b.len() as u64 > size {
            continue;
        }
        dev.read_exact_at(at, &mut b)?;
        if le::u32(&b, 0) != Some(MD_MAGIC) || le::u32(&b, 4) != Some(1) {
            continue;
        }
        if le::u64(&b, 144) != Some(at / 512) {
            continue;
        }
        let name = {
            let n = &b[32..64];
            let end = n.iter().position(|&c| c == 0).unwrap_or(n.len());
            let s = String::from_utf8_lossy(&n[..end]).to_string();
            (!s.is_empty()).then_some(s)
        };
        let sectors = le::u64(&b, 80).unwrap_or(0);
        return Ok(Some(MdMember {
            version,
            array_uuid: uuid_string(&b[16..32]),
            name,
            level: le::u32(&b, 72).unwrap_or(0) as i32,
            raid_disks: le::u32(&b, 92).unwrap_or(0),
            events: le::u64(&b, 200).unwrap_or(0),
            data_offset: le::u64(&b, 128).unwrap_or(0).saturating_mul(512),
            data_size: sectors.saturating_mul(512),
        }));
    }
    // 0.90 at the last 64 KiB-aligned 64 KiB.
    if size >= 2 * RESERVED_090 {
        let at = (size & !(RESERVED_090 - 1)) - RESERVED_090;
        dev.read_exact_at(at, &mut b)?;
        if le::u32(&b, 0) == Some(MD_MAGIC) && le::u32(&b, 4) == Some(0) {
            let w = |i: usize| le::u32(&b, i * 4).unwrap_or(0);
            let mut uuid = Vec::with_capacity(16);
            for i in [5usize, 13, 14, 15] {
                uuid.extend_from_slice(&b[i * 4..i * 4 + 4]);
            }
            // Generic state section from word 32: events_lo at 39, events_hi at 40 (little-endian).
            let events = (u64::from(w(40)) << 32) | u64::from(w(39));
            return Ok(Some(MdMember {
                version: "0.90",
                array_uuid: uuid_string(&uuid),
                name: None,
                level: w(7) as i32,
                raid_disks: w(10),
                events,
                data_offset: 0,
                data_size: u64::from(w(8)).saturating_mul(1024).min(at),
            }));
        }
    }
    Ok(None)
}
