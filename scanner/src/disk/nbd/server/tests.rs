//! The server over real sockets: our own client, and independent clients as oracles
//! (`qemu-img` from qemu-utils, `nbdinfo` from libnbd-bin).

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;

use super::*;
use crate::block::MemSource;
use crate::disk::nbd::protocol;
use crate::disk::testutil::{guest_content, p, read_all, run};
use crate::disk::{open_as, DiskFormat, OpenOptions};

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn mem(data: Vec<u8>, name: &str) -> SharedSource {
    Arc::new(MemSource::new(data, name))
}

fn url(server: &ExportServer, export: &str) -> String {
    format!("nbd://{}/{export}", server.local_addr().unwrap())
}

/// Reads from `s` until it is closed; `true` if it was (EOF or reset), `false` on the safety
/// timeout (the test fails then instead of hanging).
fn sees_eof(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn the_server_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ExportServer>();
}

#[test]
fn our_client_reads_every_export_over_tcp_and_unix() {
    let vda = guest_content(3 << 20, 11);
    let vdb = guest_content(1 << 20, 12);
    let exports = vec![
        ("vda".to_string(), mem(vda.clone(), "vda")),
        ("vdb".to_string(), mem(vdb.clone(), "vdb")),
    ];
    let server = ExportServer::start_tcp(localhost(), exports.clone()).unwrap();
    let disk = crate::disk::nbd::open(&url(&server, "vda")).unwrap();
    assert_eq!(disk.source.size(), vda.len() as u64);
    assert_eq!(read_all(disk.source.as_ref()), vda);
    // Pooled connections (the export says CAN_MULTI_CONN) from several threads.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let src = disk.source.clone();
            let vda = vda.clone();
            std::thread::spawn(move || {
                for i in 0..40usize {
                    let off = (i * 65_537 + t * 4099) % (vda.len() - 70_000);
                    let mut b = vec![0u8; 70_000];
                    src.read_exact_at(off as u64, &mut b).unwrap();
                    assert_eq!(b, vda[off..off + 70_000]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let other = crate::disk::nbd::open(&url(&server, "vdb")).unwrap();
    assert_eq!(read_all(other.source.as_ref()), vdb);
    let err = crate::disk::nbd::open(&url(&server, "vdc")).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    let stats = server.stats();
    assert!(
        stats.bytes_read >= (vda.len() + vdb.len()) as u64,
        "{stats:?}"
    );
    assert!(stats.accepted >= 3, "{stats:?}");
    drop((disk, other));
    server.stop();

    // The same over a Unix socket, which is 0600 and gone after stop.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nbd.sock");
    let server = ExportServer::start_unix(&sock, exports).unwrap();
    assert_eq!(server.local_addr(), None);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let disk = crate::disk::nbd::open(&format!("nbd+unix:///vdb?socket={}", p(&sock))).unwrap();
    assert_eq!(read_all(disk.source.as_ref()), vdb);
    drop(disk);
    server.stop();
    assert!(!sock.exists());
}

#[test]
fn unix_socket_paths_are_replaced_only_when_stale() {
    let dir = tempfile::tempdir().unwrap();
    let exports = vec![("vda".to_string(), mem(vec![1; 512], "vda"))];
    // A regular file is never replaced.
    let file = dir.path().join("file");
    std::fs::write(&file, b"keep").unwrap();
    assert!(ExportServer::start_unix(&file, exports.clone()).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    // A live socket is not taken over; a stale one (nobody listening) is.
    let sock = dir.path().join("s.sock");
    let first = ExportServer::start_unix(&sock, exports.clone()).unwrap();
    assert!(ExportServer::start_unix(&sock, exports.clone()).is_err());
    let stale = std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap();
    drop(stale);
    let second = ExportServer::start_unix(&dir.path().join("stale.sock"), exports).unwrap();
    // Dropping (not only stopping) removes the socket.
    drop(first);
    assert!(!sock.exists());
    second.stop();
    assert!(!dir.path().join("stale.sock").exists());
}

#[test]
fn exports_are_checked_at_start() {
    let a = mem(vec![0; 512], "a");
    let twice = vec![("x".to_string(), a.clone()), ("x".to_string(), a.clone())];
    assert!(matches!(
        ExportServer::start_tcp(localhost(), twice),
        Err(Error::Refused { .. })
    ));
    let long = vec![("n".repeat(MAX_EXPORT_NAME + 1), a.clone())];
    assert!(matches!(
        ExportServer::start_tcp(localhost(), long),
        Err(Error::Limit { .. })
    ));
    let nul = vec![("a\0b".to_string(), a)];
    assert!(ExportServer::start_tcp(localhost(), nul).is_err());
}

/// A frozen qcow2 image as the manager exports it, read by QEMU's own NBD client.
#[test]
fn qemu_img_reads_the_export_like_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    run("qemu-img", &["create", "-q", "-f", "qcow2", p(&base), "4M"]);
    run("qemu-io", &["-c", "write -P 0xab 1M 64k", p(&base)]);
    run("qemu-io", &["-c", "write -P 0x5c 3583k 1k", p(&base)]);
    let disk = open_as(&base, DiskFormat::Qcow2, &OpenOptions::default()).unwrap();
    let server =
        ExportServer::start_tcp(localhost(), vec![("vda".to_string(), disk.source)]).unwrap();
    let nbd = url(&server, "vda");

    let info = run("qemu-img", &["info", "--output=json", &nbd]);
    assert!(info.contains("\"virtual-size\": 4194304"), "{info}");
    let same = run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", &nbd, p(&base)],
    );
    assert!(same.contains("identical"), "{same}");
    let copy = dir.path().join("copy.raw");
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "raw", &nbd, p(&copy)],
    );
    let reference = dir.path().join("ref.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            p(&base),
            p(&reference),
        ],
    );
    let copied = std::fs::read(&copy).unwrap();
    assert_eq!(copied, std::fs::read(&reference).unwrap());
    assert!(copied[1 << 20..(1 << 20) + 65536]
        .iter()
        .all(|&b| b == 0xab));
    // A write through QEMU is refused (the export is read-only), the image untouched.
    let before = std::fs::read(&base).unwrap();
    let w = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x11 0 4k", &nbd])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&w.stdout),
        String::from_utf8_lossy(&w.stderr)
    );
    assert!(!said.contains("wrote 4096"), "{said}");
    assert_eq!(std::fs::read(&base).unwrap(), before);
    assert!(server.stats().bytes_read >= 4 << 20);
    server.stop();
}

/// libnbd's `nbdinfo` lists the exports (`NBD_OPT_LIST`) and sizes them (`NBD_OPT_INFO`/`GO`).
#[test]
fn nbdinfo_lists_and_sizes_the_exports() {
    if Command::new("nbdinfo").arg("--version").output().is_err() {
        eprintln!("SKIPPED: nbdinfo (Debian package libnbd-bin) is not installed");
        return;
    }
    let exports = vec![
        ("vda".to_string(), mem(vec![7; 1 << 20], "vda")),
        ("data disk".to_string(), mem(vec![9; 3 << 16], "data")),
    ];
    let server = ExportServer::start_tcp(localhost(), exports).unwrap();
    let addr = server.local_addr().unwrap();
    let list = run("nbdinfo", &["--list", &format!("nbd://{addr}")]);
    assert!(list.contains("export=\"vda\""), "{list}");
    assert!(list.contains("export=\"data disk\""), "{list}");
    let json = run("nbdinfo", &["--json", &format!("nbd://{addr}/vda")]);
    assert!(json.contains("\"export-size\": 1048576"), "{json}");
    assert!(json.contains("\"is_read_only\": true"), "{json}");
    let size = run("nbdinfo", &["--size", &format!("nbd://{addr}/data%20disk")]);
    assert_eq!(size.trim(), (3 << 16).to_string());
    server.stop();
}

#[test]
fn stop_with_clients_connected_closes_them_and_joins() {
    let source = mem(vec![3; 1 << 20], "vda");
    let server =
        ExportServer::start_tcp(localhost(), vec![("vda".to_string(), source.clone())]).unwrap();
    let addr = server.local_addr().unwrap();
    // One client in the transmission phase, one in the middle of the negotiation.
    let mut negotiated = TcpStream::connect(addr).unwrap();
    protocol::handshake(&mut negotiated, "vda", "test").unwrap();
    let mut greeted = TcpStream::connect(addr).unwrap();
    let mut greeting = [0u8; 18];
    greeted.read_exact(&mut greeting).unwrap();
    assert_eq!(server.stats().open_connections, 2);
    server.stop();
    assert!(sees_eof(&mut negotiated));
    assert!(sees_eof(&mut greeted));
    // Every thread ended and released the export: only this test holds the source now.
    assert_eq!(Arc::strong_count(&source), 1);
    // Nobody listens any more.
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn connections_beyond_the_limit_are_closed_at_once() {
    let options = ServerOptions {
        max_connections: 2,
        // Timeouts too large to add to the clock are taken as "very long", not a panic.
        idle_timeout: Duration::MAX,
        ..ServerOptions::default()
    };
    let exports = vec![("vda".to_string(), mem(vec![5; 4096], "vda"))];
    let server = ExportServer::start_tcp_with(localhost(), exports, options).unwrap();
    let addr = server.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).unwrap();
        protocol::handshake(&mut s, "vda", "test").unwrap();
        held.push(s);
    }
    let mut third = TcpStream::connect(addr).unwrap();
    assert!(sees_eof(&mut third));
    let stats = server.stats();
    assert_eq!((stats.open_connections, stats.turned_away), (2, 1));
    // A slot freed by a client leaving is served again.
    protocol::disconnect(&mut held[0], 9, "test").unwrap();
    assert!(sees_eof(&mut held[0]));
    // Its slot is free once the client sees the connection closed.
    let mut s = TcpStream::connect(addr).unwrap();
    protocol::handshake(&mut s, "vda", "test").unwrap();
    assert_eq!(server.stats().turned_away, 1);
    server.stop();
}

#[test]
fn silent_and_trickling_clients_are_cut_off() {
    let options = ServerOptions {
        negotiation_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let exports = vec![("vda".to_string(), mem(vec![5; 4096], "vda"))];
    let server = ExportServer::start_tcp_with(localhost(), exports, options).unwrap();
    let addr = server.local_addr().unwrap();
    // Silent during the negotiation.
    let mut silent = TcpStream::connect(addr).unwrap();
    assert!(sees_eof(&mut silent));
    // Sending an option one byte at a time, each well within any per-read timeout.
    let mut trickle = TcpStream::connect(addr).unwrap();
    let mut greeting = [0u8; 18];
    trickle.read_exact(&mut greeting).unwrap();
    let mut head = 3u32.to_be_bytes().to_vec();
    head.extend(protocol::IHAVEOPT.to_be_bytes());
    head.extend(protocol::OPT_GO.to_be_bytes());
    head.extend(1000u32.to_be_bytes());
    std::io::Write::write_all(&mut trickle, &head).unwrap();
    let mut closed = false;
    for _ in 0..200 {
        if std::io::Write::write_all(&mut trickle, &[0]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(closed || sees_eof(&mut trickle));
    // Idle after the negotiation.
    let mut idle = TcpStream::connect(addr).unwrap();
    protocol::handshake(&mut idle, "vda", "test").unwrap();
    assert!(sees_eof(&mut idle));
    server.stop();
}
