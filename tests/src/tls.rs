//! TLS for tests: a throw-away certificate authority and a server certificate made by the
//! `openssl` command line (ECDSA P-256, valid two days), and a real TLS terminator in front of a
//! plain HTTP server (`socat OPENSSL-LISTEN`, as a reverse proxy would stand in front of the
//! manager).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

/// A test CA and one server certificate it signed.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate (PEM): the bundle a client trusts.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl TestPki {
    /// Makes a CA named `name` under `dir` and a server certificate for the IP addresses
    /// `ips` (subject alternative names) signed by it.
    pub fn generate(dir: &Path, name: &str, ips: &[&str]) -> Result<TestPki> {
        std::fs::create_dir_all(dir)?;
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        let subject = format!("/CN={name}");
        let mut ca_args = vec!["req", "-x509", "-nodes", "-days", "2"];
        ca_args.extend(ec);
        ca_args.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &ca_args)?;
        let mut csr_args = vec!["req", "-nodes"];
        csr_args.extend(ec);
        csr_args.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=coldscan-manager",
        ]);
        openssl(dir, &csr_args)?;
        let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        std::fs::write(
            dir.join("server.ext"),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        )?;
        Ok(TestPki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        })
    }
}

/// `socat` terminating TLS on a loopback port and forwarding the plain stream to a backend
/// port; killed on drop.
#[derive(Debug)]
pub struct TlsTerminator {
    child: Child,
    /// The TLS port.
    pub port: u16,
}

impl TlsTerminator {
    /// Serves TLS with `pki`'s server certificate on a free loopback port, forwarding to
    /// `127.0.0.1:backend`, and waits until it listens.
    pub fn start(pki: &TestPki, backend: u16) -> Result<TlsTerminator> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                pki.cert.display(),
                pki.key.display()
            ))
            .arg(format!("TCP:127.0.0.1:{backend}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting socat")?;
        let mut t = TlsTerminator { child, port };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = t.child.try_wait()? {
                anyhow::bail!("socat ended: {status}");
            }
            ensure!(
                start.elapsed() < Duration::from_secs(30),
                "socat not listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The probe connection above made socat fork a child that fails its handshake: harmless.
        t.port = port;
        Ok(t)
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
