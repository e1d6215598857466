//! The VM job driver. A VM job goes `queued` -> `running` (its point-in-time copy is open: a
//! pull-mode backup, or on hypervisors without backup jobs the images frozen by a disk-only
//! snapshot and served by this manager; one appliance job per disk reads that disk's NBD
//! export) -> `done` or `failed`, or back to `queued` for a fresh copy while attempts remain.
//! A snapshot's overlays are committed back by the overlay keeper ([`super::overlays`]) once
//! the copy ends. Each tick:
//! 1. marks this manager's open backups as still held (`owner_seen`);
//! 2. ends left-over backups: those recorded under this manager's name that it does not hold
//!    (its previous life, at start), and those of another manager silent for `stale_after`
//!    seconds;
//! 3. watches its open backups: a disk job whose lease expired fails (it is not handed out
//!    again) and the backup ends; a backup that vanished (aborted outside, VM stopped) fails
//!    the job; once every disk job is done or failed, the backup ends;
//! 4. queues scheduled scans that are due (policy, scan window);
//! 5. starts queued jobs while the per-connection and per-pool limits allow (checked in the
//!    claim's transaction), recording the copy's plan before it begins;
//! 6. commits back the snapshots that are due.

use std::collections::{HashMap, HashSet};

use crate::libvirt::{
    blocking, end_recorded, is_local, quarantine, BackupPlan, LeftOver, LibvirtError,
};
use crate::store::overlays::{CopyMethod, OverlayRow};
use crate::store::vms::{OnDetection, VmClaim, VmJobClaim, VmJobEnd, VmJobRow};
use crate::store::{Filter, Store, StoreResult};

use super::export::Export;
use super::overlays::{overlay_row, settle};
use super::{Connections, VmSettings};

mod begin;

use begin::{snapshot_plan, RecordedBackup};

/// Queued jobs looked at per tick.
const QUEUED_PER_TICK: i64 = 200;
/// Running jobs looked at per tick.
const RUNNING_PER_TICK: i64 = 10_000;

/// Drives VM jobs (see the module comment).
pub struct Driver<S> {
    store: S,
    settings: VmSettings,
    connections: Connections,
    open: HashMap<i64, Held>,
}

/// A copy this manager holds open for a running VM job.
struct Held {
    export: Export,
    /// For a snapshot: the record that hands it to the overlay keeper once it ends.
    overlay: Option<OverlayRow>,
}

impl<S: Store> Driver<S> {
    /// A driver with no backup open.
    pub fn new(store: S, settings: VmSettings, connections: Connections) -> Driver<S> {
        Driver {
            store,
            settings,
            connections,
            open: HashMap::new(),
        }
    }

    /// One round (see the module comment).
    pub async fn tick(&mut self) -> StoreResult<()> {
        let now = crate::time::now();
        if !self.open.is_empty() {
            self.store.touch_vm_jobs(&self.settings.owner, now).await?;
        }
        let running = self.store.vm_jobs_in("running", RUNNING_PER_TICK).await?;
        for job in &running {
            if self.open.contains_key(&job.id) {
                continue;
            }
            // Recorded under this manager's name but not held: left by its previous life (or
            // by a failed end). Another manager's: left once that manager went silent.
            let mine = job.owner.as_deref() == Some(self.settings.owner.as_str());
            let silent = job
                .owner_seen
                .is_none_or(|seen| seen < now - self.settings.stale_after);
            if mine || silent {
                self.end_left_over(job).await?;
            }
        }
        let ids: Vec<i64> = self.open.keys().copied().collect();
        for id in ids {
            if let Some(job) = running.iter().find(|j| j.id == id) {
                self.watch(job).await?;
            } else {
                // Ended by someone else (an admin, another manager): close ours too.
                if let Some(held) = self.open.remove(&id) {
                    let _ = self.close(held).await?;
                }
            }
        }
        self.store.enqueue_due_scans(now).await?;
        // Snapshots first: a VM is never frozen again on top of an overlay not committed back.
        settle(&self.store, &self.connections).await?;
        self.start_queued().await
    }

    /// Ends a copy; a snapshot is handed to the overlay keeper (recorded before anything else,
    /// so that it is committed back whatever happens next).
    async fn close(&self, held: Held) -> StoreResult<Result<(), LibvirtError>> {
        if let Some(row) = &held.overlay {
            self.store.add_overlay(row).await?;
        }
        Ok(held.export.end().await)
    }

    /// Ends a backup recorded by a manager that no longer holds it.
    async fn end_left_over(&mut self, job: &VmJobRow) -> StoreResult<()> {
        let now = crate::time::now();
        let owner = job.owner.clone().unwrap_or_default();
        let reason = format!(
            "the manager holding its backup ({owner}) stopped; its backup was ended{}",
            retry_note(job)
        );
        let recorded: Option<RecordedBackup> = job
            .backup
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok());
        // The URI as recorded: the connection may have been removed since.
        let (plan, uri) = match &recorded {
            Some(r) => (r.plan.clone(), Some(r.uri.clone())),
            None => (None, None),
        };
        let mut backup_was_open = false;
        let mut details = Vec::new();
        if let (Some(plan), Some(uri)) = (plan, uri) {
            let hv = match self.connections.get(&job.hypervisor, &uri).await {
                Ok(hv) => hv,
                Err(e) => {
                    // Try again next tick: the backup may still be open.
                    eprintln!(
                        "coldscan-manager: VM job {}: left-over backup not ended: {e}",
                        job.id
                    );
                    return Ok(());
                }
            };
            let uuid = job.uuid.clone();
            match blocking(move || end_recorded(&hv, &uuid, &plan)).await {
                Ok(LeftOver::Aborted) => {
                    backup_was_open = true;
                    details.push("left-over backup aborted");
                }
                Ok(LeftOver::NotRunning) => details.push("no backup was left running"),
                Err(e) => {
                    self.connections.drop_connection(&job.hypervisor);
                    eprintln!(
                        "coldscan-manager: VM job {}: left-over backup not ended: {e}",
                        job.id
                    );
                    return Ok(());
                }
            }
        }
        // The snapshot fallback, unless the backup it stands in for was the one open: whatever
        // it took is committed back by the keeper; its socket went with its manager.
        if let Some((snapshot, uri)) = recorded
            .as_ref()
            .and_then(|r| Some((r.snapshot.as_ref()?, &r.uri)))
            .filter(|_| !backup_was_open)
        {
            self.store
                .add_overlay(&overlay_row(job, uri, snapshot, now))
                .await?;
            if let Some(dir) = snapshot.private_dir.as_deref().filter(|d| d.exists()) {
                let _ = std::fs::remove_dir_all(dir);
            }
            details.push("its snapshot (if taken) is handed to the overlay keeper");
        }
        if details.is_empty() {
            details.push("no backup plan was recorded");
        }
        let detail = details.join("; ");
        self.store
            .log_vm_job(job.id, "left-over", Some(&job.hypervisor), &detail, now)
            .await?;
        self.store
            .end_vm_job(job.id, &retry_or_fail(job, reason), "end", now)
            .await
    }

    /// Looks at one of this manager's open backups and ends it when its disk jobs are over.
    async fn watch(&mut self, job: &VmJobRow) -> StoreResult<()> {
        let now = crate::time::now();
        let expired = self.store.expire_disk_jobs(job.id, now).await?;
        // Only this attempt's disk jobs: earlier backups' ones ended with them.
        let disks: Vec<_> = self
            .store
            .disk_jobs(job.id)
            .await?
            .into_iter()
            .filter(|d| d.attempt == job.attempts)
            .collect();
        let end = if expired > 0 {
            let why: Vec<String> = disks
                .iter()
                .filter(|d| d.state == "failed")
                .map(|d| {
                    format!(
                        "disk {}: {}",
                        d.disk,
                        d.error.as_deref().unwrap_or("failed")
                    )
                })
                .collect();
            Some(retry_or_fail(
                job,
                format!("{}{}", why.join("; "), retry_note(job)),
            ))
        } else if disks.is_empty() {
            Some(VmJobEnd::Failed(
                "no disk job was queued for its backup".into(),
            ))
        } else if disks
            .iter()
            .all(|d| d.state == "done" || d.state == "failed")
        {
            let mut failures = Vec::new();
            for d in &disks {
                if d.state == "failed" {
                    failures.push(format!(
                        "disk {}: {}",
                        d.disk,
                        d.error.as_deref().unwrap_or("failed")
                    ));
                } else if let Some(scan) = d.report {
                    if let Some(why) = self.unreadable(scan).await? {
                        failures.push(format!("disk {}: {why}", d.disk));
                    }
                }
            }
            Some(if failures.is_empty() {
                VmJobEnd::Done
            } else {
                VmJobEnd::Failed(failures.join("; "))
            })
        } else {
            let alive = match self.open.get(&job.id) {
                Some(held) => held.export.alive().await,
                None => true,
            };
            (!alive).then(|| {
                VmJobEnd::Failed(format!(
                    "the backup of {} ended under the scan (aborted outside coldscan, or the VM \
                     stopped): its NBD export is gone",
                    job.name
                ))
            })
        };
        let Some(end) = end else { return Ok(()) };
        let scans: Vec<i64> = disks
            .iter()
            .filter(|d| d.state == "done")
            .filter_map(|d| d.report)
            .collect();
        self.act_on_detections(job, &scans).await?;
        let mut end = end;
        if let Some(held) = self.open.remove(&job.id) {
            if let Err(e) = self.close(held).await? {
                let why = format!("ending its point-in-time copy failed: {e}");
                end = match end {
                    VmJobEnd::Done => VmJobEnd::Failed(why),
                    VmJobEnd::Failed(r) => VmJobEnd::Failed(format!("{r}; {why}")),
                    VmJobEnd::Retry(r) => VmJobEnd::Retry(format!("{r}; {why}")),
                };
            }
        }
        self.store
            .end_vm_job(job.id, &end, "end", crate::time::now())
            .await
    }

    /// Applies the VM's `on_detection` policy when one of `scans` (its disks' reports) holds a
    /// detection: `quarantine` cuts its network through libvirt (idempotent: a VM already
    /// quarantined is left as it is). The outcome, or why it failed, goes to the VM job's log;
    /// a failed quarantine does not change the scan's result.
    async fn act_on_detections(&self, job: &VmJobRow, scans: &[i64]) -> StoreResult<()> {
        let Some(vm) = self.store.find_vm(&job.uuid).await? else {
            return Ok(());
        };
        if vm.policy.on_detection != OnDetection::Quarantine {
            return Ok(());
        }
        let mut infected = None;
        for &scan in scans {
            let filter = Filter {
                scan: Some(scan),
                ..Filter::default()
            };
            if !self
                .store
                .list_detections(&filter, None, 1)
                .await?
                .is_empty()
            {
                infected = Some(scan);
                break;
            }
        }
        let Some(scan) = infected else { return Ok(()) };
        let hypervisors = self.store.list_hypervisors().await?;
        let detail = match hypervisors.iter().find(|h| h.name == job.hypervisor) {
            None => format!(
                "quarantine of {} not done: connection {} is no longer registered",
                vm.name, job.hypervisor
            ),
            Some(h) => match self.connections.get(&h.name, &h.uri).await {
                Err(e) => format!("quarantine of {} not done: {e}", vm.name),
                Ok(hv) => match quarantine::on_detection(&hv, &job.uuid, scan, &self.store).await {
                    Ok(outcome) if outcome.changed => {
                        format!("{} quarantined: detections in scan {scan}", vm.name)
                    }
                    Ok(_) => format!("{} was already quarantined", vm.name),
                    Err(e) => format!("quarantine of {} failed: {e}", vm.name),
                },
            },
        };
        eprintln!("coldscan-manager: VM job {}: {detail}", job.id);
        self.store
            .log_vm_job(
                job.id,
                "quarantine",
                Some(&job.hypervisor),
                &detail,
                crate::time::now(),
            )
            .await
    }

    /// Why a disk's report says its export could not be read at all, if it does.
    async fn unreadable(&self, scan: i64) -> StoreResult<Option<String>> {
        let filter = Filter {
            scan: Some(scan),
            ..Filter::default()
        };
        let rows = self.store.list_not_scanned(&filter, None, 100).await?;
        Ok(rows
            .iter()
            .find(|n| n.path.is_none() && n.partition.is_none())
            .map(|n| format!("its export could not be read ({}: {})", n.reason, n.detail)))
    }

    /// Starts queued jobs while the limits allow.
    async fn start_queued(&mut self) -> StoreResult<()> {
        let queued = self.store.vm_jobs_in("queued", QUEUED_PER_TICK).await?;
        if queued.is_empty() {
            return Ok(());
        }
        let hypervisors = self.store.list_hypervisors().await?;
        let unsettled: HashSet<String> = self
            .store
            .list_overlays()
            .await?
            .into_iter()
            .map(|o| o.uuid)
            .collect();
        let mut full: HashSet<String> = HashSet::new();
        for job in queued {
            if full.contains(&job.hypervisor) {
                continue;
            }
            let now = crate::time::now();
            let Some(hv_row) = hypervisors.iter().find(|h| h.name == job.hypervisor) else {
                let why = format!(
                    "the VM's connection {} is not registered (hypervisor add)",
                    job.hypervisor
                );
                self.store
                    .end_vm_job(job.id, &VmJobEnd::Failed(why), "not-started", now)
                    .await?;
                continue;
            };
            let Some(vm) = self.store.find_vm(&job.uuid).await? else {
                continue;
            };
            if vm.state != "running" {
                let why = format!(
                    "VM {} is {}: a point-in-time backup needs a running VM",
                    vm.name, vm.state
                );
                self.store
                    .end_vm_job(job.id, &VmJobEnd::Failed(why), "not-started", now)
                    .await?;
                continue;
            }
            let local = is_local(&hv_row.uri);
            let listen = hv_row
                .nbd_listen
                .clone()
                .or_else(|| self.settings.nbd_listen.clone());
            let method = CopyMethod::parse(&hv_row.method).unwrap_or(CopyMethod::Auto);
            if method != CopyMethod::Backup && local && unsettled.contains(&job.uuid) {
                // Its last snapshot is not committed back yet (the keeper is on it): wait.
                continue;
            }
            if method == CopyMethod::Snapshot && !local {
                let why = format!(
                    "connection {} is remote: the snapshot fallback serves the frozen images                      from the manager's host, so it needs a local connection (use backup jobs)",
                    hv_row.name
                );
                self.store
                    .end_vm_job(job.id, &VmJobEnd::Failed(why), "not-started", now)
                    .await?;
                continue;
            }
            if listen.is_none() && !local {
                let why = format!(
                    "connection {} is remote: its NBD exports need an address (hypervisor add \
                     --nbd-listen, or serve --nbd-listen)",
                    hv_row.name
                );
                self.store
                    .end_vm_job(job.id, &VmJobEnd::Failed(why), "not-started", now)
                    .await?;
                continue;
            }
            let mut pools: Vec<String> = vm
                .disks
                .iter()
                .filter(|d| d.backupable)
                .filter_map(|d| d.pool.clone())
                .collect();
            pools.sort();
            pools.dedup();
            let pool_limits = self.store.pool_limits(&hv_row.name).await?;
            let tag = format!("cs-vmjob-{}-{}", job.id, job.attempts + 1);
            let running = self.store.vm_jobs_in("running", RUNNING_PER_TICK).await?;
            let used: HashSet<i64> = running
                .iter()
                .filter(|r| r.hypervisor == hv_row.name)
                .filter_map(|r| r.nbd_port)
                .collect();
            let ports: Vec<Option<u16>> = match &listen {
                None => vec![None],
                Some(_) => (self.settings.nbd_ports.0..=self.settings.nbd_ports.1)
                    .filter(|p| !used.contains(&i64::from(*p)))
                    .map(Some)
                    .collect(),
            };
            if ports.is_empty() {
                full.insert(hv_row.name.clone());
                continue;
            }
            let mut claimed = None;
            for port in ports {
                let plan = (method != CopyMethod::Snapshot).then(|| match (&listen, port) {
                    (Some(host), Some(port)) if !local => {
                        BackupPlan::remote(&tag, host.clone(), port)
                    }
                    (Some(host), Some(port)) => {
                        BackupPlan::local(&self.settings.work_dir, &tag, Some((host.clone(), port)))
                    }
                    _ => BackupPlan::local(&self.settings.work_dir, &tag, None),
                });
                // The fallback, planned as well in `auto` mode (used only if backup jobs are
                // unsupported), so that a restarted manager checks for it either way.
                let snapshot = (method != CopyMethod::Backup && local)
                    .then(|| snapshot_plan(&self.settings.work_dir, &tag, &listen, port));
                let recorded = RecordedBackup {
                    uri: hv_row.uri.clone(),
                    plan,
                    snapshot,
                };
                let recorded_json = serde_json::to_string(&recorded).unwrap_or_default();
                let claim = VmJobClaim {
                    id: job.id,
                    owner: &self.settings.owner,
                    hypervisor: &hv_row.name,
                    pools: &pools,
                    host_limit: hv_row.max_backups,
                    pool_limits: &pool_limits,
                    default_pool_limit: self.settings.pool_backups,
                    nbd_port: port.map(i64::from),
                    backup: &recorded_json,
                    now,
                };
                match self.store.claim_vm_job(&claim).await? {
                    VmClaim::Claimed => {
                        claimed = Some(recorded);
                        break;
                    }
                    VmClaim::PortTaken => continue,
                    VmClaim::OverLimit | VmClaim::Gone => break,
                }
            }
            let Some(recorded) = claimed else { continue };
            self.begin(&job, &hv_row.name, &hv_row.uri, recorded)
                .await?;
        }
        Ok(())
    }
}

/// Retry while attempts remain, else fail.
fn retry_or_fail(job: &VmJobRow, reason: String) -> VmJobEnd {
    if job.attempts < job.max_attempts {
        VmJobEnd::Retry(reason)
    } else {
        VmJobEnd::Failed(reason)
    }
}

/// What happens next, for the reason text.
fn retry_note(job: &VmJobRow) -> String {
    if job.attempts < job.max_attempts {
        format!(
            " (attempt {} of {}: queued again for a new backup)",
            job.attempts, job.max_attempts
        )
    } else {
        format!(
            " (attempt {} of {}: given up)",
            job.attempts, job.max_attempts
        )
    }
}
