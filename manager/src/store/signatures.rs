//! Storage of the signature databases the manager hands to its appliances
//! (`migrations/*/0003_signatures.sql`): one row per set in `signature_sets`, the newest being
//! the current one, with its files' bytes in `signature_files`. Same SQL text on both backends,
//! as in [`shared`](super::shared).

use std::future::Future;

use serde::Serialize;

use super::StoreResult;

/// One file of a signature set, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    /// File name (checked by `crate::signatures::check_name`).
    pub name: String,
    /// Its bytes.
    pub content: Vec<u8>,
}

/// A file of a set as listed (without its bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureFileInfo {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size: i64,
    /// Lowercase hex SHA-256 of its bytes.
    pub sha256: String,
}

/// A signature set as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureSet {
    /// Row id.
    #[serde(skip)]
    pub id: i64,
    /// The version the administrator gave it.
    pub version: String,
    /// The database digest (`crate::signatures::digest`): what reports name as `engine.db.sha256`.
    pub sha256: String,
    /// Total bytes of its files.
    pub size: i64,
    /// Unix seconds when it was set.
    pub created: i64,
    /// Its files, by name.
    pub files: Vec<SignatureFileInfo>,
}

/// A new set to store.
#[derive(Debug)]
pub struct NewSignatureSet<'a> {
    /// Version.
    pub version: &'a str,
    /// Digest over `files`.
    pub sha256: &'a str,
    /// Files, sorted by name.
    pub files: &'a [SignatureFile],
    /// Unix seconds now.
    pub now: i64,
}

/// What storing a set did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// Stored; it is the current set now.
    Stored,
    /// This version with this very content is already the current set: nothing changed.
    Unchanged,
}

/// The signature database part of a [`Store`](super::Store).
pub trait SignatureStore {
    /// Stores a set and makes it current. [`StoreError::Conflict`](super::StoreError::Conflict)
    /// when the version exists with other content, or exists but is not the current set (a
    /// version names one content forever).
    fn set_signatures(
        &self,
        new: &NewSignatureSet<'_>,
    ) -> impl Future<Output = StoreResult<SetOutcome>> + Send;
    /// The current set, if any.
    fn current_signatures(&self) -> impl Future<Output = StoreResult<Option<SignatureSet>>> + Send;
    /// The files of set `id`, sorted by name.
    fn signature_files(
        &self,
        id: i64,
    ) -> impl Future<Output = StoreResult<Vec<SignatureFile>>> + Send;
}

/// Implements [`SignatureStore`] for `$store` (a struct with a `pool` field; `begin_write` in
/// scope, as for `impl_store!`).
macro_rules! impl_signature_store {
    ($store:ty) => {
        impl $crate::store::signatures::SignatureStore for $store {
            async fn set_signatures(
                &self,
                new: &$crate::store::signatures::NewSignatureSet<'_>,
            ) -> $crate::store::StoreResult<$crate::store::signatures::SetOutcome> {
                use sha2::Digest as _;
                let mut tx = begin_write(&self.pool).await?;
                let current: Option<(String, String)> = sqlx::query_as(
                    "SELECT version, sha256 FROM signature_sets ORDER BY id DESC LIMIT 1",
                )
                .fetch_optional(&mut *tx)
                .await?;
                if current.as_ref().map(|(v, d)| (v.as_str(), d.as_str()))
                    == Some((new.version, new.sha256))
                {
                    tx.commit().await?;
                    return Ok($crate::store::signatures::SetOutcome::Unchanged);
                }
                let size: i64 = new
                    .files
                    .iter()
                    .map(|f| $crate::store::shared::int(f.content.len()))
                    .fold(0i64, i64::saturating_add);
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO signature_sets (version, sha256, size, created) \
                     VALUES ($1, $2, $3, $4) RETURNING id",
                )
                .bind(new.version)
                .bind(new.sha256)
                .bind(size)
                .bind(new.now)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| {
                    $crate::store::conflict(
                        e,
                        &format!("signature version {:?} (give a new version)", new.version),
                    )
                })?;
                for f in new.files {
                    sqlx::query(
                        "INSERT INTO signature_files (set_id, name, size, sha256, content) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(id)
                    .bind(&f.name)
                    .bind($crate::store::shared::int(f.content.len()))
                    .bind(hex::encode(sha2::Sha256::digest(&f.content)))
                    .bind(&f.content)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok($crate::store::signatures::SetOutcome::Stored)
            }

            async fn current_signatures(
                &self,
            ) -> $crate::store::StoreResult<Option<$crate::store::signatures::SignatureSet>> {
                let row: Option<(i64, String, String, i64, i64)> = sqlx::query_as(
                    "SELECT id, version, sha256, size, created FROM signature_sets \
                     ORDER BY id DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await?;
                let Some((id, version, sha256, size, created)) = row else {
                    return Ok(None);
                };
                let files: Vec<(String, i64, String)> = sqlx::query_as(
                    "SELECT name, size, sha256 FROM signature_files WHERE set_id = $1 \
                     ORDER BY name",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                Ok(Some($crate::store::signatures::SignatureSet {
                    id,
                    version,
                    sha256,
                    size,
                    created,
                    files: files
                        .into_iter()
                        .map(
                            |(name, size, sha256)| $crate::store::signatures::SignatureFileInfo {
                                name,
                                size,
                                sha256,
                            },
                        )
                        .collect(),
                }))
            }

            async fn signature_files(
                &self,
                id: i64,
            ) -> $crate::store::StoreResult<Vec<$crate::store::signatures::SignatureFile>> {
                let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
                    "SELECT name, content FROM signature_files WHERE set_id = $1 ORDER BY name",
                )
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
                let mut files: Vec<$crate::store::signatures::SignatureFile> = rows
                    .into_iter()
                    .map(|(name, content)| $crate::store::signatures::SignatureFile {
                        name,
                        content,
                    })
                    .collect();
                // Byte order of names, whatever the database's collation.
                files.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
                Ok(files)
            }
        }
    };
}

/// Records the signature database a report names (`engine.db`) on its scan row, in the
/// transaction that stored the report.
macro_rules! record_scan_db {
    ($tx:expr, $id:expr, $report:expr) => {
        if let Some(db) = $report.engine.db.as_ref() {
            sqlx::query(
                "UPDATE scans SET db_version = $2, db_sha256 = $3, db_manager_version = $4 \
                 WHERE id = $1",
            )
            .bind($id)
            .bind($crate::store::shared::int(db.version))
            .bind(&db.sha256)
            .bind(&db.manager_version)
            .execute(&mut *$tx)
            .await?;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::StoreError;

    fn file(name: &str, content: &[u8]) -> SignatureFile {
        SignatureFile {
            name: name.into(),
            content: content.to_vec(),
        }
    }

    #[tokio::test]
    async fn sets_are_versioned_and_the_newest_is_current() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&format!("sqlite:{}", dir.path().join("m.db").display()))
            .await
            .unwrap();
        assert_eq!(store.current_signatures().await.unwrap(), None);
        let a = [file("a.ndb", b"A:0:*:41\n"), file("b.hdb", b"x")];
        let new = |version, sha256, files| NewSignatureSet {
            version,
            sha256,
            files,
            now: 10,
        };
        assert_eq!(
            store.set_signatures(&new("A", "d1", &a)).await.unwrap(),
            SetOutcome::Stored
        );
        // The same version and content again: nothing happens.
        assert_eq!(
            store.set_signatures(&new("A", "d1", &a)).await.unwrap(),
            SetOutcome::Unchanged
        );
        let current = store.current_signatures().await.unwrap().unwrap();
        assert_eq!(
            (
                current.version.as_str(),
                current.sha256.as_str(),
                current.size
            ),
            ("A", "d1", 10)
        );
        assert_eq!(current.files.len(), 2);
        assert_eq!(current.files[0].name, "a.ndb");
        assert_eq!(store.signature_files(current.id).await.unwrap(), a.to_vec());
        let b = [file("c.ndb", b"C:0:*:43\n")];
        store.set_signatures(&new("B", "d2", &b)).await.unwrap();
        assert_eq!(
            store.current_signatures().await.unwrap().unwrap().version,
            "B"
        );
        // A version names one content forever, and an old version cannot come back.
        for (v, d) in [("B", "other"), ("A", "d1")] {
            let e = store.set_signatures(&new(v, d, &b)).await.unwrap_err();
            assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        }
        assert_eq!(
            store.current_signatures().await.unwrap().unwrap().version,
            "B"
        );
        store.close().await;
    }
}
