//! End-to-end: `coldscan cat|info|scan nbds://...` with `--nbd-tls-ca/-cert/-key/-hostname`
//! against `qemu-nbd` serving an ext4 image with TLS (`tls-creds-x509`, `verify-peer=on`, as
//! libvirt's pull-mode backups do with `backup_tls_x509_verify`). Certificates are made with
//! `openssl` at test time in QEMU's layout.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coldscan_tests::testdb;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tool(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `coldscan ARGS`: (exit code, stdout bytes, stderr).
fn coldscan(args: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coldscan"))
        .args(args)
        .output()
        .expect("coldscan");
    (
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An EC P-256 key and certificate `name` in `dir`: self-signed CA when `ca` is `None`, else
/// signed by it with the extensions `ext`.
fn cert(dir: &Path, name: &str, ca: Option<&str>, ext: &str) -> (PathBuf, PathBuf) {
    let (crt, key) = (
        dir.join(format!("{name}-cert.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    let subj = format!("/CN={name}");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let Some(ca) = ca else {
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj", &subj];
        args.extend(ec);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        args.extend(["-keyout", s(&key), "-out", s(&crt)]);
        tool("openssl", &args);
        return (crt, key);
    };
    let csr = dir.join(format!("{name}.csr"));
    let extfile = dir.join(format!("{name}.ext"));
    std::fs::write(&extfile, ext).unwrap();
    let mut args = vec!["req", "-new", "-nodes", "-subj", &subj];
    args.extend(ec);
    args.extend(["-keyout", s(&key), "-out", s(&csr)]);
    tool("openssl", &args);
    let ca_cert = format!("{ca}-cert.pem");
    let ca_key = format!("{ca}-key.pem");
    let (ca_cert, ca_key) = (dir.join(ca_cert), dir.join(ca_key));
    tool(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            s(&csr),
            "-CA",
            s(&ca_cert),
            "-CAkey",
            s(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            s(&extfile),
            "-out",
            s(&crt),
        ],
    );
    (crt, key)
}

/// `qemu-nbd`, killed through its own handle when the test ends.
struct QemuNbd(Child);

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cat_info_and_scan_of_a_tls_export_with_the_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The guest filesystem: a text file and EICAR (built at run time).
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("home/user")).unwrap();
    let note = b"exported over NBD with TLS\n".repeat(300);
    std::fs::write(tree.join("home/user/note.txt"), &note).unwrap();
    std::fs::write(tree.join("home/user/eicar.com"), testdb::eicar()).unwrap();
    let fs = dir.join("fs.ext4");
    tool("mkfs.ext4", &["-q", "-F", "-d", s(&tree), s(&fs), "16M"]);
    let qcow2 = dir.join("disk.qcow2");
    tool("qemu-img", &["convert", "-O", "qcow2", s(&fs), s(&qcow2)]);
    // QEMU's credential layout for the server, a client certificate for us.
    let creds = dir.join("qemu");
    std::fs::create_dir(&creds).unwrap();
    let (ca, _) = cert(dir, "ca", None, "");
    let leaf = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n";
    let server_ext =
        format!("{leaf}extendedKeyUsage=serverAuth\nsubjectAltName=DNS:backup.example.test\n");
    let (server_cert, server_key) = cert(dir, "server", Some("ca"), &server_ext);
    for (from, to) in [
        (&ca, "ca-cert.pem"),
        (&server_cert, "server-cert.pem"),
        (&server_key, "server-key.pem"),
    ] {
        std::fs::copy(from, creds.join(to)).unwrap();
    }
    let client_ext = format!("{leaf}extendedKeyUsage=clientAuth\n");
    let (client_cert, client_key) = cert(dir, "client", Some("ca"), &client_ext);

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let object = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=server,verify-peer=on",
        s(&creds)
    );
    let _server = QemuNbd(
        Command::new("qemu-nbd")
            .args(["--object", &object, "--tls-creds", "tls0", "--read-only"])
            .args(["--persistent", "--shared=8", "-f", "qcow2", "-x", "vda"])
            .args(["-b", "127.0.0.1", "-p", &port.to_string(), s(&qcow2)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-nbd"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "qemu-nbd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The appliance reaches the host by address; the certificate names it.
    let url = format!("nbds://127.0.0.1:{port}/vda");
    let flags = [
        "--nbd-tls-ca",
        s(&ca),
        "--nbd-tls-cert",
        s(&client_cert),
        "--nbd-tls-key",
        s(&client_key),
        "--nbd-tls-hostname",
        "backup.example.test",
    ];
    let with_flags = |cmd: &[&str], tail: &[&str]| {
        let mut args = cmd.to_vec();
        args.extend(flags);
        args.push(&url);
        args.extend(tail);
        coldscan(&args)
    };
    let (code, out, err) = with_flags(&["cat"], &["0", "/home/user/note.txt"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out == note);
    let (code, out, err) = with_flags(&["info"], &[]);
    assert_eq!(code, Some(0), "{err}");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("TLS 1.") && text.contains("ext4"), "{text}");

    let db = testdb::write_test_db(&dir.join("db")).expect("test database");
    let (code, out, err) = with_flags(&["scan", "--db", s(&db), "--json", "-"], &[]);
    assert_eq!(code, Some(1), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out).expect("JSON report");
    let found: Vec<&str> = report["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(found, ["/home/user/eicar.com"], "{report}");

    // Without the hostname override the certificate does not match 127.0.0.1.
    let (code, out, err) = coldscan(&[
        "cat",
        "--nbd-tls-ca",
        s(&ca),
        "--nbd-tls-cert",
        s(&client_cert),
        "--nbd-tls-key",
        s(&client_key),
        &url,
    ]);
    assert_ne!(code, Some(0));
    assert!(out.is_empty());
    assert!(
        err.contains("not issued for") && err.contains(&url),
        "{err}"
    );
    // Without a client certificate the server refuses us.
    let (code, _, err) = coldscan(&[
        "cat",
        "--nbd-tls-ca",
        s(&ca),
        "--nbd-tls-hostname",
        "backup.example.test",
        &url,
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("client certificate"), "{err}");
    // Plain NBD to the TLS-only server: told to use nbds://.
    let plain = format!("nbd://127.0.0.1:{port}/vda");
    let (code, _, err) = coldscan(&["cat", &plain]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("requires TLS") && err.contains("nbds://"),
        "{err}"
    );
    // A key file that is not a key: the error names the file.
    let (code, _, err) = coldscan(&[
        "info",
        "--nbd-tls-ca",
        s(&ca),
        "--nbd-tls-cert",
        s(&client_cert),
        "--nbd-tls-key",
        s(&client_cert),
        &url,
    ]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("client-cert.pem holds no private key"),
        "{err}"
    );
}
