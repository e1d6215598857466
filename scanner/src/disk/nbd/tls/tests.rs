//! NBD over TLS against the real thing: `qemu-nbd` with `tls-creds-x509` (GnuTLS) as the server,
//! certificates made by `openssl` at test time in QEMU's directory layout (`ca-cert.pem`,
//! `server-cert.pem`, `server-key.pem`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::super::tests::{free_port, qemu_nbd, QemuNbd};
use super::super::{protocol, Connection, NbdSource, NbdUrl, CONNECT_TIMEOUT};
use super::*;
use crate::block::{BlockSource, MemSource};
use crate::disk::nbd::server::ExportServer;
use crate::disk::testutil::{guest_content, p, qemu_raw, read_all, run};
use crate::disk::{open_target, OpenOptions};

/// A certificate and its key.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
    /// An RSA key rather than ECDSA P-256.
    rsa: bool,
}

/// `openssl req` arguments for a new key.
fn new_key(rsa: bool) -> [&'static str; 4] {
    if rsa {
        ["-newkey", "rsa:2048", "-pkeyopt", "rsa_keygen_pubexp:65537"]
    } else {
        ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    }
}

/// Makes a self-signed CA `name` in `dir` (ECDSA P-256).
fn ca(dir: &Path, name: &str) -> Issued {
    ca_with(dir, name, false)
}

/// Makes a self-signed CA `name` in `dir`, with an RSA key if `rsa`.
fn ca_with(dir: &Path, name: &str, rsa: bool) -> Issued {
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let [a, b, c, d] = new_key(rsa);
    run(
        "openssl",
        &[
            "req",
            "-x509",
            a,
            b,
            c,
            d,
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=coldscan test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            p(&key),
            "-out",
            p(&cert),
        ],
    );
    Issued { cert, key, rsa }
}

/// Issues a certificate `name` signed by `ca`: for `serverAuth` with the subject alternative
/// names `san`, or for `clientAuth`.
fn issue(dir: &Path, ca: &Issued, name: &str, purpose: &str, san: Option<&str>) -> Issued {
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let csr = dir.join(format!("{name}.csr"));
    let ext = dir.join(format!("{name}.ext"));
    let mut extensions = format!(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
         extendedKeyUsage={purpose}\n"
    );
    if let Some(san) = san {
        extensions.push_str(&format!("subjectAltName={san}\n"));
    }
    std::fs::write(&ext, extensions).unwrap();
    let [a, b, c, d] = new_key(ca.rsa);
    run(
        "openssl",
        &[
            "req",
            "-new",
            a,
            b,
            c,
            d,
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            p(&key),
            "-out",
            p(&csr),
        ],
    );
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            p(&csr),
            "-CA",
            p(&ca.cert),
            "-CAkey",
            p(&ca.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            p(&ext),
            "-out",
            p(&cert),
        ],
    );
    Issued {
        cert,
        key,
        rsa: ca.rsa,
    }
}

/// A CA, a client certificate it signed, and QEMU server credential directories.
struct Pki {
    dir: tempfile::TempDir,
    ca: Issued,
    client: Issued,
}

impl Pki {
    fn new() -> Self {
        Self::with_keys(false)
    }

    /// RSA keys throughout if `rsa`, else ECDSA P-256.
    fn with_keys(rsa: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_with(dir.path(), "ca", rsa);
        let client = issue(dir.path(), &ca, "client", "clientAuth", None);
        Pki { dir, ca, client }
    }

    /// A QEMU `tls-creds-x509` directory whose server certificate carries `san`.
    fn server_dir(&self, name: &str, san: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let server = issue(&dir, &self.ca, "server", "serverAuth", Some(san));
        std::fs::copy(&self.ca.cert, dir.join("ca-cert.pem")).unwrap();
        assert_eq!(server.cert, dir.join("server-cert.pem"));
        assert_eq!(server.key, dir.join("server-key.pem"));
        dir
    }

    /// Credentials with the client certificate.
    fn with_client_cert(&self) -> NbdTls {
        NbdTls {
            ca: Some(self.ca.cert.clone()),
            cert: Some(self.client.cert.clone()),
            key: Some(self.client.key.clone()),
            hostname: None,
        }
    }

    /// Credentials without a client certificate.
    fn ca_only(&self) -> NbdTls {
        NbdTls {
            ca: Some(self.ca.cert.clone()),
            ..NbdTls::default()
        }
    }
}

/// The standard server certificate's names.
const LOCAL_SAN: &str = "IP:127.0.0.1,DNS:localhost";

/// `qemu-nbd` exporting `image` as `vda` on `port` with TLS credentials from `creds`
/// (`verify-peer` as given), plus `extra` arguments.
fn tls_server(creds: &Path, verify_peer: bool, port: u16, image: &Path, extra: &[&str]) -> QemuNbd {
    tls_server_with(creds, verify_peer, "", port, image, extra)
}

/// [`tls_server`] with `tail` appended to the `tls-creds-x509` object (`,priority=...`).
fn tls_server_with(
    creds: &Path,
    verify_peer: bool,
    tail: &str,
    port: u16,
    image: &Path,
    extra: &[&str],
) -> QemuNbd {
    let object = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=server,verify-peer={}{tail}",
        p(creds),
        if verify_peer { "on" } else { "off" }
    );
    let port_s = port.to_string();
    let mut args = vec![
        "--object",
        &object,
        "--tls-creds",
        "tls0",
        "-f",
        "qcow2",
        "-x",
        "vda",
        "-b",
        "127.0.0.1",
        "-p",
        &port_s,
    ];
    args.extend_from_slice(extra);
    args.push(p(image));
    qemu_nbd(&args, || TcpStream::connect(("127.0.0.1", port)).is_ok())
}

/// A 4 MiB qcow2 image in `dir` and its content as `qemu-img convert -O raw` gives it.
fn image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let raw = dir.join("disk.raw");
    std::fs::write(&raw, guest_content(4 << 20, 0x5eed)).unwrap();
    let qcow2 = dir.join("disk.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", p(&raw), p(&qcow2)]);
    let expected = qemu_raw(&qcow2, "qcow2");
    (qcow2, expected)
}

fn connect(url: &str, tls: &NbdTls) -> crate::Result<NbdSource> {
    NbdSource::connect_with_tls(url, Some(tls))
}

fn failure(err: &Error) -> Option<TlsFailure> {
    match err {
        Error::Tls { failure, .. } => Some(*failure),
        _ => None,
    }
}

#[test]
fn reads_a_peer_verifying_qemu_export_like_qemu_img_with_pooled_tls_connections() {
    let pki = Pki::new();
    let creds = pki.server_dir("server", LOCAL_SAN);
    let (qcow2, expected) = image(pki.dir.path());
    let port = free_port();
    let _server = tls_server(&creds, true, port, &qcow2, &["--shared=4"]);
    let url = format!("nbds://127.0.0.1:{port}/vda");
    let opts = OpenOptions {
        nbd_tls: Some(pki.with_client_cert()),
        ..OpenOptions::default()
    };
    let disk = open_target(&url, &opts).unwrap();
    let tls = disk.details.iter().find(|(k, _)| k == "tls").unwrap();
    assert!(tls.1.starts_with("TLS 1."), "{tls:?}");
    assert!(tls.1.contains("127.0.0.1"), "{tls:?}");
    assert!(read_all(disk.source.as_ref()) == expected);
    // Parallel readers open more connections, each with its own STARTTLS and handshake.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let src = disk.source.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                for i in 0..40usize {
                    let off = (i * 98_317 + t * 7_001) % (expected.len() - 9_000);
                    let mut b = vec![0u8; 9_000];
                    src.read_exact_at(off as u64, &mut b).unwrap();
                    assert!(b == expected[off..off + 9_000]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // The same server by the name its certificate also carries (once our connections, as
    // many as it serves, are closed).
    drop(disk);
    let by_name = connect(
        &format!("nbds://localhost:{port}/vda"),
        &pki.with_client_cert(),
    )
    .unwrap();
    assert_eq!(by_name.size(), expected.len() as u64);
}

#[test]
fn tls_1_2_with_rsa_certificates() {
    // GnuTLS limited to TLS 1.2 (with ECDSA keys it then fails libnbd's checks as well as ours,
    // so RSA here).
    let pki = Pki::with_keys(true);
    let creds = pki.server_dir("server", LOCAL_SAN);
    let (qcow2, expected) = image(pki.dir.path());
    let port = free_port();
    let tail = ",priority=NORMAL:-VERS-TLS1.3";
    let _server = tls_server_with(&creds, true, tail, port, &qcow2, &[]);
    let url = format!("nbds://127.0.0.1:{port}/vda");
    let opts = OpenOptions {
        nbd_tls: Some(pki.with_client_cert()),
        ..OpenOptions::default()
    };
    let disk = open_target(&url, &opts).unwrap();
    let tls = disk.details.iter().find(|(k, _)| k == "tls").unwrap();
    assert!(tls.1.starts_with("TLS 1.2,"), "{tls:?}");
    assert!(read_all(disk.source.as_ref()) == expected);
    drop(disk);
    let err = connect(&url, &pki.ca_only()).unwrap_err();
    assert_eq!(failure(&err), Some(TlsFailure::Handshake), "{err}");
}

#[test]
fn a_restarted_server_is_reached_again_with_a_new_tls_handshake() {
    let pki = Pki::new();
    let creds = pki.server_dir("server", LOCAL_SAN);
    let (qcow2, expected) = image(pki.dir.path());
    let port = free_port();
    let server = tls_server(&creds, true, port, &qcow2, &[]);
    let src = connect(
        &format!("nbds://127.0.0.1:{port}/vda"),
        &pki.with_client_cert(),
    )
    .unwrap();
    let mut b = vec![0u8; 65_536];
    src.read_exact_at(0, &mut b).unwrap();
    assert!(b == expected[..65_536]);
    drop(server);
    let _server = tls_server(&creds, true, port, &qcow2, &[]);
    // The pooled connection is dead: the read is retried on a new one (STARTTLS, handshake).
    src.read_exact_at(1 << 20, &mut b).unwrap();
    assert!(b == expected[1 << 20..(1 << 20) + 65_536]);
}

#[test]
fn refusals_are_typed_errors_never_plain_reads() {
    let pki = Pki::new();
    let creds = pki.server_dir("server", LOCAL_SAN);
    let (qcow2, _) = image(pki.dir.path());
    let port = free_port();
    let _server = tls_server(&creds, true, port, &qcow2, &[]);
    let url = format!("nbds://127.0.0.1:{port}/vda");
    // No client certificate for a server that verifies its peers.
    let err = connect(&url, &pki.ca_only()).unwrap_err();
    assert_eq!(failure(&err), Some(TlsFailure::Handshake), "{err}");
    assert!(err.to_string().contains("client certificate"), "{err}");
    assert!(err.to_string().contains(&url), "{err}");
    // A client certificate from a CA the server does not trust.
    let other = ca(pki.dir.path(), "other-ca");
    let stranger = issue(pki.dir.path(), &other, "stranger", "clientAuth", None);
    let err = connect(
        &url,
        &NbdTls {
            cert: Some(stranger.cert.clone()),
            key: Some(stranger.key.clone()),
            ..pki.ca_only()
        },
    )
    .unwrap_err();
    assert_eq!(failure(&err), Some(TlsFailure::Handshake), "{err}");
    // Trusting another CA than the one that signed the server's certificate.
    let err = connect(
        &url,
        &NbdTls {
            ca: Some(other.cert.clone()),
            ..pki.with_client_cert()
        },
    )
    .unwrap_err();
    assert_eq!(failure(&err), Some(TlsFailure::ServerNotTrusted), "{err}");
    assert!(err.to_string().contains("not trusted"), "{err}");
    // Without a CA, the system's trust store does not know the test CA either.
    let err = NbdSource::connect(&url).unwrap_err();
    assert!(
        matches!(
            failure(&err),
            Some(TlsFailure::ServerNotTrusted) | Some(TlsFailure::Credentials)
        ),
        "{err}"
    );
    // Plain NBD to a server that requires TLS: the error says what to use.
    let plain = format!("nbd://127.0.0.1:{port}/vda");
    let err = NbdSource::connect(&plain).unwrap_err();
    assert_eq!(failure(&err), Some(TlsFailure::RequiredByServer), "{err}");
    assert!(err.to_string().contains("nbds://"), "{err}");
    // Credentials with a plain URL are refused, not ignored.
    let err = connect(&plain, &pki.with_client_cert()).unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err}");
    assert!(err.to_string().contains("nbds://"), "{err}");
}

#[test]
fn the_certificate_must_name_the_server_unless_overridden() {
    let pki = Pki::new();
    let creds = pki.server_dir("elsewhere", "DNS:nbd.example.test");
    let (qcow2, expected) = image(pki.dir.path());
    let port = free_port();
    let _server = tls_server(&creds, false, port, &qcow2, &[]);
    let url = format!("nbds://127.0.0.1:{port}/vda");
    let err = connect(&url, &pki.ca_only()).unwrap_err();
    assert_eq!(failure(&err), Some(TlsFailure::ServerNotTrusted), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    let tls = NbdTls {
        hostname: Some("nbd.example.test".into()),
        ..pki.ca_only()
    };
    let src = connect(&url, &tls).unwrap();
    assert!(read_all(&src) == expected);
}

#[test]
fn tls_over_a_unix_socket_checks_localhost_or_the_override() {
    let pki = Pki::new();
    let creds = pki.server_dir("server", LOCAL_SAN);
    let (qcow2, expected) = image(pki.dir.path());
    let sock = pki.dir.path().join("nbd.sock");
    let object = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=server,verify-peer=on",
        p(&creds)
    );
    let _server = qemu_nbd(
        &[
            "--object",
            &object,
            "--tls-creds",
            "tls0",
            "-f",
            "qcow2",
            "-x",
            "vda",
            "-k",
            p(&sock),
            p(&qcow2),
        ],
        || sock.exists(),
    );
    let url = format!("nbds+unix:///vda?socket={}", p(&sock));
    let src = connect(&url, &pki.with_client_cert()).unwrap();
    assert!(read_all(&src) == expected);
    drop(src); // qemu-nbd serves one connection at a time
    let wrong = NbdTls {
        hostname: Some("nbd.example.test".into()),
        ..pki.with_client_cert()
    };
    let err = connect(&url, &wrong).unwrap_err();
    assert_eq!(failure(&err), Some(TlsFailure::ServerNotTrusted), "{err}");
}

/// A server that greets, records everything the client sends, and answers the first option
/// with `reply`; then it waits for the client to close.
fn refusing_server(reply: u32) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    use protocol::*;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut greet = NBD_MAGIC.to_be_bytes().to_vec();
        greet.extend(IHAVEOPT.to_be_bytes());
        greet.extend((FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        s.write_all(&greet).unwrap();
        let mut seen = vec![0u8; 4 + 16];
        s.read_exact(&mut seen).unwrap();
        let option = u32::from_be_bytes(seen[12..16].try_into().unwrap());
        let mut r = OPTION_REPLY_MAGIC.to_be_bytes().to_vec();
        r.extend(option.to_be_bytes());
        r.extend(reply.to_be_bytes());
        r.extend(0u32.to_be_bytes());
        s.write_all(&r).unwrap();
        // Whatever the client sends next, until it closes.
        let _ = s.read_to_end(&mut seen);
        seen
    });
    (port, handle)
}

#[test]
fn a_server_without_tls_gets_starttls_first_and_nothing_else() {
    use protocol::*;
    let pki = Pki::new();
    for reply in [REP_ERR_UNSUP, REP_ERR_POLICY] {
        let (port, server) = refusing_server(reply);
        let url = format!("nbds://127.0.0.1:{port}/secret-disk");
        let err = connect(&url, &pki.ca_only()).unwrap_err();
        assert_eq!(failure(&err), Some(TlsFailure::NotOffered), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("secret-disk") && text.contains("TLS was required"),
            "{text}"
        );
        let seen = server.join().unwrap();
        // Client flags, then exactly one option: STARTTLS without data. No export name.
        assert_eq!(seen.len(), 20, "{seen:?}");
        assert_eq!(&seen[4..12], &IHAVEOPT.to_be_bytes());
        assert_eq!(&seen[12..16], &OPT_STARTTLS.to_be_bytes());
        assert_eq!(&seen[16..20], &0u32.to_be_bytes());
    }
    // Our own export server (plain only) and a plain qemu-nbd refuse it too.
    let data = guest_content(1 << 20, 7);
    let exports = vec![(
        "vda".to_string(),
        Arc::new(MemSource::new(data, "mem")) as crate::block::SharedSource,
    )];
    let server = ExportServer::start_tcp("127.0.0.1:0".parse().unwrap(), exports).unwrap();
    let url = format!("nbds://{}/vda", server.local_addr().unwrap());
    let err = connect(&url, &pki.ca_only()).unwrap_err();
    assert_eq!(failure(&err), Some(TlsFailure::NotOffered), "{err}");
    let (qcow2, _) = image(pki.dir.path());
    let port = free_port();
    let port_s = port.to_string();
    let _plain = qemu_nbd(
        &["-f", "qcow2", "-b", "127.0.0.1", "-p", &port_s, p(&qcow2)],
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
    let err = connect(&format!("nbds://127.0.0.1:{port}/"), &pki.ca_only()).unwrap_err();
    assert_eq!(failure(&err), Some(TlsFailure::NotOffered), "{err}");
}

#[test]
fn a_server_silent_after_starttls_times_out() {
    let pki = Pki::new();
    let (port, server) = refusing_server(protocol::REP_ACK);
    let url = NbdUrl::parse(&format!("nbds://127.0.0.1:{port}/vda")).unwrap();
    let client = pki.ca_only().load("t").unwrap();
    let err = Connection::open(&url, Some(&client), "t", Duration::from_millis(500)).unwrap_err();
    assert_eq!(failure(&err), Some(TlsFailure::Handshake), "{err}");
    assert!(err.to_string().contains("in time"), "{err}");
    drop(server);
    assert!(Duration::from_millis(500) < CONNECT_TIMEOUT);
}

#[test]
fn bad_credentials_name_the_file() {
    let pki = Pki::new();
    let url = "nbds://127.0.0.1:1/vda";
    let check = |tls: NbdTls, needle: &str| {
        let err = connect(url, &tls).unwrap_err();
        assert_eq!(failure(&err), Some(TlsFailure::Credentials), "{err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    };
    // A key file that holds a certificate.
    check(
        NbdTls {
            key: Some(pki.client.cert.clone()),
            ..pki.with_client_cert()
        },
        "client-cert.pem holds no private key",
    );
    // A CA bundle that is a key, one that does not exist, one that is not PEM.
    check(
        NbdTls {
            ca: Some(pki.client.key.clone()),
            ..pki.ca_only()
        },
        "client-key.pem holds no certificate",
    );
    check(
        NbdTls {
            ca: Some(pki.dir.path().join("missing.pem")),
            ..pki.ca_only()
        },
        "missing.pem",
    );
    let junk = pki.dir.path().join("junk.pem");
    std::fs::write(&junk, b"-----BEGIN CERTIFICATE-----\n%%%%\n").unwrap();
    check(
        NbdTls {
            ca: Some(junk),
            ..pki.ca_only()
        },
        "junk.pem",
    );
    // A certificate without its key, and a key that belongs to another certificate.
    check(
        NbdTls {
            key: None,
            ..pki.with_client_cert()
        },
        "without its key",
    );
    let other = issue(pki.dir.path(), &pki.ca, "other", "clientAuth", None);
    check(
        NbdTls {
            key: Some(other.key),
            ..pki.with_client_cert()
        },
        "cannot be used together",
    );
    check(
        NbdTls {
            hostname: Some("not a host name".into()),
            ..pki.ca_only()
        },
        "not a host name",
    );
}
