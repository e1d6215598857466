//! Storage of libvirt quarantines (`migrations/*/0004_quarantine.sql`): the domains isolated
//! now, each with the interface states to restore, and the log of every action (who, when,
//! which VM, before and after). Same SQL text on both backends.

use std::future::Future;

use serde::Serialize;

use super::StoreResult;

/// A domain in quarantine now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineRow {
    /// Domain UUID (the key: stable across renames and migrations).
    pub uuid: String,
    /// The libvirt URI it was quarantined through.
    pub uri: String,
    /// Its name then.
    pub name: String,
    /// JSON of the interface states before the quarantine (what release restores).
    pub previous: String,
    /// Unix seconds.
    pub since: i64,
    /// Who quarantined it (token name, `cli`, `policy`).
    pub actor: String,
    /// Why (free text: a scan id, an operator's note).
    pub reason: String,
}

/// One logged action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineLogRow {
    /// Id.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// `quarantine` or `release`.
    pub action: String,
    /// libvirt URI.
    pub uri: String,
    /// Domain UUID.
    pub uuid: String,
    /// Domain name then.
    pub name: String,
    /// Why.
    pub reason: String,
    /// JSON of the interface states before the action.
    pub before: String,
    /// JSON of the interface states after it.
    pub after: String,
}

/// The quarantine part of a [`Store`](super::Store).
pub trait QuarantineStore {
    /// The active quarantine of the domain with this UUID.
    fn quarantine_of(
        &self,
        uuid: &str,
    ) -> impl Future<Output = StoreResult<Option<QuarantineRow>>> + Send;
    /// Records a quarantine (the active row and its log entry, in one transaction). False when
    /// the domain was already recorded as quarantined (nothing is written then).
    fn record_quarantine(
        &self,
        row: &QuarantineRow,
        after: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Records a release: removes the active row and logs the action. False when there was no
    /// active quarantine (nothing is written then).
    fn record_release(
        &self,
        uuid: &str,
        actor: &str,
        before: &str,
        after: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Domains in quarantine now, oldest first.
    fn list_quarantines(&self) -> impl Future<Output = StoreResult<Vec<QuarantineRow>>> + Send;
    /// The action log, newest first.
    fn quarantine_log(
        &self,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<QuarantineLogRow>>> + Send;
}

/// Implements [`QuarantineStore`] for `$store` (a struct with a `pool` field; `begin_write` in
/// scope, as for `impl_store!`).
macro_rules! impl_quarantine_store {
    ($store:ty) => {
        impl $crate::store::quarantine::QuarantineStore for $store {
            async fn quarantine_of(
                &self,
                uuid: &str,
            ) -> $crate::store::StoreResult<Option<$crate::store::quarantine::QuarantineRow>> {
                let row: Option<(String, String, String, String, i64, String, String)> =
                    sqlx::query_as(
                        "SELECT uuid, uri, name, previous, since, actor, reason \
                         FROM quarantines WHERE uuid = $1",
                    )
                    .bind(uuid)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| $crate::store::quarantine::QuarantineRow {
                    uuid: r.0,
                    uri: r.1,
                    name: r.2,
                    previous: r.3,
                    since: r.4,
                    actor: r.5,
                    reason: r.6,
                }))
            }

            async fn record_quarantine(
                &self,
                row: &$crate::store::quarantine::QuarantineRow,
                after: &str,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = begin_write(&self.pool).await?;
                let inserted = sqlx::query(
                    "INSERT INTO quarantines (uuid, uri, name, previous, since, actor, reason) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (uuid) DO NOTHING",
                )
                .bind(&row.uuid)
                .bind(&row.uri)
                .bind(&row.name)
                .bind(&row.previous)
                .bind(row.since)
                .bind(&row.actor)
                .bind(&row.reason)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    > 0;
                if inserted {
                    sqlx::query(
                        "INSERT INTO quarantine_log (at, actor, action, uri, uuid, name, reason, \
                         state_before, state_after) VALUES ($1, $2, 'quarantine', $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(row.since)
                    .bind(&row.actor)
                    .bind(&row.uri)
                    .bind(&row.uuid)
                    .bind(&row.name)
                    .bind(&row.reason)
                    .bind(&row.previous)
                    .bind(after)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(inserted)
            }

            async fn record_release(
                &self,
                uuid: &str,
                actor: &str,
                before: &str,
                after: &str,
                now: i64,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = begin_write(&self.pool).await?;
                let row: Option<(String, String)> = sqlx::query_as(
                    "DELETE FROM quarantines WHERE uuid = $1 RETURNING uri, name",
                )
                .bind(uuid)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((uri, name)) = row else {
                    tx.commit().await?;
                    return Ok(false);
                };
                sqlx::query(
                    "INSERT INTO quarantine_log (at, actor, action, uri, uuid, name, reason, \
                     state_before, state_after) VALUES ($1, $2, 'release', $3, $4, $5, '', $6, $7)",
                )
                .bind(now)
                .bind(actor)
                .bind(&uri)
                .bind(uuid)
                .bind(&name)
                .bind(before)
                .bind(after)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn list_quarantines(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::quarantine::QuarantineRow>> {
                let rows: Vec<(String, String, String, String, i64, String, String)> =
                    sqlx::query_as(
                        "SELECT uuid, uri, name, previous, since, actor, reason \
                         FROM quarantines ORDER BY since, uuid",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::quarantine::QuarantineRow {
                        uuid: r.0,
                        uri: r.1,
                        name: r.2,
                        previous: r.3,
                        since: r.4,
                        actor: r.5,
                        reason: r.6,
                    })
                    .collect())
            }

            async fn quarantine_log(
                &self,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::quarantine::QuarantineLogRow>> {
                #[allow(clippy::type_complexity)]
                let rows: Vec<(i64, i64, String, String, String, String, String, String, String, String)> =
                    sqlx::query_as(
                        "SELECT id, at, actor, action, uri, uuid, name, reason, state_before, state_after \
                         FROM quarantine_log ORDER BY id DESC LIMIT $1",
                    )
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|r| $crate::store::quarantine::QuarantineLogRow {
                        id: r.0,
                        at: r.1,
                        actor: r.2,
                        action: r.3,
                        uri: r.4,
                        uuid: r.5,
                        name: r.6,
                        reason: r.7,
                        before: r.8,
                        after: r.9,
                    })
                    .collect())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn a_quarantine_is_recorded_once_and_released_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite:{}", dir.path().join("m.db").display()))
            .await
            .unwrap();
        let row = QuarantineRow {
            uuid: "u-1".into(),
            uri: "qemu:///system".into(),
            name: "web".into(),
            previous: "[up]".into(),
            since: 5,
            actor: "ops".into(),
            reason: "scan 3".into(),
        };
        assert!(store.record_quarantine(&row, "[down]").await.unwrap());
        assert!(!store.record_quarantine(&row, "[down]").await.unwrap());
        assert_eq!(store.quarantine_of("u-1").await.unwrap(), Some(row.clone()));
        assert_eq!(store.list_quarantines().await.unwrap(), vec![row]);
        assert!(store
            .record_release("u-1", "cli", "[down]", "[up]", 9)
            .await
            .unwrap());
        assert!(!store
            .record_release("u-1", "cli", "[down]", "[up]", 9)
            .await
            .unwrap());
        assert_eq!(store.quarantine_of("u-1").await.unwrap(), None);
        let log = store.quarantine_log(10).await.unwrap();
        let actions: Vec<_> = log
            .iter()
            .map(|l| {
                (
                    l.action.as_str(),
                    l.actor.as_str(),
                    l.before.as_str(),
                    l.after.as_str(),
                )
            })
            .collect();
        assert_eq!(
            actions,
            [
                ("release", "cli", "[down]", "[up]"),
                ("quarantine", "ops", "[up]", "[down]")
            ]
        );
        assert_eq!(log[0].name, "web");
        store.close().await;
    }
}
