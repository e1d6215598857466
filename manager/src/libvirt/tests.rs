//! End to end against the real thing: libvirtd with QEMU (TCG) running a tiny guest that keeps
//! writing to its qcow2 disk, which holds a planted EICAR file. Needs root, libvirt and QEMU
//! (`scripts/libvirt-up` starts the daemons); ignored by `cargo test`, run by `make e2e`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use coldscan_tests::testdb;

use super::*;
use crate::store::sqlite::SqliteStore;
use crate::store::{Filter, Store};

/// The local libvirt connection of these tests (and of `quarantine_tests`).
pub(super) const URI: &str = "qemu:///system";
/// Give-up bound for the guest to boot and tick (not a timing assertion: ~8 s measured).
const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// The workspace root.
pub(super) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `cmd`, which must succeed; its stdout.
pub(super) fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `virsh -c URI ARGS`, which must succeed; its stdout.
pub(super) fn virsh(args: &[&str]) -> String {
    run(Command::new("virsh").args(["-c", URI]).args(args))
}

/// A transient domain, destroyed on drop.
struct Guest {
    name: String,
    serial: PathBuf,
    disk: PathBuf,
}

impl Guest {
    fn start(dir: &Path, name: &str) -> Guest {
        let cache = repo().join("target/fixtures/libvirt-guest");
        let plant = dir.join("plant");
        std::fs::create_dir_all(plant.join("eicar")).unwrap();
        std::fs::write(plant.join("eicar/eicar.com"), testdb::eicar()).unwrap();
        std::fs::write(plant.join("readme.txt"), b"a clean file\n").unwrap();
        let out = dir.join("guest");
        run(Command::new(repo().join("scripts/libvirt-test-guest"))
            .arg(&cache)
            .arg(&out)
            .arg(&plant));
        let guest = Guest {
            name: name.to_string(),
            serial: dir.join("serial.log"),
            disk: out.join("disk.qcow2"),
        };
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{k}</kernel><initrd>{i}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{d}'/><target dev='vda' bus='virtio'/></disk>
    <serial type='file'><source path='{s}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices></domain>",
            k = cache.join("vmlinuz").display(),
            i = cache.join("initrd.img").display(),
            d = guest.disk.display(),
            s = guest.serial.display(),
        );
        let xml_file = dir.join("domain.xml");
        std::fs::write(&xml_file, xml).unwrap();
        virsh(&["create", xml_file.to_str().unwrap()]);
        guest
    }

    /// The counters the guest printed so far, in order.
    fn ticks(&self) -> Vec<u64> {
        let log = std::fs::read_to_string(&self.serial).unwrap_or_default();
        log.lines()
            .filter_map(|l| l.trim().strip_prefix("coldscan-guest tick "))
            .filter_map(|n| n.split_whitespace().next()?.parse().ok())
            .collect()
    }

    fn wait_tick(&self, at_least: u64) -> u64 {
        let start = Instant::now();
        loop {
            if let Some(&last) = self.ticks().last() {
                if last >= at_least {
                    return last;
                }
            }
            assert!(
                start.elapsed() < BOOT_LIMIT,
                "guest never reached tick {at_least}; serial:\n{}",
                std::fs::read_to_string(&self.serial).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What must not change: the domain's disk list and the image's backing chain.
    fn chain(&self) -> (String, String) {
        coldscan_tests::libvirt::disk_chain(&self.name, &self.disk).unwrap()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = Command::new("virsh")
            .args(["-c", URI, "destroy", &self.name])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, libvirtd and QEMU: make e2e"]
async fn a_running_guest_is_scanned_through_a_pull_backup_and_left_untouched() {
    let _daemons = coldscan_tests::libvirt::Daemons::up().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("cs-lv")
        .tempdir_in("/tmp")
        .unwrap();
    let name = format!("coldscan-e2e-{}", std::process::id());
    let guest = Guest::start(dir.path(), &name);
    guest.wait_tick(3);
    let before = guest.chain();

    let hv = std::sync::Arc::new(Hypervisor::connect(URI).unwrap());
    assert_eq!(hv.uri(), URI);
    let info = hv
        .domains()
        .unwrap()
        .into_iter()
        .find(|d| d.name == name)
        .expect("the guest is listed");
    assert!(info.running);
    assert_eq!(info.uuid.len(), 36, "{info:?}");
    let vda = &info.disks[0];
    assert_eq!(
        (
            vda.target.as_str(),
            vda.format.as_deref(),
            vda.source.as_deref()
        ),
        ("vda", Some("qcow2"), guest.disk.to_str())
    );

    let store = SqliteStore::open(&format!("sqlite:{}", dir.path().join("m.db").display()))
        .await
        .unwrap();
    let settings = ScanSettings {
        coldscan: coldscan_tests::coldscan::binary().unwrap(),
        db: vec![testdb::write_test_db(&dir.path().join("db")).unwrap()],
        work_dir: dir.path().join("work"),
        appliance: "manager".into(),
    };
    // A scanner that cannot run: the scan fails naming the disk, and the backup is ended anyway.
    let broken = ScanSettings {
        coldscan: dir.path().join("no-such-coldscan"),
        ..settings.clone()
    };
    let err = scan_domain(&hv, &name, &broken, &store).await.unwrap_err();
    assert!(
        matches!(&err, ScanError::Scanner { target: t, .. } if t.ends_with("/vda")),
        "{err}"
    );
    assert_no_leftovers(&hv, &name, &settings.work_dir);
    let unknown = scan_domain(&hv, "coldscan-no-such-vm", &settings, &store)
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, ScanError::Libvirt(LibvirtError::NotFound(_))),
        "{unknown}"
    );

    let scans: Vec<DiskScan> = scan_domain(&hv, &name, &settings, &store).await.unwrap();
    let last_during = guest.ticks().last().copied().unwrap();

    let target = vm_target(&name, &info.uuid, "vda");
    assert_eq!(scans.len(), 1, "{scans:?}");
    assert_eq!(
        (scans[0].disk.as_str(), scans[0].exit),
        ("vda", 1),
        "{scans:?}"
    );
    assert_eq!(scans[0].target, target);
    let filter = Filter {
        target: Some(target.clone()),
        ..Filter::default()
    };
    let found = store.list_detections(&filter, None, 100).await.unwrap();
    let found: Vec<_> = found
        .iter()
        .map(|d| (d.path.as_str(), d.signature.as_str()))
        .collect();
    assert_eq!(found, [("/eicar/eicar.com", testdb::EICAR_REPORTED)]);

    // The guest went on writing: its counter keeps rising, one by one, after the scan.
    guest.wait_tick(last_during + 2);
    let ticks = guest.ticks();
    let expected: Vec<u64> = (1..=ticks.len() as u64).collect();
    assert_eq!(ticks, expected, "the serial counter has a gap");

    // Nothing changed or was left behind.
    assert_eq!(guest.chain(), before);
    assert_no_leftovers(&hv, &name, &settings.work_dir);

    // The export is frozen when the backup begins: while the guest goes on rewriting and syncing
    // /counter/last, the export keeps showing one and the same content.
    let backup = PullBackup::begin(&hv, &name, &settings.work_dir).unwrap();
    assert_eq!(backup.exports(), ["vda"]);
    let cat = || {
        run(Command::new(&settings.coldscan).args([
            "cat",
            &backup.url("vda"),
            "0",
            "/counter/last",
        ]))
    };
    let first = cat();
    let counter: u64 = first
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("/counter/last: {first:?}"));
    assert!(counter >= 1, "{first:?}");
    let now = guest.ticks().last().copied().unwrap();
    guest.wait_tick(now + 2);
    assert_eq!(cat(), first, "the export changed under the scanner");
    backup.end().unwrap();
    assert_no_leftovers(&hv, &name, &settings.work_dir);
    assert_eq!(guest.chain(), before);
    store.close().await;
}

/// No job on the domain, nothing in the work directory (socket, scratch file, directory).
fn assert_no_leftovers(hv: &Hypervisor, name: &str, work_dir: &Path) {
    let dom = hv.domain(name).unwrap();
    assert_eq!(
        dom.get_job_info().unwrap().r#type,
        virt::sys::VIR_DOMAIN_JOB_NONE as i32,
        "a backup job is left"
    );
    let left: Vec<_> = std::fs::read_dir(work_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
