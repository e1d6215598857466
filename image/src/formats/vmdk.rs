//! A deterministic VMDK writer, streamOptimized subformat (VMware "Virtual Disk Format 1.1",
//! sections "Hosted Sparse Extent Header", "Stream-Optimized Compressed Sparse Extents"):
//! header, embedded descriptor, deflate-compressed grains with grain markers, then the grain
//! tables, the grain directory, a footer (a copy of the header that locates the directory) and an
//! end-of-stream marker. All-zero grains are left out. The CID comes from the build's inputs, so
//! the same disk always gives the same bytes.

use std::io::Write;

use anyhow::{ensure, Context, Result};
use flate2::write::ZlibEncoder;
use flate2::Compression;

use crate::util::IdSeed;

const SECTOR: usize = 512;
/// Sectors per grain (64 KiB grains, as VMware writes them).
const GRAIN_SECTORS: u64 = 128;
const GRAIN: usize = GRAIN_SECTORS as usize * SECTOR;
/// Grain table entries per grain table.
const GTES_PER_GT: u64 = 512;
/// `KDMV`.
const MAGIC: u32 = 0x564d_444b;
/// Valid newline detection, compressed grains, markers.
const FLAGS: u32 = 0x0000_0001 | 0x0001_0000 | 0x0002_0000;
/// `gdOffset` of the leading header: the directory is at the end (find it through the footer).
const GD_AT_END: u64 = u64::MAX;
const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// Writes `disk` (its length a multiple of 64 KiB) as a streamOptimized VMDK whose descriptor
/// names the extent `file_name`.
pub fn write(disk: &[u8], file_name: &str, seed: &IdSeed, out: impl Write) -> Result<u64> {
    ensure!(
        disk.len() % GRAIN == 0,
        "disk size is not a multiple of the grain size"
    );
    let capacity = (disk.len() / SECTOR) as u64;
    let grains = capacity / GRAIN_SECTORS;
    let gts = grains.div_ceil(GTES_PER_GT);
    let descriptor = descriptor(capacity, file_name, seed);
    let descriptor_sectors = (descriptor.len().div_ceil(SECTOR)) as u64;
    let overhead = (1 + descriptor_sectors).div_ceil(GRAIN_SECTORS) * GRAIN_SECTORS;

    let mut w = SectorWriter {
        out,
        sector: 0,
        pending: 0,
    };
    let header = |gd_offset: u64| {
        let mut h = vec![0u8; SECTOR];
        h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        h[8..12].copy_from_slice(&FLAGS.to_le_bytes());
        h[12..20].copy_from_slice(&capacity.to_le_bytes());
        h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&descriptor_sectors.to_le_bytes());
        h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
        h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
        h[64..72].copy_from_slice(&overhead.to_le_bytes());
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&1u16.to_le_bytes()); // deflate
        h
    };
    w.put(&header(GD_AT_END))?;
    w.put(descriptor.as_bytes())?;
    w.pad_to(overhead)?;

    // Grains, in order; the table entries point at each grain's marker.
    let mut table = vec![0u32; (gts * GTES_PER_GT) as usize];
    for (i, grain) in disk.chunks(GRAIN).enumerate() {
        if grain.iter().all(|&b| b == 0) {
            continue;
        }
        table[i] = u32::try_from(w.sector).context("VMDK larger than 2 TiB of sectors")?;
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(grain)?;
        let data = z.finish()?;
        let lba = i as u64 * GRAIN_SECTORS;
        w.put_unpadded(&lba.to_le_bytes())?;
        w.put_unpadded(&(data.len() as u32).to_le_bytes())?;
        w.put(&data)?;
    }

    // Every grain table (empty ones too, as VMware writes them), then the directory.
    let gt_sectors = GTES_PER_GT * 4 / SECTOR as u64;
    let mut directory = Vec::with_capacity(gts as usize);
    for gt in table.chunks(GTES_PER_GT as usize) {
        w.put(&marker(gt_sectors, MARKER_GT))?;
        directory.push(u32::try_from(w.sector).context("VMDK too large")?);
        let bytes: Vec<u8> = gt.iter().flat_map(|e| e.to_le_bytes()).collect();
        w.put(&bytes)?;
    }
    let gd_bytes: Vec<u8> = directory.iter().flat_map(|e| e.to_le_bytes()).collect();
    w.put(&marker(gd_bytes.len().div_ceil(SECTOR) as u64, MARKER_GD))?;
    let gd_offset = w.sector;
    w.put(&gd_bytes)?;
    w.put(&marker(1, MARKER_FOOTER))?;
    w.put(&header(gd_offset))?;
    w.put(&marker(0, MARKER_EOS))?;
    w.out.flush()?;
    Ok(w.sector * SECTOR as u64)
}

/// A metadata marker sector: `numSectors`, `size` 0, `type`.
fn marker(sectors: u64, kind: u32) -> Vec<u8> {
    let mut m = vec![0u8; SECTOR];
    m[0..8].copy_from_slice(&sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

/// The embedded descriptor (section "The Descriptor File").
fn descriptor(capacity: u64, file_name: &str, seed: &IdSeed) -> String {
    let cid = seed.u32("vmdk-cid");
    let long_cid = hex::encode(seed.bytes::<16>("vmdk-long-cid"));
    let cylinders = (capacity / (255 * 63)).clamp(1, 65_535);
    format!(
        "# Disk DescriptorFile\nversion=1\nCID={cid:08x}\nparentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\n# Extent description\nRW {capacity} SPARSE \"{file_name}\"\n\n\
         # The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\nddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\nddb.longContentID = \"{long_cid}\"\n\
         ddb.toolsVersion = \"2147483647\"\nddb.virtualHWVersion = \"4\"\n"
    )
}

/// Writes whole sectors, counting them.
struct SectorWriter<W: Write> {
    out: W,
    /// Sectors written so far (after padding).
    sector: u64,
    /// Bytes written into the current, unfinished sector.
    pending: usize,
}

impl<W: Write> SectorWriter<W> {
    fn put_unpadded(&mut self, data: &[u8]) -> Result<()> {
        self.out.write_all(data)?;
        let total = self.pending + data.len();
        self.sector += (total / SECTOR) as u64;
        self.pending = total % SECTOR;
        Ok(())
    }

    /// Writes `data` and zero-pads to the next sector boundary.
    fn put(&mut self, data: &[u8]) -> Result<()> {
        self.put_unpadded(data)?;
        if self.pending != 0 {
            let pad = SECTOR - self.pending;
            self.put_unpadded(&vec![0u8; pad])?;
        }
        Ok(())
    }

    fn pad_to(&mut self, sector: u64) -> Result<()> {
        while self.sector < sector {
            self.put(&[0u8; SECTOR])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several grain tables, one of them empty, and data in the last grain.
    #[test]
    fn qemu_reads_back_a_disk_spanning_several_grain_tables() {
        let gt_span = GRAIN * GTES_PER_GT as usize; // 32 MiB
        let mut disk = vec![0u8; 2 * gt_span + 3 * GRAIN];
        disk[100..200].fill(0xab);
        let n = disk.len();
        disk[n - 10..].fill(0xcd);
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        let vmdk = dir.path().join("d.vmdk");
        std::fs::write(&raw, &disk).unwrap();
        let mut bytes = Vec::new();
        write(&disk, "d.vmdk", &IdSeed::new(b"t"), &mut bytes).unwrap();
        std::fs::write(&vmdk, &bytes).unwrap();
        for args in [&["check", "-f", "vmdk"][..], &["info", "-f", "vmdk"][..]] {
            let out = std::process::Command::new("qemu-img")
                .args(args)
                .arg(&vmdk)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}");
            if args[0] == "info" {
                assert!(text.contains("streamOptimized"), "{text}");
            }
        }
        let cmp = std::process::Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .arg(&raw)
            .arg(&vmdk)
            .output()
            .unwrap();
        assert!(
            cmp.status.success(),
            "{}",
            String::from_utf8_lossy(&cmp.stdout)
        );
        let mut again = Vec::new();
        write(&disk, "d.vmdk", &IdSeed::new(b"t"), &mut again).unwrap();
        assert!(bytes == again, "not deterministic");
    }
}
