//! The appliance runtime: `coldscan` as PID 1 of the scan appliance.
//!
//! The image's initramfs holds the `coldscan` binary as `/init`; the kernel starts it as process
//! 1 and [`run`] takes over, in this order:
//!
//! 1. mount `/proc`, `/sys`, `/dev`, `/run`, `/tmp` ([`init`]); start the signal thread
//!    ([`events`]); load the kernel modules listed by the image ([`modules`]); say
//!    [`READY_LINE`]; watch the ACPI power button; open the console menu ([`console`]);
//! 2. find the block devices ([`discovery`]), read the config disk if one is attached
//!    ([`configdisk`]), merge the configuration ([`config`]);
//! 3. install the supervisor's seccomp filter ([`hardening`]); configure the network ([`net`]);
//! 4. run the job ([`jobs`]): every guest disk is parsed by a hardened worker process
//!    ([`worker`]);
//! 5. power off. Any fatal error (including a panic) is printed and ends in a power off: PID 1
//!    never exits, so the kernel never panics.

pub mod bundle;
pub mod config;
pub mod configdisk;
pub mod console;
pub mod discovery;
pub mod events;
pub mod hardening;
mod init;
pub mod jobs;
pub mod modules;
pub mod net;
pub mod signatures;
pub mod spooldisk;
pub mod worker;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

use console::say;
pub use init::is_init_process;

/// Line printed on the console once the appliance has its filesystems and drivers and is ready
/// to work; boot tests and benchmarks wait for it.
pub const READY_LINE: &str = "coldscan appliance ready";
/// Where the image bakes its signature databases (the first that exists is used, unless the
/// config disk brings its own).
pub const BAKED_DB_DIRS: &[&str] = &[
    "/var/lib/coldscan/db",
    "/usr/share/coldscan/db",
    "/var/lib/clamav",
];
/// How long PID 1 waits for the kernel to finish probing block devices.
const DEVICE_SETTLE_MAX: Duration = Duration::from_secs(10);
/// Block devices must stay unchanged this long to count as settled.
const DEVICE_SETTLE_QUIET: Duration = Duration::from_millis(1500);

/// Runs the appliance as process 1 and powers the machine off at the end.
pub fn run() -> ! {
    std::panic::set_hook(Box::new(|info| {
        say(&format!("fatal: internal error: {info}"));
    }));
    let outcome = std::panic::catch_unwind(main_body);
    match outcome {
        Ok(Ok(())) => say("done, powering off"),
        Ok(Err(e)) => say(&format!("fatal: {e:#}; powering off")),
        Err(_) => say("fatal: internal error (see above); powering off"),
    }
    init::power_off()
}

/// An orderly power off requested by a signal, the power button or the console menu.
fn shutdown(reason: &str) {
    say(&format!("{reason}: powering off"));
    init::power_off();
}

/// Waits until the set of block devices stops changing (drivers probe asynchronously).
fn settle_block_devices() {
    let list = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir("/sys/class/block")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let start = Instant::now();
    let mut last = list();
    let mut since = Instant::now();
    while start.elapsed() < DEVICE_SETTLE_MAX {
        std::thread::sleep(Duration::from_millis(250));
        let now = list();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= DEVICE_SETTLE_QUIET {
            break;
        }
    }
}

fn start_console_menu() {
    let spawned = std::thread::Builder::new()
        .name("coldscan-console".into())
        .spawn(|| {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let mut output = std::io::stdout();
            console::run_menu(
                &mut input,
                &mut output,
                &|| shutdown("power off from the console menu"),
                &|d| worker::info(&Path::new("/dev").join(&d.kernel_name), &d.identity),
            );
        });
    if let Err(e) = spawned {
        say(&format!("console menu not available: {e}"));
    }
}

fn main_body() -> anyhow::Result<()> {
    init::mount_pseudo_filesystems().map_err(|e| anyhow!(e))?;
    events::start_signal_thread(shutdown).context("starting the signal thread")?;
    let modules = modules::load_listed(Path::new(modules::MODULE_LIST), &modules::modules_dir())
        .map_err(|e| anyhow!(e))?;
    say(&format!(
        "modules: {} loaded, {} already present, {} without hardware",
        modules.loaded, modules.present, modules.no_device
    ));
    for (name, why) in &modules.failed {
        say(&format!("module {name}: {why}"));
    }
    println!("{READY_LINE} {}", env!("CARGO_PKG_VERSION"));
    if events::watch_power_buttons(shutdown) == 0 {
        say("no ACPI power button found (evdev/button modules missing?)");
    }
    start_console_menu();
    say("press Enter on this console for the diagnostics menu");
    settle_block_devices();

    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let self_guid = config::self_disk_from_cmdline(&cmdline).context("configuration")?;
    let devices = discovery::enumerate(Path::new("/sys"), Path::new("/dev"))
        .context("listing block devices")?;
    let mut guests = Vec::new();
    let mut lines = Vec::new();
    let mut config_disk = None;
    for d in devices {
        // Read-only in the kernel before anything reads it (the ioctl itself needs a descriptor,
        // opened O_RDONLY).
        if let Err(e) = discovery::set_read_only(&d.dev_path) {
            say(&format!(
                "disk {}: cannot set read-only (BLKROSET): {e}",
                d.identity()
            ));
        }
        let role = discovery::role_of_path(&d.dev_path, self_guid.as_deref());
        let role_name = match &role {
            discovery::DiskRole::Appliance => "appliance disk (not scanned)".to_string(),
            discovery::DiskRole::Config { partition } => {
                if config_disk.is_none() {
                    config_disk = Some((d.dev_path.clone(), d.kernel_name.clone(), *partition));
                }
                "config disk (not scanned)".to_string()
            }
            discovery::DiskRole::Guest => "guest".to_string(),
        };
        say(&format!(
            "disk {} ({}, {} bytes): {role_name}",
            d.identity(),
            d.kernel_name,
            d.size
        ));
        lines.push(console::DiskLine {
            identity: d.identity(),
            kernel_name: d.kernel_name.clone(),
            size: d.size,
            role: role_name,
            layout: None,
        });
        if role == discovery::DiskRole::Guest {
            guests.push(d);
        }
    }
    console::update(|s| s.disks = lines);

    let run_dir = PathBuf::from(configdisk::RUN_DIR);
    let disk = match &config_disk {
        Some((dev, _, part)) => {
            let disk = configdisk::ConfigDisk::read(dev, *part, &run_dir)?;
            say(&format!(
                "config disk: coldscan.toml {}, {} signature database file(s)",
                if disk.toml.is_some() {
                    "read"
                } else {
                    "absent"
                },
                disk.db_files.len()
            ));
            Some(disk)
        }
        None => None,
    };
    let config = config::Config::load(&cmdline, disk.as_ref().and_then(|d| d.toml.as_deref()))
        .context("configuration")?;
    console::update(|s| {
        s.mode = format!(
            "{}{}{}",
            config.mode.as_str(),
            if disk.is_some() {
                " (config disk attached)"
            } else {
                ""
            },
            config
                .name
                .as_deref()
                .map(|n| format!(", appliance {n}"))
                .unwrap_or_default()
        )
    });

    hardening::apply(hardening::Role::Supervisor).context("hardening PID 1")?;

    match net::configure(&config.net) {
        Ok(Some(state)) => {
            say(&format!("network: {state}"));
            console::update(|s| s.network = state.to_string());
        }
        Ok(None) => console::update(|s| s.network = "off".into()),
        Err(e) => {
            say(&format!("network: not configured: {e}"));
            console::update(|s| s.network = format!("failed: {e}"));
        }
    }

    let dbs: Vec<PathBuf> = match disk.as_ref().and_then(|d| d.db_dir.clone()) {
        Some(dir) => vec![dir],
        None => BAKED_DB_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_dir())
            .into_iter()
            .collect(),
    };
    if dbs.is_empty() {
        return Err(anyhow!(
            "no signature database: none baked into the image and none on a config disk"
        ));
    }
    say(&format!("signatures from {}", dbs[0].display()));
    jobs::set_db_note(&dbs[0]);
    console::update(|s| s.engine = format!("clamav, databases in {}", dbs[0].display()));

    let manager = match (&config.manager, &config.token) {
        (Some(url), Some(token)) => {
            let mut cc = crate::client::ClientConfig::new(url, token);
            if let (Some(ca), Some(d)) = (&config.ca_bundle, &disk) {
                cc.ca_file = Some(d.copy_ca_bundle(ca, &run_dir)?);
            }
            cc.retry = crate::client::RetryPolicy {
                attempts: 3,
                initial_delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(5),
            };
            let client = crate::client::ManagerClient::new(&cc)?;
            let place = match (&config_disk, &disk) {
                (Some((_, name, part)), Some(d)) => spooldisk::choose(name, *part, d.kind),
                _ => spooldisk::SpoolPlace::memory(None),
            };
            let spool = crate::client::Spool::open(&place.dir)?;
            let waiting = spool.pending().map(|p| p.len()).unwrap_or(0);
            say(&format!(
                "reports go to {url}; undelivered reports wait {}{}",
                place.describe(),
                if waiting > 0 {
                    format!(", {waiting} from an earlier boot waiting there")
                } else {
                    String::new()
                }
            ));
            console::update(|s| s.spool = place.describe());
            Some((client, spool, place))
        }
        _ => None,
    };
    let budget = if config.jobs == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        config.jobs
    };
    let spool_place = manager
        .as_ref()
        .map(|(_, _, place)| place.clone())
        .unwrap_or_else(|| spooldisk::SpoolPlace::memory(None));
    let ctx = jobs::JobContext {
        dbs,
        budget,
        manager: manager.map(|(client, spool, _)| (client, spool)),
        selftest: config.selftest.clone(),
        heartbeat: Duration::from_secs(config.heartbeat_seconds),
        fetched: signatures::Fetched::new(
            config.signatures == config::SignatureSource::Manager,
            Path::new(signatures::SIGNATURE_DIR),
        ),
        spool_place,
        delivery_deadline: Duration::from_secs(config.delivery_seconds),
    };
    match config.mode {
        config::Mode::Oneshot => {
            let status = jobs::oneshot(&guests, &ctx);
            say(&format!("exit status {status}"));
            Ok(())
        }
        config::Mode::Daemon => jobs::daemon(&guests, &ctx),
    }
}
