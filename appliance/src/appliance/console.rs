//! The serial console: every message of the appliance (also kept in a bounded log for the menu)
//! and the diagnostics menu an operator reaches by pressing Enter on ttyS0.
//!
//! The menu reads short lines and compares them with a fixed set of choices: nothing typed is
//! ever used as a path, a command line or a device name, there is no shell, and no choice writes
//! to a guest disk.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};

/// Lines kept for "show log".
const LOG_LINES: usize = 400;
/// Longest menu input line kept (bytes); the rest of a longer line is discarded.
const MAX_INPUT: usize = 64;

static LOG: LazyLock<Mutex<VecDeque<String>>> = LazyLock::new(|| Mutex::new(VecDeque::new()));
static STATUS: LazyLock<Mutex<Status>> = LazyLock::new(|| Mutex::new(Status::default()));
/// Set by the menu's "rescan"; the job loop takes it.
pub static RESCAN: AtomicBool = AtomicBool::new(false);

/// What the console's status pages show.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// What the appliance is doing now.
    pub phase: String,
    /// `oneshot` or `daemon`, and where the configuration came from.
    pub mode: String,
    /// Disks seen, one line each.
    pub disks: Vec<DiskLine>,
    /// Network state.
    pub network: String,
    /// Engine and signature databases.
    pub engine: String,
    /// Summary of the last report.
    pub last_report: String,
    /// Where undelivered reports wait.
    pub spool: String,
}

/// One disk as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLine {
    /// by-id style identity.
    pub identity: String,
    /// Kernel name, for the operator's orientation only.
    pub kernel_name: String,
    /// Size in bytes.
    pub size: u64,
    /// `guest`, `config disk`, `appliance disk`.
    pub role: String,
    /// Layout as `coldscan info` prints it, once read by a hardened worker.
    pub layout: Option<String>,
}

/// `text` with control characters (other than line feeds) shown as `\xNN`: guest-controlled
/// strings (file names, labels) must not drive the operator's terminal with escape sequences.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints `coldscan: MESSAGE` on the console and keeps it for "show log".
pub fn say(message: &str) {
    let line = format!("coldscan: {}", printable(message));
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    if let Ok(mut log) = LOG.lock() {
        if log.len() >= LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// Changes the status shown by the menu.
pub fn update(f: impl FnOnce(&mut Status)) {
    if let Ok(mut s) = STATUS.lock() {
        f(&mut s);
    }
}

/// A copy of the status.
pub fn status() -> Status {
    STATUS.lock().map(|s| s.clone()).unwrap_or_default()
}

/// A menu choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Show the menu (an empty line).
    Menu,
    /// Status.
    Status,
    /// Disks seen and their layout.
    Disks,
    /// Network.
    Network,
    /// Engine and DB versions.
    Versions,
    /// Last report summary.
    LastReport,
    /// Scan the attached disks again.
    Rescan,
    /// Show the log.
    Log,
    /// Power off (asks for confirmation).
    PowerOff,
    /// Not a choice.
    Unknown,
}

/// Maps an input line to a choice: a number or a word, nothing else.
pub fn parse_choice(line: &str) -> Choice {
    match line.trim().to_ascii_lowercase().as_str() {
        "" => Choice::Menu,
        "1" | "status" => Choice::Status,
        "2" | "disks" => Choice::Disks,
        "3" | "network" => Choice::Network,
        "4" | "versions" => Choice::Versions,
        "5" | "report" | "last report" => Choice::LastReport,
        "6" | "rescan" => Choice::Rescan,
        "7" | "log" | "show log" => Choice::Log,
        "8" | "poweroff" | "power off" => Choice::PowerOff,
        _ => Choice::Unknown,
    }
}

/// The menu text.
pub const MENU: &str = "coldscan diagnostics\n  1 status\n  2 disks\n  3 network\n  4 versions\n  5 last report\n  6 rescan\n  7 show log\n  8 power off\nchoice: ";

fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// The text a choice prints (`Rescan` and `PowerOff` act in [`run_menu`]).
pub fn page(choice: Choice, s: &Status, layout: &dyn Fn(&DiskLine) -> Option<String>) -> String {
    let or_none = |t: &str| {
        if t.is_empty() {
            "(none)".to_string()
        } else {
            t.to_string()
        }
    };
    match choice {
        Choice::Menu => MENU.to_string(),
        Choice::Status => format!(
            "status: {}\nmode: {}\ndisks: {}\nnetwork: {}\nspool: {}\n",
            or_none(&s.phase),
            or_none(&s.mode),
            s.disks.len(),
            or_none(&s.network),
            or_none(&s.spool)
        ),
        Choice::Disks => {
            if s.disks.is_empty() {
                return "disks: none seen\n".into();
            }
            let mut t = String::new();
            for d in &s.disks {
                t.push_str(&format!(
                    "disk {} ({}, {}): {}\n",
                    d.identity,
                    d.kernel_name,
                    human_size(d.size),
                    d.role
                ));
                let text = d.layout.clone().or_else(|| layout(d));
                if let Some(text) = text {
                    for l in printable(&text).lines() {
                        t.push_str(&format!("    {l}\n"));
                    }
                }
            }
            t
        }
        Choice::Network => format!("network: {}\n", or_none(&s.network)),
        Choice::Versions => format!(
            "coldscan {}\nengine: {}\n",
            env!("CARGO_PKG_VERSION"),
            or_none(&s.engine)
        ),
        Choice::LastReport => format!("last report: {}\n", or_none(&s.last_report)),
        Choice::Log => {
            let log = LOG.lock().map(|l| l.clone()).unwrap_or_default();
            let mut t: String = log.iter().map(|l| format!("{l}\n")).collect();
            if t.is_empty() {
                t = "log: empty\n".into();
            }
            t
        }
        Choice::Rescan => "rescan requested\n".into(),
        Choice::PowerOff => "power off? type yes to confirm: ".into(),
        Choice::Unknown => "unknown choice; press Enter for the menu\n".into(),
    }
}

/// Reads one line of at most [`MAX_INPUT`] bytes (the rest of a longer line is dropped).
fn read_line(input: &mut dyn BufRead) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => return (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into()),
            Ok(_) if byte[0] == b'\n' || byte[0] == b'\r' => {
                return Some(String::from_utf8_lossy(&buf).into())
            }
            Ok(_) if buf.len() < MAX_INPUT => buf.push(byte[0]),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Runs the menu on `input`/`output` until the input ends. `power_off` is called after a
/// confirmed "power off"; `layout` reads a disk's layout on demand.
pub fn run_menu(
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    power_off: &dyn Fn(),
    layout: &dyn Fn(&DiskLine) -> Option<String>,
) {
    let mut confirming = false;
    while let Some(line) = read_line(input) {
        if confirming {
            confirming = false;
            if line.trim().eq_ignore_ascii_case("yes") {
                let _ = writeln!(output, "powering off");
                let _ = output.flush();
                power_off();
                continue;
            }
            let _ = writeln!(output, "power off cancelled");
            let _ = output.flush();
            continue;
        }
        let choice = parse_choice(&line);
        let text = page(choice, &status(), layout);
        let _ = write!(output, "{}", printable(&text));
        let _ = output.flush();
        match choice {
            Choice::PowerOff => confirming = true,
            Choice::Rescan => RESCAN.store(true, Ordering::SeqCst),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_are_a_fixed_set() {
        assert_eq!(parse_choice(""), Choice::Menu);
        assert_eq!(parse_choice(" 2 "), Choice::Disks);
        assert_eq!(parse_choice("STATUS"), Choice::Status);
        assert_eq!(parse_choice("power off"), Choice::PowerOff);
        for hostile in ["/bin/sh", "sh", "../../etc/passwd", "2; reboot", "$(id)"] {
            assert_eq!(parse_choice(hostile), Choice::Unknown, "{hostile}");
        }
    }

    #[test]
    fn menu_session_status_disks_power_off() {
        update(|s| {
            s.phase = "idle".into();
            s.disks = vec![DiskLine {
                identity: "virtio-GUEST1".into(),
                kernel_name: "vdb".into(),
                size: 1 << 20,
                role: "guest".into(),
                layout: None,
            }];
        });
        let input = "\n1\n2\n/bin/sh\n8\nno\n8\nyes\n";
        let mut out = Vec::new();
        let powered = std::cell::Cell::new(0);
        run_menu(
            &mut input.as_bytes(),
            &mut out,
            &|| powered.set(powered.get() + 1),
            &|d| Some(format!("layout of {}", d.identity)),
        );
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("1 status"), "{out}");
        assert!(out.contains("status: idle"), "{out}");
        assert!(
            out.contains("disk virtio-GUEST1 (vdb, 1.0 MiB): guest"),
            "{out}"
        );
        assert!(out.contains("    layout of virtio-GUEST1"), "{out}");
        assert!(out.contains("unknown choice"), "{out}");
        assert!(out.contains("power off cancelled"), "{out}");
        assert_eq!(powered.get(), 1);
    }

    #[test]
    fn guest_strings_cannot_drive_the_terminal() {
        assert_eq!(printable("a\x1b[2Jb\r\nc"), "a\\x1b[2Jb\\x0d\nc");
        assert_eq!(printable("plain/path.txt"), "plain/path.txt");
    }

    #[test]
    fn long_input_is_cut() {
        let long = format!("{}\n2\n", "x".repeat(10_000));
        let mut input = long.as_bytes();
        let first = read_line(&mut input).unwrap();
        assert_eq!(first.len(), MAX_INPUT);
        assert_eq!(read_line(&mut input).unwrap(), "2");
    }
}
