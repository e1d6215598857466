//! Storage of the hypervisor side (schema `0002_vms.sql`): libvirt connections, the VM inventory
//! kept in sync with them (keyed by UUID, so that policy survives a rename or a migration), VM
//! scan jobs and their disk jobs, and the log of backups begun and ended. Like
//! [`shared`](super::shared), one SQL text for both backends through [`impl_vm_store!`]; a backend
//! also provides `LOCK_VM_JOBS`, the statement that serializes VM job starts (so that two
//! managers on one PostgreSQL database cannot both pass a concurrency limit).

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
);

/// `SELECT` list of a VM row (a literal, for `concat!`).
macro_rules! vm_columns {
    () => {
        "uuid, name, hypervisor, state, disks, first_seen, last_seen, gone, scan_interval, \
         window_start, window_end, labels, next_scan"
    };
}

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
        },
        next_scan: t.12,
        last_job,
    }
}

/// `SELECT` list of a VM job row (`j` = vm_jobs, `v` = vms), read by `vm_job_from_row!` (a
/// literal, for `concat!`).
macro_rules! vm_job_columns {
    () => {
        "j.id, j.uuid, v.name, j.state, j.created, j.appliance, j.attempts, j.max_attempts, \
         COALESCE(j.hypervisor, v.hypervisor), j.pools, j.owner, j.owner_seen, j.nbd_port, \
         j.backup, j.started, j.finished, j.error"
    };
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

/// A [`VmJobRow`] from a row selected with [`VM_JOB_COLUMNS`].
macro_rules! vm_job_from_row {
    ($row:expr) => {{
        use sqlx::Row as _;
        let r = $row;
        Ok::<_, sqlx::Error>($crate::store::vms::VmJobRow {
            id: r.try_get(0)?,
            uuid: r.try_get(1)?,
            name: r.try_get(2)?,
            state: r.try_get(3)?,
            created: r.try_get(4)?,
            appliance: r.try_get(5)?,
            attempts: r.try_get(6)?,
            max_attempts: r.try_get(7)?,
            hypervisor: r.try_get(8)?,
            pools: r
                .try_get::<Option<String>, _>(9)?
                .as_deref()
                .map($crate::store::vms::strings_from)
                .unwrap_or_default(),
            owner: r.try_get(10)?,
            owner_seen: r.try_get(11)?,
            nbd_port: r.try_get(12)?,
            backup: r.try_get(13)?,
            started: r.try_get(14)?,
            finished: r.try_get(15)?,
            error: r.try_get(16)?,
        })
    }};
}

/// Implements [`VmStore`] for `$store` (a struct with a `pool: sqlx::Pool<$db>` field; the
/// backend module has `begin_write` and `LOCK_VM_JOBS`).
macro_rules! impl_vm_store {
    ($store:ty) => {
        impl $crate::store::vms::VmStore for $store {
            async fn add_hypervisor(
                &self,
                name: &str,
                uri: &str,
                max_backups: i64,
                nbd_listen: Option<&str>,
                now: i64,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query(
                    "INSERT INTO hypervisors (name, uri, max_backups, nbd_listen, created) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(name)
                .bind(uri)
                .bind(max_backups)
                .bind(nbd_listen)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::store::conflict(e, &format!("a hypervisor named {name:?}")))?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_hypervisors(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::vms::HypervisorRow>> {
                #[allow(clippy::type_complexity)]
                let rows: Vec<(String, String, i64, Option<String>, i64, Option<i64>, Option<String>)> =
                    sqlx::query_as(
                        "SELECT name, uri, max_backups, nbd_listen, created, last_sync, last_error \
                         FROM hypervisors ORDER BY name",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::vms::HypervisorRow {
                        name: r.0,
                        uri: r.1,
                        max_backups: r.2,
                        nbd_listen: r.3,
                        created: r.4,
                        last_sync: r.5,
                        last_error: r.6,
                    })
                    .collect())
            }

            async fn remove_hypervisor(
                &self,
                name: &str,
                now: i64,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = begin_write(&self.pool).await?;
                let done = sqlx::query("DELETE FROM hypervisors WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                if done {
                    let gone: Vec<(String,)> = sqlx::query_as(
                        "UPDATE vms SET gone = $2 WHERE hypervisor = $1 AND gone IS NULL RETURNING uuid",
                    )
                    .bind(name)
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?;
                    for (uuid,) in gone {
                        sqlx::query(
                            "INSERT INTO vm_events (uuid, at, event, detail) VALUES ($1, $2, 'gone', $3)",
                        )
                        .bind(&uuid)
                        .bind(now)
                        .bind(format!("connection {name} removed"))
                        .execute(&mut *tx)
                        .await?;
                    }
                    sqlx::query("DELETE FROM pool_limits WHERE hypervisor = $1")
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(done)
            }

            async fn set_hypervisor_limit(
                &self,
                name: &str,
                max_backups: i64,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = begin_write(&self.pool).await?;
                let done = sqlx::query("UPDATE hypervisors SET max_backups = $2 WHERE name = $1")
                    .bind(name)
                    .bind(max_backups)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                tx.commit().await?;
                Ok(done)
            }

            async fn set_pool_limit(
                &self,
                hypervisor: &str,
                pool: &str,
                max_backups: i64,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query(
                    "INSERT INTO pool_limits (hypervisor, pool, max_backups) VALUES ($1, $2, $3) \
                     ON CONFLICT (hypervisor, pool) DO UPDATE SET max_backups = excluded.max_backups",
                )
                .bind(hypervisor)
                .bind(pool)
                .bind(max_backups)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn pool_limits(
                &self,
                hypervisor: &str,
            ) -> $crate::store::StoreResult<Vec<(String, i64)>> {
                Ok(sqlx::query_as(
                    "SELECT pool, max_backups FROM pool_limits WHERE hypervisor = $1 ORDER BY pool",
                )
                .bind(hypervisor)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn sync_inventory(
                &self,
                hypervisor: &str,
                seen: &[$crate::store::vms::VmSeen],
                now: i64,
            ) -> $crate::store::StoreResult<$crate::store::vms::SyncOutcome> {
                let mut out = $crate::store::vms::SyncOutcome::default();
                let mut tx = begin_write(&self.pool).await?;
                let known: Vec<(String,)> = sqlx::query_as("SELECT name FROM hypervisors")
                    .fetch_all(&mut *tx)
                    .await?;
                if !known.iter().any(|(n,)| n == hypervisor) {
                    // Removed while this pass ran: nothing of it is recorded.
                    tx.commit().await?;
                    return Ok(out);
                }
                let mut events: Vec<(String, &str, String)> = Vec::new();
                for vm in seen {
                    let disks = serde_json::to_string(&vm.disks).unwrap_or_else(|_| "[]".into());
                    let row: Option<(String, String, String, Option<i64>)> = sqlx::query_as(
                        "SELECT hypervisor, name, state, gone FROM vms WHERE uuid = $1",
                    )
                    .bind(&vm.uuid)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((was_on, was_named, was_state, gone)) = row else {
                        sqlx::query(
                            "INSERT INTO vms (uuid, name, hypervisor, state, disks, first_seen, \
                             last_seen) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                        )
                        .bind(&vm.uuid)
                        .bind(&vm.name)
                        .bind(hypervisor)
                        .bind(&vm.state)
                        .bind(&disks)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        out.created.push(vm.uuid.clone());
                        events.push((vm.uuid.clone(), "created", format!("{} on {hypervisor}", vm.name)));
                        continue;
                    };
                    if was_on != hypervisor {
                        let listed_elsewhere =
                            gone.is_none() && known.iter().any(|(n,)| *n == was_on);
                        if listed_elsewhere {
                            // Both connections list it (a migration in progress, or two
                            // connections to one host): it stays where it was until that
                            // connection stops listing it.
                            continue;
                        }
                        out.migrated.push(vm.uuid.clone());
                        events.push((vm.uuid.clone(), "migrated", format!("from {was_on} to {hypervisor}")));
                    } else if gone.is_some() {
                        events.push((vm.uuid.clone(), "back", format!("listed again on {hypervisor}")));
                    }
                    if was_named != vm.name {
                        out.renamed.push(vm.uuid.clone());
                        events.push((vm.uuid.clone(), "renamed", format!("from {was_named} to {}", vm.name)));
                    }
                    if was_state != vm.state && gone.is_none() && was_on == hypervisor {
                        events.push((vm.uuid.clone(), "state", format!("{was_state} -> {}", vm.state)));
                    }
                    sqlx::query(
                        "UPDATE vms SET name = $2, hypervisor = $3, state = $4, disks = $5, \
                         last_seen = $6, gone = NULL WHERE uuid = $1",
                    )
                    .bind(&vm.uuid)
                    .bind(&vm.name)
                    .bind(hypervisor)
                    .bind(&vm.state)
                    .bind(&disks)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                let listed: Vec<(String,)> = sqlx::query_as(
                    "SELECT uuid FROM vms WHERE hypervisor = $1 AND gone IS NULL",
                )
                .bind(hypervisor)
                .fetch_all(&mut *tx)
                .await?;
                for (uuid,) in listed {
                    if seen.iter().any(|v| v.uuid == uuid) {
                        continue;
                    }
                    sqlx::query("UPDATE vms SET gone = $2 WHERE uuid = $1")
                        .bind(&uuid)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    events.push((uuid.clone(), "gone", format!("no longer listed by {hypervisor}")));
                    out.gone.push(uuid);
                }
                for (uuid, event, detail) in events {
                    sqlx::query("INSERT INTO vm_events (uuid, at, event, detail) VALUES ($1, $2, $3, $4)")
                        .bind(uuid)
                        .bind(now)
                        .bind(event)
                        .bind(detail)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("UPDATE hypervisors SET last_sync = $2, last_error = NULL WHERE name = $1")
                    .bind(hypervisor)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(out)
            }

            async fn sync_failed(
                &self,
                hypervisor: &str,
                error: &str,
                _now: i64,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query("UPDATE hypervisors SET last_error = $2 WHERE name = $1")
                    .bind(hypervisor)
                    .bind(error)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_vms(&self) -> $crate::store::StoreResult<Vec<$crate::store::vms::VmRow>> {
                let rows: Vec<$crate::store::vms::VmTuple> = sqlx::query_as(concat!(
                    "SELECT ",
                    vm_columns!(),
                    " FROM vms ORDER BY hypervisor, name, uuid"
                ))
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let last = self.last_vm_job(&r.0).await?;
                    out.push($crate::store::vms::vm_row(r, last));
                }
                Ok(out)
            }

            async fn find_vm(
                &self,
                key: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::vms::VmRow>> {
                let row: Option<$crate::store::vms::VmTuple> = sqlx::query_as(concat!(
                    "SELECT ",
                    vm_columns!(),
                    " FROM vms WHERE uuid = $1 OR (name = $1 AND gone IS NULL) \
                     ORDER BY CASE WHEN uuid = $1 THEN 0 ELSE 1 END LIMIT 1"
                ))
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    None => Ok(None),
                    Some(r) => {
                        let last = self.last_vm_job(&r.0).await?;
                        Ok(Some($crate::store::vms::vm_row(r, last)))
                    }
                }
            }

            async fn vm_events(
                &self,
                uuid: &str,
            ) -> $crate::store::StoreResult<Vec<$crate::store::vms::VmEventRow>> {
                let rows: Vec<(i64, String, String)> = sqlx::query_as(
                    "SELECT at, event, detail FROM vm_events WHERE uuid = $1 ORDER BY id",
                )
                .bind(uuid)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(at, event, detail)| $crate::store::vms::VmEventRow { at, event, detail })
                    .collect())
            }

            async fn set_vm_policy(
                &self,
                uuid: &str,
                policy: &$crate::store::vms::VmPolicy,
                now: i64,
            ) -> $crate::store::StoreResult<bool> {
                let labels = serde_json::to_string(&policy.labels).unwrap_or_else(|_| "[]".into());
                let mut tx = begin_write(&self.pool).await?;
                let done = sqlx::query(
                    "UPDATE vms SET scan_interval = $2, window_start = $3, window_end = $4, \
                     labels = $5, next_scan = $6 WHERE uuid = $1",
                )
                .bind(uuid)
                .bind(policy.scan_interval)
                .bind(policy.window.map(|w| w.0))
                .bind(policy.window.map(|w| w.1))
                .bind(labels)
                .bind(policy.scan_interval.map(|_| now))
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                tx.commit().await?;
                Ok(done)
            }

            async fn enqueue_due_scans(&self, now: i64) -> $crate::store::StoreResult<Vec<i64>> {
                let mut tx = begin_write(&self.pool).await?;
                let due: Vec<(String, i64, Option<i64>, Option<i64>)> = sqlx::query_as(
                    "SELECT uuid, scan_interval, window_start, window_end FROM vms v \
                     WHERE gone IS NULL AND scan_interval IS NOT NULL AND next_scan <= $1 \
                     AND NOT EXISTS (SELECT 1 FROM vm_jobs j WHERE j.uuid = v.uuid \
                     AND j.state IN ('queued', 'running')) ORDER BY next_scan",
                )
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                let mut ids = Vec::new();
                for (uuid, interval, start, end) in due {
                    if !$crate::store::vms::in_window(start.zip(end), now) {
                        continue;
                    }
                    let (id,): (i64,) = sqlx::query_as(
                        "INSERT INTO vm_jobs (uuid, state, created) VALUES ($1, 'queued', $2) RETURNING id",
                    )
                    .bind(&uuid)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await?;
                    sqlx::query("UPDATE vms SET next_scan = $2 WHERE uuid = $1")
                        .bind(&uuid)
                        .bind(now.saturating_add(interval.max(1)))
                        .execute(&mut *tx)
                        .await?;
                    ids.push(id);
                }
                tx.commit().await?;
                Ok(ids)
            }

            async fn enqueue_vm_job(
                &self,
                uuid: &str,
                appliance: Option<&str>,
                now: i64,
            ) -> $crate::store::StoreResult<i64> {
                let mut tx = begin_write(&self.pool).await?;
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO vm_jobs (uuid, state, created, appliance) \
                     VALUES ($1, 'queued', $2, $3) RETURNING id",
                )
                .bind(uuid)
                .bind(now)
                .bind(appliance)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(id)
            }

            async fn vm_jobs_in(
                &self,
                state: &str,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::vms::VmJobRow>> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    vm_job_columns!(),
                    " FROM vm_jobs j JOIN vms v ON v.uuid = j.uuid \
                     WHERE j.state = $1 ORDER BY j.id LIMIT $2"
                ))
                .bind(state)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    out.push(vm_job_from_row!(r)?);
                }
                Ok(out)
            }

            async fn list_vm_jobs(
                &self,
                uuid: Option<&str>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::vms::VmJobRow>> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    vm_job_columns!(),
                    " FROM vm_jobs j JOIN vms v ON v.uuid = j.uuid \
                     WHERE ($1 IS NULL OR j.uuid = $1) ORDER BY j.id DESC LIMIT $2"
                ))
                .bind(uuid)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    out.push(vm_job_from_row!(r)?);
                }
                Ok(out)
            }

            async fn claim_vm_job(
                &self,
                c: &$crate::store::vms::VmJobClaim<'_>,
            ) -> $crate::store::StoreResult<$crate::store::vms::VmClaim> {
                use $crate::store::vms::VmClaim;
                let mut tx = begin_write(&self.pool).await?;
                if !LOCK_VM_JOBS.is_empty() {
                    sqlx::query(LOCK_VM_JOBS).execute(&mut *tx).await?;
                }
                let state: Option<(String,)> = sqlx::query_as("SELECT state FROM vm_jobs WHERE id = $1")
                    .bind(c.id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if state.map(|s| s.0).as_deref() != Some("queued") {
                    tx.commit().await?;
                    return Ok(VmClaim::Gone);
                }
                let running: Vec<(Option<String>, Option<String>, Option<i64>)> = sqlx::query_as(
                    "SELECT hypervisor, pools, nbd_port FROM vm_jobs WHERE state = 'running'",
                )
                .fetch_all(&mut *tx)
                .await?;
                let open: Vec<(String, Vec<String>)> = running
                    .iter()
                    .map(|(h, p, _)| {
                        (
                            h.clone().unwrap_or_default(),
                            p.as_deref().map($crate::store::vms::strings_from).unwrap_or_default(),
                        )
                    })
                    .collect();
                let pool_limit = |pool: &str| {
                    c.pool_limits
                        .iter()
                        .find(|(p, _)| p == pool)
                        .map(|(_, l)| *l)
                        .unwrap_or(c.default_pool_limit)
                };
                if !$crate::store::vms::admits(c.hypervisor, c.pools, c.host_limit, pool_limit, &open) {
                    tx.commit().await?;
                    return Ok(VmClaim::OverLimit);
                }
                if c.nbd_port.is_some()
                    && running
                        .iter()
                        .any(|(h, _, port)| h.as_deref() == Some(c.hypervisor) && *port == c.nbd_port)
                {
                    tx.commit().await?;
                    return Ok(VmClaim::PortTaken);
                }
                sqlx::query(
                    "UPDATE vm_jobs SET state = 'running', attempts = attempts + 1, hypervisor = $2, \
                     pools = $3, owner = $4, owner_seen = $5, nbd_port = $6, backup = $7, \
                     started = $5 WHERE id = $1",
                )
                .bind(c.id)
                .bind(c.hypervisor)
                .bind(serde_json::to_string(c.pools).unwrap_or_else(|_| "[]".into()))
                .bind(c.owner)
                .bind(c.now)
                .bind(c.nbd_port)
                .bind(c.backup)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO vm_job_log (vm_job, at, event, hypervisor, detail) \
                     VALUES ($1, $2, 'begin', $3, $4)",
                )
                .bind(c.id)
                .bind(c.now)
                .bind(c.hypervisor)
                .bind(format!("by {} on pools {:?}", c.owner, c.pools))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(VmClaim::Claimed)
            }

            async fn add_disk_jobs(
                &self,
                vm_job: i64,
                disks: &[(String, String)],
                now: i64,
            ) -> $crate::store::StoreResult<Vec<i64>> {
                let mut tx = begin_write(&self.pool).await?;
                let (appliance, attempt): (Option<String>, i64) =
                    sqlx::query_as("SELECT appliance, attempts FROM vm_jobs WHERE id = $1")
                        .bind(vm_job)
                        .fetch_one(&mut *tx)
                        .await?;
                let mut ids = Vec::with_capacity(disks.len());
                for (disk, target) in disks {
                    let (id,): (i64,) = sqlx::query_as(
                        "INSERT INTO jobs (target, appliance, state, created, claims, vm_job, disk, \
                         vm_attempt) VALUES ($1, $2, 'queued', $3, 0, $4, $5, $6) RETURNING id",
                    )
                    .bind(target)
                    .bind(&appliance)
                    .bind(now)
                    .bind(vm_job)
                    .bind(disk)
                    .bind(attempt)
                    .fetch_one(&mut *tx)
                    .await?;
                    ids.push(id);
                }
                tx.commit().await?;
                Ok(ids)
            }

            async fn disk_jobs(
                &self,
                vm_job: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::vms::DiskJobRow>> {
                #[allow(clippy::type_complexity)]
                let rows: Vec<(i64, Option<String>, String, Option<String>, Option<i64>, Option<i64>, Option<String>, Option<i64>, Option<i64>)> =
                    sqlx::query_as(
                        "SELECT j.id, j.disk, j.state, j.claimed_by, j.lease_expires, j.report, j.error, \
                         s.detections, j.vm_attempt FROM jobs j LEFT JOIN scans s ON s.id = j.report \
                         WHERE j.vm_job = $1 ORDER BY j.id",
                    )
                    .bind(vm_job)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::vms::DiskJobRow {
                        job: r.0,
                        disk: r.1.unwrap_or_default(),
                        state: r.2,
                        claimed_by: r.3,
                        lease_expires: r.4,
                        report: r.5,
                        error: r.6,
                        detections: r.7.unwrap_or(0),
                        attempt: r.8.unwrap_or(0),
                    })
                    .collect())
            }

            async fn expire_disk_jobs(&self, vm_job: i64, now: i64) -> $crate::store::StoreResult<u64> {
                let mut tx = begin_write(&self.pool).await?;
                let n = sqlx::query(
                    "UPDATE jobs SET state = 'failed', finished = $2, lease_expires = NULL, \
                     error = 'lease expired: ' || COALESCE(claimed_by, 'the appliance') || \
                     ' did not complete it in time (killed or cut off?)' \
                     WHERE vm_job = $1 AND state = 'claimed' AND lease_expires <= $2",
                )
                .bind(vm_job)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(n)
            }

            async fn end_vm_job(
                &self,
                vm_job: i64,
                end: &$crate::store::vms::VmJobEnd,
                event: &str,
                now: i64,
            ) -> $crate::store::StoreResult<()> {
                use $crate::store::vms::VmJobEnd;
                let (state, reason) = match end {
                    VmJobEnd::Done => ("done", None),
                    VmJobEnd::Failed(r) => ("failed", Some(r.as_str())),
                    VmJobEnd::Retry(r) => ("queued", Some(r.as_str())),
                };
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query(
                    "UPDATE jobs SET state = 'failed', finished = $2, lease_expires = NULL, \
                     error = $3 WHERE vm_job = $1 AND state IN ('queued', 'claimed')",
                )
                .bind(vm_job)
                .bind(now)
                .bind(format!(
                    "the VM's backup was ended: {}",
                    reason.unwrap_or("the VM job ended")
                ))
                .execute(&mut *tx)
                .await?;
                let hypervisor: Option<(Option<String>,)> =
                    sqlx::query_as("SELECT hypervisor FROM vm_jobs WHERE id = $1")
                        .bind(vm_job)
                        .fetch_optional(&mut *tx)
                        .await?;
                if state == "queued" {
                    sqlx::query(
                        "UPDATE vm_jobs SET state = 'queued', error = $2, hypervisor = NULL, \
                         pools = NULL, owner = NULL, owner_seen = NULL, nbd_port = NULL, \
                         backup = NULL, started = NULL WHERE id = $1",
                    )
                    .bind(vm_job)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
                } else {
                    sqlx::query(
                        "UPDATE vm_jobs SET state = $2, error = $3, finished = $4, owner = NULL, \
                         owner_seen = NULL, nbd_port = NULL, backup = NULL WHERE id = $1",
                    )
                    .bind(vm_job)
                    .bind(state)
                    .bind(reason)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO vm_job_log (vm_job, at, event, hypervisor, detail) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(vm_job)
                .bind(now)
                .bind(event)
                .bind(hypervisor.and_then(|h| h.0))
                .bind(match reason {
                    Some(r) => format!("{state}: {r}"),
                    None => state.to_string(),
                })
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn touch_vm_jobs(&self, owner: &str, now: i64) -> $crate::store::StoreResult<()> {
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query("UPDATE vm_jobs SET owner_seen = $2 WHERE owner = $1 AND state = 'running'")
                    .bind(owner)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn log_vm_job(
                &self,
                vm_job: i64,
                event: &str,
                hypervisor: Option<&str>,
                detail: &str,
                now: i64,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query(
                    "INSERT INTO vm_job_log (vm_job, at, event, hypervisor, detail) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(vm_job)
                .bind(now)
                .bind(event)
                .bind(hypervisor)
                .bind(detail)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn vm_job_log(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::vms::VmJobLogRow>> {
                let rows: Vec<(i64, i64, i64, String, Option<String>, String)> = sqlx::query_as(
                    "SELECT id, vm_job, at, event, hypervisor, detail FROM vm_job_log ORDER BY id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::vms::VmJobLogRow {
                        id: r.0,
                        vm_job: r.1,
                        at: r.2,
                        event: r.3,
                        hypervisor: r.4,
                        detail: r.5,
                    })
                    .collect())
            }
        }

        impl $store {
            /// The newest VM job of `uuid`, with the detections its disks' reports hold.
            async fn last_vm_job(
                &self,
                uuid: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::vms::VmJobSummary>> {
                let row: Option<(i64, String, Option<i64>, Option<String>)> = sqlx::query_as(
                    "SELECT id, state, finished, error FROM vm_jobs WHERE uuid = $1 \
                     ORDER BY id DESC LIMIT 1",
                )
                .bind(uuid)
                .fetch_optional(&self.pool)
                .await?;
                let Some((id, state, finished, error)) = row else {
                    return Ok(None);
                };
                let (detections,): (Option<i64>,) = sqlx::query_as(
                    "SELECT CAST(SUM(s.detections) AS BIGINT) FROM jobs j JOIN scans s ON s.id = j.report \
                     WHERE j.vm_job = $1",
                )
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
                Ok(Some($crate::store::vms::VmJobSummary {
                    id,
                    state,
                    finished,
                    detections: detections.unwrap_or(0),
                    error,
                }))
            }
        }
    };
}
