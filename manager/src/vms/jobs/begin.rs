//! Beginning a claimed VM job's copy: a pull-mode backup, or the snapshot fallback when only
//! it is planned or when libvirt says backup jobs are unsupported; then its disk jobs are
//! queued. What the claim recorded ([`RecordedBackup`]) lets whoever finds the job left over
//! end the backup or hand the snapshot to the overlay keeper.

use crate::libvirt::{blocking, freeze, BackupPlan, NbdServer, PullBackup, SnapshotPlan};
use crate::store::vms::{VmJobEnd, VmJobRow};
use crate::store::{Store, StoreResult};

use super::super::export::{Export, FrozenExport};
use super::super::overlays::overlay_row;
use super::{Driver, Held};

impl<S: Store> Driver<S> {
    /// Begins the copy of a claimed job (a backup; or the snapshot when only it is planned,
    /// or when backup jobs are unsupported) and queues its disk jobs.
    pub(super) async fn begin(
        &mut self,
        job: &VmJobRow,
        hv_name: &str,
        uri: &str,
        recorded: RecordedBackup,
    ) -> StoreResult<()> {
        let hv = match self.connections.get(hv_name, uri).await {
            Ok(hv) => hv,
            Err(e) => {
                let why = format!("the backup could not begin: {e}");
                return self.begin_failed(job, hv_name, why).await;
            }
        };
        if let Some(plan) = recorded.plan {
            let (hv, uuid) = (hv.clone(), job.uuid.clone());
            match blocking(move || PullBackup::begin_planned(&hv, &uuid, &plan)).await {
                Ok(backup) => {
                    let held = Held {
                        export: Export::Backup(backup),
                        overlay: None,
                    };
                    return self.started(job, held).await;
                }
                Err(e) if e.is_unsupported() && recorded.snapshot.is_some() => {
                    let note = format!(
                        "backup jobs are not supported here ({e}): a disk-only snapshot instead"
                    );
                    self.store
                        .log_vm_job(job.id, "fallback", Some(hv_name), &note, crate::time::now())
                        .await?;
                }
                Err(e) => {
                    let why = format!("the backup could not begin: {e}");
                    return self.begin_failed(job, hv_name, why).await;
                }
            }
        }
        let Some(plan) = recorded.snapshot else {
            let why = "no way to copy its disks was planned".to_string();
            return self.begin_failed(job, hv_name, why).await;
        };
        let row = overlay_row(job, uri, &plan, crate::time::now());
        let uuid = job.uuid.clone();
        // Err: no snapshot was taken (freeze is atomic); Ok(Err): taken, but not served.
        let served = blocking(move || {
            let disks = freeze(&hv, &uuid, &plan)?;
            Ok(FrozenExport::serve(plan, disks))
        })
        .await;
        let why = match served {
            Ok(Ok(frozen)) => {
                let held = Held {
                    export: Export::Frozen(frozen),
                    overlay: Some(row),
                };
                return self.started(job, held).await;
            }
            Ok(Err(e)) => {
                // The keeper commits the snapshot back.
                self.store.add_overlay(&row).await?;
                format!("the disk-only snapshot was taken but could not be served: {e}")
            }
            Err(e) => format!("the disk-only snapshot could not be taken: {e}"),
        };
        self.begin_failed(job, hv_name, why).await
    }

    /// Queues the disk jobs of a copy that began.
    async fn started(&mut self, job: &VmJobRow, held: Held) -> StoreResult<()> {
        let disks = held.export.disks();
        self.open.insert(job.id, held);
        self.store
            .add_disk_jobs(job.id, &disks, crate::time::now())
            .await?;
        Ok(())
    }

    /// Fails a claimed job whose copy could not begin.
    async fn begin_failed(
        &mut self,
        job: &VmJobRow,
        hv_name: &str,
        why: String,
    ) -> StoreResult<()> {
        self.connections.drop_connection(hv_name);
        self.store
            .end_vm_job(
                job.id,
                &VmJobEnd::Failed(why),
                "begin-failed",
                crate::time::now(),
            )
            .await
    }
}

/// The snapshot fallback's plan for tag `tag`: the manager serves the frozen images on
/// `listen`:`port` (TCP), or on a unix socket in a private directory under `work_dir`.
pub(super) fn snapshot_plan(
    work_dir: &std::path::Path,
    tag: &str,
    listen: &Option<String>,
    port: Option<u16>,
) -> SnapshotPlan {
    match (listen, port) {
        (Some(host), Some(port)) => SnapshotPlan {
            tag: tag.to_string(),
            server: NbdServer::Tcp {
                host: host.clone(),
                port,
            },
            private_dir: None,
        },
        _ => {
            let dir = work_dir.join(format!("{tag}-frozen"));
            SnapshotPlan {
                tag: tag.to_string(),
                server: NbdServer::Unix {
                    socket: dir.join("nbd.sock"),
                },
                private_dir: Some(dir),
            }
        }
    }
}

/// What a VM job records before its backup begins (`vm_jobs.backup`), so that whoever finds it
/// left over can reach the hypervisor and tell the backup is this one.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct RecordedBackup {
    /// The connection's URI at the time.
    pub uri: String,
    /// The backup's plan (none when the connection copies by snapshot only).
    #[serde(default)]
    pub plan: Option<BackupPlan>,
    /// The snapshot fallback's plan, when one may be taken.
    #[serde(default)]
    pub snapshot: Option<SnapshotPlan>,
}
