//! Where reports wait for the manager: on the config disk when there is one, so that a report
//! made while the manager is down survives a power off and is delivered at the next boot; else
//! in memory (`/run` is a tmpfs), and the console says which.
//!
//! The config disk is the **only** filesystem the appliance ever mounts, and only for this: its
//! kernel read-only flag (set on every disk at discovery) is cleared, and it is mounted
//! `nosuid,nodev,noexec,noatime` with the kernel's own driver (`vfat` or `ext4`, the modules the
//! image loads) at [`CONFIG_MOUNT`], outside the directories scan workers may read. Guest disks
//! are never mounted. The spool lives in [`SPOOL_SUBDIR`] on it. At power off it is unmounted
//! ([`unmount_config_disk`]) so that the filesystem is left clean.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use coldscan_scanner::fs::FsKind;
use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

use super::discovery;

/// Where the config disk is mounted (not under `/run/coldscan`, which scan workers may read).
pub const CONFIG_MOUNT: &str = "/run/config-disk";
/// The spool directory on the config disk.
pub const SPOOL_SUBDIR: &str = "coldscan-spool";
/// The spool directory in memory, when there is no config disk (lost at power off).
pub const MEMORY_SPOOL: &str = "/run/coldscan/spool";

/// The mounted config disk, unmounted at power off.
static MOUNTED: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The spool's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolPlace {
    /// The spool directory.
    pub dir: PathBuf,
    /// Whether it is on the config disk (kept across power off).
    pub persistent: bool,
    /// Why it is in memory although a config disk is attached, if so.
    pub note: Option<String>,
}

impl SpoolPlace {
    /// The in-memory spool.
    pub fn memory(note: Option<String>) -> SpoolPlace {
        SpoolPlace {
            dir: PathBuf::from(MEMORY_SPOOL),
            persistent: false,
            note,
        }
    }

    /// How the console names it: `on the config disk (DIR)` or `in memory (DIR; lost at
    /// power off)`.
    pub fn describe(&self) -> String {
        if self.persistent {
            format!("on the config disk ({})", self.dir.display())
        } else {
            match &self.note {
                Some(n) => format!(
                    "in memory ({}; lost at power off; config disk not usable: {n})",
                    self.dir.display()
                ),
                None => format!("in memory ({}; lost at power off)", self.dir.display()),
            }
        }
    }
}

/// The kernel filesystem type and mount options for a config disk's filesystem.
pub fn mount_type(kind: FsKind) -> Option<(&'static str, &'static std::ffi::CStr)> {
    match kind {
        // ext2/3 are mounted by the ext4 driver.
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => Some(("ext4", c"")),
        // utf8 names without the iso8859-1/ascii tables (nls_utf8 is in the image).
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => Some(("vfat", c"iocharset=utf8")),
        _ => None,
    }
}

/// The flags of the config disk's mount.
pub const MOUNT_FLAGS: MountFlags = MountFlags::NOSUID
    .union(MountFlags::NODEV)
    .union(MountFlags::NOEXEC)
    .union(MountFlags::NOATIME);

/// Mounts the config disk (`kernel_name`, partition `index`, holding `kind`) read-write at
/// [`CONFIG_MOUNT`] and returns the spool there; on any failure, the in-memory spool with the
/// reason.
pub fn choose(kernel_name: &str, index: u32, kind: Option<FsKind>) -> SpoolPlace {
    match mount_config_disk(kernel_name, index, kind) {
        Ok(dir) => SpoolPlace {
            dir,
            persistent: true,
            note: None,
        },
        Err(e) => SpoolPlace::memory(Some(e)),
    }
}

fn mount_config_disk(
    kernel_name: &str,
    index: u32,
    kind: Option<FsKind>,
) -> Result<PathBuf, String> {
    let kind = kind.ok_or("no filesystem recognised")?;
    let (fstype, data) =
        mount_type(kind).ok_or_else(|| format!("{} cannot hold the spool", kind.as_str()))?;
    let node = discovery::partition_node(Path::new("/sys"), Path::new("/dev"), kernel_name, index)
        .ok_or_else(|| format!("no device node for partition {index} of {kernel_name}"))?;
    let whole = Path::new("/dev").join(kernel_name);
    for dev in [&whole, &node] {
        discovery::set_config_disk_writable(dev)
            .map_err(|e| format!("{}: cannot clear its read-only flag: {e}", dev.display()))?;
    }
    std::fs::create_dir_all(CONFIG_MOUNT).map_err(|e| format!("{CONFIG_MOUNT}: {e}"))?;
    mount(&node, CONFIG_MOUNT, fstype, MOUNT_FLAGS, data).map_err(|e| {
        // Back to read-only: nothing else may write it.
        let _ = discovery::set_read_only(&whole);
        format!("mounting {} ({fstype}): {e}", node.display())
    })?;
    if let Ok(mut m) = MOUNTED.lock() {
        *m = Some(PathBuf::from(CONFIG_MOUNT));
    }
    let dir = Path::new(CONFIG_MOUNT).join(SPOOL_SUBDIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Unmounts the config disk if it is mounted (at power off, after `sync`): a FAT left mounted
/// keeps its dirty flag. A busy mount is left alone; the data is synced already.
pub fn unmount_config_disk() {
    let mounted = MOUNTED.lock().ok().and_then(|mut m| m.take());
    if let Some(path) = mounted {
        if let Err(e) = unmount(&path, UnmountFlags::empty()) {
            eprintln!("coldscan: config disk not unmounted: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fat_and_ext_hold_the_spool() {
        assert_eq!(mount_type(FsKind::Ext4).unwrap().0, "ext4");
        assert_eq!(mount_type(FsKind::Ext2).unwrap().0, "ext4");
        assert_eq!(mount_type(FsKind::Fat32).unwrap().0, "vfat");
        assert!(mount_type(FsKind::Ntfs).is_none());
        assert!(MOUNT_FLAGS.contains(MountFlags::NOEXEC | MountFlags::NOSUID | MountFlags::NODEV));
    }

    #[test]
    fn the_console_says_where() {
        let mem = SpoolPlace::memory(None);
        assert!(mem.describe().contains("in memory"), "{}", mem.describe());
        assert!(mem.describe().contains("lost at power off"));
        let disk = SpoolPlace {
            dir: PathBuf::from("/run/config-disk/coldscan-spool"),
            persistent: true,
            note: None,
        };
        assert!(disk.describe().starts_with("on the config disk"));
        let failed = SpoolPlace::memory(Some("mounting: EROFS".into()));
        assert!(failed
            .describe()
            .contains("config disk not usable: mounting: EROFS"));
    }
}
