//! NBD targets end to end: `qemu-nbd --read-only` serves a qcow2 fixture on the loopback
//! interface, and `coldscan ls nbd://127.0.0.1:PORT/` lists exactly its ground truth (needs the
//! `coldscan` binary built: `cargo build --bins`).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use coldscan_tests::tools::command;
use coldscan_tests::{checks, coldscan, fixture};

/// How long qemu-nbd may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(20);
/// Ports tried before giving up (another process may take a free port before qemu-nbd does).
const PORT_ATTEMPTS: usize = 10;

/// A running `qemu-nbd`, killed when dropped.
struct NbdServer {
    child: Child,
    port: u16,
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on right now on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// Serves `image` (format `fmt`) read-only on 127.0.0.1 under the default (empty) export
/// name, waiting until it accepts connections.
fn serve(image: &Path, fmt: &str) -> NbdServer {
    serve_as(image, fmt, "")
}

/// [`serve`] under the export name `export`.
fn serve_as(image: &Path, fmt: &str, export: &str) -> NbdServer {
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port();
        let child = command("qemu-nbd")
            .args(["--read-only", "--persistent", "--shared=8", "-f", fmt])
            .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-x", export])
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting qemu-nbd");
        let mut server = NbdServer { child, port };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let start = Instant::now();
        while start.elapsed() < START_LIMIT {
            if let Ok(Some(_)) = server.child.try_wait() {
                break; // exited: most likely the port was taken meanwhile; try another
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("qemu-nbd did not start serving {}", image.display());
}

fn url(server: &NbdServer) -> String {
    format!("nbd://127.0.0.1:{}/", server.port)
}

#[test]
fn ls_over_nbd_equals_manifest() {
    let f = fixture("mbr-logical-qcow2").unwrap_or_else(|e| panic!("{e:#}"));
    let server = serve(&f.disk(), "qcow2");
    let target = url(&server);
    checks::ls_matches_manifest_at(&f, &target).unwrap_or_else(|e| panic!("{e:#}"));
    // Every record names the URL as its disk.
    let out =
        coldscan::run(&["ls", "--format", "jsonl", &target]).unwrap_or_else(|e| panic!("{e:#}"));
    let text = out.stdout_text();
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a record")).expect("jsonl");
    assert_eq!(first["disk"].as_str(), Some(target.as_str()), "{first}");
}

#[test]
fn info_over_nbd_shows_the_partitions() {
    let f = fixture("mbr-logical-qcow2").unwrap_or_else(|e| panic!("{e:#}"));
    let server = serve(&f.disk(), "qcow2");
    let target = url(&server);
    checks::info_matches_at(&f, &target).unwrap_or_else(|e| panic!("{e:#}"));
    let (info, _) = coldscan::info(&target).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(info["format"].as_str(), Some("nbd"), "{info}");
    let text = coldscan::run(&["info", &target]).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    assert!(
        text.stdout_text().contains("ntfs"),
        "{}",
        text.stdout_text()
    );
}

#[test]
fn cat_over_nbd_gives_planted_content() {
    let f = fixture("mbr-logical-qcow2").unwrap_or_else(|e| panic!("{e:#}"));
    let server = serve(&f.disk(), "qcow2");
    let target = url(&server);
    let manifest = f.manifest().unwrap_or_else(|e| panic!("{e:#}"));
    let mut checked = 0;
    for r in manifest
        .iter()
        .filter(|r| r.kind == "file")
        .step_by(7)
        .take(20)
    {
        let data = coldscan::cat(&target, r.partition, &r.path).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            Some(coldscan_tests::content::sha256_hex(&data)),
            r.sha256,
            "{}",
            r.path
        );
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn named_export_of_a_chain_equals_its_top_state() {
    // qemu-nbd reads the chain itself; coldscan sees one flat NBD disk.
    let f = fixture("chain-qcow2").unwrap_or_else(|e| panic!("{e:#}"));
    let server = serve_as(&f.disk(), "qcow2", "top-of-chain");
    let target = format!("nbd://127.0.0.1:{}/top-of-chain", server.port);
    checks::ls_matches_manifest_at(&f, &target).unwrap_or_else(|e| panic!("{e:#}"));
    // A name the server does not export is an error naming it, not an empty listing.
    let wrong = format!("nbd://127.0.0.1:{}/no-such-export", server.port);
    let out = coldscan::run(&["ls", &wrong]).unwrap_or_else(|e| panic!("{e:#}"));
    assert_ne!(out.code, Some(0), "stdout: {}", out.stdout_text());
    assert!(out.stdout.is_empty(), "stdout: {}", out.stdout_text());
    assert!(
        out.stderr.contains("no-such-export"),
        "stderr: {}",
        out.stderr
    );
}
