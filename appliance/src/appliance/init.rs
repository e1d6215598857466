//! Process 1 duties: the static mount table and power off.
//!
//! Debian's kernel has `CONFIG_DEVTMPFS_MOUNT` off, so `/dev` is mounted here. Every mount is
//! `nosuid,nodev` and, except `/dev`, `noexec` (kata-containers' agent keeps the same table).

use rustix::mount::{mount, MountFlags};
use rustix::system::{reboot, RebootCommand};

/// One pseudo filesystem process 1 mounts.
struct PseudoMount {
    fstype: &'static str,
    target: &'static str,
    flags: MountFlags,
    data: &'static std::ffi::CStr,
}

/// `/tmp` mount options: a quarter of RAM at most.
pub const TMP_OPTIONS: &std::ffi::CStr = c"mode=1777,size=25%";

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
        // libclamav unpacks archive members here: capped so that a zip bomb fills /tmp, not RAM.
        data: TMP_OPTIONS,
    },
];

/// Whether this process is process 1 (the kernel's `/init`), the only case in which `coldscan`
/// acts as the appliance: mounting and powering off are never done on a host by accident.
pub fn is_init_process() -> bool {
    rustix::process::getpid().is_init()
}

/// Mounts `/proc`, `/sys`, `/dev`, `/run` and `/tmp`. Without `/proc`, `/sys` or `/dev` the
/// appliance cannot find its disks: that is an error (the caller powers off with the message);
/// `/run` and `/tmp` failures are reported and the boot goes on.
pub fn mount_pseudo_filesystems() -> Result<(), String> {
    for m in MOUNTS {
        let essential = matches!(m.target, "/proc" | "/sys" | "/dev");
        let result = std::fs::create_dir_all(m.target)
            .map_err(|e| format!("cannot create {}: {e}", m.target))
            .and_then(
                |()| match mount(m.fstype, m.target, m.fstype, m.flags, m.data) {
                    Ok(()) | Err(rustix::io::Errno::BUSY) => Ok(()),
                    Err(e) => Err(format!("cannot mount {} on {}: {e}", m.fstype, m.target)),
                },
            );
        match result {
            Ok(()) => {}
            Err(e) if essential => return Err(e),
            Err(e) => eprintln!("coldscan: init: {e}"),
        }
    }
    Ok(())
}

/// Flushes filesystem buffers and powers the machine off. Should the kernel refuse, process 1
/// waits forever rather than exit (which would panic the kernel).
pub fn power_off() -> ! {
    rustix::fs::sync();
    super::spooldisk::unmount_config_disk();
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
    fn mount_table_is_hardened() {
        for m in MOUNTS {
            assert!(m.flags.contains(MountFlags::NOSUID), "{}", m.target);
            if m.target != "/dev" {
                assert!(m.flags.contains(MountFlags::NOEXEC), "{}", m.target);
                assert!(m.flags.contains(MountFlags::NODEV), "{}", m.target);
            }
        }
        let tmp = MOUNTS.iter().find(|m| m.target == "/tmp").unwrap();
        assert!(tmp.data.to_str().unwrap().contains("size="));
    }

    #[test]
    fn a_test_process_is_not_init() {
        assert!(!is_init_process());
    }
}
