//! The appliance end to end under QEMU (TCG): `coldscan` as PID 1 with guest disks attached and
//! the real manager (`coldscan-manager serve`) reached through user networking (`restrict=on`,
//! `guestfwd`); what arrived is read back through the manager's CLI and API. Slow (each boot is
//! tens of seconds under emulation): `#[ignore]`d, run by `make e2e`.
//!
//! - [`scanning`]: oneshot with three guest disks (a qcow2 chain whose top layer holds ext4 with
//!   planted files, NTFS in VHDX with EICAR in an alternate data stream and clam.exe in a
//!   compressed folder, a clean FAT disk): one stored report per disk with exactly the planted
//!   detections and the disk's serial, the VM powers off by itself, every disk file is
//!   byte-identical afterwards; a worker killed by its seccomp filter (the `coldscan.selftest`
//!   hook) and a corrupt disk do not stop the others, and their reports say why;
//! - [`delivery`]: daemon mode with the manager down at boot (reports stored exactly once after
//!   retries), jobs queued with `enqueue` (an attached disk, an `nbd://` export), a job of an
//!   appliance killed mid-scan scanned again by the next one after its lease, the spool on the
//!   config disk kept across a power off, HTTPS with the config disk's CA bundle (and a wrong CA
//!   refused);
//! - [`console`]: the serial console menu, driven through a unix socket (status, disks, power
//!   off; input that looks like a shell command or a path is refused), the ACPI power button;
//! - [`config`]: a FAT config disk (network, manager, signatures), the built image under OVMF.

#[path = "../qemu/mod.rs"]
mod qemu;

mod config;
mod console;
mod delivery;
mod scanning;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use qemu::Manager;

const BOOT_LIMIT: Duration = Duration::from_secs(600);

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coldscan"))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn manager_cmdline(manager: &Manager, extra: &str) -> String {
    format!(
        "coldscan.net=dhcp coldscan.manager=http://{} coldscan.token={} {extra}",
        qemu::GUEST_MANAGER,
        manager.token
    )
}
