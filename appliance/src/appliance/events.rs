//! What PID 1 reacts to besides its jobs: `SIGTERM`/`SIGINT`/`SIGPWR` (a hypervisor's or
//! Ctrl-Alt-Del's shutdown request), the ACPI power button, and orphans to reap.
//!
//! The power button: with no acpid, the kernel's ACPI `button` driver reports a press as an input
//! event (`EV_KEY`, `KEY_POWER`; `include/uapi/linux/input-event-codes.h`) on the evdev device
//! named "Power Button"; PID 1 reads those devices itself. QEMU's `system_powerdown` and
//! libvirt's `virsh shutdown` press that button.
//!
//! Reaping: children that PID 1 started itself (scan workers) are waited for by their owner;
//! any other process that ends up parented to PID 1 and exits is reaped here, so no zombie stays.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::sync::{LazyLock, Mutex};

use super::console::say;

/// `EV_KEY`.
const EV_KEY: u16 = 1;
/// `KEY_POWER`.
const KEY_POWER: u16 = 116;
/// `sizeof(struct input_event)` on x86_64 (two 8-byte time fields, type, code, value).
const INPUT_EVENT_SIZE: usize = 24;
/// Most input devices inspected.
const MAX_INPUT_DEVICES: usize = 64;

/// Children waited for by their owner (scan workers), never reaped here.
static OWNED_CHILDREN: LazyLock<Mutex<HashSet<i32>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// Registers a child that its owner waits for.
pub fn own_child(pid: u32) {
    if let (Ok(mut set), Ok(pid)) = (OWNED_CHILDREN.lock(), i32::try_from(pid)) {
        set.insert(pid);
    }
}

/// Forgets a child once its owner has waited for it.
pub fn disown_child(pid: u32) {
    if let (Ok(mut set), Ok(pid)) = (OWNED_CHILDREN.lock(), i32::try_from(pid)) {
        set.remove(&pid);
    }
}

/// Parses `/proc/PID/stat`: `(ppid, state)`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
pub fn parse_stat(stat: &str) -> Option<(i32, char)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Reaps exited processes parented to us that no owner waits for.
pub fn reap_orphans() {
    reap_where(&|_| true);
}

/// [`reap_orphans`] restricted to the pids `accept` names.
fn reap_where(accept: &dyn Fn(i32) -> bool) {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if !accept(pid) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((ppid, state)) = parse_stat(&stat) else {
            continue;
        };
        let owned = OWNED_CHILDREN
            .lock()
            .map(|s| s.contains(&pid))
            .unwrap_or(true);
        if ppid == me && state == 'Z' && !owned {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::waitpid(Some(p), rustix::process::WaitOptions::NOHANG);
            }
        }
    }
}

/// Starts the signal thread: shutdown signals call `shutdown` with the signal's name,
/// `SIGCHLD` reaps orphans. Ctrl-Alt-Del is turned into `SIGINT` (instead of an immediate
/// reboot) so that it, too, ends in an orderly power off.
pub fn start_signal_thread(shutdown: fn(&str)) -> std::io::Result<()> {
    use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
    /// `SIGPWR` on x86_64 (not among signal-hook's portable constants).
    const SIGPWR: i32 = 30;
    let _ = rustix::system::reboot(rustix::system::RebootCommand::CadOff);
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGPWR, SIGCHLD])?;
    std::thread::Builder::new()
        .name("coldscan-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGCHLD => reap_orphans(),
                    SIGTERM => shutdown("SIGTERM"),
                    SIGINT => shutdown("SIGINT (Ctrl-Alt-Del)"),
                    SIGPWR => shutdown("SIGPWR"),
                    _ => {}
                }
            }
        })?;
    Ok(())
}

/// The evdev devices named like a power button, under `sysfs_root/class/input`.
pub fn power_button_devices(sysfs_root: &Path) -> Vec<String> {
    let class = sysfs_root.join("class/input");
    let Ok(entries) = std::fs::read_dir(&class) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("event"))
        .take(MAX_INPUT_DEVICES)
        .filter(|n| {
            std::fs::read_to_string(class.join(n).join("device/name"))
                .map(|name| name.trim().eq_ignore_ascii_case("Power Button"))
                .unwrap_or(false)
        })
        .collect();
    out.sort();
    out
}

/// True when a raw `input_event` is a power button press.
pub fn is_power_press(event: &[u8; INPUT_EVENT_SIZE]) -> bool {
    let kind = u16::from_ne_bytes([event[16], event[17]]);
    let code = u16::from_ne_bytes([event[18], event[19]]);
    let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

/// Starts one thread per power button device that calls `shutdown` on a press. Returns how
/// many buttons are watched.
pub fn watch_power_buttons(shutdown: fn(&str)) -> usize {
    let mut watched = 0;
    for dev in power_button_devices(Path::new("/sys")) {
        let path = Path::new("/dev/input").join(&dev);
        let Ok(mut file) = std::fs::File::open(&path) else {
            say(&format!("cannot open power button {}", path.display()));
            continue;
        };
        let spawned = std::thread::Builder::new()
            .name(format!("coldscan-{dev}"))
            .spawn(move || {
                let mut ev = [0u8; INPUT_EVENT_SIZE];
                while file.read_exact(&mut ev).is_ok() {
                    if is_power_press(&ev) {
                        shutdown("ACPI power button");
                    }
                }
            });
        if spawned.is_ok() {
            watched += 1;
        }
    }
    watched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_names() {
        assert_eq!(parse_stat("42 (coldscan) Z 1 42 42 0"), Some((1, 'Z')));
        assert_eq!(parse_stat("43 (a) b (c) S 7 1"), Some((7, 'S')));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn power_press_decoding() {
        let mut ev = [0u8; INPUT_EVENT_SIZE];
        ev[16..18].copy_from_slice(&EV_KEY.to_ne_bytes());
        ev[18..20].copy_from_slice(&KEY_POWER.to_ne_bytes());
        ev[20..24].copy_from_slice(&1i32.to_ne_bytes());
        assert!(is_power_press(&ev));
        ev[20..24].copy_from_slice(&0i32.to_ne_bytes()); // release
        assert!(!is_power_press(&ev));
    }

    #[test]
    fn finds_power_buttons_by_name() {
        let root = tempfile::tempdir().unwrap();
        for (ev, name) in [
            ("event0", "Power Button"),
            ("event1", "AT Translated Set 2 keyboard"),
        ] {
            let d = root.path().join("class/input").join(ev).join("device");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(power_button_devices(root.path()), ["event0"]);
    }

    #[test]
    fn reaps_an_orphan_zombie_but_not_an_owned_child() {
        let owned = std::process::Command::new("true").spawn().unwrap();
        own_child(owned.id());
        let other = std::process::Command::new("true").spawn().unwrap();
        let other_pid = other.id();
        std::mem::forget(other);
        // Wait until both have exited (zombies), then reap.
        let stat = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        while stat(other_pid).and_then(|s| parse_stat(&s)).map(|p| p.1) != Some('Z') {
            std::thread::yield_now();
        }
        let owned_pid = owned.id() as i32;
        // Only these two: other tests' children are waited for by their own threads.
        reap_where(&|p| p == other_pid as i32 || p == owned_pid);
        assert!(stat(other_pid).is_none(), "orphan not reaped");
        let mut owned = owned;
        assert!(owned.wait().unwrap().success(), "owned child was stolen");
        disown_child(owned.id());
    }
}
