//! Storage of the hypervisor side (schema `0002_vms.sql`): libvirt connections, the VM inventory
//! kept in sync with them (keyed by UUID, so that policy survives a rename or a migration)
//! ([`VmStore`], SQL in `vms_inventory.rs`), VM scan jobs and their disk jobs, and the log of
//! backups begun and ended ([`VmJobStore`], SQL in `vms_jobs.rs`). Like
//! [`shared`](super::shared), one SQL text for both backends; a backend also provides
//! `LOCK_VM_JOBS`, the statement that serializes VM job starts (so that two managers on one
//! PostgreSQL database cannot both pass a concurrency limit).

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::StoreResult;

/// Default of the concurrency limits (backups open at once per connection and per storage
/// pool): DSVA's "max concurrent scans", recommended 4.
pub const DEFAULT_MAX_BACKUPS: i64 = 4;

/// A hypervisor connection as stored.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HypervisorRow {
    /// Its name (chosen by the admin).
    pub name: String,
    /// The libvirt URI.
    pub uri: String,
    /// Backups open at once on it.
    pub max_backups: i64,
    /// Address its backups' NBD servers listen on, if set for this connection.
    pub nbd_listen: Option<String>,
    /// How it takes point-in-time copies: `auto`, `backup` or `snapshot`.
    pub method: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds of the last successful inventory sync.
    pub last_sync: Option<i64>,
    /// The last sync's error, if it failed.
    pub last_error: Option<String>,
}

/// One disk of a VM, as the inventory keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmDisk {
    /// Guest-side name (`vda`).
    pub target: String,
    /// `disk`, `cdrom`...
    pub device: String,
    /// Where the data lives (file, device, `POOL/VOLUME`...).
    pub source: Option<String>,
    /// Image format, when given.
    pub format: Option<String>,
    /// The libvirt storage pool holding it, when libvirt knows it.
    pub pool: Option<String>,
    /// Whether a backup can export it.
    pub backupable: bool,
}

/// A domain as one inventory pass saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSeen {
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// `running`, `paused`, `shutoff`...
    pub state: String,
    /// Disks.
    pub disks: Vec<VmDisk>,
}

/// What one inventory pass changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    /// UUIDs seen for the first time.
    pub created: Vec<String>,
    /// UUIDs whose name changed.
    pub renamed: Vec<String>,
    /// UUIDs that came from another connection.
    pub migrated: Vec<String>,
    /// UUIDs no longer listed.
    pub gone: Vec<String>,
}

/// Per-VM policy, keyed by UUID.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmPolicy {
    /// Scan every this many seconds (None: on demand only).
    pub scan_interval: Option<i64>,
    /// Scans start only inside this UTC window: (start, end) in minutes of the day; a window
    /// whose end is before its start spans midnight.
    pub window: Option<(i64, i64)>,
    /// Labels.
    pub labels: Vec<String>,
    /// What a detection in one of its scans triggers.
    #[serde(default)]
    pub on_detection: OnDetection,
}

/// What a detection in a VM's scan triggers besides the report (and its webhooks).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnDetection {
    /// Nothing more.
    #[default]
    Report,
    /// Isolate the VM: its interfaces' links set down through libvirt (undone by `vm release`).
    Quarantine,
}

impl OnDetection {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            OnDetection::Report => "report",
            OnDetection::Quarantine => "quarantine",
        }
    }

    /// The action stored as `s` (anything else, which the schema's CHECK refuses: `Report`).
    pub fn parse(s: &str) -> OnDetection {
        match s {
            "quarantine" => OnDetection::Quarantine,
            _ => OnDetection::Report,
        }
    }
}

/// A VM as listed.
#[derive(Debug, Clone, Serialize)]
pub struct VmRow {
    /// UUID.
    pub uuid: String,
    /// Name.
    pub name: String,
    /// The connection it was last seen on.
    pub hypervisor: String,
    /// State (`gone` once no connection lists it).
    pub state: String,
    /// Disks.
    pub disks: Vec<VmDisk>,
    /// Unix seconds.
    pub first_seen: i64,
    /// Unix seconds.
    pub last_seen: i64,
    /// Unix seconds it stopped being listed.
    pub gone: Option<i64>,
    /// Policy.
    pub policy: VmPolicy,
    /// Unix seconds of the next scheduled scan.
    pub next_scan: Option<i64>,
    /// The newest VM job's id, state, and detections found by it.
    pub last_job: Option<VmJobSummary>,
}

/// The outcome of a VM job, for listings.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VmJobSummary {
    /// VM job id.
    pub id: i64,
    /// `queued`, `running`, `done`, `failed`.
    pub state: String,
    /// Unix seconds it ended.
    pub finished: Option<i64>,
    /// Detections in its disks' reports.
    pub detections: i64,
    /// Why it failed.
    pub error: Option<String>,
}

/// A VM job with what starting or watching it needs.
#[derive(Debug, Clone, Serialize)]
pub struct VmJobRow {
    /// Id.
    pub id: i64,
    /// The VM's UUID.
    pub uuid: String,
    /// The VM's name (now).
    pub name: String,
    /// `queued`, `running`, `done`, `failed`.
    pub state: String,
    /// Unix seconds.
    pub created: i64,
    /// Disk jobs only for this appliance.
    pub appliance: Option<String>,
    /// Backups begun so far.
    pub attempts: i64,
    /// Most backups to begin.
    pub max_attempts: i64,
    /// Connection of the VM (queued) or of its backup (running).
    pub hypervisor: String,
    /// Storage pools of its disks (running).
    pub pools: Vec<String>,
    /// Manager holding its backup.
    pub owner: Option<String>,
    /// Unix seconds that manager last said it holds it.
    pub owner_seen: Option<i64>,
    /// TCP port of its NBD server.
    pub nbd_port: Option<i64>,
    /// What its backup left to clean up (JSON, see `vms::jobs`).
    pub backup: Option<String>,
    /// Unix seconds.
    pub started: Option<i64>,
    /// Unix seconds.
    pub finished: Option<i64>,
    /// Why it failed (or why its last attempt did).
    pub error: Option<String>,
}

/// A disk job of a VM job.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DiskJobRow {
    /// Job id (in the appliance queue).
    pub job: i64,
    /// Disk target (`vda`).
    pub disk: String,
    /// Job state.
    pub state: String,
    /// Who claimed it last.
    pub claimed_by: Option<String>,
    /// Unix seconds of its lease's end.
    pub lease_expires: Option<i64>,
    /// Scan id of its report.
    pub report: Option<i64>,
    /// Error.
    pub error: Option<String>,
    /// Detections in its report.
    pub detections: i64,
    /// The VM job's attempt (backup) it read.
    pub attempt: i64,
}

/// Taking a queued VM job to start its backup.
#[derive(Debug, Clone)]
pub struct VmJobClaim<'a> {
    /// The VM job.
    pub id: i64,
    /// This manager.
    pub owner: &'a str,
    /// The VM's connection.
    pub hypervisor: &'a str,
    /// Its disks' storage pools.
    pub pools: &'a [String],
    /// Backups allowed at once on the connection.
    pub host_limit: i64,
    /// Backups allowed at once per pool (pools not listed: `default_pool_limit`).
    pub pool_limits: &'a [(String, i64)],
    /// Default per-pool limit.
    pub default_pool_limit: i64,
    /// The NBD port it will listen on (TCP), not used by another open backup of the connection.
    pub nbd_port: Option<i64>,
    /// What the backup will leave to clean up (JSON), recorded before it begins.
    pub backup: &'a str,
    /// Unix seconds.
    pub now: i64,
}

/// Result of [`VmStore::claim_vm_job`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmClaim {
    /// Taken: its backup may begin.
    Claimed,
    /// A limit is reached: it stays queued.
    OverLimit,
    /// The NBD port is taken by another open backup: pick another.
    PortTaken,
    /// It is no longer queued.
    Gone,
}

/// How a VM job's backup ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmJobEnd {
    /// Every disk was scanned.
    Done,
    /// Failed for good, with the reason.
    Failed(String),
    /// Queued again for a new backup (attempts left), with the reason.
    Retry(String),
}

/// A line of the backup log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VmJobLogRow {
    /// Order.
    pub id: i64,
    /// VM job.
    pub vm_job: i64,
    /// Unix seconds.
    pub at: i64,
    /// `begin`, `end`, `begin-failed`, `stale-end`.
    pub event: String,
    /// Connection.
    pub hypervisor: Option<String>,
    /// Detail.
    pub detail: String,
}

/// An inventory event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VmEventRow {
    /// Unix seconds.
    pub at: i64,
    /// `created`, `renamed`, `migrated`, `state`, `gone`, `back`.
    pub event: String,
    /// Detail.
    pub detail: String,
}

/// The hypervisor side of the [`Store`](super::Store). Every method is one transaction.
pub trait VmStore: Clone + Send + Sync + 'static {
    /// Adds a connection; [`StoreError::Conflict`](super::StoreError::Conflict) if the name is
    /// taken.
    fn add_hypervisor(
        &self,
        name: &str,
        uri: &str,
        max_backups: i64,
        nbd_listen: Option<&str>,
        now: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Every connection.
    fn list_hypervisors(&self) -> impl Future<Output = StoreResult<Vec<HypervisorRow>>> + Send;
    /// Removes a connection (its VMs stay listed, as gone, until another connection lists
    /// them); false if there was none.
    fn remove_hypervisor(
        &self,
        name: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Sets a connection's limit; false if there is no such connection.
    fn set_hypervisor_limit(
        &self,
        name: &str,
        max_backups: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Sets the limit of one storage pool of a connection.
    fn set_pool_limit(
        &self,
        hypervisor: &str,
        pool: &str,
        max_backups: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Every per-pool limit of a connection.
    fn pool_limits(
        &self,
        hypervisor: &str,
    ) -> impl Future<Output = StoreResult<Vec<(String, i64)>>> + Send;

    /// Records one inventory pass of a connection: inserts new VMs, follows renames, takes over
    /// VMs that another connection no longer lists (a migration), marks unlisted ones gone.
    fn sync_inventory(
        &self,
        hypervisor: &str,
        seen: &[VmSeen],
        now: i64,
    ) -> impl Future<Output = StoreResult<SyncOutcome>> + Send;
    /// Records a failed inventory pass.
    fn sync_failed(
        &self,
        hypervisor: &str,
        error: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Every VM, by connection and name.
    fn list_vms(&self) -> impl Future<Output = StoreResult<Vec<VmRow>>> + Send;
    /// The VM with this UUID, else the listed (not gone) VM with this name.
    fn find_vm(&self, key: &str) -> impl Future<Output = StoreResult<Option<VmRow>>> + Send;
    /// A VM's inventory events, oldest first.
    fn vm_events(&self, uuid: &str) -> impl Future<Output = StoreResult<Vec<VmEventRow>>> + Send;
    /// Sets a VM's policy (and its next scan: now when it gets an interval); false if no VM has
    /// this UUID.
    fn set_vm_policy(
        &self,
        uuid: &str,
        policy: &VmPolicy,
        now: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// VMs due for a scheduled scan at `now` (inside their window) with no open VM job: queues
    /// one for each and moves their next scan on by their interval. Returns the new job ids.
    fn enqueue_due_scans(&self, now: i64) -> impl Future<Output = StoreResult<Vec<i64>>> + Send;
}

/// VM scan jobs, their disk jobs and the backup log: the other half of the hypervisor side of
/// the [`Store`](super::Store). Every method is one transaction.
pub trait VmJobStore: Clone + Send + Sync + 'static {
    /// Queues a scan of the VM with this UUID; returns its id.
    fn enqueue_vm_job(
        &self,
        uuid: &str,
        appliance: Option<&str>,
        now: i64,
    ) -> impl Future<Output = StoreResult<i64>> + Send;
    /// VM jobs in `state`, oldest first.
    fn vm_jobs_in(
        &self,
        state: &str,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<VmJobRow>>> + Send;
    /// VM jobs, newest first, of one VM or all.
    fn list_vm_jobs(
        &self,
        uuid: Option<&str>,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<VmJobRow>>> + Send;
    /// Takes a queued VM job if the limits allow (checked in the same transaction, with VM job
    /// starts serialized), recording its owner, port and clean-up before its backup begins.
    fn claim_vm_job(
        &self,
        claim: &VmJobClaim<'_>,
    ) -> impl Future<Output = StoreResult<VmClaim>> + Send;
    /// Queues one appliance job per exported disk (`(disk, target URL)`) of a VM job whose backup
    /// began; returns their ids.
    fn add_disk_jobs(
        &self,
        vm_job: i64,
        disks: &[(String, String)],
        now: i64,
    ) -> impl Future<Output = StoreResult<Vec<i64>>> + Send;
    /// The disk jobs of a VM job.
    fn disk_jobs(&self, vm_job: i64) -> impl Future<Output = StoreResult<Vec<DiskJobRow>>> + Send;
    /// Fails the disk jobs of a VM job whose lease ran out at `now` (they are not handed out
    /// again: the backup they read is ended); returns how many.
    fn expire_disk_jobs(
        &self,
        vm_job: i64,
        now: i64,
    ) -> impl Future<Output = StoreResult<u64>> + Send;
    /// Ends a running VM job after its backup ended: open disk jobs fail with the reason, the
    /// job is done, failed, or queued again; logs `end` (with `event`).
    fn end_vm_job(
        &self,
        vm_job: i64,
        end: &VmJobEnd,
        event: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Marks the running VM jobs of `owner` as still held at `now`.
    fn touch_vm_jobs(&self, owner: &str, now: i64) -> impl Future<Output = StoreResult<()>> + Send;
    /// Appends to the backup log.
    fn log_vm_job(
        &self,
        vm_job: i64,
        event: &str,
        hypervisor: Option<&str>,
        detail: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// The backup log, oldest first.
    fn vm_job_log(&self) -> impl Future<Output = StoreResult<Vec<VmJobLogRow>>> + Send;
}

/// Decodes the stored disk list.
pub(crate) fn disks_from(json: &str) -> Vec<VmDisk> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Decodes stored labels or pools.
pub(crate) fn strings_from(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// The columns of a [`VmRow`] (without its last job), as selected by `VM_COLUMNS`.
pub(crate) type VmTuple = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
    Option<i64>,
    String,
);

/// A [`VmRow`] from its columns and its last job.
pub(crate) fn vm_row(t: VmTuple, last_job: Option<VmJobSummary>) -> VmRow {
    VmRow {
        uuid: t.0,
        name: t.1,
        hypervisor: t.2,
        state: if t.7.is_some() { "gone".into() } else { t.3 },
        disks: disks_from(&t.4),
        first_seen: t.5,
        last_seen: t.6,
        gone: t.7,
        policy: VmPolicy {
            scan_interval: t.8,
            window: t.9.zip(t.10),
            labels: strings_from(&t.11),
            on_detection: OnDetection::parse(&t.13),
        },
        next_scan: t.12,
        last_job,
    }
}

/// Whether a backup of a VM on `hypervisor` with disks on `pools` may begin while `running`
/// (each: connection, pools) are open: fewer than `host_limit` on the connection and, for each
/// of its pools, fewer than that pool's limit on it.
pub fn admits(
    hypervisor: &str,
    pools: &[String],
    host_limit: i64,
    pool_limit: impl Fn(&str) -> i64,
    running: &[(String, Vec<String>)],
) -> bool {
    let on_host: Vec<&Vec<String>> = running
        .iter()
        .filter(|(h, _)| h == hypervisor)
        .map(|(_, p)| p)
        .collect();
    if i64::try_from(on_host.len()).unwrap_or(i64::MAX) >= host_limit {
        return false;
    }
    let mut distinct: Vec<&String> = pools.iter().collect();
    distinct.sort();
    distinct.dedup();
    distinct.into_iter().all(|pool| {
        let open = on_host.iter().filter(|p| p.contains(pool)).count();
        i64::try_from(open).unwrap_or(i64::MAX) < pool_limit(pool)
    })
}

/// Whether `now` (Unix seconds) is inside the UTC window `(start, end)` in minutes of the day.
pub fn in_window(window: Option<(i64, i64)>, now: i64) -> bool {
    let Some((start, end)) = window else {
        return true;
    };
    let minute = now.rem_euclid(86_400) / 60;
    if start <= end {
        (start..end).contains(&minute)
    } else {
        minute >= start || minute < end
    }
}
