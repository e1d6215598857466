//! The manager client: idempotency keys, backoff, token files, unreachable managers, bad
//! configuration.

use super::*;

#[test]
fn keys_are_v4_uuids_and_differ() {
    let a = new_idempotency_key();
    let b = new_idempotency_key();
    assert_ne!(a, b);
    assert_eq!(a.len(), 36);
    assert_eq!(&a[14..15], "4");
    assert!("89ab".contains(&a[19..20]), "{a}");
}

#[test]
fn backoff_grows_within_bounds() {
    let p = RetryPolicy {
        attempts: 10,
        initial_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    for _ in 0..50 {
        let d0 = p.delay(0);
        assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
        let d3 = p.delay(3);
        assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
        let d30 = p.delay(30);
        assert!(d30 >= Duration::from_millis(500) && d30 <= Duration::from_secs(1));
    }
}

#[test]
fn token_files() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t");
    std::fs::write(&f, "\n  coldscan_abc  \n").unwrap();
    assert_eq!(read_token_file(&f).unwrap(), "coldscan_abc");
    std::fs::write(&f, "\n\n").unwrap();
    assert!(read_token_file(&f).is_err());
    std::fs::write(&f, "a b").unwrap();
    assert!(read_token_file(&f).is_err());
    assert!(read_token_file(&dir.path().join("missing")).is_err());
}

#[test]
fn unreachable_manager_is_retried_then_reported() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = ClientConfig::new(&format!("http://127.0.0.1:{port}/"), "t");
    cfg.retry = RetryPolicy {
        attempts: 3,
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };
    let client = ManagerClient::new(&cfg).unwrap();
    match client.post_report(b"{}", "k") {
        Err(ClientError::Unreachable { attempts, .. }) => assert_eq!(attempts, 3),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_urls_and_ca_files_are_config_errors() {
    assert!(matches!(
        ManagerClient::new(&ClientConfig::new("ftp://x", "t")),
        Err(ClientError::Config(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let mut cfg = ClientConfig::new("https://localhost", "t");
    cfg.ca_file = Some(ca);
    assert!(matches!(
        ManagerClient::new(&cfg),
        Err(ClientError::Config(_))
    ));
}
