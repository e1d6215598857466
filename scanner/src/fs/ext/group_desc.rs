//! Block group descriptors: where each group's inode table is.
//!
//! Follows Documentation/filesystems/ext4, sections 2.2 "Block Groups" (2.2.3 "Meta Block
//! Groups") and 3.2 "Block Group Descriptors", and the kernel's `descriptor_loc()` in
//! `fs/ext4/super.c`. Without `meta_bg` the descriptor table follows the superblock in
//! consecutive blocks; with `meta_bg`, descriptor block `n >= s_first_meta_bg` sits in the first
//! group of meta group `n` (after that group's superblock backup, if it has one). Descriptors
//! are 32 bytes, or `s_desc_size` with `64bit` (then the high halves of the addresses count).

use super::superblock::Superblock;
use crate::block::{le, BlockSource};
use crate::error::{Error, Result};

/// `bg_inode_table_lo`.
const INODE_TABLE_LO: usize = 0x8;
/// `bg_inode_table_hi` (64-byte descriptors only).
const INODE_TABLE_HI: usize = 0x28;

/// Byte offset of the descriptor of `group` within the volume.
pub fn descriptor_offset(sb: &Superblock, group: u32) -> Option<u64> {
    let per_block = sb.block_size / sb.desc_size;
    let nr = group / per_block; // descriptor block index
    let within = u64::from(group % per_block) * u64::from(sb.desc_size);
    let first = u64::from(sb.first_data_block);
    // The block holding the superblock (byte 1024): block 1 with 1 KiB blocks, else block 0,
    // whatever s_first_data_block says (it is 0 with 1 KiB blocks and bigalloc).
    let sb_block = u64::from(sb.block_size == 1024);
    let block = if !sb.has_incompat(super::superblock::incompat::META_BG) || nr < sb.first_meta_bg {
        sb_block.checked_add(1)?.checked_add(u64::from(nr))?
    } else {
        let bg = nr.checked_mul(per_block)?;
        let mut has_super = u64::from(sb.group_has_super(bg));
        // 1 KiB blocks with group 0 starting at block 0: its descriptors are at block 2.
        if sb.block_size == 1024 && nr == 0 && sb.first_data_block == 0 {
            has_super += 1;
        }
        let group_first = u64::from(bg)
            .checked_mul(u64::from(sb.blocks_per_group))?
            .checked_add(first)?;
        group_first.checked_add(has_super)?
    };
    sb.block_offset(block)?.checked_add(within)
}

/// The first block of the inode table of `group`, checked against the filesystem size.
pub fn inode_table_block(src: &dyn BlockSource, sb: &Superblock, group: u32) -> Result<u64> {
    if group >= sb.group_count {
        return Err(Error::corrupt(
            src.name(),
            0,
            format!("block group {group} beyond the {} groups", sb.group_count),
        ));
    }
    let off = descriptor_offset(sb, group).ok_or_else(|| {
        Error::corrupt(
            src.name(),
            0,
            format!("group {group} descriptor address overflows"),
        )
    })?;
    let mut d = [0u8; 64];
    let len = if sb.desc_size >= 64 { 64 } else { 32 };
    let d = &mut d[..len];
    src.read_exact_at(off, d)?;
    let lo = le::u32(d, INODE_TABLE_LO).unwrap_or(0);
    let hi = if len >= 64 {
        le::u32(d, INODE_TABLE_HI).unwrap_or(0)
    } else {
        0
    };
    let table = u64::from(lo) | (u64::from(hi) << 32);
    // The whole table must lie inside the filesystem.
    let table_blocks = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size))
        .div_ceil(u64::from(sb.block_size));
    if table == 0
        || table
            .checked_add(table_blocks)
            .is_none_or(|end| end > sb.blocks_count)
    {
        return Err(Error::corrupt(
            src.name(),
            off,
            format!(
                "inode table of group {group} at block {table} ({table_blocks} blocks) lies outside the {} blocks of the filesystem",
                sb.blocks_count
            ),
        ));
    }
    Ok(table)
}
