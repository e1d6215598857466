//! HTTPS to the manager through a real TLS terminator (`socat OPENSSL-LISTEN`, certificates made
//! by `openssl`): the CA bundle given is trusted, and a server whose certificate another CA
//! signed is refused at once (no retries: the handshake would fail the same way again).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use coldscan_tests::tls::{TestPki, TlsTerminator};

use super::*;

/// A plain HTTP backend answering every request with 201 `{"id":5}`; returns its port.
fn backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let mut stream = stream;
            let _ = stream.write_all(
                b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 8\r\nConnection: close\r\n\r\n{\"id\":5}",
            );
        }
    });
    port
}

fn client(port: u16, ca: &std::path::Path) -> ManagerClient {
    let mut cfg = ClientConfig::new(&format!("https://127.0.0.1:{port}"), "t");
    cfg.ca_file = Some(ca.to_path_buf());
    cfg.retry = RetryPolicy {
        attempts: 3,
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };
    ManagerClient::new(&cfg).unwrap()
}

#[test]
fn https_with_the_ca_bundle_and_a_wrong_ca_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki =
        TestPki::generate(&dir.path().join("good"), "coldscan test CA", &["127.0.0.1"]).unwrap();
    let other = TestPki::generate(&dir.path().join("other"), "another CA", &["127.0.0.1"]).unwrap();
    let tls = TlsTerminator::start(&pki, backend()).unwrap();

    let posted = client(tls.port, &pki.ca).post_report(b"{}", "k").unwrap();
    assert_eq!(
        posted,
        PostedReport {
            id: 5,
            created: true
        }
    );

    match client(tls.port, &other.ca).post_report(b"{}", "k") {
        Err(e @ ClientError::Transport { .. }) => {
            let text = e.to_string();
            assert!(text.contains("invalid peer certificate"), "{text}");
            assert!(
                !e.is_permanent(),
                "kept in the spool for a fixed certificate"
            );
        }
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
}
