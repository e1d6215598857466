//! The appliance: `coldscan` as PID 1 of the appliance image.
//!
//! The image's initramfs holds the `coldscan` binary as `/init`; the kernel starts it as process 1
//! and [`run`] takes over: it mounts the kernel's pseudo filesystems ([`init`]), says on the
//! console that the appliance is ready, does the job the kernel command line asks for
//! (`coldscan.mode=oneshot`, the default) and powers the machine off. It never returns: process 1
//! exiting makes the kernel panic.

mod init;

use std::io::Write;

pub use init::{is_init_process, CmdlineConfig, Mode};

/// Line printed on the console once the appliance has its filesystems and is ready to work;
/// boot tests and benchmarks wait for it.
pub const READY_LINE: &str = "coldscan appliance ready";

/// Runs the appliance as process 1 and powers the machine off at the end.
pub fn run() -> ! {
    init::mount_pseudo_filesystems();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let config = CmdlineConfig::parse(&cmdline);
    println!("{READY_LINE} {}", env!("CARGO_PKG_VERSION"));
    match config.mode {
        Mode::Oneshot => {
            let disks = init::guest_disks();
            if disks.is_empty() {
                println!("coldscan: no guest disks attached");
            } else {
                println!("coldscan: guest disks: {}", disks.join(" "));
            }
        }
        Mode::Other(ref mode) => println!("coldscan: mode {mode:?} is not available in this build"),
    }
    let _ = std::io::stdout().flush();
    init::power_off()
}
