//! Scanning a running domain: a pull-mode backup exports its disks as they were at one instant,
//! `coldscan scan` reads each export over NBD (`nbd+unix://`), and each disk's report goes to
//! the manager's store under a target that names the VM (its name and UUID) and the disk, as an
//! appliance's report would. The backup is ended whatever happens.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use crate::report::Report;
use crate::store::{NewReport, Store};

use super::{Hypervisor, LibvirtError, PullBackup};

/// What a scan run needs.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// The `coldscan` binary.
    pub coldscan: PathBuf,
    /// Signature databases (`--db`).
    pub db: Vec<PathBuf>,
    /// Where backups get their private directories.
    pub work_dir: PathBuf,
    /// The name reports are stored under (the "appliance").
    pub appliance: String,
}

/// One disk's scan, stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskScan {
    /// The disk's target (`vda`).
    pub disk: String,
    /// The target name the report was stored under ([`vm_target`]).
    pub target: String,
    /// The stored scan's id.
    pub scan: i64,
    /// `coldscan scan`'s exit code (0 clean, 1 found, 2 errors).
    pub exit: i32,
    /// How many detections the report holds.
    pub detections: usize,
}

/// The target name of disk `disk` of VM `name` with UUID `uuid` in stored reports.
pub fn vm_target(name: &str, uuid: &str, disk: &str) -> String {
    format!("libvirt:{name}/{uuid}/{disk}")
}

/// Errors of a domain scan.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// libvirt failed.
    #[error(transparent)]
    Libvirt(#[from] LibvirtError),
    /// `coldscan` could not be run or gave no report.
    #[error("scanning {target}: {detail}")]
    Scanner {
        /// The disk.
        target: String,
        /// What went wrong.
        detail: String,
    },
    /// The store refused the report.
    #[error("storing the report of {target}: {detail}")]
    Store {
        /// The disk.
        target: String,
        /// What went wrong.
        detail: String,
    },
}

/// Scans every writable disk of the running domain `name` through a pull-mode backup and
/// stores one report per disk. The guest keeps running; the backup is ended (and its directory
/// removed) before this returns, also on error. libvirt is called off the async runtime.
pub async fn scan_domain<S: Store>(
    hv: &Arc<Hypervisor>,
    name: &str,
    settings: &ScanSettings,
    store: &S,
) -> Result<Vec<DiskScan>, ScanError> {
    let backup = {
        let (hv, name, work_dir) = (hv.clone(), name.to_string(), settings.work_dir.clone());
        blocking(move || PullBackup::begin(&hv, &name, &work_dir)).await?
    };
    let started = crate::time::now();
    let mut scans = Vec::new();
    let mut failure = None;
    for disk in backup.exports().to_vec() {
        match scan_disk(&backup, &disk, settings, store, started).await {
            Ok(s) => scans.push(s),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let ended = blocking(move || backup.end()).await;
    if let Some(e) = failure {
        return Err(e);
    }
    ended?;
    Ok(scans)
}

/// Runs a libvirt call on tokio's blocking pool (libvirt calls block on the daemon's answer).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LibvirtError> + Send + 'static,
) -> Result<T, LibvirtError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(LibvirtError::Xml(format!("libvirt call panicked: {e}"))))
}

async fn scan_disk<S: Store>(
    backup: &PullBackup,
    disk: &str,
    settings: &ScanSettings,
    store: &S,
    started: i64,
) -> Result<DiskScan, ScanError> {
    let url = backup.url(disk);
    let target = vm_target(backup.domain_name(), backup.domain_uuid(), disk);
    let scanner = |detail: String| ScanError::Scanner {
        target: target.clone(),
        detail,
    };
    let mut cmd = tokio::process::Command::new(&settings.coldscan);
    cmd.arg("scan");
    for db in &settings.db {
        cmd.arg("--db").arg(db);
    }
    cmd.args(["--json", "-"])
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(|e| scanner(format!("running {}: {e}", settings.coldscan.display())))?;
    let exit = out.status.code().unwrap_or(-1);
    if !(0..=2).contains(&exit) {
        return Err(scanner(format!(
            "coldscan exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let mut report: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        scanner(format!(
            "no JSON report ({e}); coldscan said: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    relabel(&mut report, &url, &target);
    let body = report.to_string();
    let parsed = Report::parse(body.as_bytes()).map_err(|e| scanner(e.to_string()))?;
    let key = format!("libvirt-{}-{disk}-{started}", backup.domain_uuid());
    let stored = store
        .insert_report(&NewReport {
            appliance: &settings.appliance,
            key: &key,
            body: &body,
            report: &parsed,
            now: crate::time::now(),
        })
        .await
        .map_err(|e| ScanError::Store {
            target: target.clone(),
            detail: e.to_string(),
        })?;
    Ok(DiskScan {
        disk: disk.to_string(),
        detections: parsed.detections.len(),
        target,
        scan: stored.id,
        exit,
    })
}

/// Replaces the NBD URL (valid only while the backup lasted) by the VM's target name wherever
/// the report names its target.
fn relabel(report: &mut serde_json::Value, url: &str, target: &str) {
    for list in ["targets", "detections", "not_scanned"] {
        let Some(items) = report.get_mut(list).and_then(|v| v.as_array_mut()) else {
            continue;
        };
        for item in items {
            if let Some(t) = item.get_mut("target") {
                if t.as_str() == Some(url) {
                    *t = serde_json::Value::String(target.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relabel_names_the_vm_everywhere_and_only_for_this_export() {
        let url = "nbd+unix:///vda?socket=/run/bk/nbd.sock";
        let mut r = serde_json::json!({
            "targets": [{"target": url}],
            "detections": [{"target": url, "path": "/x"}, {"target": "other"}],
            "not_scanned": [{"target": url}],
        });
        relabel(&mut r, url, "libvirt:web/u/vda");
        assert_eq!(r["targets"][0]["target"], "libvirt:web/u/vda");
        assert_eq!(r["detections"][0]["target"], "libvirt:web/u/vda");
        assert_eq!(r["detections"][1]["target"], "other");
        assert_eq!(r["not_scanned"][0]["target"], "libvirt:web/u/vda");
    }
}
