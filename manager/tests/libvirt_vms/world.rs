//! What the libvirt VM tests share: transient guests (the writing busybox guest, and small VMs
//! with no OS), and a [`World`]: a real `coldscan-manager serve` on `qemu:///system` exporting
//! backups over TCP on loopback, with the host CLI standing in for an appliance.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use coldscan_tests::testdb;
use serde_json::Value;

use crate::common::*;

pub const URI: &str = "qemu:///system";
/// Give-up bound for waits (a hang guard, not a timing claim).
pub const LIMIT: Duration = Duration::from_secs(240);

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn virsh(args: &[&str]) -> String {
    run(Command::new("virsh").args(["-c", URI]).args(args))
}

/// Whether the domain has a job (`virsh domjobinfo`).
pub fn has_job(name: &str) -> bool {
    !virsh(&["domjobinfo", name]).contains("None")
}

/// A transient domain, destroyed on drop. `serial` is set for the writing busybox guest.
pub struct Guest {
    pub name: String,
    pub serial: Option<PathBuf>,
    pub disk: PathBuf,
}

pub fn domain_xml(name: &str, os: &str, disk: &Path, serial: Option<&Path>) -> String {
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

pub fn plant(dir: &Path) -> PathBuf {
    let plant = dir.join("plant");
    std::fs::create_dir_all(plant.join("eicar")).unwrap();
    std::fs::write(plant.join("eicar/eicar.com"), testdb::eicar()).unwrap();
    std::fs::write(plant.join("readme.txt"), b"a clean file\n").unwrap();
    plant
}

impl Guest {
    /// The busybox guest that keeps writing, with an EICAR file planted.
    pub fn writer(dir: &Path, name: &str) -> Guest {
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
    pub fn idle(dir: &Path, name: &str) -> Guest {
        Guest::idle_with(dir, name, "")
    }

    /// [`Guest::idle`] with more `devices` (XML elements) in its domain.
    pub fn idle_with(dir: &Path, name: &str, devices: &str) -> Guest {
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
        let xml = domain_xml(name, "", &disk, None)
            .replace("<memballoon", &format!("{devices}\n<memballoon"));
        Guest::create(dir, name, &xml, disk, None)
    }

    pub fn create(
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

    pub fn ticks(&self) -> Vec<u64> {
        let log = std::fs::read_to_string(self.serial.as_ref().unwrap()).unwrap_or_default();
        log.lines()
            .filter_map(|l| l.trim().strip_prefix("coldscan-guest tick "))
            .filter_map(|n| n.split_whitespace().next()?.parse().ok())
            .collect()
    }

    pub fn wait_tick(&self, at_least: u64) -> u64 {
        wait_for("the guest's counter", LIMIT, || {
            self.ticks().last().copied().filter(|&t| t >= at_least)
        })
    }

    /// The domain's disk list and the image's backing chain: must never change.
    pub fn chain(&self) -> (String, String) {
        coldscan_tests::libvirt::disk_chain(&self.name, &self.disk).unwrap()
    }

    /// Still running, and (for the writer) its counter went on without a gap.
    pub fn assert_unaffected(&self) {
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
pub struct World {
    pub dir: tempfile::TempDir,
    pub db: String,
    pub admin: String,
    pub token_file: PathBuf,
    pub sigs: PathBuf,
    pub manager: Option<Manager>,
    pub id: String,
}

impl World {
    pub fn new() -> World {
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

    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn start(&mut self) {
        // Each world its own ports: tests of this binary run in parallel.
        static WORLDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let world = WORLDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4;
        // 640 slots of 64 ports from 20000: the last one ends at 60959, below 65536 whatever
        // the process id (with `% 1000` a pid ending in 700 or more overflowed the port range).
        let base = 20_000 + (std::process::id() % 640) * 64 + world * 16;
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

    pub fn m(&self) -> &Manager {
        self.manager.as_ref().unwrap()
    }

    pub fn cli(&self, args: &[&str]) -> String {
        manager_cli(&self.db, args)
    }

    pub fn get(&self, path: &str) -> Value {
        let a = get(self.m(), path, &self.admin);
        assert_eq!(a.status, 200, "GET {path}: {}", a.json);
        a.json
    }

    /// The inventory's VM named `name` once it is listed on `hypervisor` and `ready`.
    pub fn vm(&self, name: &str, hypervisor: &str, ready: impl Fn(&Value) -> bool) -> Value {
        wait_for(&format!("VM {name} in the inventory"), LIMIT, || {
            self.get("/api/v1/vms")["vms"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name && v["hypervisor"] == hypervisor && ready(v))
                .cloned()
        })
    }

    pub fn scan(&self, uuid: &str) -> i64 {
        let a = post_json(
            self.m(),
            &format!("/api/v1/vms/{uuid}/scan"),
            &self.admin,
            &serde_json::json!({}),
        );
        assert_eq!(a.status, 201, "{}", a.json);
        a.json["id"].as_i64().unwrap()
    }

    pub fn vm_job(&self, id: i64) -> Value {
        self.get("/api/v1/vm-jobs")["vm_jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no VM job {id}"))
    }

    pub fn wait_vm_job(&self, id: i64, state: &str) -> Value {
        wait_for(&format!("VM job {id} {state}"), LIMIT, || {
            Some(self.vm_job(id)).filter(|j| j["state"] == state)
        })
    }

    /// Claims a disk job as the appliance would (`None` when there is none).
    pub fn claim(&self, lease: i64) -> Option<(i64, String)> {
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

    pub fn wait_claim(&self, lease: i64) -> (i64, String) {
        wait_for("a disk job", LIMIT, || self.claim(lease))
    }

    /// `coldscan scan TARGET --manager URL`, as the appliance would run it.
    pub fn scanner(&self, target: &str) -> Command {
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
    pub fn scan_and_complete(&self, job: i64, target: &str) -> u16 {
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
    pub fn assert_work_dir_empty(&self) {
        let left: Vec<_> = std::fs::read_dir(self.work_dir())
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// The most backups open at once on `hypervisor`, from the manager's backup log.
    pub fn peak(&self, from_log_id: i64) -> i64 {
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

    pub fn last_log_id(&self) -> i64 {
        self.get("/api/v1/vm-jobs/log")["log"]
            .as_array()
            .unwrap()
            .last()
            .map(|e| e["id"].as_i64().unwrap())
            .unwrap_or(0)
    }
}

pub fn detections(w: &World, scan: i64) -> Vec<(String, String)> {
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
