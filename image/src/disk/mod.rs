//! The disk step: a GPT disk with one FAT32 EFI system partition holding the UKI as
//! `\EFI\BOOT\BOOTX64.EFI`, the removable-media path UEFI firmware boots without boot entries
//! (UEFI 2.10, section 3.5.1.1). Every identifier comes from [`IdSeed`]; FAT timestamps from
//! `SOURCE_DATE_EPOCH`.

pub mod fat32;
pub mod gpt;

use anyhow::{Context, Result};

use crate::util::{align_up, guid, IdSeed};

/// The EFI system partition type (UEFI 2.10, table 5.14).
pub const ESP_TYPE: [u8; 16] = guid("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
/// Partitions start at 1 MiB, as every modern partitioner aligns them.
const ALIGN: u64 = 1 << 20;
/// Smallest ESP: FAT32 needs at least 65,525 clusters (with 512-byte clusters, ~33 MB).
const MIN_ESP: u64 = 40 << 20;
/// The ESP's volume label.
const LABEL: &[u8; 11] = b"COLDSCANESP";

/// The built disk.
#[derive(Debug)]
pub struct Disk {
    /// The raw disk image.
    pub bytes: Vec<u8>,
    /// Disk GUID (text).
    pub disk_guid: String,
    /// ESP unique GUID (text).
    pub esp_guid: String,
    /// FAT volume id.
    pub volume_id: u32,
    /// ESP size in bytes.
    pub esp_size: u64,
}

/// Builds the raw disk holding `uki` as the default boot loader.
pub fn build(uki: &[u8], seed: &IdSeed, epoch: u64) -> Result<Disk> {
    let uki_len = uki.len() as u64;
    let esp_size = align_up((uki_len + uki_len / 8 + (4 << 20)).max(MIN_ESP), ALIGN)?;
    let esp_start = ALIGN;
    let disk_size = esp_start + esp_size + ALIGN;
    let mut bytes = vec![0u8; usize::try_from(disk_size).context("disk too large")?];

    let volume_id = seed.u32("fat-volume-id");
    {
        let esp = &mut bytes[esp_start as usize..(esp_start + esp_size) as usize];
        write_esp(esp, uki, volume_id, epoch, esp_start / gpt::SECTOR)
            .context("writing the FAT32 ESP")?;
    }

    let disk_guid = seed.guid("gpt-disk");
    let esp_guid = seed.guid("gpt-esp");
    let part = gpt::Partition {
        type_guid: ESP_TYPE,
        guid: esp_guid,
        first_lba: esp_start / gpt::SECTOR,
        last_lba: (esp_start + esp_size) / gpt::SECTOR - 1,
        name: "EFI System Partition".into(),
    };
    gpt::write(&mut bytes, disk_guid, &[part]).context("writing the GPT")?;
    Ok(Disk {
        bytes,
        disk_guid: crate::util::guid_text(&disk_guid),
        esp_guid: crate::util::guid_text(&esp_guid),
        volume_id,
        esp_size,
    })
}

/// Cluster size for an ESP of `size` bytes: the largest that still gives FAT32 enough clusters.
fn cluster_size(size: u64) -> u32 {
    match size {
        s if s >= 300 << 20 => 4096,
        s if s >= 150 << 20 => 2048,
        s if s >= 75 << 20 => 1024,
        _ => 512,
    }
}

fn write_esp(esp: &mut [u8], uki: &[u8], volume_id: u32, epoch: u64, start_lba: u64) -> Result<()> {
    let (y, m, d) = civil_from_days((epoch / 86_400) as i64);
    fat32::write(
        esp,
        &[("EFI/BOOT/BOOTX64.EFI", uki)],
        cluster_size(esp.len() as u64),
        volume_id,
        LABEL,
        u32::try_from(start_lba).context("ESP starts beyond 2 TiB")?,
        fat32::FatTime::new(y, m, d, epoch % 86_400),
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn esp_passes_fsck_and_holds_the_loader() {
        let uki = vec![0x5a; 3 << 20];
        let disk = build(&uki, &IdSeed::new(b"test"), 1_700_000_000).unwrap();
        let again = build(&uki, &IdSeed::new(b"test"), 1_700_000_000).unwrap();
        assert!(disk.bytes == again.bytes, "not deterministic");
        let dir = tempfile::tempdir().unwrap();
        let esp = dir.path().join("esp.img");
        let start = ALIGN as usize;
        std::fs::write(&esp, &disk.bytes[start..start + disk.esp_size as usize]).unwrap();
        let out = std::process::Command::new("fsck.vfat")
            .arg("-n")
            .arg(&esp)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(" 4 files, "), "{text}");
        assert!(!text.contains("uninitialized"), "{text}");
        let out = std::process::Command::new("mdir")
            .args(["-i"])
            .arg(&esp)
            .arg("::/EFI/BOOT")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("BOOTX64  EFI"), "{text}");
        assert!(text.contains("2023-11-14"), "{text}");
    }
}
