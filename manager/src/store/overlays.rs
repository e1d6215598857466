//! Storage of the snapshot fallback (`migrations/*/0005_snapshot_fallback.sql`): how each
//! connection takes its point-in-time copies (`hypervisors.method`), and the disk-only snapshots
//! whose overlays are still to be committed back (`vm_overlays`), kept until they are, so that
//! neither a manager restart nor a VM shut off before the commit leaves an overlay forgotten.
//! Same SQL text on both backends.

use std::future::Future;

use serde::Serialize;

use super::StoreResult;

/// How a connection takes the point-in-time copy of a running VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyMethod {
    /// Pull-mode backup jobs, or the snapshot where the hypervisor has none.
    Auto,
    /// Pull-mode backup jobs only.
    Backup,
    /// External disk-only snapshot, read, then active commit.
    Snapshot,
}

impl CopyMethod {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyMethod::Auto => "auto",
            CopyMethod::Backup => "backup",
            CopyMethod::Snapshot => "snapshot",
        }
    }

    /// Parses a stored or user-given name.
    pub fn parse(s: &str) -> Option<CopyMethod> {
        match s {
            "auto" => Some(CopyMethod::Auto),
            "backup" => Some(CopyMethod::Backup),
            "snapshot" => Some(CopyMethod::Snapshot),
            _ => None,
        }
    }
}

/// A snapshot whose overlays are still to be committed back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverlayRow {
    /// The snapshot's tag (names its overlays).
    pub tag: String,
    /// The VM job it was taken for.
    pub vm_job: i64,
    /// Connection name.
    pub hypervisor: String,
    /// The connection's URI when it was taken.
    pub uri: String,
    /// Domain UUID.
    pub uuid: String,
    /// Domain name then.
    pub name: String,
    /// JSON of the snapshot's plan.
    pub plan: String,
    /// Unix seconds: when it was handed over to be committed.
    pub since: i64,
    /// Commits tried so far.
    pub tries: i64,
    /// Unix seconds: not tried again before.
    pub next_try: i64,
    /// Why the last try did not finish.
    pub last_error: Option<String>,
}

/// The snapshot-fallback part of a [`Store`](super::Store).
pub trait OverlayStore {
    /// Sets a connection's copy method; false if there is no such connection.
    fn set_hypervisor_method(
        &self,
        name: &str,
        method: CopyMethod,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Records a snapshot to commit back (nothing if its tag is recorded already).
    fn add_overlay(&self, row: &OverlayRow) -> impl Future<Output = StoreResult<()>> + Send;
    /// Snapshots due for a try at `now`, oldest first.
    fn due_overlays(
        &self,
        now: i64,
        limit: i64,
    ) -> impl Future<Output = StoreResult<Vec<OverlayRow>>> + Send;
    /// Every snapshot still to commit back, oldest first.
    fn list_overlays(&self) -> impl Future<Output = StoreResult<Vec<OverlayRow>>> + Send;
    /// Records a try that did not finish: why, and when to try again.
    fn overlay_failed(
        &self,
        tag: &str,
        error: &str,
        next_try: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// Forgets a snapshot whose overlays are all committed back and removed.
    fn remove_overlay(&self, tag: &str) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Selects every column of `vm_overlays` in [`OverlayTuple`]'s order (a macro: sqlx takes
/// static SQL text only).
#[macro_export]
macro_rules! select_overlays {
    () => {
        "SELECT tag, vm_job, hypervisor, uri, uuid, name, plan, since, tries, next_try, \
         last_error FROM vm_overlays"
    };
}

/// Implements [`OverlayStore`] for `$store` (a struct with a `pool` field; `begin_write` in
/// scope, as for `impl_store!`).
macro_rules! impl_overlay_store {
    ($store:ty) => {
        impl $crate::store::overlays::OverlayStore for $store {
            async fn set_hypervisor_method(
                &self,
                name: &str,
                method: $crate::store::overlays::CopyMethod,
            ) -> $crate::store::StoreResult<bool> {
                let mut tx = begin_write(&self.pool).await?;
                let done = sqlx::query("UPDATE hypervisors SET method = $2 WHERE name = $1")
                    .bind(name)
                    .bind(method.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                tx.commit().await?;
                Ok(done)
            }

            async fn add_overlay(
                &self,
                row: &$crate::store::overlays::OverlayRow,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query(
                    "INSERT INTO vm_overlays (tag, vm_job, hypervisor, uri, uuid, name, plan, \
                     since, tries, next_try, last_error) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (tag) DO NOTHING",
                )
                .bind(&row.tag)
                .bind(row.vm_job)
                .bind(&row.hypervisor)
                .bind(&row.uri)
                .bind(&row.uuid)
                .bind(&row.name)
                .bind(&row.plan)
                .bind(row.since)
                .bind(row.tries)
                .bind(row.next_try)
                .bind(&row.last_error)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn due_overlays(
                &self,
                now: i64,
                limit: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::overlays::OverlayRow>> {
                let rows: Vec<$crate::store::overlays::OverlayTuple> = sqlx::query_as(concat!(
                    $crate::select_overlays!(),
                    " WHERE next_try <= $1 ORDER BY since, tag LIMIT $2"
                ))
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map($crate::store::overlays::overlay_row)
                    .collect())
            }

            async fn list_overlays(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::overlays::OverlayRow>> {
                let rows: Vec<$crate::store::overlays::OverlayTuple> =
                    sqlx::query_as(concat!($crate::select_overlays!(), " ORDER BY since, tag"))
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map($crate::store::overlays::overlay_row)
                    .collect())
            }

            async fn overlay_failed(
                &self,
                tag: &str,
                error: &str,
                next_try: i64,
            ) -> $crate::store::StoreResult<()> {
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query(
                    "UPDATE vm_overlays SET tries = tries + 1, last_error = $2, next_try = $3 \
                     WHERE tag = $1",
                )
                .bind(tag)
                .bind(error)
                .bind(next_try)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn remove_overlay(&self, tag: &str) -> $crate::store::StoreResult<()> {
                let mut tx = begin_write(&self.pool).await?;
                sqlx::query("DELETE FROM vm_overlays WHERE tag = $1")
                    .bind(tag)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

/// A `vm_overlays` row as sqlx reads it.
pub(crate) type OverlayTuple = (
    String,
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    Option<String>,
);

pub(crate) fn overlay_row(r: OverlayTuple) -> OverlayRow {
    OverlayRow {
        tag: r.0,
        vm_job: r.1,
        hypervisor: r.2,
        uri: r.3,
        uuid: r.4,
        name: r.5,
        plan: r.6,
        since: r.7,
        tries: r.8,
        next_try: r.9,
        last_error: r.10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::vms::VmStore;

    fn row(tag: &str, since: i64) -> OverlayRow {
        OverlayRow {
            tag: tag.into(),
            vm_job: 1,
            hypervisor: "h".into(),
            uri: "test:///default".into(),
            uuid: "u".into(),
            name: "vm".into(),
            plan: "{}".into(),
            since,
            tries: 0,
            next_try: since,
            last_error: None,
        }
    }

    #[tokio::test]
    async fn overlays_wait_for_their_next_try_and_go_once_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite:{}", dir.path().join("m.db").display()))
            .await
            .unwrap();
        store.add_overlay(&row("a", 10)).await.unwrap();
        store.add_overlay(&row("b", 20)).await.unwrap();
        // Recording the same snapshot twice (a restarted manager) keeps the first record.
        store.add_overlay(&row("a", 30)).await.unwrap();
        let due: Vec<_> = store.due_overlays(25, 10).await.unwrap();
        assert_eq!(
            due.iter()
                .map(|r| (r.tag.as_str(), r.since))
                .collect::<Vec<_>>(),
            [("a", 10), ("b", 20)]
        );
        store.overlay_failed("a", "shut off", 100).await.unwrap();
        let due = store.due_overlays(25, 10).await.unwrap();
        assert_eq!(due.len(), 1, "a waits for its next try");
        let all = store.list_overlays().await.unwrap();
        assert_eq!(all[0].tries, 1);
        assert_eq!(all[0].last_error.as_deref(), Some("shut off"));
        store.remove_overlay("a").await.unwrap();
        store.remove_overlay("b").await.unwrap();
        assert!(store.list_overlays().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_connection_copies_by_backup_unless_told_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite:{}", dir.path().join("m.db").display()))
            .await
            .unwrap();
        store
            .add_hypervisor("h", "test:///default", 4, None, 1)
            .await
            .unwrap();
        let method = |s: &SqliteStore| {
            let s = s.clone();
            async move { s.list_hypervisors().await.unwrap()[0].method.clone() }
        };
        assert_eq!(method(&store).await, "auto");
        assert!(store
            .set_hypervisor_method("h", CopyMethod::Snapshot)
            .await
            .unwrap());
        assert_eq!(method(&store).await, "snapshot");
        assert!(!store
            .set_hypervisor_method("nope", CopyMethod::Backup)
            .await
            .unwrap());
        assert_eq!(CopyMethod::parse("snapshot"), Some(CopyMethod::Snapshot));
        assert_eq!(CopyMethod::parse("nbd"), None);
    }
}
