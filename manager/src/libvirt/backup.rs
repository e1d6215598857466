//! A pull-mode backup job: the point-in-time NBD export of a running domain's disks
//! (libvirt "Backup XML format", `<domainbackup mode='pull'>`; `virDomainBackupBegin`,
//! `virDomainAbortJob`). Its NBD server listens on a unix socket in a private directory (0700)
//! that this type creates and removes; the scratch files libvirt keeps the guest's overwritten
//! blocks in live there too (libvirt deletes them when the job ends).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use virt::domain::Domain;

use super::{call, describe, ffi, xml, Hypervisor, LibvirtError};

/// How long `end` waits for libvirt to report the job gone after aborting it.
const END_WAIT: Duration = Duration::from_secs(30);
/// How often `end` asks.
const END_POLL: Duration = Duration::from_millis(50);

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A running pull-mode backup. End it with [`PullBackup::end`]; dropping it ends it too (best
/// effort, errors ignored).
#[derive(Debug)]
pub struct PullBackup {
    domain: Domain,
    name: String,
    uuid: String,
    dir: PathBuf,
    socket: PathBuf,
    exports: Vec<String>,
    ended: bool,
}

impl PullBackup {
    /// Starts a pull-mode backup of every writable disk of the running domain `name`, with its
    /// private directory under `work_dir`.
    pub fn begin(hv: &Hypervisor, name: &str, work_dir: &Path) -> Result<PullBackup, LibvirtError> {
        let domain = hv.domain(name)?;
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
        let io = |what: String| move |source| LibvirtError::Io { what, source };
        std::fs::create_dir_all(work_dir)
            .map_err(io(format!("creating {}", work_dir.display())))?;
        // Short names: a unix socket path is limited to ~107 bytes.
        let short = info.uuid.get(..8).unwrap_or(&info.uuid);
        let dir = work_dir.join(format!(
            "bk-{short}-{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let mut backup = PullBackup {
            socket: dir.join("nbd.sock"),
            domain,
            name: info.name.clone(),
            uuid: info.uuid.clone(),
            dir,
            exports,
            ended: true,
        };
        std::fs::set_permissions(&backup.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("restricting {}", backup.dir.display())))?;
        let doc = xml::pull_backup(&info.disks, &backup.exports, &backup.socket, &backup.dir);
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

    /// The `nbd+unix://` URL of the export of disk `target`.
    pub fn url(&self, target: &str) -> String {
        format!("nbd+unix:///{target}?socket={}", self.socket.display())
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
            if result.is_ok() {
                result = self.wait_no_job();
            }
        }
        if self.dir.exists() {
            let removed = std::fs::remove_dir_all(&self.dir).map_err(|source| LibvirtError::Io {
                what: format!("removing {}", self.dir.display()),
                source,
            });
            result = result.and(removed);
        }
        result
    }

    fn wait_no_job(&self) -> Result<(), LibvirtError> {
        let start = std::time::Instant::now();
        loop {
            let job = call(format!("job of {}", self.name), self.domain.get_job_info())?;
            if job.r#type == virt::sys::VIR_DOMAIN_JOB_NONE as i32 {
                return Ok(());
            }
            if start.elapsed() > END_WAIT {
                return Err(LibvirtError::NotFound(format!(
                    "the backup job of {} is still there {}s after it was aborted",
                    self.name,
                    END_WAIT.as_secs()
                )));
            }
            std::thread::sleep(END_POLL);
        }
    }
}

impl Drop for PullBackup {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
