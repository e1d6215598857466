//! Signature updates from the manager (daemon mode). Between jobs the daemon asks the manager
//! for its current signature database (`GET /api/v1/signatures`); when its digest differs from
//! the one in use, it downloads the bundle ([`super::bundle`]), checks every file and the digest,
//! writes the files to a fresh directory under [`SIGNATURE_DIR`] (in memory), and loads them in
//! a hardened scan worker ([`super::worker`]: the same landlock and seccomp rules as a real scan;
//! `/run/coldscan` is readable by workers) that scans an empty probe file. Only when that worker
//! loaded exactly this database does the next job use it; on any failure the database in use
//! stays, and the console says why. Jobs are never interrupted: the check runs between them, and
//! each worker loads its engine when it starts.
//!
//! Reports made with a fetched database name its manager version (`engine.db.manager_version`)
//! once their digest shows they really used it.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coldscan_scanner::report::ScanReport;

use super::bundle;
use super::console::say;
use super::worker::{self, ScanRequest};
use crate::client::ManagerClient;

/// Where fetched databases live (tmpfs; readable by workers).
pub const SIGNATURE_DIR: &str = "/run/coldscan/signatures";
/// A database that failed to download or load is tried again after this long (sooner if the
/// manager's database changes).
const RETRY_FAILED: Duration = Duration::from_secs(120);

/// A database fetched from the manager and loaded successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// The manager's version of it.
    pub version: String,
    /// Its digest.
    pub sha256: String,
    /// The directory holding its files.
    pub dir: PathBuf,
}

/// The daemon's view of fetched signatures, shared with the scans.
#[derive(Debug)]
pub struct Fetched {
    enabled: bool,
    root: PathBuf,
    active: Mutex<Option<Active>>,
    /// Digest that last failed, when, and why (so that it is not retried at every loop).
    failed: Mutex<Option<(String, Instant)>>,
    /// The last problem said on the console (said once, not at every loop).
    last_problem: Mutex<String>,
}

impl Fetched {
    /// Updates from the manager on (`enabled`) or off, fetched databases under `root`.
    pub fn new(enabled: bool, root: &Path) -> Fetched {
        Fetched {
            enabled,
            root: root.to_path_buf(),
            active: Mutex::new(None),
            failed: Mutex::new(None),
            last_problem: Mutex::new(String::new()),
        }
    }

    /// The fetched database in use, if any.
    pub fn active(&self) -> Option<Active> {
        self.active.lock().ok().and_then(|a| a.clone())
    }

    /// The databases a scan uses now: the fetched one, else `local`.
    pub fn dbs(&self, local: &[PathBuf]) -> Vec<PathBuf> {
        match self.active() {
            Some(a) => vec![a.dir],
            None => local.to_vec(),
        }
    }

    /// Names the manager's version in `report` when the report's engine loaded exactly the
    /// fetched database.
    pub fn stamp(&self, report: &mut ScanReport) {
        let Some(active) = self.active() else { return };
        if let Some(db) = report.engine.db.as_mut() {
            if db.sha256 == active.sha256 {
                db.manager_version = Some(active.version);
            }
        }
    }

    fn problem(&self, text: String) {
        if let Ok(mut last) = self.last_problem.lock() {
            if *last != text {
                say(&text);
                *last = text;
            }
        }
    }

    /// Asks the manager for its current database and switches to it if it is new and loads.
    /// Returns the newly active database when it switched.
    pub fn check(&self, client: &ManagerClient) -> Option<Active> {
        if !self.enabled {
            return None;
        }
        let answer = client.signatures();
        if answer.is_ok() {
            // The manager answers again: a problem seen before is worth saying again.
            if let Ok(mut last) = self.last_problem.lock() {
                last.clear();
            }
        }
        let set = match answer {
            Ok(Some(set)) => set,
            Ok(None) => return None,
            Err(e) => {
                self.problem(format!("signature check failed: {e}"));
                return None;
            }
        };
        if self.active().is_some_and(|a| a.sha256 == set.sha256) {
            return None;
        }
        if let Ok(failed) = self.failed.lock() {
            if failed
                .as_ref()
                .is_some_and(|(d, at)| *d == set.sha256 && at.elapsed() < RETRY_FAILED)
            {
                return None;
            }
        }
        let keeping = match self.active() {
            Some(a) => format!("signatures {}", a.version),
            None => "the appliance's own signatures".into(),
        };
        match self.install(client, &set.version, &set.sha256, set.size) {
            Ok(active) => {
                say(&format!(
                    "signatures {} ({}) from the manager loaded; the next job uses them",
                    active.version,
                    &active.sha256[..12.min(active.sha256.len())]
                ));
                let old = self
                    .active
                    .lock()
                    .ok()
                    .and_then(|mut a| a.replace(active.clone()));
                if let Some(old) = old {
                    if old.dir != active.dir {
                        let _ = std::fs::remove_dir_all(&old.dir);
                    }
                }
                super::jobs::set_db_note(&active.dir);
                if let Ok(mut f) = self.failed.lock() {
                    *f = None;
                }
                Some(active)
            }
            Err(why) => {
                self.problem(format!(
                    "signatures {} from the manager NOT loaded, keeping {keeping}: {why}",
                    set.version
                ));
                if let Ok(mut f) = self.failed.lock() {
                    *f = Some((set.sha256, Instant::now()));
                }
                None
            }
        }
    }

    /// Downloads, checks, writes and test-loads a database; its directory on success.
    fn install(
        &self,
        client: &ManagerClient,
        version: &str,
        sha256: &str,
        size: u64,
    ) -> Result<Active, String> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("the manager names digest {sha256:?}"));
        }
        if size > bundle::MAX_BUNDLE_BYTES {
            return Err(format!("{size} bytes is over the limit"));
        }
        let data = client
            .signature_bundle(bundle::MAX_BUNDLE_BYTES)
            .map_err(|e| e.to_string())?;
        let files = bundle::read(&data).map_err(|e| e.to_string())?;
        if files.is_empty() {
            return Err("the bundle holds no files".into());
        }
        let got = bundle::digest(&data, &files);
        if got != sha256 {
            return Err(format!(
                "the bundle's digest is {got}, the manager announced {sha256} (changed meanwhile?)"
            ));
        }
        std::fs::create_dir_all(&self.root).map_err(|e| format!("{}: {e}", self.root.display()))?;
        let dir = self.root.join(sha256);
        let partial = self.root.join(format!("{sha256}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir(&partial)?;
            for f in &files {
                std::fs::write(partial.join(&f.name), f.content(&data))?;
            }
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::rename(&partial, &dir)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(format!("writing {}: {e}", dir.display()));
        }
        drop(data);
        if let Err(e) = self.probe(&dir, sha256) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(Active {
            version: version.to_string(),
            sha256: sha256.to_string(),
            dir,
        })
    }

    /// Loads the database in `dir` in a hardened worker that scans an empty file: it must load
    /// (libclamav accepts every file) and report exactly digest `sha256`.
    fn probe(&self, dir: &Path, sha256: &str) -> Result<(), String> {
        let probe = self.root.join("probe");
        std::fs::write(&probe, b"").map_err(|e| format!("{}: {e}", probe.display()))?;
        let outcome = worker::scan(
            &ScanRequest {
                target: probe.display().to_string(),
                identity: "signature check".into(),
                jobs: 1,
                dbs: vec![dir.to_path_buf()],
                selftest: None,
            },
            0,
        );
        if let Some(f) = outcome.failure {
            return Err(format!(
                "a scan worker could not load it ({f}; its own message is on the console above)"
            ));
        }
        let r = &outcome.report;
        if let Some(n) = r.not_scanned.first() {
            return Err(format!("libclamav refused it: {}", n.detail));
        }
        match r.engine.db.as_ref() {
            Some(db) if db.sha256 == sha256 && r.engine.signatures > 0 => Ok(()),
            Some(db) => Err(format!(
                "the worker loaded digest {} with {} signatures, not {sha256}",
                db.sha256, r.engine.signatures
            )),
            None => Err("the worker's report names no database".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldscan_scanner::report::DbIdentity;

    #[test]
    fn reports_name_the_manager_version_only_for_the_fetched_database() {
        let dir = tempfile::tempdir().unwrap();
        let fetched = Fetched::new(true, dir.path());
        let local = vec![PathBuf::from("/usr/share/coldscan/db")];
        assert_eq!(fetched.dbs(&local), local);
        let mut report = worker::failure_report("d", 0, "x");
        report.engine.db = Some(DbIdentity {
            version: 0,
            sha256: "a".repeat(64),
            manager_version: None,
        });
        fetched.stamp(&mut report);
        assert_eq!(report.engine.db.as_ref().unwrap().manager_version, None);
        *fetched.active.lock().unwrap() = Some(Active {
            version: "B".into(),
            sha256: "b".repeat(64),
            dir: dir.path().join("b"),
        });
        assert_eq!(fetched.dbs(&local), [dir.path().join("b")]);
        // A report made with another database is not relabelled.
        fetched.stamp(&mut report);
        assert_eq!(report.engine.db.as_ref().unwrap().manager_version, None);
        report.engine.db.as_mut().unwrap().sha256 = "b".repeat(64);
        fetched.stamp(&mut report);
        assert_eq!(
            report
                .engine
                .db
                .as_ref()
                .unwrap()
                .manager_version
                .as_deref(),
            Some("B")
        );
    }
}
