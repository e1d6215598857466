//! Guest disk discovery from sysfs (Linux `Documentation/ABI/stable/sysfs-block`,
//! `sysfs-bus-scsi`, `sysfs-class-nvme`): every whole block device that is not the appliance's
//! own boot disk or its config disk is a guest disk.
//!
//! A disk is named in reports by what identifies it outside this VM: its serial (virtio `serial`,
//! SCSI/ATA VPD page 0x80, NVMe `serial`), else its WWN/WWID, else its bus path, written like
//! udev's `/dev/disk/by-id` names (`virtio-SERIAL`, `scsi-SERIAL`, `ata-MODEL_SERIAL`,
//! `nvme-MODEL_SERIAL`, `wwn-0x...`). The kernel's name (`vdb`) is never used: it is not stable.

use std::fs;
use std::path::{Path, PathBuf};

use coldscan_scanner::block::{BlockSource, FileSource, SharedSource, Window};
use coldscan_scanner::fs as cfs;
use coldscan_scanner::partition;

/// The config disk's filesystem label (ext4).
pub const CONFIG_LABEL: &str = "COLDSCAN-CFG";
/// The config disk's label on FAT, whose labels hold at most 11 characters.
pub const CONFIG_LABEL_FAT: &str = "COLDSCANCFG";
/// The label of the appliance image's own EFI system partition (`coldscan-image`): a disk
/// holding it is the appliance's boot disk even without `coldscan.self`.
pub const APPLIANCE_ESP_LABEL: &str = "COLDSCANESP";
/// Longest sysfs attribute read (serials and WWNs are short; VPD pages at most 255 + 4 bytes).
const MAX_ATTR_BYTES: u64 = 4096;
/// Most block devices considered (a bound on work, far above what a hypervisor attaches).
pub const MAX_DEVICES: usize = 1024;
/// Kernel name prefixes that are never guest disks: loop, RAM disks, compressed swap, device
/// mapper and MD (built from other disks), optical drives, floppies, NBD clients.
const SKIPPED_PREFIXES: &[&str] = &["loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"];

/// How a disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// virtio-blk.
    Virtio,
    /// SCSI (virtio-scsi, PVSCSI, Hyper-V storvsc).
    Scsi,
    /// ATA through libata (AHCI, IDE).
    Ata,
    /// NVMe.
    Nvme,
    /// Anything else (Xen blkfront, MMC...).
    Other,
}

impl Transport {
    /// Lowercase name, the prefix of by-id-style names.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Virtio => "virtio",
            Transport::Scsi => "scsi",
            Transport::Ata => "ata",
            Transport::Nvme => "nvme",
            Transport::Other => "disk",
        }
    }
}

/// One whole block device seen in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name (`vdb`): internal use only, never in reports.
    pub kernel_name: String,
    /// Device node (`/dev/vdb`).
    pub dev_path: PathBuf,
    /// How it is attached.
    pub transport: Transport,
    /// Serial number, trimmed.
    pub serial: Option<String>,
    /// WWN / WWID (`naa.…`, `eui.…`, `0x…`), trimmed.
    pub wwn: Option<String>,
    /// Model string, trimmed.
    pub model: Option<String>,
    /// Bus path of the device (the last component of its sysfs `device` link).
    pub bus_path: Option<String>,
    /// Size in bytes (sysfs `size` is in 512-byte units whatever the sector size).
    pub size: u64,
}

impl BlockDevice {
    /// The stable identity used in reports, by-id style. Never the kernel name.
    pub fn identity(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        match (&self.serial, &self.model) {
            (Some(serial), Some(model))
                if matches!(self.transport, Transport::Ata | Transport::Nvme) =>
            {
                format!(
                    "{}-{}_{}",
                    self.transport.as_str(),
                    clean(model),
                    clean(serial)
                )
            }
            (Some(serial), _) => format!("{}-{}", self.transport.as_str(), clean(serial)),
            (None, _) => match (&self.wwn, &self.bus_path) {
                (Some(wwn), _) => format!("wwn-{}", clean(wwn)),
                (None, Some(path)) => format!("path-{}", clean(path)),
                (None, None) => format!("{}-unidentified-{}", self.transport.as_str(), self.size),
            },
        }
    }
}

/// Reads a small text attribute, trimmed (NUL and space padding removed); `None` if absent or
/// empty.
fn attr(path: &Path) -> Option<String> {
    let bytes = read_small(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let t = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!t.is_empty()).then(|| t.to_string())
}

fn read_small(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = fs::File::open(path).ok()?;
    let mut out = Vec::new();
    f.take(MAX_ATTR_BYTES).read_to_end(&mut out).ok()?;
    Some(out)
}

/// The serial in a SCSI VPD page 0x80 (SPC-4 7.8.16: byte 1 page code, bytes 2-3 page length,
/// serial from byte 4).
pub fn vpd80_serial(page: &[u8]) -> Option<String> {
    if page.get(1) != Some(&0x80) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([*page.get(2)?, *page.get(3)?]));
    let end = 4usize.checked_add(len)?.min(page.len());
    let text = String::from_utf8_lossy(page.get(4..end)?);
    let t = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!t.is_empty()).then(|| t.to_string())
}

/// Enumerates the whole block devices under `sysfs_root` (`/sys` in the appliance; a fake tree
/// in tests), sorted by kernel name, device nodes under `dev_root`.
pub fn enumerate(sysfs_root: &Path, dev_root: &Path) -> std::io::Result<Vec<BlockDevice>> {
    let class = sysfs_root.join("class/block");
    let mut names: Vec<String> = fs::read_dir(&class)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !SKIPPED_PREFIXES.iter().any(|p| n.starts_with(p)))
        .collect();
    names.sort();
    names.truncate(MAX_DEVICES);
    let mut out = Vec::new();
    for name in names {
        let dir = class.join(&name);
        if dir.join("partition").exists() {
            continue;
        }
        out.push(describe(&dir, &name, dev_root));
    }
    Ok(out)
}

fn describe(dir: &Path, name: &str, dev_root: &Path) -> BlockDevice {
    let dev = dir.join("device");
    let size = attr(&dir.join("size"))
        .and_then(|s| s.parse::<u64>().ok())
        .and_then(|s| s.checked_mul(512))
        .unwrap_or(0);
    let vendor = attr(&dev.join("vendor"));
    let transport = if name.starts_with("vd") {
        Transport::Virtio
    } else if name.starts_with("nvme") {
        Transport::Nvme
    } else if name.starts_with("sd") {
        if vendor.as_deref() == Some("ATA") {
            Transport::Ata
        } else {
            Transport::Scsi
        }
    } else {
        Transport::Other
    };
    let serial = match transport {
        Transport::Virtio => attr(&dir.join("serial")),
        Transport::Nvme => attr(&dev.join("serial")).or_else(|| attr(&dir.join("serial"))),
        Transport::Scsi | Transport::Ata => {
            read_small(&dev.join("vpd_pg80")).and_then(|p| vpd80_serial(&p))
        }
        Transport::Other => attr(&dir.join("serial")),
    };
    let wwn = attr(&dir.join("wwid"))
        .or_else(|| attr(&dev.join("wwid")))
        .or_else(|| attr(&dir.join("device/wwn")));
    let bus_path = fs::read_link(&dev)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    BlockDevice {
        kernel_name: name.to_string(),
        dev_path: dev_root.join(name),
        transport,
        serial,
        wwn,
        model: attr(&dev.join("model")),
        bus_path,
        size,
    }
}

/// What a block device is to the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskRole {
    /// The appliance's own boot disk (its GPT disk GUID matches).
    Appliance,
    /// The config disk (filesystem label `COLDSCAN-CFG`, or `COLDSCANCFG` on FAT); the
    /// partition index holding it.
    Config {
        /// 0 for a whole-disk filesystem.
        partition: u32,
    },
    /// A disk to scan.
    Guest,
}

/// Decides the role of an opened device: its GPT disk GUID against `self_guid`, then a volume
/// labelled [`CONFIG_LABEL`] or [`CONFIG_LABEL_FAT`] (FAT or ext, read with our own readers). Anything unreadable is a
/// guest disk: it gets scanned and its report says what was wrong.
pub fn role_of(source: SharedSource, self_guid: Option<&str>) -> DiskRole {
    let Ok(table) = partition::read_table(source.as_ref()) else {
        return DiskRole::Guest;
    };
    if let (Some(want), Some(have)) = (self_guid, table.disk_id.as_deref()) {
        if have.eq_ignore_ascii_case(want) {
            return DiskRole::Appliance;
        }
    }
    for p in &table.partitions {
        let Ok(w) = Window::new(
            source.clone(),
            p.start,
            p.size,
            format!("partition {}", p.index),
        ) else {
            continue;
        };
        let vol: SharedSource = std::sync::Arc::new(w);
        let label = match cfs::probe(&vol) {
            Ok(Some(kind)) => cfs::open(vol, kind).ok().and_then(|f| f.label()),
            _ => None,
        };
        match label.as_deref().map(str::trim) {
            Some(CONFIG_LABEL | CONFIG_LABEL_FAT) => {
                return DiskRole::Config { partition: p.index }
            }
            Some(APPLIANCE_ESP_LABEL) => return DiskRole::Appliance,
            _ => {}
        }
    }
    DiskRole::Guest
}

/// Opens a device file read-only and decides its role (see [`role_of`]).
pub fn role_of_path(path: &Path, self_guid: Option<&str>) -> DiskRole {
    match FileSource::open(path) {
        Ok(f) if f.size() > 0 => role_of(std::sync::Arc::new(f), self_guid),
        _ => DiskRole::Guest,
    }
}

#[cfg(test)]
#[path = "discovery_tests.rs"]
mod tests;

/// `BLKROSET` (linux/fs.h: `_IO(0x12, 93)`, argument `const int *`).
const BLKROSET: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(0x12, 93);

/// Marks a guest block device read-only in the kernel (`BLKROSET`), through a descriptor opened
/// `O_RDONLY`, before the scanner opens it (again `O_RDONLY`): even a bug in our code cannot
/// write to it afterwards. Regular files (tests) are left alone.
pub fn set_read_only(path: &Path) -> std::io::Result<()> {
    set_ro_flag(path, true)
}

/// Clears the kernel's read-only flag of the **config disk** (or its partition), so that its
/// filesystem can be mounted read-write for the report spool. Never called for a guest disk.
pub fn set_config_disk_writable(path: &Path) -> std::io::Result<()> {
    set_ro_flag(path, false)
}

fn set_ro_flag(path: &Path, read_only: bool) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let file = fs::File::open(path)?;
    if !file.metadata()?.file_type().is_block_device() {
        return Ok(());
    }
    let flag: std::ffi::c_int = read_only.into();
    // SAFETY: BLKROSET's argument is a pointer to an int, which `Setter` passes (a pointer to its
    // `c_int` field, alive for the call); `file` is an open descriptor borrowed for the call.
    #[allow(unsafe_code)]
    unsafe {
        rustix::ioctl::ioctl(
            &file,
            rustix::ioctl::Setter::<BLKROSET, std::ffi::c_int>::new(flag),
        )
    }
    .map_err(std::io::Error::from)
}

/// The device node of partition `index` of the whole disk `kernel_name` (`/dev/vdb1`,
/// `/dev/nvme0n1p1`), found through sysfs (`/sys/class/block/NAME/PART/partition`); index 0
/// is the whole disk.
pub fn partition_node(
    sysfs_root: &Path,
    dev_root: &Path,
    kernel_name: &str,
    index: u32,
) -> Option<PathBuf> {
    if index == 0 {
        return Some(dev_root.join(kernel_name));
    }
    let disk_dir = sysfs_root.join("class/block").join(kernel_name);
    fs::read_dir(&disk_dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with(kernel_name))
        .take(MAX_DEVICES)
        .find(|name| {
            attr(&disk_dir.join(name).join("partition")).and_then(|p| p.parse::<u32>().ok())
                == Some(index)
        })
        .map(|name| dev_root.join(name))
}
