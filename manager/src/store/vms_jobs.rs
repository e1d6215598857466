//! The SQL of [`VmJobStore`](super::vms::VmJobStore) (schema `0002_vms.sql`), one text for
//! both backends: VM jobs, their disk jobs in the appliance queue, and the backup log. Starts are
//! serialized by the backend's `LOCK_VM_JOBS` (PostgreSQL) or `BEGIN IMMEDIATE` (SQLite).

/// `SELECT` list of a VM job row (`j` = vm_jobs, `v` = vms), read by `vm_job_from_row!` (a
/// literal, for `concat!`).
macro_rules! vm_job_columns {
    () => {
        "j.id, j.uuid, v.name, j.state, j.created, j.appliance, j.attempts, j.max_attempts, \
         COALESCE(j.hypervisor, v.hypervisor), j.pools, j.owner, j.owner_seen, j.nbd_port, \
         j.backup, j.started, j.finished, j.error"
    };
}

/// A [`VmJobRow`](super::vms::VmJobRow) from a row selected with `vm_job_columns!`.
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

/// Implements [`VmJobStore`](super::vms::VmJobStore) for `$store` (a struct with a
/// `pool: sqlx::Pool<$db>` field; the backend module has `begin_write` and `LOCK_VM_JOBS`).
macro_rules! impl_vm_job_store {
    ($store:ty) => {
        impl $crate::store::vms::VmJobStore for $store {
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
    };
}
