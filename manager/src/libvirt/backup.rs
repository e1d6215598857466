//! A pull-mode backup job: the point-in-time NBD export of a running domain's disks
//! (libvirt "Backup XML format", `<domainbackup mode='pull'>`; `virDomainBackupBegin`,
//! `virDomainAbortJob`). Its NBD server listens either on a unix socket in a private directory
//! (0700) that this type creates and removes (a scanner on the same host), or on a TCP address of
//! the hypervisor host (appliances elsewhere; libvirt 9.0 needs the port given). The scratch files
//! libvirt keeps the guest's overwritten blocks in live in the private directory for a local
//! connection, or in [`REMOTE_SCRATCH_DIR`] on a remote host; libvirt deletes them when the job
//! ends. A [`BackupPlan`] says all of that before the backup begins, so that a manager that
//! died holding a backup can be found out and cleaned up after ([`end_recorded`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use virt::domain::Domain;

use super::{call, describe, ffi, xml, Hypervisor, LibvirtError};

/// How long `end` waits for libvirt to report the job gone after aborting it.
const END_WAIT: Duration = Duration::from_secs(30);
/// How often `end` asks.
const END_POLL: Duration = Duration::from_millis(50);
/// Where scratch files go on a remote hypervisor host (created by libvirt-daemon's package).
pub const REMOTE_SCRATCH_DIR: &str = "/var/lib/libvirt/images";

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Where a backup's NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "lowercase")]
pub enum NbdServer {
    /// A unix socket on the hypervisor host.
    Unix {
        /// Its path.
        socket: PathBuf,
    },
    /// TCP on the hypervisor host.
    Tcp {
        /// Address to listen on (and that scanners connect to).
        host: String,
        /// Port.
        port: u16,
    },
}

impl NbdServer {
    /// The URL a scanner reads export `target` of this server at (`nbd+unix://` or `nbd://`).
    pub fn url(&self, target: &str) -> String {
        match self {
            NbdServer::Unix { socket } => {
                format!("nbd+unix:///{target}?socket={}", socket.display())
            }
            NbdServer::Tcp { host, port } if host.contains(':') => {
                format!("nbd://[{host}]:{port}/{target}")
            }
            NbdServer::Tcp { host, port } => format!("nbd://{host}:{port}/{target}"),
        }
    }
}

/// Creates `dir` (mode 0700) and its parents: the private directory of an export's socket
/// (removed again if it cannot be made private).
pub(crate) fn make_private_dir(dir: &Path) -> Result<(), LibvirtError> {
    let io = |what: String| move |source| LibvirtError::Io { what, source };
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    std::fs::create_dir(dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
        let _ = std::fs::remove_dir(dir);
        io(format!("restricting {}", dir.display()))(e)
    })
}

/// Everything a backup will create, decided before it begins (and recorded, so that whoever
/// finds it left over can tell it is this one and clean it up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPlan {
    /// The NBD server.
    pub server: NbdServer,
    /// A private directory (0700) this manager creates and removes: local connections only.
    pub private_dir: Option<PathBuf>,
    /// Where the scratch files go.
    pub scratch_dir: PathBuf,
    /// Prefix of the scratch files' names.
    pub tag: String,
}

impl BackupPlan {
    /// A plan for a local connection: socket (unix mode) and scratch files in
    /// `work_dir/TAG`, or a TCP server on `tcp`.
    pub fn local(work_dir: &Path, tag: &str, tcp: Option<(String, u16)>) -> BackupPlan {
        let dir = work_dir.join(tag);
        BackupPlan {
            server: match tcp {
                Some((host, port)) => NbdServer::Tcp { host, port },
                None => NbdServer::Unix {
                    socket: dir.join("nbd.sock"),
                },
            },
            scratch_dir: dir.clone(),
            private_dir: Some(dir),
            tag: tag.to_string(),
        }
    }

    /// A plan for a remote connection: TCP only, scratch files in [`REMOTE_SCRATCH_DIR`].
    pub fn remote(tag: &str, host: String, port: u16) -> BackupPlan {
        BackupPlan {
            server: NbdServer::Tcp { host, port },
            private_dir: None,
            scratch_dir: PathBuf::from(REMOTE_SCRATCH_DIR),
            tag: tag.to_string(),
        }
    }

    /// The scratch file of disk `target`.
    pub fn scratch(&self, target: &str) -> PathBuf {
        self.scratch_dir
            .join(format!("{}-{target}.scratch", self.tag))
    }

    /// The URL a scanner reads disk `target`'s export at.
    pub fn url(&self, target: &str) -> String {
        self.server.url(target)
    }

    /// Whether the running backup described by `backup_xml` (`virDomainBackupGetXMLDesc`) has
    /// this plan's NBD server.
    pub fn matches(&self, backup_xml: &str) -> bool {
        xml::backup_server(backup_xml).as_ref() == Some(&self.server)
    }
}

/// A running pull-mode backup. End it with [`PullBackup::end`]; dropping it ends it too (best
/// effort, errors ignored).
#[derive(Debug)]
pub struct PullBackup {
    domain: Domain,
    name: String,
    uuid: String,
    plan: BackupPlan,
    exports: Vec<String>,
    ended: bool,
}

impl PullBackup {
    /// Starts a pull-mode backup of every writable disk of the running domain `name` (or
    /// UUID), on a unix socket in a private directory under `work_dir`.
    pub fn begin(hv: &Hypervisor, name: &str, work_dir: &Path) -> Result<PullBackup, LibvirtError> {
        let tag = format!(
            "bk-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        PullBackup::begin_planned(hv, name, &BackupPlan::local(work_dir, &tag, None))
    }

    /// Starts a pull-mode backup of every writable disk of the running domain `key` (name or
    /// UUID) as `plan` says.
    pub fn begin_planned(
        hv: &Hypervisor,
        key: &str,
        plan: &BackupPlan,
    ) -> Result<PullBackup, LibvirtError> {
        let domain = hv.domain(key)?;
        let info = describe(&domain)?;
        if !info.running {
            return Err(LibvirtError::NotFound(format!(
                "domain {} is not running",
                info.name
            )));
        }
        let exports: Vec<String> = info
            .disks
            .iter()
            .filter(|d| d.backupable())
            .map(|d| d.target.clone())
            .collect();
        if exports.is_empty() {
            return Err(LibvirtError::NotFound(format!(
                "domain {} has no disk to back up",
                info.name
            )));
        }
        if let Some(dir) = &plan.private_dir {
            make_private_dir(dir)?;
        }
        let mut backup = PullBackup {
            domain,
            name: info.name.clone(),
            uuid: info.uuid.clone(),
            plan: plan.clone(),
            exports,
            ended: true,
        };
        let doc = xml::pull_backup(&info.disks, &backup.exports, plan);
        let doc = std::ffi::CString::new(doc)
            .map_err(|_| LibvirtError::Xml("backup XML with a NUL byte (from a path?)".into()))?;
        call(
            format!("starting a pull-mode backup of {}", info.name),
            ffi::backup_begin(&backup.domain, &doc),
        )?;
        backup.ended = false;
        Ok(backup)
    }

    /// The domain's name when the backup began.
    pub fn domain_name(&self) -> &str {
        &self.name
    }

    /// The domain's UUID.
    pub fn domain_uuid(&self) -> &str {
        &self.uuid
    }

    /// The exported disks' targets (`vda`...), which are also the NBD export names.
    pub fn exports(&self) -> &[String] {
        &self.exports
    }

    /// The URL of the export of disk `target` (`nbd+unix://` or `nbd://`).
    pub fn url(&self, target: &str) -> String {
        self.plan.url(target)
    }

    /// A handle that tells whether this backup still runs, usable from another thread.
    pub fn watch(&self) -> BackupWatch {
        BackupWatch {
            domain: self.domain.clone(),
            name: self.name.clone(),
            plan: self.plan.clone(),
        }
    }

    /// Ends the backup job (libvirt stops the NBD server and deletes the scratch files), waits
    /// until libvirt reports no job on the domain, and removes the private directory.
    pub fn end(mut self) -> Result<(), LibvirtError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), LibvirtError> {
        let mut result = Ok(());
        if !self.ended {
            self.ended = true;
            result = call(
                format!("ending the backup of {}", self.name),
                ffi::abort_job(&self.domain),
            );
            // Already gone (aborted by someone else, or the domain stopped): nothing to end.
            if result.is_err() && !BackupWatch::from(&*self).is_running().unwrap_or(true) {
                result = Ok(());
            }
            if result.is_ok() {
                result = wait_no_job(&self.domain, &self.name);
            }
        }
        result.and(remove_private_dir(&self.plan))
    }
}

impl From<&PullBackup> for BackupWatch {
    fn from(b: &PullBackup) -> BackupWatch {
        b.watch()
    }
}

/// Tells whether a backup still runs ([`PullBackup::watch`]).
#[derive(Debug, Clone)]
pub struct BackupWatch {
    domain: Domain,
    name: String,
    plan: BackupPlan,
}

impl BackupWatch {
    /// Whether libvirt still runs the backup (false once it was aborted by someone else or the
    /// domain stopped: its export is gone).
    pub fn is_running(&self) -> Result<bool, LibvirtError> {
        if !self.domain.is_active().unwrap_or(false) {
            return Ok(false);
        }
        match ffi::backup_xml(&self.domain) {
            Ok(x) => Ok(self.plan.matches(&x)),
            Err(e) if e.code() == virt::error::ErrorNumber::NoDomainBackup => Ok(false),
            Err(e) => call(format!("backup of {}", self.name), Err(e)),
        }
    }
}

fn remove_private_dir(plan: &BackupPlan) -> Result<(), LibvirtError> {
    match &plan.private_dir {
        Some(dir) if dir.exists() => {
            std::fs::remove_dir_all(dir).map_err(|source| LibvirtError::Io {
                what: format!("removing {}", dir.display()),
                source,
            })
        }
        _ => Ok(()),
    }
}

fn wait_no_job(domain: &Domain, name: &str) -> Result<(), LibvirtError> {
    let start = std::time::Instant::now();
    loop {
        match domain.get_job_info() {
            Ok(job) if job.r#type == virt::sys::VIR_DOMAIN_JOB_NONE as i32 => return Ok(()),
            Ok(_) => {}
            // The domain stopped: no job either.
            Err(_) if !domain.is_active().unwrap_or(false) => return Ok(()),
            Err(e) => return call(format!("job of {name}"), Err(e)),
        }
        if start.elapsed() > END_WAIT {
            return Err(LibvirtError::NotFound(format!(
                "the backup job of {name} is still there {}s after it was aborted",
                END_WAIT.as_secs()
            )));
        }
        std::thread::sleep(END_POLL);
    }
}

/// What [`end_recorded`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeftOver {
    /// The backup was still running: it was aborted.
    Aborted,
    /// No backup of this plan was running (the domain is gone, stopped, or runs another job).
    NotRunning,
}

/// Ends a backup recorded with `plan` on the domain with UUID `uuid` that its owner no longer
/// holds (the manager died or restarted): aborts the domain's backup job if it is this plan's
/// (its NBD server is the planned one), waits for it to go, and removes the private directory.
pub fn end_recorded(
    hv: &Hypervisor,
    uuid: &str,
    plan: &BackupPlan,
) -> Result<LeftOver, LibvirtError> {
    let mut outcome = LeftOver::NotRunning;
    if let Ok(domain) = Domain::lookup_by_uuid_string(&hv.conn, uuid) {
        let ours = domain.is_active().unwrap_or(false)
            && ffi::backup_xml(&domain).is_ok_and(|x| plan.matches(&x));
        if ours {
            call(
                format!("ending the left-over backup of {uuid}"),
                ffi::abort_job(&domain),
            )?;
            wait_no_job(&domain, uuid)?;
            outcome = LeftOver::Aborted;
        }
    }
    remove_private_dir(plan)?;
    Ok(outcome)
}

impl Drop for PullBackup {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
