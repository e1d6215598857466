//! A throw-away PostgreSQL 15 cluster for the tests, started by the tests themselves with
//! Debian's `pg_virtualenv` (package `postgresql`, installed by `scripts/bootstrap`).
//!
//! One cluster per test binary: `pg_virtualenv -t -c '-p PORT' -v 15 sh -c '...'` creates a
//! cluster in a temporary directory on a free loopback port, and its command writes the
//! connection variables to a file and then waits for its standard input to close. That pipe is
//! held by this process, so when the test binary exits (however it exits) the command ends and
//! `pg_virtualenv` stops and drops the cluster. Each test gets its own database.
//!
//! Never skipped: if PostgreSQL is missing, the test fails and says what to install.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a cluster may take to come up.
const START_LIMIT: Duration = Duration::from_secs(120);

/// The cluster: its connection variables and the `pg_virtualenv` process.
#[derive(Debug)]
pub struct Cluster {
    /// `PGHOST`.
    pub host: String,
    /// `PGPORT`.
    pub port: String,
    /// `PGUSER`.
    pub user: String,
    /// `PGPASSWORD`.
    pub password: String,
    // Held for the life of the process: its stdin pipe keeps the cluster alive.
    _child: Mutex<Child>,
    _dir: tempfile::TempDir,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The process's cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(start)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start() -> Cluster {
    let which = Command::new("sh")
        .args([
            "-c",
            "command -v pg_virtualenv && test -x /usr/lib/postgresql/15/bin/postgres",
        ])
        .output();
    assert!(
        which.map(|o| o.status.success()).unwrap_or(false),
        "PostgreSQL 15 with pg_virtualenv is needed for this test: install the `postgresql` \
         package (scripts/bootstrap does)"
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let env_file: PathBuf = dir.path().join("pg.env");
    let log = std::fs::File::create(dir.path().join("pg_virtualenv.log")).expect("log file");
    let script = format!(
        "env | grep '^PG' > '{0}.tmp' && mv '{0}.tmp' '{0}' && exec cat > /dev/null",
        env_file.display()
    );
    let mut child = Command::new("pg_virtualenv")
        .args(["-t", "-v", "15", "-c"])
        .arg(format!("-p {}", free_port()))
        .args(["sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("pg_virtualenv starts");
    let started = Instant::now();
    let text = loop {
        if let Ok(t) = std::fs::read_to_string(&env_file) {
            break t;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log =
                std::fs::read_to_string(dir.path().join("pg_virtualenv.log")).unwrap_or_default();
            panic!("pg_virtualenv exited ({status}) before the cluster was up:\n{log}");
        }
        assert!(
            started.elapsed() < START_LIMIT,
            "PostgreSQL cluster not up after {START_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let var = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("pg_virtualenv set no {name}: {text}"))
            .to_string()
    };
    Cluster {
        host: var("PGHOST"),
        port: var("PGPORT"),
        user: var("PGUSER"),
        password: var("PGPASSWORD"),
        _child: Mutex::new(child),
        _dir: dir,
    }
}

impl Cluster {
    /// Creates a new empty database and returns its `postgres://` URL.
    pub fn new_database(&self) -> String {
        let name = format!(
            "coldscan_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("createdb")
            .env("PGHOST", &self.host)
            .env("PGPORT", &self.port)
            .env("PGUSER", &self.user)
            .env("PGPASSWORD", &self.password)
            .arg(&name)
            .output()
            .expect("createdb runs");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!(
            "postgres://{}:{}@{}:{}/{name}",
            self.user, self.password, self.host, self.port
        )
    }
}
