//! The chunk map: logical addresses to device offsets (btrfs on-disk format documentation,
//! "Chunk tree", `struct btrfs_chunk` / `struct btrfs_stripe`; kernel `fs/btrfs/volumes.c`
//! `btrfs_map_block`).
//!
//! The superblock's `sys_chunk_array` maps the SYSTEM block groups, enough to read the chunk
//! tree, whose CHUNK_ITEMs then map everything. Profiles: SINGLE and DUP (one copy read),
//! RAID1/RAID1C3/RAID1C4 (any copy on a present device), RAID0 and RAID10 (striped). RAID5/6
//! are reported as unsupported. A stripe on a device that was not given is reported naming the
//! device id and UUID.

use std::collections::BTreeMap;

use crate::block::le;
use crate::error::{Error, Result};

/// Bytes of a `struct btrfs_chunk` before its stripes.
pub const CHUNK_ITEM_SIZE: usize = 48;
/// Bytes of one `struct btrfs_stripe`.
pub const STRIPE_SIZE: usize = 32;
/// Bytes of a `struct btrfs_disk_key`.
pub const DISK_KEY_SIZE: usize = 17;
/// Most stripes one chunk may have (the kernel bounds it by the item size; this is generous).
pub const MAX_STRIPES: usize = 256;
/// Most chunks in the map (a 16 TiB filesystem of 1 GiB data chunks has ~16,000).
pub const MAX_CHUNKS: usize = 1 << 20;
/// CHUNK_ITEM key type.
pub const CHUNK_ITEM_KEY: u8 = 228;

/// Block group type and profile flags (`BTRFS_BLOCK_GROUP_*`).
pub mod profile {
    /// RAID0.
    pub const RAID0: u64 = 1 << 3;
    /// RAID1.
    pub const RAID1: u64 = 1 << 4;
    /// DUP.
    pub const DUP: u64 = 1 << 5;
    /// RAID10.
    pub const RAID10: u64 = 1 << 6;
    /// RAID5.
    pub const RAID5: u64 = 1 << 7;
    /// RAID6.
    pub const RAID6: u64 = 1 << 8;
    /// RAID1C3.
    pub const RAID1C3: u64 = 1 << 9;
    /// RAID1C4.
    pub const RAID1C4: u64 = 1 << 10;
}

/// One stripe of a chunk: a device and the byte offset on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stripe {
    /// Device id.
    pub devid: u64,
    /// Byte offset on the device.
    pub offset: u64,
    /// Device UUID.
    pub dev_uuid: [u8; 16],
}

/// One chunk: `length` logical bytes from the key's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Logical start.
    pub logical: u64,
    /// Logical length.
    pub length: u64,
    /// Stripe length for striped profiles.
    pub stripe_len: u64,
    /// Block group type and profile flags.
    pub flags: u64,
    /// Copies in RAID10.
    pub sub_stripes: u16,
    /// The stripes.
    pub stripes: Vec<Stripe>,
}

/// Parses one chunk item at `b` (key offset `logical`), returning it and its byte length.
pub fn parse_chunk(b: &[u8], logical: u64) -> Option<(Chunk, usize)> {
    let num = usize::from(le::u16(b, 44)?);
    if num == 0 || num > MAX_STRIPES {
        return None;
    }
    let len = CHUNK_ITEM_SIZE.checked_add(num.checked_mul(STRIPE_SIZE)?)?;
    let mut stripes = Vec::with_capacity(num);
    for i in 0..num {
        let at = CHUNK_ITEM_SIZE + i * STRIPE_SIZE;
        let mut dev_uuid = [0u8; 16];
        dev_uuid.copy_from_slice(b.get(at + 16..at + 32)?);
        stripes.push(Stripe {
            devid: le::u64(b, at)?,
            offset: le::u64(b, at + 8)?,
            dev_uuid,
        });
    }
    Some((
        Chunk {
            logical,
            length: le::u64(b, 0)?,
            stripe_len: le::u64(b, 16)?,
            flags: le::u64(b, 24)?,
            sub_stripes: le::u16(b, 46)?,
            stripes,
        },
        len,
    ))
}

/// Formats a UUID the usual way.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Logical-to-physical map of one filesystem, for reads from one device.
#[derive(Debug, Default)]
pub struct ChunkMap {
    chunks: BTreeMap<u64, Chunk>,
    /// Device id of the device we read.
    pub devid: u64,
}

impl ChunkMap {
    /// An empty map for reads from device `devid`.
    pub fn new(devid: u64) -> Self {
        ChunkMap {
            chunks: BTreeMap::new(),
            devid,
        }
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Every chunk, by logical address.
    pub fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.chunks.values()
    }

    /// Adds a chunk; an identical duplicate (the bootstrap array repeats chunk-tree items) is
    /// fine, an overlapping or zero-length one is corrupt.
    pub fn insert(&mut self, c: Chunk, object: &str, at: u64) -> Result<()> {
        let bad = |d: String| Error::corrupt(object, at, d);
        let end = c
            .logical
            .checked_add(c.length)
            .filter(|_| c.length > 0)
            .ok_or_else(|| {
                bad(format!(
                    "chunk at logical {:#x} has an invalid length {:#x}",
                    c.logical, c.length
                ))
            })?;
        if let Some(old) = self.chunks.get(&c.logical) {
            if *old == c {
                return Ok(());
            }
        }
        if let Some((_, prev)) = self.chunks.range(..end).next_back() {
            if prev.logical.saturating_add(prev.length) > c.logical {
                return Err(bad(format!(
                    "chunk at logical {:#x} (+{:#x}) overlaps the chunk at {:#x} (+{:#x})",
                    c.logical, c.length, prev.logical, prev.length
                )));
            }
        }
        if self.chunks.len() >= MAX_CHUNKS {
            return Err(Error::limit(
                object,
                format!("more than {MAX_CHUNKS} chunks"),
            ));
        }
        let striped = c.flags & (profile::RAID0 | profile::RAID10) != 0;
        if striped && (c.stripe_len == 0 || !c.stripe_len.is_power_of_two()) {
            return Err(bad(format!(
                "striped chunk at logical {:#x} has stripe length {:#x}",
                c.logical, c.stripe_len
            )));
        }
        if c.flags & profile::RAID10 != 0
            && (c.sub_stripes == 0 || c.stripes.len() % usize::from(c.sub_stripes) != 0)
        {
            return Err(bad(format!(
                "RAID10 chunk at logical {:#x} has {} stripes and {} sub-stripes",
                c.logical,
                c.stripes.len(),
                c.sub_stripes
            )));
        }
        self.chunks.insert(c.logical, c);
        Ok(())
    }

    /// Loads the superblock's bootstrap chunk array.
    pub fn load_sys_array(&mut self, array: &[u8], object: &str, sb_offset: u64) -> Result<()> {
        let mut at = 0usize;
        while at < array.len() {
            let pos = sb_offset + 0x32b + at as u64;
            let bad = || Error::corrupt(object, pos, "truncated sys_chunk_array entry");
            let key_type = *array.get(at + 8).ok_or_else(bad)?;
            let logical = le::u64(array, at + 9).ok_or_else(bad)?;
            if key_type != CHUNK_ITEM_KEY {
                return Err(Error::corrupt(
                    object,
                    pos,
                    format!("sys_chunk_array entry of key type {key_type}, not a chunk"),
                ));
            }
            let body = array.get(at + DISK_KEY_SIZE..).ok_or_else(bad)?;
            let (c, len) = parse_chunk(body, logical).ok_or_else(bad)?;
            self.insert(c, object, pos)?;
            at += DISK_KEY_SIZE + len;
        }
        Ok(())
    }

    /// The chunk holding `logical`.
    pub fn chunk(&self, logical: u64) -> Option<&Chunk> {
        let (_, c) = self.chunks.range(..=logical).next_back()?;
        (logical - c.logical < c.length).then_some(c)
    }

    /// Maps `logical` to a byte offset on our device, plus how many bytes from there are
    /// contiguous (to the end of the stripe or chunk).
    pub fn map(&self, logical: u64, object: &str) -> Result<(u64, u64)> {
        let c = self.chunk(logical).ok_or_else(|| {
            Error::corrupt(
                object,
                logical,
                format!("logical address {logical:#x} is in no chunk"),
            )
        })?;
        let within = logical - c.logical;
        let chunk_left = c.length - within;
        if c.flags & (profile::RAID5 | profile::RAID6) != 0 {
            return Err(Error::unsupported(
                object,
                format!(
                    "the chunk at logical {:#x} uses RAID5/6, which coldscan does not read",
                    c.logical
                ),
            ));
        }
        let overflow = || {
            Error::corrupt(
                object,
                logical,
                format!("physical address of logical {logical:#x} overflows"),
            )
        };
        // Candidate stripes (copies) and the offset within each.
        let (candidates, dev_off, left): (Vec<&Stripe>, u64, u64) =
            if c.flags & (profile::RAID0 | profile::RAID10) != 0 {
                let sl = c.stripe_len;
                let stripe_nr = within / sl;
                let in_stripe = within % sl;
                let n = c.stripes.len() as u64;
                let (factor, sub) = if c.flags & profile::RAID10 != 0 {
                    let sub = u64::from(c.sub_stripes);
                    (n / sub, sub)
                } else {
                    (n, 1)
                };
                let index = (stripe_nr % factor) * sub;
                let row = stripe_nr / factor;
                let off = row
                    .checked_mul(sl)
                    .and_then(|o| o.checked_add(in_stripe))
                    .ok_or_else(overflow)?;
                let copies: Vec<&Stripe> = (index..index + sub)
                    .filter_map(|i| c.stripes.get(usize::try_from(i).ok()?))
                    .collect();
                (copies, off, (sl - in_stripe).min(chunk_left))
            } else {
                // SINGLE, DUP, RAID1, RAID1C3/4: every stripe is a full copy.
                (c.stripes.iter().collect(), within, chunk_left)
            };
        let mut missing = None;
        for s in &candidates {
            if s.devid == self.devid {
                let phys = s.offset.checked_add(dev_off).ok_or_else(overflow)?;
                return Ok((phys, left));
            }
            missing.get_or_insert(*s);
        }
        let s = missing.ok_or_else(|| {
            Error::corrupt(
                object,
                logical,
                format!("chunk at logical {:#x} has no stripe", c.logical),
            )
        })?;
        Err(Error::NotFound {
            object: object.to_string(),
            detail: format!(
                "logical {logical:#x} lies on device {} (UUID {}), which was not given",
                s.devid,
                uuid_string(&s.dev_uuid)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(logical: u64, length: u64, flags: u64, stripes: &[(u64, u64)]) -> Chunk {
        Chunk {
            logical,
            length,
            stripe_len: 0x1_0000,
            flags,
            sub_stripes: 2,
            stripes: stripes
                .iter()
                .map(|&(devid, offset)| Stripe {
                    devid,
                    offset,
                    dev_uuid: [devid as u8; 16],
                })
                .collect(),
        }
    }

    #[test]
    fn maps_single_dup_and_raid0() {
        let mut m = ChunkMap::new(1);
        m.insert(chunk(0x10_0000, 0x10_0000, 0, &[(1, 0x50_0000)]), "t", 0)
            .unwrap();
        m.insert(
            chunk(
                0x20_0000,
                0x10_0000,
                profile::DUP,
                &[(1, 0x90_0000), (1, 0xa0_0000)],
            ),
            "t",
            0,
        )
        .unwrap();
        m.insert(
            chunk(
                0x40_0000,
                0x40_0000,
                profile::RAID0,
                &[(1, 0x100_0000), (1, 0x200_0000)],
            ),
            "t",
            0,
        )
        .unwrap();
        assert_eq!(m.map(0x10_0010, "t").unwrap(), (0x50_0010, 0xf_fff0));
        assert_eq!(m.map(0x20_0000, "t").unwrap().0, 0x90_0000);
        // Second 64 KiB stripe of the RAID0 chunk is on the second stripe's device area.
        assert_eq!(m.map(0x41_0004, "t").unwrap(), (0x200_0004, 0xfffc));
        assert_eq!(m.map(0x42_0000, "t").unwrap().0, 0x101_0000);
        assert!(m.map(0x30_0000, "t").is_err());
    }

    #[test]
    fn reports_a_missing_device_and_overlaps() {
        let mut m = ChunkMap::new(1);
        m.insert(chunk(0x10_0000, 0x10_0000, 0, &[(2, 0)]), "t", 0)
            .unwrap();
        let e = m.map(0x10_0000, "t").unwrap_err().to_string();
        assert!(e.contains("device 2") && e.contains("02020202-"), "{e}");
        let e = m
            .insert(chunk(0x18_0000, 0x10_0000, 0, &[(1, 0)]), "t", 0x99)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlaps"), "{e}");
    }
}
