//! A directory of reports waiting for the manager.
//!
//! Each report is one file `NANOS-KEY.json`: `NANOS` (20 digits, the time it was spooled) orders
//! delivery, `KEY` is its idempotency key, generated once when the report is spooled. Files are
//! written to a hidden temporary name, synced, and renamed into place, so that a crash never
//! leaves a half-written report under a deliverable name. A report is deleted only after the
//! manager answered 200 or 201; since the manager stores a key once, delivering the same file
//! again after a crash between the answer and the deletion stores nothing twice. Reports the
//! manager refuses for good (4xx) are moved to `rejected/` so that they do not block the queue.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{new_idempotency_key, ClientError, ManagerClient, PostedReport};

/// Sub-directory for reports the manager refused for good.
pub const REJECTED_DIR: &str = "rejected";

/// Spool file name suffix.
const SUFFIX: &str = ".json";

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// One report waiting in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledReport {
    /// Its file.
    pub path: PathBuf,
    /// Its idempotency key.
    pub key: String,
}

/// What one delivery round did.
#[derive(Debug, Default)]
pub struct SpoolDelivery {
    /// Delivered reports: key and where the manager stored it.
    pub delivered: Vec<(String, PostedReport)>,
    /// Reports refused for good and moved to `rejected/`, with the reason.
    pub rejected: Vec<(PathBuf, ClientError)>,
    /// Reports still waiting.
    pub remaining: usize,
    /// Why delivery stopped early (the manager is unreachable or failing), if it did.
    pub stopped: Option<ClientError>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Spool {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    /// Opens (and creates if needed) the spool directory `dir`.
    pub fn open(dir: &Path) -> Result<Spool, ClientError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(Spool {
            dir: dir.to_path_buf(),
        })
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `report` under a new idempotency key, atomically and durably.
    pub fn store(&self, report: &[u8]) -> Result<SpooledReport, ClientError> {
        let key = new_idempotency_key();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!("{nanos:020}-{key}{SUFFIX}");
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(report).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        // Make the rename itself durable.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok(SpooledReport { path, key })
    }

    /// The reports waiting, oldest first. Files not named like spool entries are ignored.
    pub fn pending(&self) -> Result<Vec<SpooledReport>, ClientError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(key) = parse_name(name) else {
                continue;
            };
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                out.push(SpooledReport {
                    path: entry.path(),
                    key: key.to_string(),
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Delivers every waiting report, oldest first, until the manager fails: what was
    /// delivered is deleted, what was refused for good moves to `rejected/`, the rest stays.
    pub fn deliver(&self, client: &ManagerClient) -> SpoolDelivery {
        let mut outcome = SpoolDelivery::default();
        let pending = match self.pending() {
            Ok(p) => p,
            Err(e) => {
                outcome.stopped = Some(e);
                return outcome;
            }
        };
        let total = pending.len();
        for (done, report) in pending.into_iter().enumerate() {
            let body = match std::fs::read(&report.path) {
                Ok(b) => b,
                Err(source) => {
                    outcome.stopped = Some(ClientError::Spool {
                        path: report.path.clone(),
                        source,
                    });
                    outcome.remaining = total - done;
                    return outcome;
                }
            };
            match client.post_report(&body, &report.key) {
                Ok(posted) => {
                    if let Err(e) = std::fs::remove_file(&report.path) {
                        // Delivered but still here: the next round sends it again, and the
                        // manager answers with the same id.
                        outcome.stopped = Some(ClientError::Spool {
                            path: report.path.clone(),
                            source: e,
                        });
                        outcome.remaining = total - done;
                        return outcome;
                    }
                    outcome.delivered.push((report.key, posted));
                }
                Err(e) if e.is_permanent() => {
                    let rejected = self.dir.join(REJECTED_DIR);
                    let moved = std::fs::create_dir_all(&rejected).and_then(|()| {
                        let dest = rejected.join(report.path.file_name().unwrap_or_default());
                        std::fs::rename(&report.path, &dest).map(|()| dest)
                    });
                    match moved {
                        Ok(dest) => outcome.rejected.push((dest, e)),
                        Err(source) => {
                            outcome.stopped = Some(ClientError::Spool {
                                path: report.path.clone(),
                                source,
                            });
                            outcome.remaining = total - done;
                            return outcome;
                        }
                    }
                }
                Err(e) => {
                    outcome.stopped = Some(e);
                    outcome.remaining = total - done;
                    return outcome;
                }
            }
        }
        outcome
    }
}

/// The key in a spool file name `NANOS-KEY.json`, or `None` for other names.
fn parse_name(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (nanos, key) = stem.split_once('-')?;
    let good_key = !key.is_empty()
        && key.len() <= 64
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (nanos.len() == 20 && nanos.bytes().all(|b| b.is_ascii_digit()) && good_key).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientConfig, RetryPolicy};
    use std::time::Duration;

    #[test]
    fn stores_in_order_with_keys() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&dir.path().join("spool")).unwrap();
        let a = spool.store(b"{\"a\":1}").unwrap();
        let b = spool.store(b"{\"b\":2}").unwrap();
        std::fs::write(spool.dir().join("notes.txt"), "x").unwrap();
        std::fs::write(spool.dir().join(".half.json.tmp"), "x").unwrap();
        let pending = spool.pending().unwrap();
        assert_eq!(pending, vec![a.clone(), b]);
        assert_ne!(pending[0].key, pending[1].key);
        assert_eq!(std::fs::read(&a.path).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn names() {
        assert_eq!(
            parse_name("00000000000000000001-abc-def.json"),
            Some("abc-def")
        );
        assert_eq!(parse_name("1-abc.json"), None);
        assert_eq!(parse_name("00000000000000000001-.json"), None);
        assert_eq!(parse_name("00000000000000000001-a/b.json"), None);
        assert_eq!(parse_name("00000000000000000001-abc.txt"), None);
    }

    #[test]
    fn unreachable_manager_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.store(b"{}").unwrap();
        spool.store(b"{}").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = ClientConfig::new(&format!("http://127.0.0.1:{port}"), "t");
        cfg.retry = RetryPolicy {
            attempts: 1,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
        };
        let client = ManagerClient::new(&cfg).unwrap();
        let outcome = spool.deliver(&client);
        assert!(outcome.delivered.is_empty());
        assert_eq!(outcome.remaining, 2);
        assert!(matches!(
            outcome.stopped,
            Some(ClientError::Unreachable { .. })
        ));
        assert_eq!(spool.pending().unwrap().len(), 2);
    }
}
