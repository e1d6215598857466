//! The [`Store`](super::Store) implementation both backends share: the same SQL text (`$N`
//! placeholders, `ON CONFLICT`, `RETURNING`, all understood by SQLite and PostgreSQL) over each
//! backend's concrete pool type. A backend module expands [`impl_store!`] and provides:
//! - `begin_write(&Pool) -> Transaction`: a transaction that writes (SQLite: `BEGIN IMMEDIATE`,
//!   taking the write lock up front so that concurrent writers queue instead of failing);
//! - `CLAIM_JOB` and `CLAIM_DELIVERY`: the claim statements (PostgreSQL adds
//!   `FOR UPDATE SKIP LOCKED`).

/// Implements `Store` for `$store` (a struct with a `pool: sqlx::Pool<$db>` field).
macro_rules! impl_store {
    ($store:ty) => {
        impl $crate::store::Store for $store {
            async fn create_token(
                &self,
                name: &str,
                role: $crate::store::Role,
                hash: &str,
                now: i64,
            ) -> $crate::store::StoreResult<i64> {
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO tokens (name, role, hash, created) VALUES ($1, $2, $3, $4) \
                     RETURNING id",
                )
                .bind(name)
                .bind(role.as_str())
                .bind(hash)
                .bind(now)
                .fetch_one(&self.pool)
                .await
                .map_err(|e| $crate::store::conflict(e, &format!("a token named {name:?}")))?;
                Ok(id)
            }

            async fn token_by_hash(
                &self,
                hash: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::TokenIdentity>> {
                let row: Option<(i64, String, String)> = sqlx::query_as(
                    "SELECT id, name, role FROM tokens WHERE hash = $1 AND revoked IS NULL",
                )
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.and_then(|(id, name, role)| {
                    $crate::store::Role::parse(&role)
                        .map(|role| $crate::store::TokenIdentity { id, name, role })
                }))
            }

            async fn list_tokens(&self) -> $crate::store::StoreResult<Vec<$crate::store::TokenInfo>> {
                let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT name, role, created, revoked FROM tokens ORDER BY name",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(name, role, created, revoked)| $crate::store::TokenInfo {
                        name,
                        role,
                        created,
                        revoked,
                    })
                    .collect())
            }

            async fn revoke_token(&self, name: &str, now: i64) -> $crate::store::StoreResult<bool> {
                let mut tx = begin_write(&self.pool).await?;
                let done = sqlx::query(
                    "UPDATE tokens SET revoked = $2 WHERE name = $1 AND revoked IS NULL",
                )
                .bind(name)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                sqlx::query(
                    "DELETE FROM sessions WHERE token_id IN (SELECT id FROM tokens WHERE name = $1)",
                )
                .bind(name)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(done)
            }

            async fn insert_report(
                &self,
                new: &$crate::store::NewReport<'_>,
            ) -> $crate::store::StoreResult<$crate::store::Stored> {
                let r = new.report;
                let mut tx = begin_write(&self.pool).await?;
                let inserted: Option<(i64,)> = sqlx::query_as(
                    "INSERT INTO scans (appliance, idempotency_key, received, started, finished, \
                     seconds, files, detections, not_scanned, targets, report) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (appliance, idempotency_key) DO NOTHING RETURNING id",
                )
                .bind(new.appliance)
                .bind(new.key)
                .bind(new.now)
                .bind(&r.started)
                .bind(&r.finished)
                .bind(r.stats.seconds)
                .bind($crate::store::shared::int(r.stats.files))
                .bind($crate::store::shared::int(r.detections.len()))
                .bind($crate::store::shared::int(r.not_scanned.len()))
                .bind($crate::store::targets_json(r))
                .bind(new.body)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((id,)) = inserted else {
                    let (id,): (i64,) = sqlx::query_as(
                        "SELECT id FROM scans WHERE appliance = $1 AND idempotency_key = $2",
                    )
                    .bind(new.appliance)
                    .bind(new.key)
                    .fetch_one(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    return Ok($crate::store::Stored { id, created: false });
                };
                record_scan_db!(tx, id, r);
                for t in &r.targets {
                    sqlx::query("INSERT INTO scan_targets (scan_id, target, format) VALUES ($1, $2, $3)")
                        .bind(id)
                        .bind(&t.target)
                        .bind(&t.format)
                        .execute(&mut *tx)
                        .await?;
                }
                for d in &r.detections {
                    sqlx::query(
                        "INSERT INTO detections (scan_id, target, partition_index, path, stream, \
                         size, sha256, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(id)
                    .bind(&d.target)
                    .bind(i64::from(d.partition))
                    .bind(&d.path)
                    .bind(&d.stream)
                    .bind($crate::store::shared::int(d.size))
                    .bind(&d.sha256)
                    .bind(&d.signature)
                    .execute(&mut *tx)
                    .await?;
                }
                for n in &r.not_scanned {
                    sqlx::query(
                        "INSERT INTO not_scanned (scan_id, target, partition_index, path, reason, \
                         detail) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(id)
                    .bind(&n.target)
                    .bind(n.partition.map(i64::from))
                    .bind(&n.path)
                    .bind(&n.reason)
                    .bind(&n.detail)
                    .execute(&mut *tx)
                    .await?;
                }
                for (target, payload) in $crate::webhook::payloads(id, new.appliance, r) {
                    sqlx::query(
                        "INSERT INTO deliveries (webhook_id, scan_id, target, payload, state, \
                         attempts, next_attempt, created) \
                         SELECT id, $1, $2, $3, 'pending', 0, $4, $4 FROM webhooks WHERE enabled = 1",
                    )
                    .bind(id)
                    .bind(target)
                    .bind(payload)
                    .bind(new.now)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok($crate::store::Stored { id, created: true })
            }

            async fn scan_report(
                &self,
                id: i64,
            ) -> $crate::store::StoreResult<Option<(String, String)>> {
                Ok(sqlx::query_as("SELECT appliance, report FROM scans WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn list_scans(
                &self,
                before: Option<i64>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::ScanRow>> {
                #[allow(clippy::type_complexity)]
                let rows: Vec<(i64, String, String, String, String, f64, i64, i64, i64, i64, Option<i64>, Option<String>, Option<String>)> =
                    sqlx::query_as(
                        "SELECT id, appliance, targets, started, finished, seconds, files, \
                         detections, not_scanned, received, db_version, db_sha256, \
                         db_manager_version FROM scans \
                         WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
                    )
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::ScanRow {
                        id: r.0,
                        appliance: r.1,
                        targets: serde_json::from_str(&r.2).unwrap_or_default(),
                        started: r.3,
                        finished: r.4,
                        seconds: r.5,
                        files: r.6,
                        detections: r.7,
                        not_scanned: r.8,
                        received: $crate::time::rfc3339(r.9),
                        db: $crate::store::ScanDb::from_columns(r.10, r.11, r.12),
                    })
                    .collect())
            }

            async fn list_detections(
                &self,
                filter: &$crate::store::Filter,
                before: Option<i64>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::DetectionRow>> {
                let rows: Vec<(i64, i64, String, i64, String, Option<String>, i64, Option<String>, String)> =
                    sqlx::query_as(
                        "SELECT id, scan_id, target, partition_index, path, stream, size, sha256, \
                         signature FROM detections \
                         WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR target = $2) \
                         AND ($3 IS NULL OR signature = $3) AND ($4 IS NULL OR scan_id = $4) \
                         ORDER BY id DESC LIMIT $5",
                    )
                    .bind(before)
                    .bind(&filter.target)
                    .bind(&filter.kind)
                    .bind(filter.scan)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::DetectionRow {
                        id: r.0,
                        scan: r.1,
                        target: r.2,
                        partition: r.3,
                        path: r.4,
                        stream: r.5,
                        size: r.6,
                        sha256: r.7,
                        signature: r.8,
                    })
                    .collect())
            }

            async fn list_not_scanned(
                &self,
                filter: &$crate::store::Filter,
                before: Option<i64>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::NotScannedRow>> {
                let rows: Vec<(i64, i64, String, Option<i64>, Option<String>, String, String)> =
                    sqlx::query_as(
                        "SELECT id, scan_id, target, partition_index, path, reason, detail \
                         FROM not_scanned \
                         WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR target = $2) \
                         AND ($3 IS NULL OR reason = $3) AND ($4 IS NULL OR scan_id = $4) \
                         ORDER BY id DESC LIMIT $5",
                    )
                    .bind(before)
                    .bind(&filter.target)
                    .bind(&filter.kind)
                    .bind(filter.scan)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::NotScannedRow {
                        id: r.0,
                        scan: r.1,
                        target: r.2,
                        partition: r.3,
                        path: r.4,
                        reason: r.5,
                        detail: r.6,
                    })
                    .collect())
            }

            async fn list_targets(
                &self,
                after: Option<&str>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::TargetRow>> {
                let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
                    "SELECT st.target, COUNT(DISTINCT st.scan_id), MAX(st.scan_id), \
                     (SELECT COUNT(*) FROM detections d WHERE d.target = st.target) \
                     FROM scan_targets st WHERE ($1 IS NULL OR st.target > $1) \
                     GROUP BY st.target ORDER BY st.target LIMIT $2",
                )
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::TargetRow {
                        target: r.0,
                        scans: r.1,
                        last_scan: r.2,
                        detections: r.3,
                    })
                    .collect())
            }

            async fn heartbeat(
                &self,
                hb: &$crate::store::HeartbeatRow<'_>,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query(
                    "INSERT INTO appliances (name, last_heartbeat, version, status, disks, \
                     signatures) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET \
                     last_heartbeat = excluded.last_heartbeat, version = excluded.version, \
                     status = excluded.status, disks = excluded.disks, \
                     signatures = excluded.signatures",
                )
                .bind(hb.name)
                .bind(hb.now)
                .bind(hb.version)
                .bind(hb.status)
                .bind(hb.disks)
                .bind(hb.signatures)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_appliances(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::ApplianceRow>> {
                #[allow(clippy::type_complexity)]
                let rows: Vec<(String, Option<i64>, Option<String>, Option<String>, Option<String>, Option<String>)> =
                    sqlx::query_as(
                        "SELECT t.name, a.last_heartbeat, a.version, a.status, a.disks, a.signatures \
                         FROM tokens t LEFT JOIN appliances a ON a.name = t.name \
                         WHERE t.role = 'appliance' AND t.revoked IS NULL ORDER BY t.name",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::ApplianceRow {
                        name: r.0,
                        last_heartbeat: r.1,
                        version: r.2,
                        status: r.3,
                        disks: r.4,
                        signatures: r.5,
                    })
                    .collect())
            }

            async fn enqueue_job(
                &self,
                target: &str,
                appliance: Option<&str>,
                now: i64,
            ) -> $crate::store::StoreResult<i64> {
                let mut tx = begin_write(&self.pool).await?;
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO jobs (target, appliance, state, created, claims) \
                     VALUES ($1, $2, 'queued', $3, 0) RETURNING id",
                )
                .bind(target)
                .bind(appliance)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(id)
            }

            async fn claim_job(
                &self,
                appliance: &str,
                now: i64,
                lease_expires: i64,
            ) -> $crate::store::StoreResult<Option<$crate::store::ClaimedJob>> {
                let mut tx = begin_write(&self.pool).await?;
                let row: Option<(i64, String, i64)> = sqlx::query_as(CLAIM_JOB)
                    .bind(appliance)
                    .bind(now)
                    .bind(lease_expires)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(row.map(|(id, target, lease_expires)| $crate::store::ClaimedJob {
                    id,
                    target,
                    lease_expires,
                }))
            }

            async fn complete_job(
                &self,
                id: i64,
                appliance: &str,
                outcome: &$crate::store::JobOutcome,
                now: i64,
            ) -> $crate::store::StoreResult<$crate::store::Completion> {
                let (state, report, error) = match outcome {
                    $crate::store::JobOutcome::Report(r) => ("done", Some(*r), None),
                    $crate::store::JobOutcome::Error(e) => ("failed", None, Some(e.as_str())),
                };
                let mut tx = begin_write(&self.pool).await?;
                let done = sqlx::query(
                    "UPDATE jobs SET state = $3, finished = $4, report = $5, error = $6, \
                     lease_expires = NULL WHERE id = $1 AND claimed_by = $2 AND state = 'claimed'",
                )
                .bind(id)
                .bind(appliance)
                .bind(state)
                .bind(now)
                .bind(report)
                .bind(error)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                let result = if done {
                    $crate::store::Completion::Done
                } else {
                    let exists: Option<(i64,)> = sqlx::query_as("SELECT id FROM jobs WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if exists.is_some() {
                        $crate::store::Completion::NotHeld
                    } else {
                        $crate::store::Completion::NotFound
                    }
                };
                tx.commit().await?;
                Ok(result)
            }

            async fn list_jobs(
                &self,
                before: Option<i64>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::JobRow>> {
                #[allow(clippy::type_complexity)]
                let rows: Vec<(
                    i64,
                    String,
                    Option<String>,
                    String,
                    i64,
                    Option<String>,
                    i64,
                    Option<i64>,
                    Option<i64>,
                    Option<i64>,
                    Option<String>,
                )> = sqlx::query_as(
                    "SELECT id, target, appliance, state, created, claimed_by, claims, \
                     lease_expires, finished, report, error FROM jobs \
                     WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
                )
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::JobRow {
                        id: r.0,
                        target: r.1,
                        appliance: r.2,
                        state: r.3,
                        created: r.4,
                        claimed_by: r.5,
                        claims: r.6,
                        lease_expires: r.7,
                        finished: r.8,
                        report: r.9,
                        error: r.10,
                    })
                    .collect())
            }

            async fn add_webhook(
                &self,
                url: &str,
                secret: &str,
                now: i64,
            ) -> $crate::store::StoreResult<i64> {
                let mut tx = begin_write(&self.pool).await?;
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO webhooks (url, secret, created, enabled) VALUES ($1, $2, $3, 1) \
                     RETURNING id",
                )
                .bind(url)
                .bind(secret)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(id)
            }

            async fn list_webhooks(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::WebhookRow>> {
                let rows: Vec<(i64, String, i64, i64)> =
                    sqlx::query_as("SELECT id, url, created, enabled FROM webhooks ORDER BY id")
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::WebhookRow {
                        id: r.0,
                        url: r.1,
                        created: r.2,
                        enabled: r.3 != 0,
                    })
                    .collect())
            }

            async fn disable_webhook(&self, id: i64) -> $crate::store::StoreResult<bool> {
                let mut tx = begin_write(&self.pool).await?;
                let done = sqlx::query("UPDATE webhooks SET enabled = 0 WHERE id = $1 AND enabled = 1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                tx.commit().await?;
                Ok(done)
            }

            async fn claim_delivery(
                &self,
                now: i64,
                busy_until: i64,
            ) -> $crate::store::StoreResult<Option<$crate::store::DueDelivery>> {
                let mut tx = begin_write(&self.pool).await?;
                let row: Option<(i64, i64, String, i64)> = sqlx::query_as(CLAIM_DELIVERY)
                    .bind(now)
                    .bind(busy_until)
                    .fetch_optional(&mut *tx)
                    .await?;
                let due = match row {
                    None => None,
                    Some((id, webhook, payload, attempts)) => {
                        let (url, secret): (String, String) =
                            sqlx::query_as("SELECT url, secret FROM webhooks WHERE id = $1")
                                .bind(webhook)
                                .fetch_one(&mut *tx)
                                .await?;
                        Some($crate::store::DueDelivery {
                            id,
                            url,
                            secret,
                            payload,
                            attempts,
                        })
                    }
                };
                tx.commit().await?;
                Ok(due)
            }

            async fn record_attempt(
                &self,
                a: &$crate::store::DeliveryAttempt,
            ) -> $crate::store::StoreResult<()> {
                let state = if a.delivered {
                    "delivered"
                } else if a.give_up {
                    "failed"
                } else {
                    "pending"
                };
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query(
                    "UPDATE deliveries SET state = $2, attempts = attempts + 1, last_status = $3, \
                     last_error = $4, next_attempt = $5, \
                     delivered = CASE WHEN $2 = 'delivered' THEN $6 ELSE NULL END WHERE id = $1",
                )
                .bind(a.id)
                .bind(state)
                .bind(a.status)
                .bind(&a.error)
                .bind(a.next_attempt)
                .bind(a.now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_deliveries(
                &self,
                before: Option<i64>,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::DeliveryRow>> {
                #[allow(clippy::type_complexity)]
                let rows: Vec<(
                    i64,
                    String,
                    i64,
                    String,
                    String,
                    i64,
                    Option<i64>,
                    Option<String>,
                    i64,
                    Option<i64>,
                )> = sqlx::query_as(
                    "SELECT d.id, w.url, d.scan_id, d.target, d.state, d.attempts, d.last_status, \
                     d.last_error, d.created, d.delivered FROM deliveries d \
                     JOIN webhooks w ON w.id = d.webhook_id \
                     WHERE ($1 IS NULL OR d.id < $1) ORDER BY d.id DESC LIMIT $2",
                )
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::DeliveryRow {
                        id: r.0,
                        url: r.1,
                        scan: r.2,
                        target: r.3,
                        state: r.4,
                        attempts: r.5,
                        last_status: r.6,
                        last_error: r.7,
                        created: r.8,
                        delivered: r.9,
                    })
                    .collect())
            }

            async fn create_session(
                &self,
                hash: &str,
                token_id: i64,
                csrf: &str,
                expires: i64,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query("INSERT INTO sessions (hash, token_id, csrf, expires) VALUES ($1, $2, $3, $4)")
                    .bind(hash)
                    .bind(token_id)
                    .bind(csrf)
                    .bind(expires)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn session(
                &self,
                hash: &str,
                now: i64,
            ) -> $crate::store::StoreResult<Option<$crate::store::Session>> {
                let row: Option<(String, String)> = sqlx::query_as(
                    "SELECT t.name, s.csrf FROM sessions s JOIN tokens t ON t.id = s.token_id \
                     WHERE s.hash = $1 AND s.expires > $2 AND t.revoked IS NULL \
                     AND t.role = 'admin'",
                )
                .bind(hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(name, csrf)| $crate::store::Session { name, csrf }))
            }

            async fn delete_session(&self, hash: &str, now: i64) -> $crate::store::StoreResult<()> {
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query("DELETE FROM sessions WHERE hash = $1 OR expires <= $2")
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

/// A count or size as the database's signed 64-bit integer (validated reports never exceed it;
/// saturates rather than wraps otherwise).
pub(crate) fn int<T: TryInto<i64>>(v: T) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

/// The job claim, shared text: the oldest job open to `$1` (queued, or claimed with its lease
/// expired at `$2`), leased until `$3`. Each backend appends its row-locking clause.
#[macro_export]
#[doc(hidden)]
macro_rules! claim_job_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE jobs SET state = 'claimed', claimed_by = $1, claims = claims + 1, \
             lease_expires = $3 WHERE id = (SELECT id FROM jobs \
             WHERE (state = 'queued' OR (state = 'claimed' AND lease_expires <= $2 \
             AND vm_job IS NULL)) \
             AND (appliance IS NULL OR appliance = $1) ORDER BY id LIMIT 1 ",
            $lock,
            ") RETURNING id, target, lease_expires"
        )
    };
}

/// The delivery claim: the oldest pending delivery due at `$1`, made not due until `$2`.
#[macro_export]
#[doc(hidden)]
macro_rules! claim_delivery_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE deliveries SET next_attempt = $2 WHERE id = (SELECT id FROM deliveries \
             WHERE state = 'pending' AND next_attempt <= $1 ORDER BY id LIMIT 1 ",
            $lock,
            ") RETURNING id, webhook_id, payload, attempts"
        )
    };
}
