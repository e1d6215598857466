//! Hostile request bodies against the real manager: random bytes, valid bodies cut short or
//! overwritten (invalid UTF-8 included), deep nesting and huge arrays on every endpoint that
//! takes a body. Each gets a clear JSON 400 (or 413 over the body limit; or is accepted when the
//! mutation left it valid), never a 5xx or a crash; the server keeps answering, and its peak
//! memory stays bounded by a small multiple of the body limit.

mod common;

use common::*;
use proptest::prelude::*;

/// The body limit the server runs with here.
const LIMIT: usize = 8 << 20;

/// Peak resident memory of a process (`VmHWM`), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

/// Endpoints that take a body, with a valid body for each.
fn endpoints() -> Vec<(&'static str, bool, Vec<u8>)> {
    vec![
        (
            "/api/v1/reports",
            false,
            sample_report("/vm/a.qcow2").to_string().into_bytes(),
        ),
        (
            "/api/v1/heartbeat",
            false,
            br#"{"status":"idle","version":"0.1.0","disks":["/dev/vdb"]}"#.to_vec(),
        ),
        (
            "/api/v1/jobs/claim",
            false,
            br#"{"lease_seconds":60}"#.to_vec(),
        ),
        (
            "/api/v1/jobs/1/complete",
            false,
            br#"{"report":1}"#.to_vec(),
        ),
        (
            "/api/v1/jobs",
            true,
            br#"{"target":"/vm/b.qcow2"}"#.to_vec(),
        ),
    ]
}

struct Setup {
    _dir: tempfile::TempDir,
    m: Manager,
    appliance: String,
    admin: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_db(dir.path());
    let appliance = token(&db, "appliance", "esx-01");
    let admin = token(&db, "admin", "ops");
    let m = Manager::start(&db, &["--body-limit", "8M"]);
    Setup {
        _dir: dir,
        m,
        appliance,
        admin,
    }
}

/// Posts `body` to `path` and checks the answer is sane.
fn post(s: &Setup, path: &str, admin: bool, key: &str, body: &[u8]) -> u16 {
    let token = if admin { &s.admin } else { &s.appliance };
    let a = call(
        "POST",
        &format!("{}{path}", s.m.url),
        Some(token),
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key),
        ],
        Some(body),
    );
    assert!(
        a.status < 500,
        "{path}: HTTP {} for {} bytes: {}",
        a.status,
        body.len(),
        a.json
    );
    if a.status >= 400 && a.status != 404 && a.status != 409 {
        assert!(
            matches!(a.status, 400 | 413),
            "{path}: HTTP {}: {}",
            a.status,
            a.json
        );
        let msg = a.json["error"].as_str().unwrap_or_else(|| {
            panic!("{path}: a JSON error body: {}", a.json);
        });
        assert!(!msg.is_empty());
    }
    a.status
}

#[test]
fn deep_nesting_huge_arrays_and_oversize_bodies() {
    let s = setup();
    let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
    let deep_object = format!("{{\"schema_version\":1,\"x\":{deep}}}");
    let numbers = format!("[{}0]", "0,".repeat(3_000_000));
    let mut huge_report = sample_report("/vm/a.qcow2");
    huge_report["detections"] = serde_json::from_str(&numbers).unwrap();
    let huge_report = huge_report.to_string();
    let long_string = format!("{{\"target\":\"{}\"}}", "a".repeat(LIMIT - 100));
    for (path, admin, _) in endpoints() {
        for (i, body) in [
            deep.as_bytes(),
            deep_object.as_bytes(),
            numbers.as_bytes(),
            huge_report.as_bytes(),
            long_string.as_bytes(),
            b"",
            b"\xff\xfe\xfd",
            b"{\"target\":\"\xc3\x28\"}",
        ]
        .iter()
        .enumerate()
        {
            let status = post(&s, path, admin, &format!("k{i}"), body);
            // A claim's body is optional and its unknown fields are ignored.
            let claim_ok = path == "/api/v1/jobs/claim" && matches!(status, 200 | 204);
            assert!(status == 400 || claim_ok, "{path} body {i}: HTTP {status}");
        }
        // One byte over the limit: 413.
        let over = vec![b' '; LIMIT + 1];
        assert_eq!(post(&s, path, admin, "over", &over), 413, "{path}");
    }
    // A legitimately large report (40,000 detections) within the limit is stored.
    let mut many = sample_report("/vm/many.qcow2");
    let one = many["detections"][0].clone();
    many["detections"] = serde_json::Value::Array(vec![one; 40_000]);
    let body = many.to_string();
    assert!(body.len() < LIMIT);
    assert_eq!(
        post(&s, "/api/v1/reports", false, "many", body.as_bytes()),
        201
    );
    let scans = get(&s.m, "/api/v1/scans", &s.admin).json;
    assert_eq!(scans["scans"][0]["detections"], 40_000);

    let healthz = call("GET", &format!("{}/healthz", s.m.url), None, &[], None);
    assert_eq!(healthz.status, 200);
    let peak = peak_memory(s.m.pid());
    eprintln!("manager peak memory: {} MiB", peak >> 20);
    assert!(
        peak < 24 * LIMIT as u64,
        "peak memory {} MiB for a {} MiB body limit",
        peak >> 20,
        LIMIT >> 20
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Valid bodies cut short, overwritten, or replaced by random bytes: clear errors only.
    #[test]
    fn mutated_bodies_get_clear_errors(
        which in 0usize..5,
        cut in proptest::option::of(0usize..400),
        edits in proptest::collection::vec((0usize..400, any::<u8>()), 0..6),
        random in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..512)),
    ) {
        thread_local! {
            static SETUP: Setup = setup();
        }
        SETUP.with(|s| {
            let (path, admin, valid) = endpoints().swap_remove(which);
            let mut body = random.unwrap_or(valid);
            if !body.is_empty() {
                let len = body.len();
                for (at, byte) in &edits {
                    body[at % len] = *byte;
                }
                if let Some(c) = cut {
                    body.truncate(c % len);
                }
            }
            let key = format!("p{}", body.len());
            post(s, path, admin, &key, &body);
        });
    }
}
