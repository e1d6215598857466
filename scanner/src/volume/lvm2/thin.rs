//! Thin provisioning metadata (the device-mapper thin pool's metadata device): the superblock
//! and the two-level mapping btree, dev_id -> (virtual block -> data block + time), as the
//! kernel's `drivers/md/dm-thin-metadata.c` and `drivers/md/persistent-data/dm-btree.c`
//! (node layout `struct btree_node`, `lower_bound` search) write them. Checked against
//! `thin_restore`/`thin_dump` output.
//!
//! Reads go through a caller-supplied positional reader (the pool's metadata LV), so that this
//! module holds no reference to the volume group. Node block numbers are checked against the
//! metadata device's size; descent depth is bounded.

use crate::block::le;
use crate::error::{Error, Result};

/// Metadata block size (dm-thin's `THIN_METADATA_BLOCK_SIZE`).
pub const BLOCK: usize = 4096;
/// Superblock magic.
pub const THIN_MAGIC: u64 = 27_022_010;
/// XOR applied to the superblock checksum.
const SUPERBLOCK_CSUM_XOR: u32 = 160_774;
/// XOR applied to btree node checksums.
const BTREE_CSUM_XOR: u32 = 121_107;
/// The superblock checksum covers bytes 4 to this (dm-thin's `THIN_SUPERBLOCK_SIZE`: the block).
const SUPERBLOCK_SIZE: usize = BLOCK;
/// Deepest btree descent (a 4 KiB node holds over 250 keys: 16 levels is far beyond any pool).
pub const MAX_BTREE_DEPTH: usize = 16;
/// btree node flags.
const INTERNAL_NODE: u32 = 1;
const LEAF_NODE: u32 = 2;
/// Size of a node header.
const NODE_HEADER: usize = 32;

/// Reads `buf.len()` bytes at a byte offset of the metadata device.
pub type MetaRead<'a> = &'a dyn Fn(u64, &mut [u8]) -> Result<()>;

/// The thin pool superblock fields used for reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThinSuperblock {
    /// Root of the two-level mapping btree.
    pub data_mapping_root: u64,
    /// Data block size in 512-byte sectors.
    pub data_block_sectors: u32,
    /// Number of metadata blocks.
    pub nr_blocks: u64,
}

/// persistent-data's `dm_bm_checksum`: CRC-32C from ~0 without the final inversion, XORed.
fn crc(b: &[u8], xor: u32) -> u32 {
    !crc32c::crc32c(b) ^ xor
}

/// Reads and checks the superblock (block 0) of a metadata device of `device_size` bytes.
pub fn read_superblock(read: MetaRead, device_size: u64, object: &str) -> Result<ThinSuperblock> {
    let mut b = vec![0u8; BLOCK];
    read(0, &mut b)?;
    let bad =
        |at: u64, what: String| Error::corrupt(object, at, format!("thin pool superblock: {what}"));
    if le::u64(&b, 32) != Some(THIN_MAGIC) {
        return Err(bad(32, "magic is wrong".into()));
    }
    let stored = le::u32(&b, 0).unwrap_or(0);
    let computed = crc(&b[4..SUPERBLOCK_SIZE], SUPERBLOCK_CSUM_XOR);
    if stored != computed {
        return Err(bad(
            0,
            format!("checksum {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    let data_block_sectors = le::u32(&b, 336).unwrap_or(0);
    if data_block_sectors == 0 {
        return Err(bad(336, "data block size is 0".into()));
    }
    let nr_blocks = le::u64(&b, 344)
        .unwrap_or(0)
        .min(device_size / BLOCK as u64);
    Ok(ThinSuperblock {
        data_mapping_root: le::u64(&b, 320).unwrap_or(0),
        data_block_sectors,
        nr_blocks,
    })
}

/// Looks `key` up in the btree rooted at `root`; `Ok(None)` when absent.
pub fn lookup(
    read: MetaRead,
    sb: &ThinSuperblock,
    root: u64,
    key: u64,
    object: &str,
) -> Result<Option<u64>> {
    let mut block = root;
    let mut b = vec![0u8; BLOCK];
    for _ in 0..MAX_BTREE_DEPTH {
        let at = block
            .checked_mul(BLOCK as u64)
            .filter(|_| block < sb.nr_blocks)
            .ok_or_else(|| {
                Error::corrupt(
                    object,
                    0,
                    format!("thin btree node {block} is past the metadata device"),
                )
            })?;
        read(at, &mut b)?;
        let bad = |off: u64, what: String| {
            Error::corrupt(object, at + off, format!("thin btree node {block}: {what}"))
        };
        let stored = le::u32(&b, 0).unwrap_or(0);
        if stored != crc(&b[4..], BTREE_CSUM_XOR) {
            return Err(bad(0, "checksum mismatch".into()));
        }
        if le::u64(&b, 8) != Some(block) {
            return Err(bad(8, "block number field is wrong".into()));
        }
        let flags = le::u32(&b, 4).unwrap_or(0);
        let nr = le::u32(&b, 16).unwrap_or(0) as usize;
        let max = le::u32(&b, 20).unwrap_or(0) as usize;
        let value_size = le::u32(&b, 24).unwrap_or(0) as usize;
        if nr > max || value_size != 8 || NODE_HEADER + max * 16 > BLOCK {
            return Err(bad(
                16,
                format!("{nr} of {max} entries of {value_size}-byte values do not fit"),
            ));
        }
        let key_at = |i: usize| le::u64(&b, NODE_HEADER + 8 * i).unwrap_or(u64::MAX);
        let value_at = |i: usize| le::u64(&b, NODE_HEADER + 8 * max + 8 * i).unwrap_or(0);
        // lower_bound: the last entry whose key is <= `key` (keys are sorted).
        let pos = (0..nr).rev().find(|&i| key_at(i) <= key);
        match flags {
            LEAF_NODE => return Ok(pos.filter(|&i| key_at(i) == key).map(value_at)),
            INTERNAL_NODE => match pos {
                Some(i) => block = value_at(i),
                None => return Ok(None),
            },
            f => {
                return Err(bad(
                    4,
                    format!("flags {f:#x} are neither leaf nor internal"),
                ))
            }
        }
    }
    Err(Error::limit(
        object,
        format!("thin btree deeper than {MAX_BTREE_DEPTH} levels"),
    ))
}

/// The data block holding virtual block `vblock` of thin device `dev_id`, if mapped.
pub fn map_block(
    read: MetaRead,
    sb: &ThinSuperblock,
    dev_id: u64,
    vblock: u64,
    object: &str,
) -> Result<Option<u64>> {
    let Some(dev_root) = lookup(read, sb, sb.data_mapping_root, dev_id, object)? else {
        return Err(Error::corrupt(
            object,
            0,
            format!("thin device {dev_id} is not in the pool's mapping tree"),
        ));
    };
    // Leaf values of the device tree: data block << 24 | time.
    Ok(lookup(read, sb, dev_root, vblock, object)?.map(|v| v >> 24))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Pool metadata written by `thin_restore` (thin-provisioning-tools, installed by
    /// `scripts/bootstrap`) from `xml`, as bytes.
    pub(crate) fn restored(xml: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let (x, m) = (dir.path().join("m.xml"), dir.path().join("m.bin"));
        std::fs::write(&x, xml).unwrap();
        std::fs::File::create(&m).unwrap().set_len(4 << 20).unwrap();
        let st = std::process::Command::new("thin_restore")
            .arg("-i")
            .arg(&x)
            .arg("-o")
            .arg(&m)
            .status()
            .expect("thin_restore (package thin-provisioning-tools) runs");
        assert!(st.success());
        std::fs::read(&m).unwrap()
    }

    pub(crate) const XML: &str = r#"<superblock uuid="" time="1" transaction="2" flags="0" version="2" data_block_size="128" nr_data_blocks="100">
  <device dev_id="1" mapped_blocks="3" transaction="0" creation_time="0" snap_time="1">
    <range_mapping origin_begin="0" data_begin="10" length="2" time="0"/>
    <single_mapping origin_block="7" data_block="3" time="1"/>
  </device>
  <device dev_id="2" mapped_blocks="1" transaction="1" creation_time="1" snap_time="1">
    <single_mapping origin_block="0" data_block="50" time="1"/>
  </device>
</superblock>"#;

    #[test]
    fn maps_blocks_as_thin_restore_wrote_them() {
        let meta = restored(XML);
        let read = |off: u64, buf: &mut [u8]| -> Result<()> {
            let o = off as usize;
            buf.copy_from_slice(
                meta.get(o..o + buf.len())
                    .ok_or_else(|| Error::corrupt("m", off, "eof"))?,
            );
            Ok(())
        };
        let sb = read_superblock(&read, meta.len() as u64, "m").unwrap();
        assert_eq!(sb.data_block_sectors, 128);
        let m = |dev, v| map_block(&read, &sb, dev, v, "m").unwrap();
        assert_eq!(
            [m(1, 0), m(1, 1), m(1, 2), m(1, 7), m(1, 8)],
            [Some(10), Some(11), None, Some(3), None]
        );
        assert_eq!([m(2, 0), m(2, 1)], [Some(50), None]);
        assert!(map_block(&read, &sb, 3, 0, "m").is_err());
    }

    #[test]
    fn corrupt_nodes_are_errors() {
        let mut meta = restored(XML);
        let root = le::u64(&meta, 320).unwrap() as usize;
        meta[root * BLOCK + 100] ^= 1;
        let read = |off: u64, buf: &mut [u8]| -> Result<()> {
            let o = off as usize;
            buf.copy_from_slice(&meta[o..o + buf.len()]);
            Ok(())
        };
        let sb = read_superblock(&read, meta.len() as u64, "m").unwrap();
        let e = map_block(&read, &sb, 1, 0, "m").unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        let mut bad = meta.clone();
        bad[40] ^= 1;
        let read2 = |off: u64, buf: &mut [u8]| -> Result<()> {
            let o = off as usize;
            buf.copy_from_slice(&bad[o..o + buf.len()]);
            Ok(())
        };
        assert!(read_superblock(&read2, 4 << 20, "m").is_err());
    }
}
