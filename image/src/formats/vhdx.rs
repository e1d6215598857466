//! A deterministic VHDX writer, dynamic disk ([MS-VHDX] v20240423: 2.1 layout, 2.2 headers and
//! region table, 2.5 BAT, 2.6 metadata region). Every GUID comes from the build's inputs.
//!
//! Layout: file type identifier (0), headers (64 KiB, 128 KiB), region tables (192 KiB,
//! 256 KiB), an empty log (1 MiB), metadata (2 MiB), BAT (3 MiB), then the payload blocks that
//! hold data, in disk order. All-zero blocks are not stored.

use std::io::Write;

use anyhow::{ensure, Result};

use crate::util::{guid, IdSeed};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Payload block size (2 MiB: small enough that a mostly empty disk stays small).
const BLOCK_SIZE: u64 = 2 * MIB;
const LOGICAL_SECTOR: u64 = 512;
const PHYSICAL_SECTOR: u32 = 4096;
/// Payload blocks per sector-bitmap block (2.5: 2^23 sectors per bitmap block).
const CHUNK_RATIO: u64 = (1 << 23) * LOGICAL_SECTOR / BLOCK_SIZE;
const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u64 = MIB;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u64 = MIB;
const BAT_OFFSET: u64 = 3 * MIB;
/// BAT entry states (2.5.1.1).
const PAYLOAD_BLOCK_NOT_PRESENT: u64 = 0;
const PAYLOAD_BLOCK_FULLY_PRESENT: u64 = 6;

const BAT_REGION: [u8; 16] = guid("2DC27766-F623-4200-9D64-115E9BFD4A08");
const METADATA_REGION: [u8; 16] = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E");
const FILE_PARAMETERS: [u8; 16] = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
const VIRTUAL_DISK_SIZE: [u8; 16] = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
const PAGE_83_DATA: [u8; 16] = guid("BECA12AB-B2E6-4523-93EF-C309E000C746");
const LOGICAL_SECTOR_SIZE: [u8; 16] = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
const PHYSICAL_SECTOR_SIZE: [u8; 16] = guid("CDA348C7-445D-4471-9CC9-E9885251C556");

/// The BAT entry of payload block `b`: after every `CHUNK_RATIO` payload entries comes one
/// sector-bitmap entry (2.5.1).
fn bat_index(b: u64) -> u64 {
    b + b / CHUNK_RATIO
}

/// Writes `disk` as a dynamic VHDX; returns the file size.
pub fn write(disk: &[u8], seed: &IdSeed, mut out: impl Write) -> Result<u64> {
    let size = disk.len() as u64;
    ensure!(
        size > 0 && size % LOGICAL_SECTOR == 0,
        "disk size is not a multiple of 512"
    );
    let blocks = size.div_ceil(BLOCK_SIZE);
    let bat_entries = blocks + (blocks - 1) / CHUNK_RATIO;
    let bat_length = (bat_entries * 8).div_ceil(MIB) * MIB;
    let mut next_block = BAT_OFFSET + bat_length;

    let mut bat = vec![0u8; bat_length as usize];
    let mut present = Vec::new();
    for (b, block) in disk.chunks(BLOCK_SIZE as usize).enumerate() {
        let b = b as u64;
        let index = bat_index(b) as usize;
        let entry = if block.iter().all(|&x| x == 0) {
            PAYLOAD_BLOCK_NOT_PRESENT
        } else {
            present.push(block);
            let e = PAYLOAD_BLOCK_FULLY_PRESENT | ((next_block / MIB) << 20);
            next_block += BLOCK_SIZE;
            e
        };
        bat[index * 8..index * 8 + 8].copy_from_slice(&entry.to_le_bytes());
    }

    // 2.1 File type identifier.
    let mut head = vec![0u8; METADATA_OFFSET as usize + METADATA_LENGTH as usize];
    head[0..8].copy_from_slice(b"vhdxfile");
    for (i, unit) in "coldscan-image".encode_utf16().enumerate() {
        head[8 + 2 * i..10 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    // 2.2.2 Headers: two copies, the second current (higher sequence number).
    let file_write = seed.guid("vhdx-file-write");
    let data_write = seed.guid("vhdx-data-write");
    for (offset, sequence) in [(64 * KIB, 1u64), (128 * KIB, 2u64)] {
        let h = &mut head[offset as usize..(offset + 4 * KIB) as usize];
        h[0..4].copy_from_slice(b"head");
        h[8..16].copy_from_slice(&sequence.to_le_bytes());
        h[16..32].copy_from_slice(&file_write);
        h[32..48].copy_from_slice(&data_write);
        // LogGuid (48..64) zero: the log is empty.
        h[64..66].copy_from_slice(&0u16.to_le_bytes());
        h[66..68].copy_from_slice(&1u16.to_le_bytes());
        h[68..72].copy_from_slice(&(LOG_LENGTH as u32).to_le_bytes());
        h[72..80].copy_from_slice(&LOG_OFFSET.to_le_bytes());
        let crc = crc32c::crc32c(h);
        h[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    // 2.2.3 Region table, two identical copies.
    for offset in [192 * KIB, 256 * KIB] {
        let r = &mut head[offset as usize..(offset + 64 * KIB) as usize];
        r[0..4].copy_from_slice(b"regi");
        r[8..12].copy_from_slice(&2u32.to_le_bytes());
        for (i, (id, off, len)) in [
            (BAT_REGION, BAT_OFFSET, bat_length),
            (METADATA_REGION, METADATA_OFFSET, METADATA_LENGTH),
        ]
        .into_iter()
        .enumerate()
        {
            let e = &mut r[16 + 32 * i..48 + 32 * i];
            e[0..16].copy_from_slice(&id);
            e[16..24].copy_from_slice(&off.to_le_bytes());
            e[24..28].copy_from_slice(&(len as u32).to_le_bytes());
            e[28..32].copy_from_slice(&1u32.to_le_bytes()); // Required
        }
        let crc = crc32c::crc32c(r);
        r[4..8].copy_from_slice(&crc.to_le_bytes());
    }
    // 2.6 Metadata region: table, then the items from 64 KiB on.
    let page83 = seed.guid("vhdx-page83");
    let items: [([u8; 16], Vec<u8>, u32); 5] = [
        (
            FILE_PARAMETERS,
            [(BLOCK_SIZE as u32).to_le_bytes(), 0u32.to_le_bytes()].concat(),
            0b100,
        ),
        (VIRTUAL_DISK_SIZE, size.to_le_bytes().to_vec(), 0b110),
        (PAGE_83_DATA, page83.to_vec(), 0b110),
        (
            LOGICAL_SECTOR_SIZE,
            (LOGICAL_SECTOR as u32).to_le_bytes().to_vec(),
            0b110,
        ),
        (
            PHYSICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR.to_le_bytes().to_vec(),
            0b110,
        ),
    ];
    let m = &mut head[METADATA_OFFSET as usize..];
    m[0..8].copy_from_slice(b"metadata");
    m[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
    let mut data_off = 64 * KIB as usize;
    for (i, (id, data, flags)) in items.iter().enumerate() {
        let e = &mut m[32 + 32 * i..64 + 32 * i];
        e[0..16].copy_from_slice(id);
        e[16..20].copy_from_slice(&(data_off as u32).to_le_bytes());
        e[20..24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        e[24..28].copy_from_slice(&flags.to_le_bytes());
        m[data_off..data_off + data.len()].copy_from_slice(data);
        data_off += data.len().next_multiple_of(8);
    }

    out.write_all(&head)?;
    out.write_all(&bat)?;
    for block in &present {
        out.write_all(block)?;
        if (block.len() as u64) < BLOCK_SIZE {
            out.write_all(&vec![0u8; (BLOCK_SIZE - block.len() as u64) as usize])?;
        }
    }
    out.flush()?;
    Ok(next_block)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk whose size is not a multiple of the block size, with data in the first, a middle
    /// and the partial last block: qemu-img reads back exactly the raw bytes.
    #[test]
    fn qemu_reads_back_a_disk_with_a_partial_last_block() {
        let mut disk = vec![0u8; (5 * MIB + 64 * KIB) as usize];
        disk[..4096].fill(0x11);
        disk[(2 * MIB + 512) as usize..(2 * MIB + 1024) as usize].fill(0x22);
        let n = disk.len();
        disk[n - 512..].fill(0x33);
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        let vhdx = dir.path().join("d.vhdx");
        std::fs::write(&raw, &disk).unwrap();
        let mut bytes = Vec::new();
        let size = write(&disk, &IdSeed::new(b"t"), &mut bytes).unwrap();
        assert_eq!(size, bytes.len() as u64);
        std::fs::write(&vhdx, &bytes).unwrap();
        let check = std::process::Command::new("qemu-img")
            .args(["check", "-f", "vhdx"])
            .arg(&vhdx)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let cmp = std::process::Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vhdx"])
            .arg(&raw)
            .arg(&vhdx)
            .output()
            .unwrap();
        assert!(
            cmp.status.success(),
            "{}",
            String::from_utf8_lossy(&cmp.stdout)
        );
        // Blocks 0, 1 and 2 hold data; nothing else is stored.
        assert_eq!(bytes.len() as u64, BAT_OFFSET + MIB + 3 * BLOCK_SIZE);
    }

    #[test]
    fn bat_interleaves_sector_bitmap_entries_every_chunk() {
        // 2 MiB blocks: 2048 payload blocks per chunk; entry 2048 is the first sector bitmap's.
        assert_eq!(CHUNK_RATIO, 2048);
        assert_eq!(bat_index(0), 0);
        assert_eq!(bat_index(2047), 2047);
        assert_eq!(bat_index(2048), 2049);
        assert_eq!(bat_index(4096), 4098);
    }
}
