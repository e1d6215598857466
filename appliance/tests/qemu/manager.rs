//! The real manager, `coldscan-manager`, for the appliance's end-to-end tests: a throw-away
//! SQLite database, an admin token for the test's own queries and appliance tokens for the VMs,
//! `serve` on a loopback port that the guest reaches through QEMU's `guestfwd`, jobs queued
//! with `enqueue`, and what was stored read back through the CLI (`scans --json`,
//! `detections --json`) and the admin API (`GET /api/v1/scans/{id}`, `/api/v1/jobs`,
//! `/api/v1/appliances`).
//!
//! The binary is the workspace's own, built with the profile of the `coldscan` binary under
//! test (`cargo build -p coldscan-manager`, a no-op when it is fresh), or the file named by
//! `COLDSCAN_MANAGER_BIN` (`make e2e` sets it to the binary it has just built).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Name of the appliance token every [`Manager`] creates.
pub const APPLIANCE: &str = "e2e-appliance";
/// How long the manager may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The `coldscan-manager` binary (built once per test process).
pub fn manager_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("COLDSCAN_MANAGER_BIN") {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "COLDSCAN_MANAGER_BIN={} is missing",
                p.display()
            );
            return p;
        }
        let coldscan = PathBuf::from(env!("CARGO_BIN_EXE_coldscan"));
        let dir = coldscan.parent().unwrap().to_path_buf();
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(p) => p.to_string(),
            None => panic!("no profile directory above {}", coldscan.display()),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--quiet", "-p", "coldscan-manager", "--bin"])
            .arg("coldscan-manager")
            .args(["--profile", &profile])
            .current_dir(coldscan_tests::cache::workspace_root())
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "building coldscan-manager: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = dir.join("coldscan-manager");
        assert!(bin.is_file(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `coldscan-manager` with its own database; `serve` runs while [`Manager::serve`] has
/// started it and until [`Manager::stop`] or drop.
#[derive(Debug)]
pub struct Manager {
    dir: tempfile::TempDir,
    db: String,
    /// The loopback port `serve` listens on (chosen when the manager is made).
    pub port: u16,
    /// The token of the appliance named [`APPLIANCE`].
    pub token: String,
    admin: String,
    serve: Option<Child>,
}

impl Manager {
    /// A manager with a fresh database, an admin token and an appliance token, not serving yet.
    pub fn new() -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite:{}", dir.path().join("manager.db").display());
        let mut m = Manager {
            dir,
            db,
            port: free_port(),
            token: String::new(),
            admin: String::new(),
            serve: None,
        };
        m.admin = m.create_token("admin", "e2e-admin");
        m.token = m.create_token("appliance", APPLIANCE);
        m
    }

    /// A manager serving already (`serve` with `args` added).
    pub fn started(args: &[&str]) -> Manager {
        let mut m = Manager::new();
        m.serve(args);
        m
    }

    fn cli(&self) -> Command {
        let mut cmd = Command::new(manager_binary());
        cmd.arg("--db").arg(&self.db);
        cmd
    }

    fn cli_stdout(&self, args: &[&str]) -> String {
        let out = self.cli().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "coldscan-manager {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `token create --role ROLE NAME`: the new token.
    pub fn create_token(&self, role: &str, name: &str) -> String {
        self.cli_stdout(&["token", "create", "--role", role, name])
            .trim()
            .to_string()
    }

    /// Starts `serve --listen 127.0.0.1:PORT` (with `args`, e.g. `--lease 20`) and waits until
    /// it answers `/healthz`.
    pub fn serve(&mut self, args: &[&str]) {
        assert!(self.serve.is_none(), "already serving");
        let log = std::fs::File::create(self.dir.path().join("serve.log")).unwrap();
        let child = self
            .cli()
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("coldscan-manager serve starts");
        self.serve = Some(child);
        let start = Instant::now();
        loop {
            if let Some(status) = self.serve.as_mut().unwrap().try_wait().unwrap() {
                panic!("coldscan-manager serve ended ({status}):\n{}", self.log());
            }
            if self
                .get_raw("/healthz", None)
                .is_some_and(|(s, _)| s == 200)
            {
                return;
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "manager not answering:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops `serve` (SIGKILL: the database is SQLite in WAL mode, committed per request).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.serve.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The `serve` log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// `enqueue TARGET`: the job id.
    pub fn enqueue(&self, target: &str) -> i64 {
        self.cli_stdout(&["enqueue", target])
            .trim()
            .parse()
            .unwrap()
    }

    /// `scans --json`: every stored scan, newest first.
    pub fn scans(&self) -> Vec<serde_json::Value> {
        let text = self.cli_stdout(&["scans", "--json", "--limit", "100000"]);
        serde_json::from_str(&text).unwrap()
    }

    /// `detections --json`: every stored detection, newest first.
    pub fn detections(&self) -> Vec<serde_json::Value> {
        let text = self.cli_stdout(&["detections", "--json", "--limit", "100000"]);
        serde_json::from_str(&text).unwrap()
    }

    /// `GET /api/v1/scans/{id}`: the report as stored, plus `id` and `appliance`.
    pub fn report(&self, id: i64) -> serde_json::Value {
        self.get(&format!("/api/v1/scans/{id}"))
    }

    /// Every stored report (`scans --json`, then each one's full report).
    pub fn reports(&self) -> Vec<serde_json::Value> {
        self.scans()
            .iter()
            .map(|s| self.report(s["id"].as_i64().unwrap()))
            .collect()
    }

    /// `GET /api/v1/jobs`: the queue, newest first.
    pub fn jobs(&self) -> Vec<serde_json::Value> {
        self.get("/api/v1/jobs?limit=1000")["jobs"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// `GET /api/v1/appliances`.
    pub fn appliances(&self) -> Vec<serde_json::Value> {
        self.get("/api/v1/appliances")["appliances"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until `pred` holds for the job `id` (panics after `limit` with the queue).
    pub fn wait_job(
        &self,
        id: i64,
        limit: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let jobs = self.jobs();
            if let Some(job) = jobs.iter().find(|j| j["id"] == id) {
                if pred(job) {
                    return job.clone();
                }
            }
            assert!(
                start.elapsed() < limit,
                "job {id} after {limit:?}: {jobs:#?}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn get(&self, path: &str) -> serde_json::Value {
        match self.get_raw(path, Some(&self.admin)) {
            Some((200, body)) => serde_json::from_slice(&body).unwrap(),
            other => panic!(
                "GET {path}: {:?}\n{}",
                other.map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned())),
                self.log()
            ),
        }
    }

    /// `POST /api/v1/reports` as the appliance does it (its token, `Idempotency-Key: key`):
    /// the HTTP status and the answer.
    pub fn post_report(&self, report: &[u8], key: &str) -> (u16, serde_json::Value) {
        let (status, body) = self
            .request(
                "POST",
                "/api/v1/reports",
                Some(&self.token),
                &[
                    ("Idempotency-Key", key),
                    ("Content-Type", "application/json"),
                ],
                report,
            )
            .expect("the manager answers");
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    /// A plain HTTP/1.1 GET on loopback: status and body (`None` when nothing answers).
    fn get_raw(&self, path: &str, token: Option<&str>) -> Option<(u16, Vec<u8>)> {
        self.request("GET", path, token, &[], &[])
    }

    /// One HTTP/1.1 request on loopback: status and body (`None` when nothing answers).
    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Option<(u16, Vec<u8>)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        ));
        s.write_all(head.as_bytes()).ok()?;
        s.write_all(body).ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
        let mut body = raw[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body)?;
        }
        Some((status, body))
    }

    /// The database URL (`sqlite:PATH`).
    pub fn db(&self) -> &str {
        &self.db
    }

    /// The manager's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
