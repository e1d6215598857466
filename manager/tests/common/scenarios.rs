//! Scenarios run against each database backend (SQLite in `jobs.rs`, PostgreSQL in
//! `postgres.rs`), through the real `coldscan-manager serve` and its HTTP API.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// Claims of the test appliances: `POST /api/v1/jobs/claim`, the job's id or `None` on 204.
fn claim(m: &Manager, token: &str, lease_seconds: i64) -> Option<(i64, String)> {
    let a = post_json(
        m,
        "/api/v1/jobs/claim",
        token,
        &serde_json::json!({ "lease_seconds": lease_seconds }),
    );
    match a.status {
        200 => {
            assert!(a.json["lease_expires"].is_string(), "{}", a.json);
            Some((
                a.json["id"].as_i64().unwrap(),
                a.json["target"].as_str().unwrap().to_string(),
            ))
        }
        204 => None,
        s => panic!("claim: HTTP {s}: {}", a.json),
    }
}

fn enqueue(m: &Manager, admin: &str, target: &str, appliance: Option<&str>) -> i64 {
    let mut body = serde_json::json!({ "target": target });
    if let Some(a) = appliance {
        body["appliance"] = serde_json::json!(a);
    }
    let a = post_json(m, "/api/v1/jobs", admin, &body);
    assert_eq!(a.status, 201, "{}", a.json);
    a.json["id"].as_i64().unwrap()
}

fn complete(m: &Manager, token: &str, id: i64, body: serde_json::Value) -> u16 {
    post_json(m, &format!("/api/v1/jobs/{id}/complete"), token, &body).status
}

/// A claimed job whose worker dies (never completes) is handed out again once its lease
/// expires, and not before; the dead worker can no longer complete it; reserved jobs go only to
/// their appliance.
pub fn leases(db: &str) {
    let a = token(db, "appliance", "esx-a");
    let b = token(db, "appliance", "esx-b");
    let admin = token(db, "admin", "ops");
    let m = Manager::start(db, &[]);

    let held = enqueue(&m, &admin, "/vm/held.qcow2", None);
    assert_eq!(claim(&m, &a, 3600), Some((held, "/vm/held.qcow2".into())));
    assert_eq!(claim(&m, &b, 3600), None, "a leased job is not handed out");

    let dying = enqueue(&m, &admin, "/vm/dying.qcow2", None);
    assert_eq!(claim(&m, &a, 1), Some((dying, "/vm/dying.qcow2".into())));
    // esx-a dies. Once the one-second lease runs out, esx-b gets that job (never `held`).
    let again = wait_for("the expired job", Duration::from_secs(30), || {
        claim(&m, &b, 3600)
    });
    assert_eq!(again, (dying, "/vm/dying.qcow2".into()));
    assert_eq!(claim(&m, &b, 3600), None);
    // The dead worker's late completion is refused; the new holder's is taken.
    assert_eq!(
        complete(&m, &a, dying, serde_json::json!({ "report": 1 })),
        409
    );
    assert_eq!(
        complete(&m, &b, dying, serde_json::json!({ "error": "disk gone" })),
        204
    );
    assert_eq!(
        complete(&m, &a, held, serde_json::json!({ "report": 7 })),
        204
    );
    assert_eq!(
        complete(&m, &a, held, serde_json::json!({ "report": 7 })),
        409
    );
    assert_eq!(
        complete(&m, &a, 999_999, serde_json::json!({ "report": 7 })),
        404
    );
    assert_eq!(complete(&m, &a, held, serde_json::json!({})), 400);

    // A job reserved for esx-b is not handed to esx-a.
    let reserved = enqueue(&m, &admin, "/vm/b-only.qcow2", Some("esx-b"));
    assert_eq!(claim(&m, &a, 3600), None);
    assert_eq!(claim(&m, &b, 3600).map(|j| j.0), Some(reserved));

    let jobs: BTreeMap<i64, serde_json::Value> = list_all(&m, "/api/v1/jobs", "jobs", &admin)
        .into_iter()
        .map(|j| (j["id"].as_i64().unwrap(), j))
        .collect();
    assert_eq!(jobs[&held]["state"], "done");
    assert_eq!(jobs[&held]["report"], 7);
    assert_eq!(jobs[&held]["claims"], 1);
    assert_eq!(jobs[&dying]["state"], "failed");
    assert_eq!(jobs[&dying]["error"], "disk gone");
    assert_eq!(jobs[&dying]["claims"], 2);
    assert_eq!(jobs[&dying]["claimed_by"], "esx-b");
    assert_eq!(jobs[&reserved]["state"], "claimed");
}

/// 16 claimers at once (spread over `managers` manager processes on the same database) never
/// get the same job, and every job is handed out.
pub fn concurrent_claimers(db: &str, managers: usize) {
    const CLAIMERS: usize = 16;
    const JOBS: usize = 160;
    let admin = token(db, "admin", "ops");
    let tokens: Vec<String> = (0..CLAIMERS)
        .map(|i| token(db, "appliance", &format!("esx-{i:02}")))
        .collect();
    let servers: Vec<Manager> = (0..managers).map(|_| Manager::start(db, &[])).collect();
    let mut queued = std::collections::BTreeSet::new();
    for i in 0..JOBS {
        queued.insert(enqueue(
            &servers[0],
            &admin,
            &format!("/vm/{i}.qcow2"),
            None,
        ));
    }
    let barrier = std::sync::Barrier::new(CLAIMERS);
    let claimed: Vec<Vec<i64>> = std::thread::scope(|s| {
        let handles: Vec<_> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let m = &servers[i % managers];
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let mut mine = Vec::new();
                    while let Some((id, _)) = claim(m, t, 3600) {
                        mine.push(id);
                        assert_eq!(complete(m, t, id, serde_json::json!({ "report": id })), 204);
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = std::collections::BTreeMap::new();
    for (claimer, ids) in claimed.iter().enumerate() {
        for id in ids {
            if let Some(other) = seen.insert(*id, claimer) {
                panic!("job {id} handed to claimers {other} and {claimer}");
            }
        }
    }
    let all: std::collections::BTreeSet<i64> = seen.keys().copied().collect();
    assert_eq!(all, queued, "every job handed out exactly once");
    let busy = claimed.iter().filter(|c| !c.is_empty()).count();
    eprintln!("{JOBS} jobs over {busy} of {CLAIMERS} claimers on {managers} manager(s)");
    for j in list_all(&servers[0], "/api/v1/jobs", "jobs", &admin) {
        assert_eq!(j["state"], "done", "{j}");
        assert_eq!(j["claims"], 1, "{j}");
    }
}

/// Reports are stored once per key and listed; a restart loses nothing.
pub fn reports_round_trip(db: &str) {
    let appliance = token(db, "appliance", "esx-01");
    let admin = token(db, "admin", "ops");
    let m = Manager::start(db, &[]);
    let mut ids = Vec::new();
    for i in 0..3 {
        let body = sample_report(&format!("/vm/{i}.qcow2")).to_string();
        let a = post_report(&m, Some(&appliance), &format!("key-{i}"), body.as_bytes());
        assert_eq!(a.status, 201, "{}", a.json);
        let again = post_report(&m, Some(&appliance), &format!("key-{i}"), body.as_bytes());
        assert_eq!(again.status, 200);
        assert_eq!(again.json["id"], a.json["id"]);
        ids.push(a.json["id"].as_i64().unwrap());
    }
    let hb = post_json(
        &m,
        "/api/v1/heartbeat",
        &appliance,
        &serde_json::json!({"status": "idle", "version": "0.1.0", "disks": ["/dev/vdb"]}),
    );
    assert_eq!(hb.status, 204, "{}", hb.json);
    let scans = list_all(&m, "/api/v1/scans", "scans", &admin);
    assert_eq!(
        scans
            .iter()
            .map(|s| s["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    let dets = list_all(
        &m,
        "/api/v1/detections?target=/vm/1.qcow2",
        "detections",
        &admin,
    );
    assert_eq!(dets.len(), 1);
    assert_eq!(dets[0]["scan"], ids[1]);
    let targets = list_all(&m, "/api/v1/targets", "targets", &admin);
    assert_eq!(targets.len(), 3);
    let appliances = get(&m, "/api/v1/appliances", &admin).json;
    assert_eq!(appliances["appliances"][0]["status"], "idle");
    let before = (
        scans,
        list_all(&m, "/api/v1/detections", "detections", &admin),
        appliances,
    );
    m.kill();
    let m = Manager::start(db, &[]);
    let after = (
        list_all(&m, "/api/v1/scans", "scans", &admin),
        list_all(&m, "/api/v1/detections", "detections", &admin),
        get(&m, "/api/v1/appliances", &admin).json,
    );
    assert_eq!(after, before);
}
