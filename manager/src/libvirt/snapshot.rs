//! The fallback for hypervisors without backup jobs: an **external disk-only snapshot**
//! (libvirt "Snapshot XML format"; `virDomainSnapshotCreateXML` with `DISK_ONLY | ATOMIC |
//! NO_METADATA`) moves each disk of the running domain onto a new qcow2 overlay, so that the
//! image it wrote to until then is frozen and can be read while the guest goes on writing to the
//! overlay. When the scan is over the overlay is merged back (`virDomainBlockCommit` with
//! `ACTIVE | SHALLOW`, polled with `virDomainGetBlockJobInfo` until ready, then
//! `virDomainBlockJobAbort` with `PIVOT`: `virsh blockcommit --active --pivot`), the disk is on
//! its original image again and the overlay file is removed.
//!
//! Overlays are named after the snapshot's tag (`IMAGE.TAG.overlay`, beside the image, in the
//! same storage), so that whoever finds one left over (a manager that died mid-scan, a VM shut
//! off before the commit) recognizes it from the domain's XML and the tag alone ([`thaw`]).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;

use super::backup::NbdServer;
use super::{call, describe, describe_with_xml, ffi, xml, DiskInfo, Hypervisor, LibvirtError};

/// How often a running commit is polled.
const COMMIT_POLL: Duration = Duration::from_millis(100);
/// How long a pivot may take to show in the domain's XML.
const PIVOT_WAIT: Duration = Duration::from_secs(30);

/// Everything a snapshot export will create, decided (and recorded) before it is taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPlan {
    /// Names the snapshot and its overlays.
    pub tag: String,
    /// Where the manager's NBD server for the frozen images listens.
    pub server: NbdServer,
    /// A private directory (0700) for a unix socket, created and removed by the export.
    pub private_dir: Option<PathBuf>,
}

impl SnapshotPlan {
    /// The URL a scanner reads disk `target`'s frozen image at.
    pub fn url(&self, target: &str) -> String {
        self.server.url(target)
    }

    /// The overlay a disk whose image is `image` writes to while this snapshot holds.
    pub fn overlay(&self, image: &Path) -> PathBuf {
        let name = image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        image.with_file_name(format!("{name}.{}.overlay", self.tag))
    }

    /// Whether `path` is one of this snapshot's overlays.
    pub fn is_overlay(&self, path: &str) -> bool {
        path.ends_with(&format!(".{}.overlay", self.tag))
    }
}

/// One disk frozen by a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrozenDisk {
    /// Guest-side name (`vda`): the export name.
    pub target: String,
    /// The image the guest wrote to until the snapshot, frozen now.
    pub image: PathBuf,
    /// Its format (`<driver type=...>`), never probed from its content.
    pub format: String,
    /// The files of its backing chain, top first (from the domain's XML).
    pub backing: Vec<PathBuf>,
    /// The overlay the guest writes to now.
    pub overlay: PathBuf,
}

/// Takes the external disk-only snapshot of `plan` on the running domain with UUID `uuid`:
/// every writable file-backed disk moves to its overlay. Atomic: on error no disk moved.
pub fn freeze(
    hv: &Hypervisor,
    uuid: &str,
    plan: &SnapshotPlan,
) -> Result<Vec<FrozenDisk>, LibvirtError> {
    let domain = hv.domain(uuid)?;
    let (info, live) = describe_with_xml(&domain)?;
    if !info.running {
        return Err(LibvirtError::NotFound(format!(
            "domain {} is not running",
            info.name
        )));
    }
    if let Some(left) = info
        .disks
        .iter()
        .filter_map(|d| d.source.as_deref())
        .find(|s| looks_like_an_overlay(s))
    {
        return Err(LibvirtError::Snapshot(format!(
            "{}: a disk is still on overlay {left} of an earlier snapshot, not committed back \
             yet: no snapshot stacked on it",
            info.name
        )));
    }
    let mut frozen = Vec::new();
    for disk in info.disks.iter().filter(|d| d.backupable()) {
        frozen.push(frozen_disk(&info.name, disk, &live, plan)?);
    }
    if frozen.is_empty() {
        return Err(LibvirtError::NotFound(format!(
            "domain {} has no disk to snapshot",
            info.name
        )));
    }
    for f in &frozen {
        if f.overlay.exists() {
            return Err(LibvirtError::Snapshot(format!(
                "{}: overlay {} exists already: left alone, no snapshot taken",
                info.name,
                f.overlay.display()
            )));
        }
    }
    let overlays: Vec<(String, PathBuf)> = frozen
        .iter()
        .map(|f| (f.target.clone(), f.overlay.clone()))
        .collect();
    let doc = xml::disk_only_snapshot(&info.disks, &plan.tag, &overlays);
    let flags = virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        | virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        | virt::sys::VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA;
    call(
        format!("taking a disk-only snapshot of {}", info.name),
        DomainSnapshot::create_xml(&domain, &doc, flags),
    )?;
    Ok(frozen)
}

/// Whether `path` is named like an overlay of any coldscan snapshot (`*.cs-*.overlay`).
pub fn looks_like_an_overlay(path: &str) -> bool {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n.ends_with(".overlay") && n.contains(".cs-"))
}

fn frozen_disk(
    name: &str,
    disk: &DiskInfo,
    live_xml: &str,
    plan: &SnapshotPlan,
) -> Result<FrozenDisk, LibvirtError> {
    let unsupported = |why: &str| {
        LibvirtError::Snapshot(format!(
            "{name}: disk {} {why}: the snapshot fallback reads file-backed disks only",
            disk.target
        ))
    };
    if disk.kind != "file" {
        return Err(unsupported(&format!("is a {} disk", disk.kind)));
    }
    let image = disk
        .source
        .as_deref()
        .filter(|s| Path::new(s).is_absolute())
        .ok_or_else(|| unsupported("has no absolute source path"))?;
    let format = disk
        .format
        .clone()
        .ok_or_else(|| unsupported("states no format (<driver type=...>)"))?;
    let backing = xml::backing_files(live_xml, &disk.target)?
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let image = PathBuf::from(image);
    Ok(FrozenDisk {
        target: disk.target.clone(),
        overlay: plan.overlay(&image),
        image,
        format,
        backing,
    })
}

/// What [`thaw`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Thawed {
    /// Overlays of this snapshot were committed back (disk targets) and removed.
    Committed(Vec<String>),
    /// No disk was on an overlay of this snapshot (never taken, or committed before); left-over
    /// overlay files were removed (paths).
    NothingToCommit(Vec<PathBuf>),
    /// The domain is no longer defined: its overlays (if any) are left where they are.
    DomainGone,
}

/// Merges every overlay of the snapshot `plan` on the domain with UUID `uuid` back into its
/// image and removes it. Found from the domain's XML: a disk whose source is one of the plan's
/// overlays is committed and pivoted back; an overlay file beside a disk's image that the
/// domain no longer uses is removed. A commit not ready within `limit` is cancelled (the guest
/// stays on its overlay, nothing is lost) and reported; so is a shut-off domain still defined
/// on an overlay (it can only be committed while it runs).
pub fn thaw(
    hv: &Hypervisor,
    uuid: &str,
    plan: &SnapshotPlan,
    limit: Duration,
) -> Result<Thawed, LibvirtError> {
    let Ok(domain) = Domain::lookup_by_uuid_string(&hv.conn, uuid) else {
        return Ok(Thawed::DomainGone);
    };
    let (info, live) = describe_with_xml(&domain)?;
    if info.running {
        // An overlay of ours below another layer (a snapshot taken on top of it outside
        // coldscan) cannot be committed by a shallow active commit: the operator decides.
        for disk in &info.disks {
            let below = xml::backing_files(&live, &disk.target)?;
            if let Some(ours) = below.iter().find(|b| plan.is_overlay(b)) {
                return Err(LibvirtError::Snapshot(format!(
                    "{}: overlay {ours} is below another layer of disk {} (a snapshot taken \
                     on top of it outside coldscan): left for the operator to commit",
                    info.name, disk.target
                )));
            }
        }
    }
    let mut committed = Vec::new();
    let mut overlays_in_use = Vec::new();
    for disk in &info.disks {
        let Some(source) = disk.source.as_deref() else {
            continue;
        };
        if !plan.is_overlay(source) {
            continue;
        }
        if !info.running {
            return Err(LibvirtError::Snapshot(format!(
                "{} is shut off and defined on overlay {source} (disk {}): the commit waits \
                 until it runs again",
                info.name, disk.target
            )));
        }
        commit_disk(&domain, &info.name, &disk.target, source, limit)?;
        committed.push(disk.target.clone());
        overlays_in_use.push(PathBuf::from(source));
    }
    // The persistent definition too: libvirt updates it on pivot, but a domain shut off and
    // started again in between could still name an overlay.
    let inactive = call(
        format!("persistent XML of {}", info.name),
        domain.get_xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE),
    )?;
    for disk in xml::domain_disks(&inactive)? {
        if let Some(source) = disk.source.as_deref().filter(|s| plan.is_overlay(s)) {
            return Err(LibvirtError::Snapshot(format!(
                "{}: its persistent definition still names overlay {source} (disk {}): left \
                 in place",
                info.name, disk.target
            )));
        }
    }
    // The overlays just committed, and any of this snapshot beside the images the domain uses
    // now (committed by an earlier try that did not get to remove them).
    let now = describe(&domain)?;
    let mut candidates: Vec<PathBuf> = overlays_in_use;
    for disk in now.disks.iter().filter(|d| d.kind == "file") {
        if let Some(source) = disk.source.as_deref() {
            candidates.push(plan.overlay(Path::new(source)));
        }
    }
    let mut removed = Vec::new();
    for overlay in candidates {
        if overlay.exists() && !removed.contains(&overlay) {
            std::fs::remove_file(&overlay).map_err(|source| LibvirtError::Io {
                what: format!("removing overlay {}", overlay.display()),
                source,
            })?;
            removed.push(overlay);
        }
    }
    Ok(if committed.is_empty() {
        Thawed::NothingToCommit(removed)
    } else {
        Thawed::Committed(committed)
    })
}

/// `virsh blockcommit DOMAIN TARGET --active --shallow --pivot`, bounded by `limit`.
fn commit_disk(
    domain: &Domain,
    name: &str,
    target: &str,
    overlay: &str,
    limit: Duration,
) -> Result<(), LibvirtError> {
    let disk = CString::new(target)
        .map_err(|_| LibvirtError::Xml(format!("disk target {target:?} with a NUL byte")))?;
    let what = |step: &str| format!("{step} of {name} disk {target} (overlay {overlay})");
    // A commit left running by a manager that died: poll it instead of starting another.
    if call(what("block job"), ffi::block_job_info(domain, &disk))?.is_none() {
        let flags =
            virt::sys::VIR_DOMAIN_BLOCK_COMMIT_ACTIVE | virt::sys::VIR_DOMAIN_BLOCK_COMMIT_SHALLOW;
        call(what("commit"), ffi::block_commit(domain, &disk, flags))?;
    }
    let start = Instant::now();
    loop {
        match call(what("commit progress"), ffi::block_job_info(domain, &disk))? {
            Some((cur, end)) if cur == end => {
                let pivot = virt::sys::VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT;
                match ffi::block_job_abort(domain, &disk, pivot) {
                    Ok(()) => break,
                    // Not ready after all (libvirt waits for QEMU's READY event): poll on.
                    Err(e) if start.elapsed() < limit => {
                        let _ = e;
                    }
                    Err(e) => return call(what("pivot"), Err(e)),
                }
            }
            Some(_) => {}
            None => {
                return Err(LibvirtError::Snapshot(format!(
                    "{}: the job ended without a pivot (cancelled outside coldscan?)",
                    what("commit")
                )))
            }
        }
        if start.elapsed() > limit {
            let _ = ffi::block_job_abort(domain, &disk, 0);
            return Err(LibvirtError::Snapshot(format!(
                "{}: not ready after {} s: cancelled, the guest stays on its overlay until the \
                 next try",
                what("commit"),
                limit.as_secs()
            )));
        }
        std::thread::sleep(COMMIT_POLL);
    }
    // The pivot is synchronous, but make sure the domain says so before the overlay goes.
    let start = Instant::now();
    loop {
        let live = call(what("XML after the pivot"), domain.get_xml_desc(0))?;
        let now = xml::domain_disks(&live)?
            .into_iter()
            .find(|d| d.target == target)
            .and_then(|d| d.source);
        if now.as_deref() != Some(overlay) {
            return Ok(());
        }
        if start.elapsed() > PIVOT_WAIT {
            return Err(LibvirtError::Snapshot(format!(
                "{}: the disk still names the overlay {} s after the pivot",
                what("commit"),
                PIVOT_WAIT.as_secs()
            )));
        }
        std::thread::sleep(COMMIT_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> SnapshotPlan {
        SnapshotPlan {
            tag: "cs-vmjob-7-1".into(),
            server: NbdServer::Tcp {
                host: "192.0.2.1".into(),
                port: 10809,
            },
            private_dir: None,
        }
    }

    #[test]
    fn overlays_are_named_after_the_image_and_the_tag() {
        let p = plan();
        let o = p.overlay(Path::new("/var/lib/libvirt/images/web.qcow2"));
        assert_eq!(
            o,
            Path::new("/var/lib/libvirt/images/web.qcow2.cs-vmjob-7-1.overlay")
        );
        assert!(p.is_overlay(&o.to_string_lossy()));
        assert!(!p.is_overlay("/var/lib/libvirt/images/web.qcow2"));
        assert!(!p.is_overlay("/i/web.qcow2.cs-vmjob-7-11.overlay"));
        assert_eq!(p.url("vda"), "nbd://192.0.2.1:10809/vda");
        assert!(looks_like_an_overlay(&o.to_string_lossy()));
        assert!(!looks_like_an_overlay("/i/web.qcow2"));
        assert!(!looks_like_an_overlay("/i.cs-1.overlay/web.qcow2"));
    }

    #[test]
    fn only_file_disks_with_a_format_are_frozen() {
        let live = "<domain><devices><disk type='file'><target dev='vda'/></disk>\
                    <disk type='block'><target dev='vdb'/></disk></devices></domain>";
        let disk = |kind: &str, target: &str, format: Option<&str>| DiskInfo {
            target: target.into(),
            device: "disk".into(),
            kind: kind.into(),
            source: Some("/i/x.img".into()),
            format: format.map(str::to_string),
            readonly: false,
        };
        let ok = frozen_disk("d", &disk("file", "vda", Some("raw")), live, &plan()).unwrap();
        assert_eq!(ok.overlay, Path::new("/i/x.img.cs-vmjob-7-1.overlay"));
        for bad in [disk("block", "vdb", Some("raw")), disk("file", "vda", None)] {
            assert!(matches!(
                frozen_disk("d", &bad, live, &plan()),
                Err(LibvirtError::Snapshot(_))
            ));
        }
    }
}
