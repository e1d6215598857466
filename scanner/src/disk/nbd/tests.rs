//! NBD client tests against `qemu-nbd --read-only` (started per test, killed by a guard).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// A running `qemu-nbd`, killed (by its own process handle) when dropped.
pub(super) struct QemuNbd {
    child: Child,
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `qemu-nbd --read-only --persistent` with `args` and waits until `ready` holds.
pub(super) fn qemu_nbd(args: &[&str], ready: impl Fn() -> bool) -> QemuNbd {
    let child = Command::new("qemu-nbd")
        .args(["--read-only", "--persistent"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qemu-nbd");
    let guard = QemuNbd { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "qemu-nbd did not start: {args:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    guard
}

/// Serves `image` over TCP, returning the guard and the port.
fn serve_tcp(format: &str, image: &Path, extra: &[&str]) -> (QemuNbd, u16) {
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec!["-f", format, "-b", "127.0.0.1", "-p", &port_s];
    args.extend_from_slice(extra);
    args.push(image.to_str().unwrap());
    let guard = qemu_nbd(&args, || TcpStream::connect(("127.0.0.1", port)).is_ok());
    (guard, port)
}

fn test_data(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    v[len / 4..len / 2].fill(0);
    v
}

fn read_all(src: &dyn BlockSource, chunk: usize) -> Vec<u8> {
    let mut out = vec![0u8; src.size() as usize];
    for (i, piece) in out.chunks_mut(chunk).enumerate() {
        src.read_exact_at((i * chunk) as u64, piece).unwrap();
    }
    out
}

#[test]
fn urls_parse() {
    let u = NbdUrl::parse("nbd://127.0.0.1:10810/disk%20a").unwrap();
    assert_eq!(
        u.endpoint,
        Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 10810
        }
    );
    assert_eq!(u.export, "disk a");
    let u = NbdUrl::parse("nbd://[::1]/").unwrap();
    assert_eq!(
        u.endpoint,
        Endpoint::Tcp {
            host: "::1".into(),
            port: DEFAULT_PORT
        }
    );
    assert_eq!(u.export, "");
    let u = NbdUrl::parse("nbd+unix:///x?socket=/run/nbd.sock").unwrap();
    assert_eq!(u.endpoint, Endpoint::Unix("/run/nbd.sock".into()));
    assert_eq!(u.export, "x");
    // TLS required: libnbd's scheme names.
    let u = NbdUrl::parse("nbds://host.example:10811/vda").unwrap();
    assert!(u.tls);
    assert_eq!(
        u.endpoint,
        Endpoint::Tcp {
            host: "host.example".into(),
            port: 10811
        }
    );
    let u = NbdUrl::parse("nbds+unix:///vda?socket=/run/b.sock").unwrap();
    assert!(u.tls);
    assert_eq!(u.endpoint, Endpoint::Unix("/run/b.sock".into()));
    assert!(!NbdUrl::parse("nbd://h/x").unwrap().tls);
    assert!(is_nbd_url("nbds://h/x") && is_nbd_url("nbds+unix:///x?socket=/s"));
    assert!(!is_nbd_url("nbdx://h/x"));
    for bad in [
        "nbds://",
        "nbds+unix:///x",
        "nbd://",
        "nbd://h:port/",
        "nbd+unix:///x",
        "nbd://h/%zz",
        "file:///x",
    ] {
        assert!(NbdUrl::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn reads_a_qcow2_export_like_the_file_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let data = test_data(3 << 20);
    let raw = dir.path().join("d.raw");
    std::fs::write(&raw, &data).unwrap();
    let qcow2 = dir.path().join("d.qcow2");
    let status = Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2)
        .status()
        .unwrap();
    assert!(status.success());
    let (_server, port) = serve_tcp("qcow2", &qcow2, &[]);
    let url = format!("nbd://127.0.0.1:{port}/");
    let disk = crate::disk::open_target(&url, &crate::disk::OpenOptions::default()).unwrap();
    assert_eq!(disk.format, DiskFormat::Nbd);
    assert!(disk
        .details
        .iter()
        .any(|(k, v)| k == "read-only" && v == "true"));
    assert_eq!(read_all(disk.source.as_ref(), 1 << 20), data);
    // Several threads sharing the source (qemu-nbd serves one connection by default).
    let src = disk.source.clone();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let src = src.clone();
            let data = data.clone();
            std::thread::spawn(move || {
                for i in 0..50usize {
                    let off = (i * 65_537 + t * 4099) % (data.len() - 10_000);
                    let mut b = vec![0u8; 10_000];
                    src.read_exact_at(off as u64, &mut b).unwrap();
                    assert_eq!(b, data[off..off + 10_000]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Past the end is an error, not a short read.
    let mut b = [0u8; 16];
    assert!(src.read_exact_at(src.size() - 8, &mut b).is_err());
}

#[test]
fn named_raw_export_over_a_unix_socket_and_pooled_connections() {
    let dir = tempfile::tempdir().unwrap();
    let data = test_data(1 << 20);
    let raw = dir.path().join("d.raw");
    std::fs::write(&raw, &data).unwrap();
    let sock = dir.path().join("nbd.sock");
    let s = sock.to_str().unwrap().to_string();
    let _server = qemu_nbd(
        &[
            "-f",
            "raw",
            "-x",
            "disk0",
            "-k",
            &s,
            "--shared=4",
            raw.to_str().unwrap(),
        ],
        || sock.exists(),
    );
    let src = Arc::new(NbdSource::connect(&format!("nbd+unix:///disk0?socket={s}")).unwrap());
    assert_eq!(read_all(src.as_ref(), 70_000), data);
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let src = src.clone();
            std::thread::spawn(move || read_all(src.as_ref(), 4096))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), data);
    }
    // An export that does not exist.
    let err = NbdSource::connect(&format!("nbd+unix:///nope?socket={s}")).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn a_closed_port_is_a_prompt_error() {
    let port = free_port();
    let started = Instant::now();
    let err = NbdSource::connect(&format!("nbd://127.0.0.1:{port}/")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(started.elapsed() < CONNECT_TIMEOUT);
}

#[test]
fn a_silent_server_times_out_instead_of_hanging() {
    // Accepts connections (the kernel does) but never says anything.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let err = NbdSource::connect(&format!("nbd://127.0.0.1:{port}/")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(5));
    drop(listener);
}

/// What the in-process server saw.
#[derive(Debug, Default)]
struct Seen {
    commands: Vec<u16>,
    misaligned: usize,
    connections: usize,
}

/// A minimal NBD server over TCP serving `data` with a 512-byte minimum block size, a 64 KiB
/// maximum request and `NBD_FLAG_CAN_MULTI_CONN`, which answers only its first connection (as
/// `qemu-nbd` without `--shared` does): later ones are accepted by the kernel but never greeted.
fn fake_server(data: Arc<Vec<u8>>) -> (u16, Arc<std::sync::Mutex<Seen>>) {
    use protocol::*;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        let mut silent = Vec::new();
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut s) = conn else { return };
            seen2.lock().unwrap().connections += 1;
            if n > 0 {
                silent.push(s);
                continue;
            }
            let data = data.clone();
            let seen = seen2.clone();
            std::thread::spawn(move || {
                let mut greet = NBD_MAGIC.to_be_bytes().to_vec();
                greet.extend(IHAVEOPT.to_be_bytes());
                greet.extend((FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
                s.write_all(&greet).unwrap();
                let mut b4 = [0u8; 4];
                s.read_exact(&mut b4).unwrap();
                let mut head = [0u8; 16];
                s.read_exact(&mut head).unwrap();
                let len = u32::from_be_bytes(head[12..16].try_into().unwrap());
                let mut opt = vec![0u8; len as usize];
                s.read_exact(&mut opt).unwrap();
                let reply = |typ: u32, payload: &[u8]| {
                    let mut v = OPTION_REPLY_MAGIC.to_be_bytes().to_vec();
                    v.extend(OPT_GO.to_be_bytes());
                    v.extend(typ.to_be_bytes());
                    v.extend((payload.len() as u32).to_be_bytes());
                    v.extend(payload);
                    v
                };
                let mut export = INFO_EXPORT.to_be_bytes().to_vec();
                export.extend((data.len() as u64).to_be_bytes());
                export.extend(
                    (TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_CAN_MULTI_CONN).to_be_bytes(),
                );
                let mut bs = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                for v in [512u32, 4096, 65536] {
                    bs.extend(v.to_be_bytes());
                }
                s.write_all(&reply(REP_INFO, &export)).unwrap();
                s.write_all(&reply(REP_INFO, &bs)).unwrap();
                s.write_all(&reply(REP_ACK, &[])).unwrap();
                loop {
                    let mut req = [0u8; 28];
                    if s.read_exact(&mut req).is_err() {
                        return;
                    }
                    let typ = u16::from_be_bytes([req[6], req[7]]);
                    let cookie = &req[8..16];
                    let off = u64::from_be_bytes(req[16..24].try_into().unwrap()) as usize;
                    let len = u32::from_be_bytes(req[24..28].try_into().unwrap()) as usize;
                    seen.lock().unwrap().commands.push(typ);
                    if typ != CMD_READ {
                        return;
                    }
                    let mut r = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
                    if off % 512 != 0 || len % 512 != 0 || len > 65536 {
                        seen.lock().unwrap().misaligned += 1;
                        r.extend(22u32.to_be_bytes());
                        r.extend(cookie);
                    } else {
                        r.extend(0u32.to_be_bytes());
                        r.extend(cookie);
                        r.extend(&data[off..off + len]);
                    }
                    s.write_all(&r).unwrap();
                }
            });
        }
    });
    (port, seen)
}

#[test]
fn honours_block_sizes_and_shares_one_connection_when_no_more_are_served() {
    let data = Arc::new(test_data(1 << 20));
    let (port, seen) = fake_server(data.clone());
    let src = Arc::new(NbdSource::connect(&format!("nbd://127.0.0.1:{port}/")).unwrap());
    assert_eq!(src.info().min_block, 512);
    // Unaligned and larger than the server's maximum request.
    let mut b = vec![0u8; 200_001];
    src.read_exact_at(1001, &mut b).unwrap();
    assert_eq!(b[..], data[1001..1001 + 200_001]);
    // Parallel readers: the second connection is never greeted, the pool falls back to one.
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let src = src.clone();
            let data = data.clone();
            std::thread::spawn(move || {
                let mut b = vec![0u8; 777];
                for i in 0..20u64 {
                    let off = i * 40_009 + t;
                    src.read_exact_at(off, &mut b).unwrap();
                    assert_eq!(b[..], data[off as usize..off as usize + 777]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(src);
    std::thread::sleep(Duration::from_millis(100));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.misaligned, 0);
    assert!(seen.connections >= 2, "{seen:?}");
    // Only reads, then the disconnect: never a write, flush or trim.
    assert_eq!(seen.commands.last(), Some(&protocol::CMD_DISC), "{seen:?}");
    assert!(seen.commands[..seen.commands.len() - 1]
        .iter()
        .all(|&c| c == protocol::CMD_READ));
}
