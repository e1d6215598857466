//! The manager's hypervisor side, run by `serve`: keeps the VM inventory of every registered
//! libvirt connection in sync (one background task per connection, polling: the `virt` crate
//! exposes no domain lifecycle events), and drives VM scan jobs ([`jobs`]): a pull-mode backup
//! of the running VM, one appliance job per disk reading its NBD export, the backup ended when
//! they are done, failed, or their lease expires, and left-over backups of a manager that died
//! ended at start. Every libvirt call runs on tokio's blocking pool, never on the runtime.

mod export;
mod jobs;
mod overlays;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::libvirt::{blocking, Hypervisor, LibvirtError};
use crate::store::vms::HypervisorRow;
use crate::store::Store;

/// What the hypervisor side needs from `serve`'s options.
#[derive(Debug, Clone)]
pub struct VmSettings {
    /// This manager's name as the owner of the backups it opens (stable across restarts, so
    /// that a restarted manager recognizes and ends what it left).
    pub owner: String,
    /// Where local backups get their private directories (unix socket, scratch files).
    pub work_dir: PathBuf,
    /// Default address the backups' NBD servers listen on (TCP), for connections without
    /// their own; `None`: a unix socket (a scanner on the hypervisor host).
    pub nbd_listen: Option<String>,
    /// TCP ports for NBD servers (first, last).
    pub nbd_ports: (u16, u16),
    /// How often each connection's inventory is read.
    pub inventory_interval: Duration,
    /// How often VM jobs are looked at.
    pub tick: Duration,
    /// Backups open at once per storage pool unless set per pool.
    pub pool_backups: i64,
    /// Seconds without word from the manager holding a backup after which another manager
    /// ends it.
    pub stale_after: i64,
}

/// Open connections: name -> (URI, connection).
type OpenConnections = HashMap<String, (String, Arc<Hypervisor>)>;

/// Open libvirt connections by connection name, shared by the inventory tasks and the job
/// driver; a connection that fails is dropped and opened again on next use.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    open: Arc<Mutex<OpenConnections>>,
}

impl Connections {
    /// The open connection `name` to `uri`, opening it (off the runtime) if needed.
    pub async fn get(&self, name: &str, uri: &str) -> Result<Arc<Hypervisor>, LibvirtError> {
        if let Some((u, hv)) = self.open.lock().ok().and_then(|m| m.get(name).cloned()) {
            if u == uri {
                return Ok(hv);
            }
        }
        let owned = uri.to_string();
        let hv = Arc::new(blocking(move || Hypervisor::connect(&owned)).await?);
        if let Ok(mut m) = self.open.lock() {
            m.insert(name.to_string(), (uri.to_string(), hv.clone()));
        }
        Ok(hv)
    }

    /// Forgets connection `name` (closed once no task uses it).
    pub fn drop_connection(&self, name: &str) {
        if let Ok(mut m) = self.open.lock() {
            m.remove(name);
        }
    }
}

/// Runs the hypervisor side until the task is aborted.
pub async fn run<S: Store>(store: S, settings: VmSettings) {
    let connections = Connections::default();
    let mut inventories: HashMap<String, (String, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut driver = jobs::Driver::new(store.clone(), settings.clone(), connections.clone());
    let mut tick = tokio::time::interval(settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.list_hypervisors().await {
            Ok(rows) => supervise(&store, &settings, &connections, &mut inventories, &rows),
            Err(e) => eprintln!("coldscan-manager: listing hypervisors: {e}"),
        }
        if let Err(e) = driver.tick().await {
            eprintln!("coldscan-manager: VM jobs: {e}");
        }
    }
}

/// Starts an inventory task for every new connection, stops those of removed ones.
fn supervise<S: Store>(
    store: &S,
    settings: &VmSettings,
    connections: &Connections,
    tasks: &mut HashMap<String, (String, tokio::task::JoinHandle<()>)>,
    rows: &[HypervisorRow],
) {
    tasks.retain(|name, (uri, task)| {
        let keep = rows.iter().any(|r| r.name == *name && r.uri == *uri);
        if !keep {
            task.abort();
            connections.drop_connection(name);
        }
        keep
    });
    for r in rows {
        if tasks.contains_key(&r.name) {
            continue;
        }
        let task = tokio::spawn(inventory(
            store.clone(),
            connections.clone(),
            r.name.clone(),
            r.uri.clone(),
            settings.inventory_interval,
        ));
        tasks.insert(r.name.clone(), (r.uri.clone(), task));
    }
}

/// One connection's inventory loop.
async fn inventory<S: Store>(
    store: S,
    connections: Connections,
    name: String,
    uri: String,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let seen = match connections.get(&name, &uri).await {
            Ok(hv) => blocking(move || hv.inventory()).await,
            Err(e) => Err(e),
        };
        let now = crate::time::now();
        let result = match seen {
            Ok(seen) => store.sync_inventory(&name, &seen, now).await.map(|_| ()),
            Err(e) => {
                connections.drop_connection(&name);
                store.sync_failed(&name, &e.to_string(), now).await
            }
        };
        if let Err(e) = result {
            eprintln!("coldscan-manager: inventory of {name}: {e}");
        }
    }
}

/// This host's name, the default owner name of backups.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "coldscan-manager".into())
}
