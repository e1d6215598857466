//! What the manager's integration tests share: a real `coldscan-manager serve` on loopback
//! ([`Manager`]), tokens made by its CLI, plain HTTP calls ([`call`]), a throw-away PostgreSQL
//! cluster ([`postgres`]) and the real `coldscan` binary with a generated signature database.
#![allow(dead_code)]

pub mod hooks;
pub mod postgres;
pub mod scenarios;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The manager binary under test.
pub fn manager_bin() -> &'static str {
    env!("CARGO_BIN_EXE_coldscan-manager")
}

/// `coldscan-manager --db DB ARGS...`: stdout, panicking with stderr on failure.
pub fn manager_cli(db: &str, args: &[&str]) -> String {
    let out = Command::new(manager_bin())
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("coldscan-manager runs");
    assert!(
        out.status.success(),
        "coldscan-manager {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Creates a token with the CLI and returns it.
pub fn token(db: &str, role: &str, name: &str) -> String {
    let out = manager_cli(db, &["token", "create", "--role", role, name]);
    let token = out.trim().to_string();
    assert!(token.len() >= 43, "a 256-bit token: {token:?}");
    token
}

/// A running `coldscan-manager serve`, killed when dropped.
#[derive(Debug)]
pub struct Manager {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its `--db`.
    pub db: String,
}

impl Manager {
    /// Serves `db` on a free loopback port with `extra` serve options.
    pub fn start(db: &str, extra: &[&str]) -> Manager {
        Manager::start_on(db, "127.0.0.1:0", extra)
    }

    /// Serves `db` on `listen`.
    pub fn start_on(db: &str, listen: &str, extra: &[&str]) -> Manager {
        let mut child = Command::new(manager_bin())
            .arg("--db")
            .arg(db)
            .args(["serve", "--listen", listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("coldscan-manager serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the listening line");
        let url = line
            .trim()
            .strip_prefix("coldscan-manager listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("unexpected first line from serve: {line:?}")
            })
            .to_string();
        Manager {
            child,
            url,
            db: db.to_string(),
        }
    }

    /// The `host:port` it listens on.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Kills it without warning (SIGKILL): what a crash or power loss does.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh SQLite database URL in `dir`.
pub fn sqlite_db(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("manager.db").display())
}

/// An HTTP answer: status and body (JSON if it parses, else a string value).
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: u16,
    /// Body as JSON (`Value::String` of the text when it is not JSON).
    pub json: serde_json::Value,
    /// Headers of interest.
    pub content_type: Option<String>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .max_redirects(0)
        .build()
        .into()
}

/// `METHOD URL` with optional bearer token, extra headers and body.
pub fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Answer {
    let agent = agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = match method {
        "GET" => {
            let mut r = agent.get(url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        "POST" => {
            let mut r = agent.post(url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            match body {
                Some(b) => r.send(b),
                None => r.send_empty(),
            }
        }
        "DELETE" => {
            let mut r = agent.delete(url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        other => panic!("method {other}"),
    };
    let mut response = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Answer {
        status,
        json,
        content_type,
    }
}

/// `GET base+path` with a token.
pub fn get(m: &Manager, path: &str, token: &str) -> Answer {
    call("GET", &format!("{}{path}", m.url), Some(token), &[], None)
}

/// `POST base+path` of a JSON value with a token.
pub fn post_json(m: &Manager, path: &str, token: &str, body: &serde_json::Value) -> Answer {
    call(
        "POST",
        &format!("{}{path}", m.url),
        Some(token),
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

/// `POST /api/v1/reports` of `body` under `key`.
pub fn post_report(m: &Manager, token: Option<&str>, key: &str, body: &[u8]) -> Answer {
    call(
        "POST",
        &format!("{}/api/v1/reports", m.url),
        token,
        &[
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key),
        ],
        Some(body),
    )
}

/// Every item of a paginated listing (`GET path`, following `next`).
pub fn list_all(m: &Manager, path: &str, field: &str, token: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let url = match &after {
            Some(a) => format!("{path}{sep}limit=50&after={a}"),
            None => format!("{path}{sep}limit=50"),
        };
        let a = get(m, &url, token);
        assert_eq!(a.status, 200, "GET {url}: {}", a.json);
        out.extend(a.json[field].as_array().expect(field).iter().cloned());
        match &a.json["next"] {
            serde_json::Value::Null => return out,
            serde_json::Value::String(s) => after = Some(s.clone()),
            serde_json::Value::Number(n) => after = Some(n.to_string()),
            other => panic!("next is {other}"),
        }
    }
}

/// A minimal valid report (schema version 1) with one EICAR detection on `target`.
pub fn sample_report(target: &str) -> serde_json::Value {
    serde_json::json!({
        "schema_version": 1, "tool": "coldscan", "version": "0.1.0",
        "engine": {"name": "clamav", "version": "1.4.3", "signatures": 2},
        "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:01Z",
        "targets": [{"target": target, "format": "raw", "chain": [], "size": 1048576,
            "partitions": [{"index": 1, "scheme": "gpt", "type": "linux", "start": 1048576,
                "size": 1048576, "fs": "ext4", "status": "ok"}]}],
        "stats": {"files": 3, "bytes": 100, "seconds": 0.5},
        "detections": [{"target": target, "partition": 1, "path": "/home/eicar.com",
            "stream": null, "size": 68, "sha256": null,
            "signature": "Coldscan.Test.EICAR.UNOFFICIAL"}],
        "not_scanned": []
    })
}

/// Polls `f` until it returns `Some`, at most `limit` (a hang guard, not a timing claim).
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `coldscan` binary (built beside this test's profile: `cargo build --bins`).
pub fn coldscan_bin() -> PathBuf {
    coldscan_tests::coldscan::binary().unwrap_or_else(|e| panic!("{e:#}"))
}

/// Writes `token` to a token file in `dir`.
pub fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p
}
