//! The hypervisor commands of `coldscan-manager`: connections (`hypervisor add|list|remove|
//! limit|method|pool-limit`), the VM inventory (`vms`), VM scans (`scan-vm`, `vm-jobs`) and per-VM
//! policy (`vm-policy`). Like the other commands they work on the database; `serve` does the
//! libvirt work (inventory sync, backups).

use anyhow::Context;
use clap::Subcommand;

use crate::libvirt::{blocking, Hypervisor};
use crate::store::overlays::CopyMethod;
use crate::store::vms::{VmPolicy, DEFAULT_MAX_BACKUPS};
use crate::store::Store;
use crate::time::rfc3339;

/// `hypervisor` subcommands.
#[derive(Debug, Subcommand)]
pub enum HypervisorCommand {
    /// Register a libvirt connection (`qemu:///system`, `qemu+ssh://host/system`,
    /// `qemu+tls://host/system`); `serve` keeps its VM inventory in sync.
    Add {
        /// A name for it.
        name: String,
        /// The libvirt URI.
        uri: String,
        /// VM backups open at once on it.
        #[arg(long, default_value_t = DEFAULT_MAX_BACKUPS)]
        max_backups: i64,
        /// Address of the hypervisor host its backups' NBD servers listen on (TCP), reachable
        /// by the appliances; default: serve's --nbd-listen.
        #[arg(long, value_name = "IP")]
        nbd_listen: Option<String>,
        /// How point-in-time copies are taken: `backup` (pull-mode backup jobs), `snapshot`
        /// (external disk-only snapshot read by the manager, then committed back: for
        /// hypervisors without backup jobs; local connections), `auto` (backup jobs, else the
        /// snapshot).
        #[arg(long, default_value = "auto", value_parser = parse_method)]
        method: CopyMethod,
        /// Do not try the connection first.
        #[arg(long)]
        no_check: bool,
    },
    /// List connections.
    List,
    /// Forget a connection (its VMs are shown as gone until another connection lists them).
    Remove {
        /// Its name.
        name: String,
    },
    /// Set how many VM backups may be open at once on a connection.
    Limit {
        /// The connection.
        name: String,
        /// Backups at once.
        backups: i64,
    },
    /// Set how a connection takes point-in-time copies (see `add --method`).
    Method {
        /// The connection.
        name: String,
        /// `auto`, `backup` or `snapshot`.
        #[arg(value_parser = parse_method)]
        method: CopyMethod,
    },
    /// Set how many VM backups may be open at once on one storage pool of a connection.
    PoolLimit {
        /// The connection.
        name: String,
        /// The libvirt storage pool.
        pool: String,
        /// Backups at once.
        backups: i64,
    },
}

/// `vm-policy` options.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// The VM: name or UUID.
    pub vm: String,
    /// Scan it every this many seconds (0: on demand only).
    #[arg(long)]
    pub interval: Option<i64>,
    /// Start scheduled scans only inside this UTC window, `HH:MM-HH:MM` (`any`: always).
    #[arg(long)]
    pub window: Option<String>,
    /// Labels (repeat; replaces the VM's labels).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// What a detection in one of its scans triggers: `report` (nothing more) or `quarantine`
    /// (its network links set down through libvirt; `vm release` undoes it).
    #[arg(long, value_enum)]
    pub on_detection: Option<crate::store::vms::OnDetection>,
}

fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty() && name.len() <= 100 && !name.chars().any(char::is_control),
        "names are 1 to 100 printable characters"
    );
    Ok(())
}

fn parse_method(s: &str) -> Result<CopyMethod, String> {
    CopyMethod::parse(s).ok_or_else(|| format!("{s:?}: the methods are auto, backup and snapshot"))
}

fn check_limit(n: i64) -> anyhow::Result<()> {
    anyhow::ensure!((1..=1000).contains(&n), "limits are 1 to 1000");
    Ok(())
}

/// Parses a `HH:MM-HH:MM` UTC window into minutes of the day.
pub fn parse_window(s: &str) -> Result<(i64, i64), String> {
    let minutes = |t: &str| -> Option<i64> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
    };
    s.split_once('-')
        .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)))
        .filter(|(a, b)| a != b)
        .ok_or_else(|| format!("{s:?} is not a window like 22:00-04:00"))
}

/// `hypervisor ...`.
pub async fn hypervisor<S: Store>(store: &S, command: HypervisorCommand) -> anyhow::Result<()> {
    let now = crate::time::now();
    match command {
        HypervisorCommand::Add {
            name,
            uri,
            max_backups,
            nbd_listen,
            method,
            no_check,
        } => {
            check_name(&name)?;
            check_limit(max_backups)?;
            anyhow::ensure!(
                uri.contains(':') && uri.len() <= 1000,
                "{uri:?} is not a libvirt URI"
            );
            if !no_check {
                let u = uri.clone();
                let domains = blocking(move || Hypervisor::connect(&u)?.inventory())
                    .await
                    .with_context(|| format!("trying {uri} (--no-check to add it anyway)"))?;
                eprintln!("{uri}: {} domain(s)", domains.len());
            }
            store
                .add_hypervisor(&name, &uri, max_backups, nbd_listen.as_deref(), now)
                .await?;
            store.set_hypervisor_method(&name, method).await?;
            eprintln!("hypervisor {name} added; `serve` keeps its inventory");
        }
        HypervisorCommand::List => {
            for h in store.list_hypervisors().await? {
                println!(
                    "{}\t{}\tmax backups {}\tmethod {}\t{}\t{}",
                    h.name,
                    h.uri,
                    h.max_backups,
                    h.method,
                    h.last_sync
                        .map(|t| format!("synced {}", rfc3339(t)))
                        .unwrap_or_else(|| "never synced".into()),
                    h.last_error.unwrap_or_default()
                );
            }
        }
        HypervisorCommand::Remove { name } => {
            anyhow::ensure!(
                store.remove_hypervisor(&name, now).await?,
                "no hypervisor named {name:?}"
            );
        }
        HypervisorCommand::Limit { name, backups } => {
            check_limit(backups)?;
            anyhow::ensure!(
                store.set_hypervisor_limit(&name, backups).await?,
                "no hypervisor named {name:?}"
            );
        }
        HypervisorCommand::Method { name, method } => {
            anyhow::ensure!(
                store.set_hypervisor_method(&name, method).await?,
                "no hypervisor named {name:?}"
            );
        }
        HypervisorCommand::PoolLimit {
            name,
            pool,
            backups,
        } => {
            check_limit(backups)?;
            anyhow::ensure!(
                store
                    .list_hypervisors()
                    .await?
                    .iter()
                    .any(|h| h.name == name),
                "no hypervisor named {name:?}"
            );
            store.set_pool_limit(&name, &pool, backups).await?;
        }
    }
    Ok(())
}

/// `vms`.
pub async fn vms<S: Store>(store: &S, json: bool) -> anyhow::Result<()> {
    let rows = store.list_vms().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for v in rows {
        let last = v
            .last_job
            .map(|j| match j.state.as_str() {
                "done" => format!("last scan {}: {} detection(s)", j.id, j.detections),
                "failed" => format!("last scan {} failed: {}", j.id, j.error.unwrap_or_default()),
                s => format!("scan {} {s}", j.id),
            })
            .unwrap_or_else(|| "never scanned".into());
        let disks: Vec<&str> = v.disks.iter().map(|d| d.target.as_str()).collect();
        println!(
            "{}\t{}\t{}\t{}\t{}\t{last}",
            v.uuid,
            v.name,
            v.hypervisor,
            v.state,
            disks.join(",")
        );
    }
    Ok(())
}

/// `scan-vm`: queues a VM job and prints its id.
pub async fn scan_vm<S: Store>(store: &S, vm: &str, appliance: Option<&str>) -> anyhow::Result<()> {
    let row = store
        .find_vm(vm)
        .await?
        .with_context(|| format!("no VM named or with UUID {vm:?} in the inventory"))?;
    let id = store
        .enqueue_vm_job(&row.uuid, appliance, crate::time::now())
        .await?;
    println!("{id}");
    Ok(())
}

/// `vm-jobs`.
pub async fn vm_jobs<S: Store>(store: &S, vm: Option<&str>, json: bool) -> anyhow::Result<()> {
    let uuid = match vm {
        Some(key) => Some(
            store
                .find_vm(key)
                .await?
                .with_context(|| format!("no VM {key:?}"))?
                .uuid,
        ),
        None => None,
    };
    let jobs = store.list_vm_jobs(uuid.as_deref(), 1000).await?;
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        let disks = store.disk_jobs(j.id).await?;
        out.push((j, disks));
    }
    if json {
        let v: Vec<_> = out
            .iter()
            .map(|(j, d)| {
                let mut v = serde_json::to_value(j).unwrap_or_default();
                v["disks"] = serde_json::to_value(d).unwrap_or_default();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for (j, disks) in out {
        println!(
            "{}\t{}\t{}\t{}\tattempts {}/{}\t{}",
            j.id,
            j.name,
            j.uuid,
            j.state,
            j.attempts,
            j.max_attempts,
            j.error.unwrap_or_default()
        );
        for d in disks {
            println!(
                "\tdisk {}\tjob {}\t{}\treport {}\t{}",
                d.disk,
                d.job,
                d.state,
                d.report.map(|r| r.to_string()).unwrap_or_default(),
                d.error.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// `vm-policy`.
pub async fn vm_policy<S: Store>(store: &S, args: PolicyArgs) -> anyhow::Result<()> {
    let vm = store
        .find_vm(&args.vm)
        .await?
        .with_context(|| format!("no VM {:?}", args.vm))?;
    let mut policy: VmPolicy = vm.policy.clone();
    if let Some(i) = args.interval {
        anyhow::ensure!(i >= 0, "the interval is seconds, 0 for none");
        policy.scan_interval = (i > 0).then_some(i.max(60));
    }
    if let Some(w) = &args.window {
        policy.window = if w == "any" {
            None
        } else {
            Some(parse_window(w).map_err(anyhow::Error::msg)?)
        };
    }
    if !args.labels.is_empty() {
        policy.labels = args.labels.clone();
    }
    if let Some(action) = args.on_detection {
        policy.on_detection = action;
    }
    store
        .set_vm_policy(&vm.uuid, &policy, crate::time::now())
        .await?;
    println!("{}", serde_json::to_string(&policy)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn windows() {
        assert_eq!(super::parse_window("22:00-04:30"), Ok((1320, 270)));
        assert_eq!(super::parse_window("00:00-23:59"), Ok((0, 1439)));
        for bad in ["24:00-01:00", "1:00", "01:00-01:00", "a-b", "01:60-02:00"] {
            assert!(super::parse_window(bad).is_err(), "{bad}");
        }
    }
}
