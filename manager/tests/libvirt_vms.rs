//! VM scans through the manager's job queue against the real thing: libvirtd with QEMU (TCG),
//! the real `coldscan-manager serve` keeping the inventory of `qemu:///system`, and the host CLI
//! `coldscan scan nbd://... --manager` standing in for an appliance (claim, scan, complete over
//! the HTTP API). Needs root, libvirt and QEMU; ignored by `cargo test`, run by `make e2e`
//! (test names start with `libvirt::`).

mod common;

mod libvirt {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Duration;

    use coldscan_tests::testdb;
    use serde_json::Value;

    use super::common::*;

    const URI: &str = "qemu:///system";
    /// Give-up bound for waits (a hang guard, not a timing claim).
    const LIMIT: Duration = Duration::from_secs(240);

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    fn run(cmd: &mut Command) -> String {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn virsh(args: &[&str]) -> String {
        run(Command::new("virsh").args(["-c", URI]).args(args))
    }

    /// Whether the domain has a job (`virsh domjobinfo`).
    fn has_job(name: &str) -> bool {
        !virsh(&["domjobinfo", name]).contains("None")
    }

    /// A transient domain, destroyed on drop. `serial` is set for the writing busybox guest.
    struct Guest {
        name: String,
        serial: Option<PathBuf>,
        disk: PathBuf,
    }

    fn domain_xml(name: &str, os: &str, disk: &Path, serial: Option<&Path>) -> String {
        format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>{mem}</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>{os}</os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{d}'/><target dev='vda' bus='virtio'/></disk>
    {serial}
    <memballoon model='none'/>
  </devices></domain>",
            mem = if serial.is_some() { 256 } else { 32 },
            d = disk.display(),
            serial = serial
                .map(|s| format!(
                    "<serial type='file'><source path='{}'/><target port='0'/></serial>",
                    s.display()
                ))
                .unwrap_or_default(),
        )
    }

    fn plant(dir: &Path) -> PathBuf {
        let plant = dir.join("plant");
        std::fs::create_dir_all(plant.join("eicar")).unwrap();
        std::fs::write(plant.join("eicar/eicar.com"), testdb::eicar()).unwrap();
        std::fs::write(plant.join("readme.txt"), b"a clean file\n").unwrap();
        plant
    }

    impl Guest {
        /// The busybox guest that keeps writing, with an EICAR file planted.
        fn writer(dir: &Path, name: &str) -> Guest {
            let cache = repo().join("target/fixtures/libvirt-guest");
            let out = dir.join(name);
            run(Command::new(repo().join("scripts/libvirt-test-guest"))
                .arg(&cache)
                .arg(&out)
                .arg(plant(dir)));
            let serial = dir.join(format!("{name}.serial"));
            let disk = out.join("disk.qcow2");
            let os = format!(
                "<kernel>{}</kernel><initrd>{}</initrd><cmdline>console=ttyS0 panic=-1 quiet</cmdline>",
                cache.join("vmlinuz").display(),
                cache.join("initrd.img").display()
            );
            let xml = domain_xml(name, &os, &disk, Some(&serial));
            Guest::create(dir, name, &xml, disk, Some(serial))
        }

        /// A VM with no OS (its firmware finds nothing to boot and waits): cheap to run, and
        /// its disk (an ext4 holding an EICAR file) can be backed up like any other.
        fn idle(dir: &Path, name: &str) -> Guest {
            let raw = dir.join(format!("{name}.raw"));
            let disk = dir.join(format!("{name}.qcow2"));
            run(Command::new("truncate").args(["-s", "16M"]).arg(&raw));
            run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-d"])
                .arg(plant(dir))
                .arg(&raw));
            run(Command::new("qemu-img")
                .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(&disk));
            std::fs::remove_file(&raw).unwrap();
            let xml = domain_xml(name, "", &disk, None);
            Guest::create(dir, name, &xml, disk, None)
        }

        fn create(
            dir: &Path,
            name: &str,
            xml: &str,
            disk: PathBuf,
            serial: Option<PathBuf>,
        ) -> Guest {
            let file = dir.join(format!("{name}.xml"));
            std::fs::write(&file, xml).unwrap();
            virsh(&["create", file.to_str().unwrap()]);
            Guest {
                name: name.to_string(),
                serial,
                disk,
            }
        }

        fn ticks(&self) -> Vec<u64> {
            let log = std::fs::read_to_string(self.serial.as_ref().unwrap()).unwrap_or_default();
            log.lines()
                .filter_map(|l| l.trim().strip_prefix("coldscan-guest tick "))
                .filter_map(|n| n.split_whitespace().next()?.parse().ok())
                .collect()
        }

        fn wait_tick(&self, at_least: u64) -> u64 {
            wait_for("the guest's counter", LIMIT, || {
                self.ticks().last().copied().filter(|&t| t >= at_least)
            })
        }

        /// The domain's disk list and the image's backing chain: must never change.
        fn chain(&self) -> (String, String) {
            let blk = virsh(&["domblklist", &self.name, "--details"]);
            let info = run(Command::new("qemu-img")
                .args(["info", "-U", "--backing-chain", "--output=json"])
                .arg(&self.disk));
            let info: Value = serde_json::from_str(&info).unwrap();
            // The chain: each image's file, format and backing file (not sizes: the guest
            // writes).
            let chain: Vec<_> = info
                .as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    (
                        i["filename"].clone(),
                        i["format"].clone(),
                        i["backing-filename"].clone(),
                    )
                })
                .collect();
            (blk, format!("{chain:?}"))
        }

        /// Still running, and (for the writer) its counter went on without a gap.
        fn assert_unaffected(&self) {
            assert!(
                virsh(&["domstate", &self.name]).contains("running"),
                "{} stopped",
                self.name
            );
            if self.serial.is_some() {
                let last = self.ticks().last().copied().unwrap_or(0);
                self.wait_tick(last + 2);
                let ticks = self.ticks();
                let expected: Vec<u64> = (1..=ticks.len() as u64).collect();
                assert_eq!(ticks, expected, "the serial counter has a gap");
            }
        }
    }

    impl Drop for Guest {
        fn drop(&mut self) {
            let _ = Command::new("virsh")
                .args(["-c", URI, "destroy", &self.name])
                .output();
        }
    }

    /// A manager serving the inventory of `qemu:///system` and exporting backups over TCP on
    /// loopback, with an appliance token for the stand-in appliance.
    struct World {
        dir: tempfile::TempDir,
        db: String,
        admin: String,
        token_file: PathBuf,
        sigs: PathBuf,
        manager: Option<Manager>,
        id: String,
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::Builder::new()
                .prefix("cs-vm")
                .tempdir_in("/tmp")
                .unwrap();
            let db = sqlite_db(dir.path());
            let admin = token(&db, "admin", "ops");
            let appliance = token(&db, "appliance", "esx-a");
            let token_file = token_file(dir.path(), "appliance.token", &appliance);
            let sigs = testdb::write_test_db(&dir.path().join("sigs")).unwrap();
            let mut w = World {
                id: format!("e2e-{}", std::process::id()),
                db,
                admin,
                token_file,
                sigs,
                manager: None,
                dir,
            };
            w.start();
            w
        }

        fn work_dir(&self) -> PathBuf {
            self.dir.path().join("work")
        }

        fn start(&mut self) {
            // Each world its own ports: tests of this binary run in parallel.
            static WORLDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let world = WORLDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4;
            let base = 20_000 + (std::process::id() % 1000) * 64 + world * 16;
            let ports = format!("{base}-{}", base + 15);
            let work = self.work_dir();
            let m = Manager::start(
                &self.db,
                &[
                    "--nbd-listen",
                    "127.0.0.1",
                    "--nbd-ports",
                    &ports,
                    "--work-dir",
                    work.to_str().unwrap(),
                    "--inventory-interval",
                    "1",
                    "--vm-tick-ms",
                    "200",
                    "--manager-id",
                    &self.id,
                ],
            );
            self.manager = Some(m);
        }

        fn m(&self) -> &Manager {
            self.manager.as_ref().unwrap()
        }

        fn cli(&self, args: &[&str]) -> String {
            manager_cli(&self.db, args)
        }

        fn get(&self, path: &str) -> Value {
            let a = get(self.m(), path, &self.admin);
            assert_eq!(a.status, 200, "GET {path}: {}", a.json);
            a.json
        }

        /// The inventory's VM named `name` once it is listed on `hypervisor` and `ready`.
        fn vm(&self, name: &str, hypervisor: &str, ready: impl Fn(&Value) -> bool) -> Value {
            wait_for(&format!("VM {name} in the inventory"), LIMIT, || {
                self.get("/api/v1/vms")["vms"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["name"] == name && v["hypervisor"] == hypervisor && ready(v))
                    .cloned()
            })
        }

        fn scan(&self, uuid: &str) -> i64 {
            let a = post_json(
                self.m(),
                &format!("/api/v1/vms/{uuid}/scan"),
                &self.admin,
                &serde_json::json!({}),
            );
            assert_eq!(a.status, 201, "{}", a.json);
            a.json["id"].as_i64().unwrap()
        }

        fn vm_job(&self, id: i64) -> Value {
            self.get("/api/v1/vm-jobs")["vm_jobs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["id"] == id)
                .cloned()
                .unwrap_or_else(|| panic!("no VM job {id}"))
        }

        fn wait_vm_job(&self, id: i64, state: &str) -> Value {
            wait_for(&format!("VM job {id} {state}"), LIMIT, || {
                Some(self.vm_job(id)).filter(|j| j["state"] == state)
            })
        }

        /// Claims a disk job as the appliance would (`None` when there is none).
        fn claim(&self, lease: i64) -> Option<(i64, String)> {
            let a = post_json(
                self.m(),
                "/api/v1/jobs/claim",
                std::fs::read_to_string(&self.token_file).unwrap().trim(),
                &serde_json::json!({ "lease_seconds": lease }),
            );
            match a.status {
                200 => Some((
                    a.json["id"].as_i64().unwrap(),
                    a.json["target"].as_str().unwrap().to_string(),
                )),
                204 => None,
                s => panic!("claim: {s} {}", a.json),
            }
        }

        fn wait_claim(&self, lease: i64) -> (i64, String) {
            wait_for("a disk job", LIMIT, || self.claim(lease))
        }

        /// `coldscan scan TARGET --manager URL`, as the appliance would run it.
        fn scanner(&self, target: &str) -> Command {
            let mut cmd = Command::new(coldscan_bin());
            cmd.arg("scan")
                .arg("--db")
                .arg(&self.sigs)
                .args(["--json", "-", target, "--manager", &self.m().url])
                .arg("--token-file")
                .arg(&self.token_file);
            cmd
        }

        /// Scans a claimed job's target and completes the job with the stored report (or the
        /// scanner's error); returns the HTTP status of the completion.
        fn scan_and_complete(&self, job: i64, target: &str) -> u16 {
            let out = self.scanner(target).output().unwrap();
            let said = String::from_utf8_lossy(&out.stderr).into_owned();
            let scan = said
                .lines()
                .find_map(|l| l.split(" stored as scan ").nth(1))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<i64>().ok());
            let body = match scan {
                Some(id) => serde_json::json!({ "report": id }),
                None => serde_json::json!({ "error": format!("coldscan: {}", said.trim()) }),
            };
            let token = std::fs::read_to_string(&self.token_file).unwrap();
            post_json(
                self.m(),
                &format!("/api/v1/jobs/{job}/complete"),
                token.trim(),
                &body,
            )
            .status
        }

        /// Nothing left in the work directory (sockets, scratch files, private directories).
        fn assert_work_dir_empty(&self) {
            let left: Vec<_> = std::fs::read_dir(self.work_dir())
                .map(|d| d.map(|e| e.unwrap().path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "left behind: {left:?}");
        }

        /// The most backups open at once on `hypervisor`, from the manager's backup log.
        fn peak(&self, from_log_id: i64) -> i64 {
            let log = self.get("/api/v1/vm-jobs/log")["log"]
                .as_array()
                .unwrap()
                .clone();
            let (mut open, mut peak) = (0i64, 0i64);
            for e in log
                .iter()
                .filter(|e| e["id"].as_i64().unwrap() > from_log_id)
            {
                match e["event"].as_str().unwrap() {
                    "begin" => open += 1,
                    // Ends of backups that began before `from_log_id` are not counted.
                    "end" if open > 0 => open -= 1,
                    _ => {}
                }
                peak = peak.max(open);
            }
            peak
        }

        fn last_log_id(&self) -> i64 {
            self.get("/api/v1/vm-jobs/log")["log"]
                .as_array()
                .unwrap()
                .last()
                .map(|e| e["id"].as_i64().unwrap())
                .unwrap_or(0)
        }
    }

    fn detections(w: &World, scan: i64) -> Vec<(String, String)> {
        w.get(&format!("/api/v1/detections?scan={scan}"))["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["path"].as_str().unwrap().to_string(),
                    d["signature"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

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
}
