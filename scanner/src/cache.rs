//! The verdict cache: `(sha256, size) -> signatures` per engine identity, in one SQLite file.
//!
//! An appliance sees the same operating system files on every VM it scans; libclamav costs
//! ~20-40 MB/s per core on real files while SHA-256 costs ~1.7 GB/s, so a repeated content costs
//! a hash instead of a scan. Only complete verdicts are stored (clean, or detected with nothing
//! left unscanned): a file that hit a limit or a read error is scanned again every time.
//!
//! Keys include [`crate::engine::ScanEngine::cache_key`] (engine version, a digest of every
//! database file loaded, the limits and options), so any signature change misses every old
//! entry: a DB change invalidates the cache without a flag day. Rows of other keys stay in the
//! file (two scanners with different databases may share it) until [`VerdictCache::prune`].
//!
//! A cache file is trusted only when it is ours and intact: SQLite's `application_id` must be
//! [`APPLICATION_ID`], `user_version` [`SCHEMA_VERSION`], and `PRAGMA quick_check` must pass.
//! Anything else (another program's database, a truncated or scribbled file, a newer schema) is
//! refused with a reason; the caller warns and scans without the cache, and the file is left
//! untouched.
//!
//! Format: SQLite 3 (<https://www.sqlite.org/fileformat.html>), through `rusqlite`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

/// `PRAGMA application_id` of a coldscan verdict cache (`CSVC`).
pub const APPLICATION_ID: i32 = 0x4353_5643;
/// `PRAGMA user_version`: the schema below.
pub const SCHEMA_VERSION: i32 = 1;
/// Verdicts stored per transaction: a crash loses at most this many (they are recomputed), and
/// writes stay cheap (one commit per batch, not per file).
const BATCH: usize = 512;
/// Most signature names stored per verdict (all-matches mode can produce many).
const MAX_SIGNATURES: usize = 64;

const SCHEMA: &str = "
CREATE TABLE verdicts (
    engine     TEXT    NOT NULL,
    sha256     BLOB    NOT NULL CHECK (length(sha256) = 32),
    size       INTEGER NOT NULL CHECK (size >= 0),
    signatures TEXT    NOT NULL,
    PRIMARY KEY (engine, sha256, size)
) WITHOUT ROWID;
";

/// Why a cache file was not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The file is not a coldscan verdict cache (another SQLite database, or not SQLite).
    #[error("{path}: not a coldscan verdict cache ({detail})")]
    Foreign {
        /// The cache file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },
    /// The file is a coldscan cache but damaged.
    #[error("{path}: verdict cache is corrupt ({detail})")]
    Corrupt {
        /// The cache file.
        path: PathBuf,
        /// SQLite's finding.
        detail: String,
    },
    /// The file could not be opened or written.
    #[error("{path}: verdict cache unusable: {detail}")]
    Io {
        /// The cache file.
        path: PathBuf,
        /// SQLite's error.
        detail: String,
    },
}

/// An opened, validated verdict cache for one engine identity. Shared by scan threads.
#[derive(Debug)]
pub struct VerdictCache {
    inner: Mutex<Inner>,
    engine: String,
    path: PathBuf,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    /// Verdicts inserted in the open transaction.
    pending: usize,
    /// The first write error (writes are best effort; reported once by [`VerdictCache::finish`]).
    write_error: Option<String>,
}

impl VerdictCache {
    /// Opens (or creates) the cache at `path` for verdicts of the engine identified by
    /// `engine_key`. Refuses foreign and corrupt files without modifying them.
    pub fn open(path: &Path, engine_key: &str) -> Result<Self, CacheError> {
        let io = |e: rusqlite::Error| CacheError::Io {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let exists = path.exists();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(io)?;
        let not_db = |e: rusqlite::Error| CacheError::Foreign {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        // Reading the header is the first access: a file that is not SQLite fails here.
        let app: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(not_db)?;
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(not_db)?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(not_db)?;
        let fresh = app == 0 && version == 0 && tables == 0;
        if !fresh {
            if app != APPLICATION_ID {
                return Err(CacheError::Foreign {
                    path: path.to_path_buf(),
                    detail: format!("application_id {app:#x}, {tables} tables"),
                });
            }
            if version != SCHEMA_VERSION {
                return Err(CacheError::Foreign {
                    path: path.to_path_buf(),
                    detail: format!(
                        "schema version {version}, this coldscan reads {SCHEMA_VERSION}"
                    ),
                });
            }
            let check: String = conn
                .query_row("PRAGMA quick_check", [], |r| r.get(0))
                .map_err(|e| CacheError::Corrupt {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })?;
            if check != "ok" {
                return Err(CacheError::Corrupt {
                    path: path.to_path_buf(),
                    detail: check,
                });
            }
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(io)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(io)?;
        if fresh {
            if exists && std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) > 0 {
                // A non-empty SQLite file with no tables and no id: someone else's.
                return Err(CacheError::Foreign {
                    path: path.to_path_buf(),
                    detail: "an empty SQLite database of another program".into(),
                });
            }
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; \
                 PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(io)?;
        } else {
            // The table must be ours too (a schema edited by hand is not trusted).
            let ok: Option<String> = conn
                .query_row(
                    "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'verdicts'",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(io)?;
            if ok.as_deref().map(normalize) != Some(normalize(SCHEMA.trim().trim_end_matches(';')))
            {
                return Err(CacheError::Foreign {
                    path: path.to_path_buf(),
                    detail: "unexpected table layout".into(),
                });
            }
        }
        conn.execute_batch("BEGIN").map_err(io)?;
        Ok(VerdictCache {
            inner: Mutex::new(Inner {
                conn,
                pending: 0,
                write_error: None,
            }),
            engine: engine_key.to_string(),
            path: path.to_path_buf(),
        })
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored verdict of a content: its signature names (empty: clean), or `None` when the
    /// content was never scanned completely by this engine identity.
    pub fn get(&self, sha256: &[u8; 32], size: u64) -> Option<Vec<String>> {
        let size = i64::try_from(size).ok()?;
        let inner = self.inner.lock().ok()?;
        let text: String = inner
            .conn
            .prepare_cached(
                "SELECT signatures FROM verdicts WHERE engine = ?1 AND sha256 = ?2 AND size = ?3",
            )
            .ok()?
            .query_row(params![self.engine, &sha256[..], size], |r| r.get(0))
            .optional()
            .ok()??;
        decode_signatures(&text)
    }

    /// Stores the complete verdict of a content (best effort: a failed write only costs a scan
    /// next time, and is reported by [`VerdictCache::finish`]).
    pub fn put(&self, sha256: &[u8; 32], size: u64, signatures: &[String]) {
        let (Ok(size), Some(text)) = (i64::try_from(size), encode_signatures(signatures)) else {
            return;
        };
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let res = inner
            .conn
            .prepare_cached(
                "INSERT OR REPLACE INTO verdicts (engine, sha256, size, signatures) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut st| st.execute(params![self.engine, &sha256[..], size, text]));
        match res {
            Ok(_) => {
                inner.pending += 1;
                if inner.pending >= BATCH {
                    inner.pending = 0;
                    if let Err(e) = inner.conn.execute_batch("COMMIT; BEGIN") {
                        inner.write_error.get_or_insert(e.to_string());
                    }
                }
            }
            Err(e) => {
                inner.write_error.get_or_insert(e.to_string());
            }
        }
    }

    /// Deletes the verdicts of every other engine identity (older databases).
    pub fn prune(&self) -> Result<usize, CacheError> {
        let inner = self.inner.lock().map_err(|_| CacheError::Io {
            path: self.path.clone(),
            detail: "lock poisoned".into(),
        })?;
        inner
            .conn
            .execute(
                "DELETE FROM verdicts WHERE engine != ?1",
                params![self.engine],
            )
            .map_err(|e| CacheError::Io {
                path: self.path.clone(),
                detail: e.to_string(),
            })
    }

    /// Commits what is pending. Returns the first write error of the scan, if any.
    pub fn finish(&self) -> Result<(), CacheError> {
        let mut inner = self.inner.lock().map_err(|_| CacheError::Io {
            path: self.path.clone(),
            detail: "lock poisoned".into(),
        })?;
        inner.pending = 0;
        let commit = inner.conn.execute_batch("COMMIT; BEGIN");
        let err = inner
            .write_error
            .take()
            .or_else(|| commit.err().map(|e| e.to_string()));
        match err {
            None => Ok(()),
            Some(detail) => Err(CacheError::Io {
                path: self.path.clone(),
                detail,
            }),
        }
    }
}

impl Drop for VerdictCache {
    fn drop(&mut self) {
        if let Ok(inner) = self.inner.get_mut() {
            let _ = inner.conn.execute_batch("COMMIT");
        }
    }
}

fn normalize(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Signature names as one text: newline-separated (names never contain control characters;
/// such a name is not cached).
fn encode_signatures(signatures: &[String]) -> Option<String> {
    if signatures.len() > MAX_SIGNATURES
        || signatures
            .iter()
            .any(|s| s.is_empty() || s.chars().any(char::is_control))
    {
        return None;
    }
    Some(signatures.join("\n"))
}

fn decode_signatures(text: &str) -> Option<Vec<String>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    let v: Vec<String> = text.split('\n').map(String::from).collect();
    (v.len() <= MAX_SIGNATURES && v.iter().all(|s| !s.is_empty())).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "clamav 1.4.6 db abc";

    #[test]
    fn stores_and_finds_verdicts_per_engine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let sha = [7u8; 32];
        {
            let c = VerdictCache::open(&path, KEY).unwrap();
            assert_eq!(c.get(&sha, 10), None);
            c.put(&sha, 10, &[]);
            c.put(&[8u8; 32], 11, &["Test.EICAR.UNOFFICIAL".to_string()]);
            assert_eq!(c.get(&sha, 10), Some(vec![]));
            c.finish().unwrap();
        }
        let c = VerdictCache::open(&path, KEY).unwrap();
        assert_eq!(c.get(&sha, 10), Some(vec![]));
        assert_eq!(c.get(&sha, 11), None, "size is part of the key");
        assert_eq!(
            c.get(&[8u8; 32], 11),
            Some(vec!["Test.EICAR.UNOFFICIAL".to_string()])
        );
        drop(c);
        // Another database: nothing of the old one is seen; pruning removes it.
        let other = VerdictCache::open(&path, "clamav 1.4.6 db def").unwrap();
        assert_eq!(other.get(&sha, 10), None);
        assert_eq!(other.prune().unwrap(), 2);
    }

    #[test]
    fn foreign_and_corrupt_files_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        // Not SQLite at all.
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![0x5a; 10_000]).unwrap();
        let e = VerdictCache::open(&junk, KEY).unwrap_err();
        assert!(matches!(e, CacheError::Foreign { .. }), "{e}");
        assert_eq!(std::fs::read(&junk).unwrap(), vec![0x5a; 10_000]);
        // Another program's SQLite database.
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let e = VerdictCache::open(&other, KEY).unwrap_err();
        assert!(
            e.to_string().contains("not a coldscan verdict cache"),
            "{e}"
        );
        // Our cache with its pages scribbled over.
        let ours = dir.path().join("ours.sqlite");
        {
            let c = VerdictCache::open(&ours, KEY).unwrap();
            for i in 0..2000u32 {
                let mut sha = [0u8; 32];
                sha[..4].copy_from_slice(&i.to_le_bytes());
                c.put(&sha, u64::from(i), &[]);
            }
            c.finish().unwrap();
        }
        // Fold the write-ahead log in so the damage below hits the database pages.
        Connection::open(&ours)
            .unwrap()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")
            .unwrap();
        let mut bytes = std::fs::read(&ours).unwrap();
        assert!(bytes.len() > 16_384, "{}", bytes.len());
        for b in &mut bytes[8192..12_288] {
            *b = 0xa5;
        }
        std::fs::write(&ours, &bytes).unwrap();
        let e = VerdictCache::open(&ours, KEY).unwrap_err();
        assert!(
            matches!(e, CacheError::Corrupt { .. } | CacheError::Foreign { .. }),
            "{e}"
        );
        assert_eq!(std::fs::read(&ours).unwrap(), bytes, "left untouched");
    }

    #[test]
    fn odd_signature_names_are_not_cached() {
        assert_eq!(encode_signatures(&["a\nb".to_string()]), None);
        assert_eq!(encode_signatures(&[String::new()]), None);
        assert_eq!(
            decode_signatures(&encode_signatures(&["A".into(), "B".into()]).unwrap()),
            Some(vec!["A".to_string(), "B".to_string()])
        );
    }
}
