//! The NTFS boot sector (BIOS parameter block), as documented in the Linux-NTFS project's
//! "NTFS Documentation" (Richard Russon, Yuval Fledel), chapter "Files -> $Boot", and
//! libntfs-3g's `layout.h` (`NTFS_BOOT_SECTOR`).
//!
//! Fields used: bytes per sector (0x0B), sectors per cluster (0x0D, values above 0x80 encode
//! `2^(256 - n)` on volumes with clusters above 64 KiB), total sectors (0x28), the MFT's first
//! cluster (0x30), clusters per MFT record (0x40) and per index record (0x44), both signed: a
//! negative value `n` means `2^-n` bytes.

use crate::block::{le, BlockSource};
use crate::error::{Error, Result};

/// OEM identifier at byte 3 of every NTFS boot sector.
pub const OEM_ID: &[u8; 8] = b"NTFS    ";
/// Largest cluster size NTFS knows (2 MiB, Windows 10 1709 and later).
const MAX_CLUSTER_SIZE: u64 = 2 * 1024 * 1024;
/// Smallest and largest MFT record sizes accepted (Windows uses 1024 or 4096).
const MIN_RECORD_SIZE: u64 = 512;
const MAX_RECORD_SIZE: u64 = 64 * 1024;

/// The parameters of a volume that the rest of the parser needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootSector {
    /// Bytes per sector (512 to 4096).
    pub bytes_per_sector: u32,
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// Number of clusters on the volume (total sectors / sectors per cluster).
    pub total_clusters: u64,
    /// First cluster of `$MFT`.
    pub mft_lcn: u64,
    /// First cluster of `$MFTMirr` (copy of the first MFT records), if inside the volume.
    pub mft_mirror_lcn: Option<u64>,
    /// Bytes per MFT record.
    pub record_size: u64,
    /// Volume serial number.
    pub serial: u64,
}

/// Whether `sector` (at least the first 512 bytes of a volume) carries the NTFS OEM id.
pub fn has_oem_id(sector: &[u8]) -> bool {
    sector.get(3..11) == Some(&OEM_ID[..])
}

/// Decodes a signed "clusters per record" byte into a byte size.
fn record_bytes(raw: u8, cluster_size: u64) -> Option<u64> {
    let signed = raw as i8;
    if signed > 0 {
        cluster_size.checked_mul(u64::from(signed.unsigned_abs()))
    } else if (-31..0).contains(&signed) {
        Some(1u64 << signed.unsigned_abs())
    } else {
        None
    }
}

impl BootSector {
    /// Parses and sanity-checks the boot sector in `sector` (the first 512 bytes of the
    /// volume); `volume_size` bounds the volume's declared size. `object` names the volume.
    pub fn parse(sector: &[u8], volume_size: u64, object: &str) -> Result<Self> {
        if !has_oem_id(sector) {
            return Err(Error::corrupt(object, 3, "no NTFS OEM id"));
        }
        let bad = |at: u64, what: String| Error::corrupt(object, at, what);
        let bytes_per_sector = le::u16(sector, 0x0B).unwrap_or(0);
        if !bytes_per_sector.is_power_of_two() || !(256..=4096).contains(&bytes_per_sector) {
            return Err(bad(0x0B, format!("bytes per sector {bytes_per_sector}")));
        }
        let spc_raw = sector.get(0x0D).copied().unwrap_or(0);
        let sectors_per_cluster: u64 = match spc_raw {
            0 => return Err(bad(0x0D, "sectors per cluster is 0".into())),
            1..=0x80 if spc_raw.is_power_of_two() => u64::from(spc_raw),
            0xF4..=0xFF => 1u64 << (256 - u32::from(spc_raw)),
            _ => return Err(bad(0x0D, format!("sectors per cluster byte {spc_raw:#x}"))),
        };
        let cluster_size = sectors_per_cluster * u64::from(bytes_per_sector);
        if cluster_size > MAX_CLUSTER_SIZE {
            return Err(bad(0x0D, format!("cluster size {cluster_size}")));
        }
        let total_sectors = le::u64(sector, 0x28).unwrap_or(0);
        let total_clusters = total_sectors / sectors_per_cluster;
        if total_clusters == 0 {
            return Err(bad(0x28, "volume has no clusters".into()));
        }
        let mft_lcn = le::u64(sector, 0x30).unwrap_or(u64::MAX);
        if mft_lcn >= total_clusters {
            return Err(bad(
                0x30,
                format!("$MFT cluster {mft_lcn} is past the volume end"),
            ));
        }
        let raw = sector.get(0x40).copied().unwrap_or(0);
        let record_size = record_bytes(raw, cluster_size)
            .filter(|s| s.is_power_of_two() && (MIN_RECORD_SIZE..=MAX_RECORD_SIZE).contains(s))
            .ok_or_else(|| bad(0x40, format!("clusters per MFT record byte {raw:#x}")))?;
        // The MFT must lie inside the source we were given (a truncated image is still worth
        // opening: reads past the end fail one by one later).
        mft_lcn
            .checked_mul(cluster_size)
            .filter(|&b| b < volume_size)
            .ok_or_else(|| {
                bad(
                    0x30,
                    format!("$MFT at cluster {mft_lcn} is past the end of the source"),
                )
            })?;
        Ok(BootSector {
            bytes_per_sector: u32::from(bytes_per_sector),
            cluster_size,
            total_clusters,
            mft_lcn,
            mft_mirror_lcn: le::u64(sector, 0x38).filter(|&l| l < total_clusters),
            record_size,
            serial: le::u64(sector, 0x48).unwrap_or(0),
        })
    }

    /// Reads and parses the boot sector of `src`.
    pub fn read(src: &dyn BlockSource) -> Result<Self> {
        let mut sector = [0u8; 512];
        src.read_exact_at(0, &mut sector)?;
        Self::parse(&sector, src.size(), src.name())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid boot sector: 512-byte sectors, 4 KiB clusters, 1 KiB records.
    pub(crate) fn sample() -> Vec<u8> {
        let mut s = vec![0u8; 512];
        s[3..11].copy_from_slice(OEM_ID);
        s[0x0B..0x0D].copy_from_slice(&512u16.to_le_bytes());
        s[0x0D] = 8;
        s[0x28..0x30].copy_from_slice(&2048u64.to_le_bytes());
        s[0x30..0x38].copy_from_slice(&4u64.to_le_bytes());
        s[0x40] = 0xF6; // -10 -> 1024
        s[0x44] = 1;
        s[0x1FE] = 0x55;
        s[0x1FF] = 0xAA;
        s
    }

    #[test]
    fn parses_a_sane_bpb() {
        let b = BootSector::parse(&sample(), 1 << 20, "v").unwrap();
        assert_eq!(b.cluster_size, 4096);
        assert_eq!(b.record_size, 1024);
        assert_eq!(b.total_clusters, 256);
        assert_eq!(b.mft_lcn, 4);
    }

    #[test]
    fn rejects_insane_fields() {
        for (at, val) in [
            (0x0Cusize, 0u8),
            (0x0D, 3),
            (0x0D, 0),
            (0x40, 0),
            (0x40, 0x81),
            (0x30, 0xFF),
        ] {
            let mut s = sample();
            s[at] = val;
            if at == 0x30 {
                s[0x37] = 0xFF;
            }
            assert!(
                BootSector::parse(&s, 1 << 20, "v").is_err(),
                "byte {at:#x} = {val:#x}"
            );
        }
        let mut s = sample();
        s[3] = b'X';
        assert!(BootSector::parse(&s, 1 << 20, "v").is_err());
    }
}
