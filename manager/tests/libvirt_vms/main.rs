//! VM scans through the manager's job queue against the real thing: libvirtd with QEMU (TCG),
//! the real `coldscan-manager serve` keeping the inventory of `qemu:///system`, and the host CLI
//! `coldscan scan nbd://... --manager` standing in for an appliance (claim, scan, complete over
//! the HTTP API). Needs root, libvirt and QEMU; ignored by `cargo test`, run by `make e2e`
//! (test names start with `libvirt::`).

#[path = "../common/mod.rs"]
mod common;
mod world;

mod libvirt {
    mod snapshot_fallback;

    use std::process::Command;

    use coldscan_tests::testdb;

    use crate::world::*;

    /// The vertical slice and its faults, on one running guest that keeps writing: the
    /// inventory lists it, a scan through the queue reports exactly the planted detection for
    /// that VM, the backup ends; then a scanner killed mid-scan (lease expiry: the backup ends
    /// and the job is retried with a new one), the NBD export torn down mid-read (the job fails
    /// with a reason), and the manager killed mid-job (the restarted manager ends the
    /// left-over backup). Throughout: the guest runs and writes, its disk chain never changes,
    /// and nothing is left (no backup job, socket, scratch file).
    #[test]
    #[ignore = "needs root, libvirtd and QEMU: make e2e"]
    fn a_vm_is_scanned_through_the_queue_and_faults_leave_nothing_behind() {
        let _daemons = coldscan_tests::libvirt::Daemons::up().unwrap();
        let mut w = World::new();
        let name = format!("cs-e2e-vm-{}", std::process::id());
        let guest = Guest::writer(w.dir.path(), &name);
        guest.wait_tick(3);
        let before = guest.chain();
        w.cli(&["hypervisor", "add", "local", URI]);
        let vm = w.vm(&name, "local", |v| v["state"] == "running");
        let uuid = vm["uuid"].as_str().unwrap().to_string();
        assert_eq!(vm["disks"][0]["target"], "vda");
        assert_eq!(vm["disks"][0]["source"], guest.disk.to_str().unwrap());
        assert!(w.cli(&["vms"]).contains(&uuid));

        // 1. The slice: scan-vm -> backup -> disk job -> stand-in appliance -> report per VM.
        let job = w.cli(&["scan-vm", &name]).trim().parse::<i64>().unwrap();
        let (disk_job, target) = w.wait_claim(600);
        assert!(
            target.starts_with("nbd://127.0.0.1:") && target.ends_with("/vda"),
            "{target}"
        );
        assert!(
            has_job(&name),
            "the backup is open while its disk is scanned"
        );
        assert_eq!(w.scan_and_complete(disk_job, &target), 204);
        let done = w.wait_vm_job(job, "done");
        let scan = done["disks"][0]["report"].as_i64().unwrap();
        assert_eq!(done["disks"][0]["detections"], 1, "{done}");
        assert_eq!(
            detections(&w, scan),
            [(
                "/eicar/eicar.com".to_string(),
                testdb::EICAR_REPORTED.to_string()
            )]
        );
        let shown = w.get(&format!("/api/v1/vms/{uuid}"));
        assert_eq!(shown["vm"]["last_job"]["detections"], 1, "{shown}");
        assert_eq!(shown["jobs"][0]["id"], job);
        assert!(!has_job(&name), "the backup was ended");
        w.assert_work_dir_empty();
        guest.assert_unaffected();

        // 2. The scanner killed mid-scan: its lease expires, the backup ends, the job is
        //    retried with a new backup, which the next scanner completes.
        let job = w.scan(&uuid);
        let (dying, target) = w.wait_claim(2);
        let mut scanner = w.scanner(&target).spawn().unwrap();
        let _ = scanner.kill();
        let _ = scanner.wait();
        let (retry, target) = w.wait_claim(600);
        assert_ne!(retry, dying);
        let first = w.vm_job(job);
        let lost = first["disks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["job"] == dying)
            .cloned()
            .unwrap();
        assert_eq!(lost["state"], "failed");
        assert!(
            lost["error"].as_str().unwrap().contains("lease expired"),
            "{lost}"
        );
        assert_eq!(first["attempts"], 2);
        assert_eq!(w.scan_and_complete(retry, &target), 204);
        let done = w.wait_vm_job(job, "done");
        assert_eq!(done["disks"].as_array().unwrap().len(), 2, "{done}");
        assert!(!has_job(&name));
        w.assert_work_dir_empty();

        // 3. The NBD export torn down mid-read: the job fails, saying why.
        let job = w.scan(&uuid);
        let (cut, target) = w.wait_claim(600);
        virsh(&["domjobabort", &name]);
        let status = w.scan_and_complete(cut, &target);
        assert!(status == 204 || status == 409, "completion: {status}");
        let failed = w.wait_vm_job(job, "failed");
        let why = failed["error"].as_str().unwrap();
        assert!(
            why.contains("export") || why.contains("backup"),
            "a clear reason: {why}"
        );
        assert!(!has_job(&name));
        w.assert_work_dir_empty();

        // 4. The manager killed mid-job: its backup is left open; the restarted manager (same
        //    --manager-id) ends it at start and begins a new one for the retry.
        let job = w.scan(&uuid);
        let (held, _) = w.wait_claim(600);
        assert!(has_job(&name));
        w.manager.take().unwrap().kill();
        assert!(has_job(&name), "the dead manager's backup is still open");
        w.start();
        let (retry, target) = w.wait_claim(600);
        assert_ne!(retry, held, "a new backup, a new disk job");
        let log = w.get("/api/v1/vm-jobs/log")["log"].clone();
        assert!(
            log.as_array().unwrap().iter().any(|e| e["vm_job"] == job
                && e["event"] == "left-over"
                && e["detail"] == "left-over backup aborted"),
            "{log:#}"
        );
        assert_eq!(w.scan_and_complete(retry, &target), 204);
        w.wait_vm_job(job, "done");
        assert!(!has_job(&name));
        w.assert_work_dir_empty();

        guest.assert_unaffected();
        assert_eq!(guest.chain(), before, "the disk chain changed");
    }

    /// More VMs than the limit: never more backups open at once than allowed, per connection
    /// and per storage pool (counted from the manager's own backup log); then a VM's policy
    /// survives a rename and a (simulated) migration to another connection.
    #[test]
    #[ignore = "needs root, libvirtd and QEMU: make e2e"]
    fn limits_hold_and_policy_follows_the_vm() {
        let _daemons = coldscan_tests::libvirt::Daemons::up().unwrap();
        let w = World::new();
        let pid = std::process::id();
        let names: Vec<String> = (0..4).map(|i| format!("cs-e2e-idle-{pid}-{i}")).collect();
        let guests: Vec<Guest> = names.iter().map(|n| Guest::idle(w.dir.path(), n)).collect();
        w.cli(&["hypervisor", "add", "--max-backups", "2", "local", URI]);
        let uuids: Vec<String> = names
            .iter()
            .map(|n| {
                w.vm(n, "local", |v| v["state"] == "running")["uuid"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();

        // Per connection: 2 at once.
        let scan_all = |w: &World| {
            let from = w.last_log_id();
            let jobs: Vec<i64> = uuids.iter().map(|u| w.scan(u)).collect();
            for _ in 0..uuids.len() {
                let (job, target) = w.wait_claim(600);
                assert_eq!(w.scan_and_complete(job, &target), 204);
            }
            for j in &jobs {
                let done = w.wait_vm_job(*j, "done");
                assert_eq!(done["disks"][0]["detections"], 1, "{done}");
            }
            w.peak(from)
        };
        assert_eq!(
            scan_all(&w),
            2,
            "at most (and here exactly) 2 backups at once"
        );

        // Per storage pool: the disks' directory as a libvirt pool limited to 1.
        let pool = format!("cs-e2e-pool-{pid}");
        virsh(&[
            "pool-create-as",
            &pool,
            "dir",
            "--target",
            w.dir.path().to_str().unwrap(),
        ]);
        struct PoolGone(String);
        impl Drop for PoolGone {
            fn drop(&mut self) {
                let _ = Command::new("virsh")
                    .args(["-c", URI, "pool-destroy", &self.0])
                    .output();
            }
        }
        let _pool = PoolGone(pool.clone());
        for n in &names {
            w.vm(n, "local", |v| v["disks"][0]["pool"] == pool.as_str());
        }
        w.cli(&["hypervisor", "pool-limit", "local", &pool, "1"]);
        assert_eq!(scan_all(&w), 1, "one backup at once on the pool");
        for g in &guests {
            g.assert_unaffected();
            assert!(!has_job(&g.name));
        }
        w.assert_work_dir_empty();

        // Policy follows the UUID: a defined (not running) VM, renamed, then "migrated".
        let idle = &guests[0];
        let persistent = format!("cs-e2e-pol-{pid}");
        let xml = domain_xml(&persistent, "", &idle.disk, None);
        let file = w.dir.path().join("persistent.xml");
        std::fs::write(&file, xml).unwrap();
        virsh(&["define", file.to_str().unwrap()]);
        struct Undefine(String);
        impl Drop for Undefine {
            fn drop(&mut self) {
                let _ = Command::new("virsh")
                    .args(["-c", URI, "undefine", &self.0])
                    .output();
            }
        }
        let mut undefine = Undefine(persistent.clone());
        let vm = w.vm(&persistent, "local", |v| v["state"] == "shutoff");
        let uuid = vm["uuid"].as_str().unwrap().to_string();
        w.cli(&[
            "vm-policy",
            &persistent,
            "--interval",
            "86400",
            "--window",
            "00:00-00:01",
            "--label",
            "web",
        ]);
        let renamed = format!("{persistent}-renamed");
        virsh(&["domrename", &persistent, &renamed]);
        undefine.0 = renamed.clone();
        let vm = w.vm(&renamed, "local", |_| true);
        assert_eq!(vm["uuid"], uuid.as_str());
        let policy = vm["policy"].clone();
        assert_eq!(policy["scan_interval"], 86400, "{vm}");
        assert_eq!(policy["labels"], serde_json::json!(["web"]));
        // Another connection to the same libvirtd; the first one goes away: the VM (same UUID)
        // moves to the new connection with its policy.
        w.cli(&["hypervisor", "add", "other", "qemu+unix:///system"]);
        w.cli(&["hypervisor", "remove", "local"]);
        let moved = w.vm(&renamed, "other", |v| v["state"] == "shutoff");
        assert_eq!(moved["uuid"], uuid.as_str());
        assert_eq!(moved["policy"], policy);
        let events = w.get(&format!("/api/v1/vms/{uuid}"))["events"].clone();
        let kinds: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert!(
            kinds.contains(&"renamed") && kinds.contains(&"migrated"),
            "{events:#}"
        );
    }

    /// The policy "on detection: quarantine": a VM job that finds the planted file cuts the
    /// VM's network (its interface's link down in the live XML), logged as the VM job's
    /// `quarantine` event by `policy`; `vm release` (no URI: the one recorded) restores it.
    #[test]
    #[ignore = "needs root, libvirtd and QEMU: make e2e"]
    fn a_detection_quarantines_the_vm_when_its_policy_says_so() {
        let _daemons = coldscan_tests::libvirt::Daemons::up().unwrap();
        let w = World::new();
        let name = format!("cs-e2e-quar-{}", std::process::id());
        let nic = "<interface type='user'><mac address='52:54:00:c5:00:01'/>\
                   <model type='virtio'/></interface>";
        let guest = Guest::idle_with(w.dir.path(), &name, nic);
        let link = || {
            let xml = virsh(&["dumpxml", &name]);
            let iface = &xml[xml.find("<interface").unwrap()..xml.find("</interface>").unwrap()];
            iface.contains("<link state='down'/>")
        };
        assert!(!link(), "the NIC starts up");
        w.cli(&["hypervisor", "add", "local", URI]);
        let uuid = w.vm(&name, "local", |v| v["state"] == "running")["uuid"]
            .as_str()
            .unwrap()
            .to_string();
        let policy = w.cli(&["vm-policy", &name, "--on-detection", "quarantine"]);
        assert!(
            policy.contains("\"on_detection\":\"quarantine\""),
            "{policy}"
        );

        let job = w.scan(&uuid);
        let (disk_job, target) = w.wait_claim(600);
        assert_eq!(w.scan_and_complete(disk_job, &target), 204);
        let done = wait_end(&w, job);
        assert_eq!(
            done["state"],
            "done",
            "{done:#}\n{:#}",
            w.get("/api/v1/vm-jobs/log")
        );
        assert_eq!(done["disks"][0]["detections"], 1, "{done}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !link() {
            assert!(std::time::Instant::now() < deadline, "the link was not cut");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let log = w.get("/api/v1/vm-jobs/log")["log"].clone();
        assert!(
            log.as_array().unwrap().iter().any(|e| e["vm_job"] == job
                && e["event"] == "quarantine"
                && e["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{name} quarantined: detections in scan "))),
            "{log:#}"
        );
        let q = w.cli(&["vm", "quarantines", "--json"]);
        let q: serde_json::Value = serde_json::from_str(&q).unwrap();
        assert_eq!(q["quarantines"][0]["uuid"], uuid.as_str(), "{q:#}");
        assert_eq!(q["quarantines"][0]["actor"], "policy", "{q:#}");

        w.cli(&["vm", "release", &name]);
        assert!(!link(), "release restores the link");
        guest.assert_unaffected();
    }

    /// Waits for VM job `id` to end (done or failed) and returns it.
    fn wait_end(w: &World, id: i64) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            let job = w.vm_job(id);
            if job["state"] == "done" || job["state"] == "failed" {
                return job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "VM job {id} did not end: {job:#}\n{:#}",
                w.get("/api/v1/vm-jobs/log")
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}
