//! The hypervisor side of the store on SQLite: inventory passes (create, rename, migration,
//! gone), the concurrency limits of VM job starts, and the disk jobs' lease expiry.

use super::sqlite::SqliteStore;
use super::vms::*;
use super::Store;

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("m.db").display());
    let s = SqliteStore::open(&url).await.unwrap();
    (dir, s)
}

fn seen(uuid: &str, name: &str, pool: Option<&str>) -> VmSeen {
    VmSeen {
        uuid: uuid.into(),
        name: name.into(),
        state: "running".into(),
        disks: vec![VmDisk {
            target: "vda".into(),
            device: "disk".into(),
            source: Some(format!("/images/{name}.qcow2")),
            format: Some("qcow2".into()),
            pool: pool.map(str::to_string),
            backupable: true,
        }],
    }
}

#[tokio::test]
async fn inventory_follows_renames_and_migrations_by_uuid() {
    let (_d, s) = store().await;
    s.add_hypervisor("a", "test:///a", 4, None, 1)
        .await
        .unwrap();
    s.add_hypervisor("b", "test:///b", 4, None, 1)
        .await
        .unwrap();
    let out = s
        .sync_inventory("a", &[seen("u1", "web", None)], 10)
        .await
        .unwrap();
    assert_eq!(out.created, ["u1"]);
    let policy = VmPolicy {
        scan_interval: Some(3600),
        window: Some((0, 60)),
        labels: vec!["web".into()],
        on_detection: OnDetection::Quarantine,
    };
    assert!(s.set_vm_policy("u1", &policy, 10).await.unwrap());
    // Renamed on a.
    let out = s
        .sync_inventory("a", &[seen("u1", "web-2", None)], 20)
        .await
        .unwrap();
    assert_eq!(out.renamed, ["u1"]);
    // b lists it too while a still does: it stays on a.
    let out = s
        .sync_inventory("b", &[seen("u1", "web-2", None)], 30)
        .await
        .unwrap();
    assert!(out.migrated.is_empty());
    assert_eq!(s.find_vm("u1").await.unwrap().unwrap().hypervisor, "a");
    // a no longer lists it: gone; then b takes it over: migrated, policy kept.
    let out = s.sync_inventory("a", &[], 40).await.unwrap();
    assert_eq!(out.gone, ["u1"]);
    assert!(
        s.find_vm("web-2").await.unwrap().is_none(),
        "a gone VM is not found by name"
    );
    let out = s
        .sync_inventory("b", &[seen("u1", "web-2", None)], 50)
        .await
        .unwrap();
    assert_eq!(out.migrated, ["u1"]);
    let vm = s.find_vm("web-2").await.unwrap().unwrap();
    assert_eq!(
        (vm.hypervisor.as_str(), vm.state.as_str()),
        ("b", "running")
    );
    assert_eq!(vm.policy, policy);
    let events: Vec<String> = s
        .vm_events("u1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, ["created", "renamed", "gone", "migrated"]);
}

fn claim<'a>(
    id: i64,
    pools: &'a [String],
    pool_limits: &'a [(String, i64)],
    port: i64,
) -> VmJobClaim<'a> {
    VmJobClaim {
        id,
        owner: "m1",
        hypervisor: "a",
        pools,
        host_limit: 2,
        pool_limits,
        default_pool_limit: 4,
        nbd_port: Some(port),
        backup: "{}",
        now: 100,
    }
}

#[tokio::test]
async fn vm_job_starts_respect_the_limits_and_ports() {
    let (_d, s) = store().await;
    s.add_hypervisor("a", "test:///a", 2, None, 1)
        .await
        .unwrap();
    let vms: Vec<VmSeen> = (0..4)
        .map(|i| seen(&format!("u{i}"), &format!("vm{i}"), Some("fast")))
        .collect();
    s.sync_inventory("a", &vms, 10).await.unwrap();
    let mut jobs = Vec::new();
    for v in &vms {
        jobs.push(s.enqueue_vm_job(&v.uuid, None, 20).await.unwrap());
    }
    let fast = vec!["fast".to_string()];
    let one = vec![("fast".to_string(), 1)];
    // Pool "fast" limited to 1.
    assert_eq!(
        s.claim_vm_job(&claim(jobs[0], &fast, &one, 1))
            .await
            .unwrap(),
        VmClaim::Claimed
    );
    assert_eq!(
        s.claim_vm_job(&claim(jobs[1], &fast, &one, 2))
            .await
            .unwrap(),
        VmClaim::OverLimit
    );
    // Without the pool limit: the connection's 2, and ports are not shared.
    assert_eq!(
        s.claim_vm_job(&claim(jobs[1], &fast, &[], 1))
            .await
            .unwrap(),
        VmClaim::PortTaken
    );
    assert_eq!(
        s.claim_vm_job(&claim(jobs[1], &fast, &[], 2))
            .await
            .unwrap(),
        VmClaim::Claimed
    );
    assert_eq!(
        s.claim_vm_job(&claim(jobs[2], &fast, &[], 3))
            .await
            .unwrap(),
        VmClaim::OverLimit
    );
    assert_eq!(
        s.claim_vm_job(&claim(jobs[1], &fast, &[], 3))
            .await
            .unwrap(),
        VmClaim::Gone
    );
    // A disk job whose lease expired is failed, not handed out again; the backup's end frees
    // a place and the job is queued again for a new attempt.
    s.add_disk_jobs(jobs[0], &[("vda".into(), "nbd://h:1/vda".into())], 100)
        .await
        .unwrap();
    let held = s.claim_job("esx", 100, 105).await.unwrap().unwrap();
    assert_eq!(held.target, "nbd://h:1/vda");
    assert_eq!(s.claim_job("esx2", 200, 300).await.unwrap(), None);
    assert_eq!(s.expire_disk_jobs(jobs[0], 200).await.unwrap(), 1);
    let disks = s.disk_jobs(jobs[0]).await.unwrap();
    assert_eq!((disks[0].state.as_str(), disks[0].attempt), ("failed", 1));
    assert!(disks[0].error.as_deref().unwrap().contains("lease expired"));
    s.end_vm_job(jobs[0], &VmJobEnd::Retry("lease".into()), "end", 200)
        .await
        .unwrap();
    assert_eq!(
        s.claim_vm_job(&claim(jobs[2], &fast, &[], 1))
            .await
            .unwrap(),
        VmClaim::Claimed
    );
    let queued = s.vm_jobs_in("queued", 10).await.unwrap();
    let ids: Vec<i64> = queued.iter().map(|j| j.id).collect();
    assert_eq!(ids, [jobs[0], jobs[3]]);
    let log: Vec<String> = s
        .vm_job_log()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(log, ["begin", "begin", "end", "begin"]);
}

#[test]
fn limits_and_windows() {
    let running = vec![
        ("a".to_string(), vec!["p".to_string()]),
        ("a".to_string(), vec!["q".to_string()]),
        ("b".to_string(), vec!["p".to_string()]),
    ];
    let p = vec!["p".to_string()];
    assert!(!admits("a", &p, 2, |_| 4, &running), "connection a is full");
    assert!(admits("a", &p, 3, |_| 4, &running));
    assert!(!admits("a", &p, 3, |_| 1, &running), "pool p is full on a");
    assert!(
        admits("b", &p, 3, |_| 2, &running),
        "pools count per connection"
    );
    assert!(admits("c", &[], 1, |_| 0, &running));
    assert!(in_window(None, 0));
    assert!(in_window(Some((60, 120)), 90 * 60));
    assert!(!in_window(Some((60, 120)), 120 * 60));
    assert!(
        in_window(Some((23 * 60, 60)), 30 * 60),
        "a window across midnight"
    );
    assert!(!in_window(Some((23 * 60, 60)), 12 * 60 * 60));
}

#[tokio::test]
async fn scheduled_scans_are_queued_when_due_inside_their_window_once() {
    let (_d, s) = store().await;
    s.add_hypervisor("a", "test:///a", 4, None, 1)
        .await
        .unwrap();
    s.sync_inventory("a", &[seen("u1", "web", None), seen("u2", "db", None)], 1)
        .await
        .unwrap();
    // 10:00 UTC on day 1.
    let ten = 86_400 + 10 * 3600;
    let inside = VmPolicy {
        scan_interval: Some(3600),
        window: Some((9 * 60, 12 * 60)),
        labels: vec![],
        on_detection: OnDetection::Report,
    };
    let outside = VmPolicy {
        window: Some((22 * 60, 4 * 60)),
        ..inside.clone()
    };
    s.set_vm_policy("u1", &inside, ten).await.unwrap();
    s.set_vm_policy("u2", &outside, ten).await.unwrap();
    let queued = s.enqueue_due_scans(ten).await.unwrap();
    assert_eq!(queued.len(), 1, "only the VM inside its window");
    let jobs = s.vm_jobs_in("queued", 10).await.unwrap();
    assert_eq!(jobs[0].uuid, "u1");
    assert_eq!(
        s.find_vm("u1").await.unwrap().unwrap().next_scan,
        Some(ten + 3600)
    );
    // Not again while one is open, nor before it is due.
    assert!(s.enqueue_due_scans(ten + 4000).await.unwrap().is_empty());
    s.end_vm_job(jobs[0].id, &VmJobEnd::Done, "end", ten + 4000)
        .await
        .unwrap();
    assert_eq!(s.enqueue_due_scans(ten + 4000).await.unwrap().len(), 1);
    // u2 waits for its window (22:00).
    assert!(s
        .vm_jobs_in("queued", 10)
        .await
        .unwrap()
        .iter()
        .all(|j| j.uuid == "u1"));
}
