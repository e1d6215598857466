//! The fallback for hypervisors without backup jobs, against the real thing: a connection told
//! to copy by `--method snapshot` freezes the running guest's disk with an external disk-only
//! snapshot, the manager serves the frozen image over NBD to the (stand-in) appliance, and the
//! overlay the guest wrote to meanwhile is committed back (`blockcommit --active --pivot`) and
//! removed. Faults: the manager killed while it serves (the restarted manager commits the left
//! overlay back before freezing the VM again), and a commit that cannot be done (the VM shut
//! off on its overlay) reported and done once the VM runs again.

use std::path::{Path, PathBuf};
use std::process::Command;

use coldscan_tests::testdb;
use serde_json::Value;

use crate::common::wait_for;
use crate::world::*;

/// The source of disk `vda` of domain `name`, live (or persistent with `--inactive`).
fn source_of(name: &str, inactive: bool) -> String {
    let mut args = vec!["domblklist", name, "--details"];
    if inactive {
        args.push("--inactive");
    }
    virsh(&args)
        .lines()
        .find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() == 4 && cols[2] == "vda").then(|| cols[3].to_string())
        })
        .unwrap_or_default()
}

/// Overlay files beside `disk`.
fn overlays_beside(disk: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(disk.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".overlay"))
        .collect()
}

/// The manager's log entries for VM job `job` with event `event`.
fn log_of(w: &World, job: i64, event: &str) -> Vec<Value> {
    w.get("/api/v1/vm-jobs/log")["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["vm_job"] == job && e["event"] == event)
        .cloned()
        .collect()
}

/// Waits until VM job `job` has `count` log entries `event`; returns the last one.
fn wait_log(w: &World, job: i64, event: &str, count: usize) -> Value {
    wait_for(&format!("{count} {event} for VM job {job}"), LIMIT, || {
        let l = log_of(w, job, event);
        (l.len() >= count).then(|| l.last().cloned()).flatten()
    })
}

/// Undefines a persistent test domain when the test ends (after [`Guest`]'s destroy).
struct Undefine(String);

impl Drop for Undefine {
    fn drop(&mut self) {
        let _ = Command::new("virsh")
            .args(["-c", URI, "destroy", &self.0])
            .output();
        let _ = Command::new("virsh")
            .args(["-c", URI, "undefine", &self.0])
            .output();
    }
}

#[test]
#[ignore = "needs root, libvirtd and QEMU: make e2e"]
fn a_vm_without_backup_jobs_is_read_from_a_frozen_snapshot_and_committed_back() {
    let _daemons = coldscan_tests::libvirt::Daemons::up().unwrap();
    let mut w = World::new();
    let name = format!("cs-e2e-snap-{}", std::process::id());
    let guest = Guest::writer(w.dir.path(), &name);
    // Persistent too (its own XML, UUID included), so that it can be shut off and started
    // again (part 3).
    let xml = w.dir.path().join(format!("{name}.persistent.xml"));
    std::fs::write(&xml, virsh(&["dumpxml", &name])).unwrap();
    virsh(&["define", xml.to_str().unwrap()]);
    let _undefine = Undefine(name.clone());
    guest.wait_tick(3);
    let before = guest.chain();
    let image = guest.disk.to_str().unwrap().to_string();
    w.cli(&["hypervisor", "add", "--method", "snapshot", "local", URI]);
    assert!(w.cli(&["hypervisor", "list"]).contains("method snapshot"));
    let vm = w.vm(&name, "local", |v| v["state"] == "running");
    let uuid = vm["uuid"].as_str().unwrap().to_string();

    // 1. The frozen image is served by the manager while the guest writes to its overlay;
    //    the scan finds exactly the planted file; the overlay is committed back and removed.
    let job = w.cli(&["scan-vm", &name]).trim().parse::<i64>().unwrap();
    let (disk_job, target) = w.wait_claim(600);
    assert!(
        target.starts_with("nbd://127.0.0.1:") && target.ends_with("/vda"),
        "{target}"
    );
    let overlay = source_of(&name, false);
    assert!(
        overlay.starts_with(&image) && overlay.ends_with(".overlay"),
        "the guest writes to an overlay beside its image: {overlay}"
    );
    assert!(!has_job(&name), "a snapshot, not a backup job");
    let frozen_at = guest.ticks().last().copied().unwrap_or(0);
    guest.wait_tick(frozen_at + 2);
    assert_eq!(w.scan_and_complete(disk_job, &target), 204);
    let done = w.wait_vm_job(job, "done");
    let scan = done["disks"][0]["report"].as_i64().unwrap();
    assert_eq!(
        detections(&w, scan),
        [(
            "/eicar/eicar.com".to_string(),
            testdb::EICAR_REPORTED.to_string()
        )]
    );
    let committed = wait_log(&w, job, "committed", 1);
    assert!(
        committed["detail"].as_str().unwrap().contains("vda"),
        "{committed}"
    );
    assert_eq!(source_of(&name, false), image);
    assert_eq!(source_of(&name, true), image);
    assert!(overlays_beside(&guest.disk).is_empty());
    assert_eq!(guest.chain(), before, "the disk chain changed");
    guest.assert_unaffected();
    assert_eq!(
        w.get("/api/v1/vm-overlays")["overlays"],
        serde_json::json!([])
    );

    // 2. The manager killed while it serves the frozen image: the guest stays on its overlay;
    //    the restarted manager commits it back before freezing the VM again for the retry.
    let job = w.scan(&uuid);
    let (held, _) = w.wait_claim(600);
    w.manager.take().unwrap().kill();
    assert!(source_of(&name, false).ends_with(".overlay"));
    w.start();
    let (retry, target) = w.wait_claim(600);
    assert_ne!(retry, held, "a new snapshot, a new disk job");
    wait_log(&w, job, "left-over", 1);
    wait_log(&w, job, "committed", 1);
    assert_eq!(w.scan_and_complete(retry, &target), 204);
    w.wait_vm_job(job, "done");
    wait_log(&w, job, "committed", 2);
    assert_eq!(source_of(&name, false), image);
    assert!(overlays_beside(&guest.disk).is_empty());
    assert_eq!(guest.chain(), before);
    guest.assert_unaffected();

    // 3. A commit that cannot be done: the VM is shut off mid-scan, defined on its overlay.
    //    The scan of the frozen image still completes; the failed commit is reported (log,
    //    `vm overlays`) and done once the VM runs again.
    let job = w.scan(&uuid);
    let (disk_job, target) = w.wait_claim(600);
    virsh(&["destroy", &name]);
    assert_eq!(w.scan_and_complete(disk_job, &target), 204);
    w.wait_vm_job(job, "done");
    let failed = wait_log(&w, job, "commit-failed", 1);
    assert!(
        failed["detail"].as_str().unwrap().contains("shut off"),
        "{failed}"
    );
    let pending = w.get("/api/v1/vm-overlays")["overlays"].clone();
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert!(pending[0]["last_error"]
        .as_str()
        .unwrap()
        .contains("shut off"));
    let tag = pending[0]["tag"].as_str().unwrap().to_string();
    assert!(w.cli(&["vm", "overlays"]).contains(&tag));
    assert!(source_of(&name, true).ends_with(".overlay"));
    virsh(&["start", &name]);
    wait_log(&w, job, "committed", 1);
    assert_eq!(source_of(&name, false), image);
    assert_eq!(source_of(&name, true), image);
    assert!(overlays_beside(&guest.disk).is_empty());
    assert_eq!(guest.chain(), before);
    assert_eq!(
        w.get("/api/v1/vm-overlays")["overlays"],
        serde_json::json!([])
    );
    w.assert_work_dir_empty();
}
