//! A GUID partition table writer (UEFI 2.10, section 5.3: protective MBR, primary header at LBA 1
//! and its entry array at LBA 2, backup entry array and header at the end of the disk).

use anyhow::{ensure, Result};

/// Logical block size of the image.
pub const SECTOR: u64 = 512;
/// Partition entries in each array (the minimum the specification asks for: 16 KiB).
const ENTRIES: u32 = 128;
/// Bytes per partition entry.
const ENTRY_SIZE: u32 = 128;
/// Sectors of one entry array.
const ARRAY_SECTORS: u64 = (ENTRIES as u64 * ENTRY_SIZE as u64) / SECTOR;
/// GPT header size.
const HEADER_SIZE: u32 = 92;

/// One partition to write.
#[derive(Debug, Clone)]
pub struct Partition {
    /// Partition type GUID (on-disk layout).
    pub type_guid: [u8; 16],
    /// Unique partition GUID (on-disk layout).
    pub guid: [u8; 16],
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA, inclusive.
    pub last_lba: u64,
    /// Name (at most 36 UTF-16 code units).
    pub name: String,
}

/// The first LBA usable by partitions.
pub const FIRST_USABLE_LBA: u64 = 2 + ARRAY_SECTORS;

/// Sectors the backup structures need at the end of the disk.
pub const BACKUP_SECTORS: u64 = 1 + ARRAY_SECTORS;

/// Writes the protective MBR, both GPT headers and entry arrays into `disk` (its length is the
/// disk size; partition contents are left alone).
pub fn write(disk: &mut [u8], disk_guid: [u8; 16], partitions: &[Partition]) -> Result<()> {
    let total = disk.len() as u64 / SECTOR;
    ensure!(
        disk.len() as u64 % SECTOR == 0,
        "disk size is not a multiple of {SECTOR}"
    );
    ensure!(
        total > FIRST_USABLE_LBA + BACKUP_SECTORS,
        "disk too small for a GPT"
    );
    ensure!(partitions.len() <= ENTRIES as usize, "too many partitions");
    let last_lba = total - 1;
    let last_usable = last_lba - BACKUP_SECTORS;

    let mut array = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    for (i, p) in partitions.iter().enumerate() {
        ensure!(
            p.first_lba >= FIRST_USABLE_LBA
                && p.first_lba <= p.last_lba
                && p.last_lba <= last_usable,
            "partition {} ({}..={}) outside the usable area",
            i + 1,
            p.first_lba,
            p.last_lba
        );
        let e = &mut array[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&p.type_guid);
        e[16..32].copy_from_slice(&p.guid);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        let name: Vec<u16> = p.name.encode_utf16().collect();
        ensure!(name.len() <= 36, "partition name {:?} too long", p.name);
        for (j, unit) in name.iter().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
        }
    }
    let array_crc = crc32fast::hash(&array);

    // Protective MBR: one partition of type 0xEE covering the disk (or 2^32-1 sectors).
    let mbr = &mut disk[..SECTOR as usize];
    mbr.fill(0);
    let p = &mut mbr[446..462];
    p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    p[4] = 0xee;
    p[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(total - 1).unwrap_or(u32::MAX);
    p[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;

    let header = |my: u64, alternate: u64, entries: u64| {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&FIRST_USABLE_LBA.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRIES.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let at = |lba: u64| (lba * SECTOR) as usize;
    let backup_array = last_lba - ARRAY_SECTORS;
    disk[at(1)..at(2)].copy_from_slice(&header(1, last_lba, 2));
    disk[at(2)..at(2) + array.len()].copy_from_slice(&array);
    disk[at(backup_array)..at(backup_array) + array.len()].copy_from_slice(&array);
    disk[at(last_lba)..at(last_lba) + SECTOR as usize].copy_from_slice(&header(
        last_lba,
        1,
        backup_array,
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::guid;

    #[test]
    fn sgdisk_verifies_what_we_write() {
        let mut disk = vec![0u8; 8 << 20];
        let part = Partition {
            type_guid: guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            guid: guid("11111111-2222-4333-8444-555555555555"),
            first_lba: 2048,
            last_lba: 2048 + 4096 - 1,
            name: "EFI System Partition".into(),
        };
        write(
            &mut disk,
            guid("AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE"),
            &[part],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.raw");
        std::fs::write(&path, &disk).unwrap();
        let out = std::process::Command::new("sgdisk")
            .arg("-v")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("No problems found"), "{text}");
        let out = std::process::Command::new("sgdisk")
            .arg("-p")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE"),
            "{text}"
        );
        assert!(text.contains("EF00"), "{text}");
    }

    #[test]
    fn partitions_outside_the_disk_are_refused() {
        let mut disk = vec![0u8; 1 << 20];
        let part = Partition {
            type_guid: [1; 16],
            guid: [2; 16],
            first_lba: 2048,
            last_lba: 4096,
            name: "x".into(),
        };
        assert!(write(&mut disk, [3; 16], &[part]).is_err());
    }
}
