//! The SQL of [`VmStore`](super::vms::VmStore) (schema `0002_vms.sql`), one text for both
//! backends: connections, inventory passes, per-VM policy and scheduled scans.

/// `SELECT` list of a VM row (a literal, for `concat!`).
macro_rules! vm_columns {
    () => {
        "uuid, name, hypervisor, state, disks, first_seen, last_seen, gone, scan_interval, \
         window_start, window_end, labels, next_scan, on_detection"
    };
}

/// Implements [`VmStore`](super::vms::VmStore) for `$store` (a struct with a `pool: sqlx::Pool<$db>` field; the
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
                let rows: Vec<(String, String, i64, Option<String>, i64, Option<i64>, Option<String>, String)> =
                    sqlx::query_as(
                        "SELECT name, uri, max_backups, nbd_listen, created, last_sync, last_error, method \
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
                        method: r.7,
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
                     labels = $5, next_scan = $6, on_detection = $7 WHERE uuid = $1",
                )
                .bind(uuid)
                .bind(policy.scan_interval)
                .bind(policy.window.map(|w| w.0))
                .bind(policy.window.map(|w| w.1))
                .bind(labels)
                .bind(policy.scan_interval.map(|_| now))
                .bind(policy.on_detection.as_str())
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
