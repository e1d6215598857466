//! Process 1 duties: the static mount table, the kernel command line, power off.
//!
//! Debian's kernel has `CONFIG_DEVTMPFS_MOUNT` off, so `/dev` is mounted here. Every mount is
//! `nosuid,nodev` and, except `/dev`, `noexec` (kata-containers' agent keeps the same table).

use std::path::Path;

use rustix::mount::{mount, MountFlags};
use rustix::system::{reboot, RebootCommand};

/// One pseudo filesystem process 1 mounts.
struct PseudoMount {
    fstype: &'static str,
    target: &'static str,
    flags: MountFlags,
    data: &'static std::ffi::CStr,
}

/// The static mount table, in mount order.
const MOUNTS: &[PseudoMount] = &[
    PseudoMount {
        fstype: "proc",
        target: "/proc",
        flags: MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        data: c"",
    },
    PseudoMount {
        fstype: "sysfs",
        target: "/sys",
        flags: MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        data: c"",
    },
    PseudoMount {
        fstype: "devtmpfs",
        target: "/dev",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: c"mode=0755",
    },
    PseudoMount {
        fstype: "tmpfs",
        target: "/run",
        flags: MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        data: c"mode=0755",
    },
    PseudoMount {
        fstype: "tmpfs",
        target: "/tmp",
        flags: MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        data: c"mode=1777",
    },
];

/// Whether this process is process 1 (the kernel's `/init`), the only case in which `coldscan`
/// acts as the appliance: mounting and powering off are never done on a host by accident.
pub fn is_init_process() -> bool {
    rustix::process::getpid().is_init()
}

/// Mounts `/proc`, `/sys`, `/dev`, `/run` and `/tmp`. A failure is reported on the console and
/// the boot goes on: the readiness line and power off must still happen.
pub fn mount_pseudo_filesystems() {
    for m in MOUNTS {
        if let Err(e) = std::fs::create_dir_all(m.target) {
            eprintln!("coldscan: init: cannot create {}: {e}", m.target);
            continue;
        }
        match mount(m.fstype, m.target, m.fstype, m.flags, m.data) {
            Ok(()) | Err(rustix::io::Errno::BUSY) => {}
            Err(e) => eprintln!(
                "coldscan: init: cannot mount {} on {}: {e}",
                m.fstype, m.target
            ),
        }
    }
}

/// What the appliance does after boot (`coldscan.mode=` on the kernel command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Scan every attached guest disk, report, power off (the default).
    Oneshot,
    /// A mode this build does not know.
    Other(String),
}

/// The appliance's settings from the kernel command line (`coldscan.*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineConfig {
    /// `coldscan.mode=`.
    pub mode: Mode,
}

impl CmdlineConfig {
    /// Reads the `coldscan.*` keys of a kernel command line; other words are the kernel's. The
    /// last occurrence of a key wins, as for the kernel's own parameters.
    pub fn parse(cmdline: &str) -> Self {
        let mut mode = Mode::Oneshot;
        for word in cmdline.split_ascii_whitespace() {
            if let Some(value) = word.strip_prefix("coldscan.mode=") {
                mode = match value {
                    "oneshot" => Mode::Oneshot,
                    other => Mode::Other(other.to_owned()),
                };
            }
        }
        CmdlineConfig { mode }
    }
}

/// Names of the whole-disk block devices the kernel sees (`/sys/block`), without RAM, loop and
/// optical devices, sorted.
pub fn guest_disks() -> Vec<String> {
    list_disks(Path::new("/sys/block"))
}

fn list_disks(sys_block: &Path) -> Vec<String> {
    const NOT_DISKS: &[&str] = &["loop", "ram", "zram", "sr", "fd", "nbd"];
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut disks: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| !NOT_DISKS.iter().any(|p| name.starts_with(p)))
        .collect();
    disks.sort();
    disks
}

/// Flushes filesystem buffers and powers the machine off. Should the kernel refuse, process 1
/// waits forever rather than exit (which would panic the kernel).
pub fn power_off() -> ! {
    rustix::fs::sync();
    if let Err(e) = reboot(RebootCommand::PowerOff) {
        eprintln!("coldscan: init: power off failed: {e}");
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_defaults_to_oneshot() {
        let c = CmdlineConfig::parse("console=ttyS0 panic=-1 quiet");
        assert_eq!(c.mode, Mode::Oneshot);
    }

    #[test]
    fn last_mode_wins_and_unknown_modes_are_kept() {
        let c = CmdlineConfig::parse("coldscan.mode=oneshot coldscan.mode=daemon");
        assert_eq!(c.mode, Mode::Other("daemon".into()));
        let c = CmdlineConfig::parse("coldscan.mode=daemon coldscan.mode=oneshot\n");
        assert_eq!(c.mode, Mode::Oneshot);
    }

    #[test]
    fn disk_list_skips_virtual_devices() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["vda", "loop0", "ram1", "sr0", "nvme0n1", "sda"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(list_disks(dir.path()), ["nvme0n1", "sda", "vda"]);
        assert!(list_disks(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn a_test_process_is_not_init() {
        assert!(!is_init_process());
    }
}
