//! The serial console menu and the ACPI power button.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::qemu::guests::fat_clean;
use super::qemu::{Manager, Vm, VmOptions};
use super::{binary, manager_cmdline, BOOT_LIMIT};

/// Sends `line` on the console socket and reads until `needle` appears.
fn console_exchange(sock: &mut UnixStream, line: &str, needle: &str) -> String {
    sock.write_all(line.as_bytes()).unwrap();
    sock.write_all(b"\n").unwrap();
    let mut seen = String::new();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    while !seen.contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no {needle:?} after {line:?}:\n{seen}"
        );
        match sock.read(&mut buf) {
            Ok(0) => panic!("console closed:\n{seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
    }
    seen
}

#[test]
#[ignore = "boots QEMU: make e2e"]
fn console_menu_status_disks_power_off() {
    let dir = tempfile::tempdir().unwrap();
    let disk = fat_clean(dir.path(), "menu.raw", "GUEST-MENU");
    let manager = Manager::started(&[]);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline(&manager, "coldscan.mode=daemon"),
            disks: vec![disk],
            manager_port: Some(manager.port),
            console_socket: true,
            ..VmOptions::default()
        },
    );
    vm.wait_for("delivered to the manager as scan 1", BOOT_LIMIT);
    let mut sock = UnixStream::connect(vm.socket.as_ref().unwrap()).unwrap();
    console_exchange(&mut sock, "", "8 power off");
    let status = console_exchange(&mut sock, "1", "spool:");
    assert!(status.contains("mode: daemon"), "{status}");
    // The layout comes from a hardened worker running `coldscan info`.
    let disks = console_exchange(&mut sock, "2", "fat16");
    assert!(
        disks.contains("disk virtio-GUEST-MENU (vda, 16.0 MiB): guest"),
        "{disks}"
    );
    assert!(!disks.contains("SIGSYS"), "{disks}");
    console_exchange(&mut sock, "", "choice:");
    for hostile in ["/bin/sh", "$(reboot)", "../../etc/passwd", "2; poweroff"] {
        console_exchange(&mut sock, hostile, "unknown choice");
    }
    console_exchange(&mut sock, "8", "type yes");
    console_exchange(&mut sock, "yes", "powering off");
    let log = vm.wait_powered_off(Duration::from_secs(120));
    assert!(log.contains("power off from the console menu"), "{log}");
    assert!(!log.contains("Kernel panic"), "{log}");
}

#[test]
#[ignore = "boots QEMU: make e2e"]
fn acpi_power_button_powers_off() {
    let manager = Manager::started(&[]);
    let mut vm = Vm::start(
        &binary(),
        &VmOptions {
            cmdline: manager_cmdline(&manager, "coldscan.mode=daemon"),
            manager_port: Some(manager.port),
            ..VmOptions::default()
        },
    );
    vm.wait_for("press Enter on this console", BOOT_LIMIT);
    vm.wait_for("reports go to", BOOT_LIMIT);
    vm.monitor("system_powerdown");
    let log = vm.wait_powered_off(Duration::from_secs(120));
    assert!(log.contains("ACPI power button: powering off"), "{log}");
}
