use super::*;

const BASE: &str = "BOOT_IMAGE=/vmlinuz console=ttyS0 panic=-1 quiet";

#[test]
fn defaults_without_anything() {
    let c = Config::load(BASE, None).unwrap();
    assert_eq!(c.mode, Mode::Oneshot);
    assert_eq!(c.net, NetConfig::Off);
    assert_eq!(c.manager, None);
    assert_eq!(c.jobs, 0);
    assert_eq!(c.heartbeat_seconds, DEFAULT_HEARTBEAT_SECONDS);
    assert_eq!(c.delivery_seconds, DEFAULT_DELIVERY_SECONDS);
}

#[test]
fn cmdline_keys() {
    let c = Config::load(
        &format!(
            "{BASE} coldscan.mode=daemon coldscan.manager=http://10.0.2.100:8080/ \
             coldscan.token=abc123 coldscan.net=10.0.2.15/24,10.0.2.2,10.0.2.3 coldscan.jobs=3 \
             coldscan.name=app-1 coldscan.self=0123ABCD-0000-4000-8000-00000000000A"
        ),
        None,
    )
    .unwrap();
    assert_eq!(c.mode, Mode::Daemon);
    assert_eq!(c.manager.as_deref(), Some("http://10.0.2.100:8080"));
    assert_eq!(c.token.as_deref(), Some("abc123"));
    assert_eq!(
        c.net,
        NetConfig::Static(StaticNet {
            address: "10.0.2.15".parse().unwrap(),
            prefix: 24,
            gateway: Some("10.0.2.2".parse().unwrap()),
            dns: vec!["10.0.2.3".parse().unwrap()],
        })
    );
    assert_eq!(c.jobs, 3);
    assert_eq!(c.name.as_deref(), Some("app-1"));
    assert_eq!(
        c.self_disk.as_deref(),
        Some("0123abcd-0000-4000-8000-00000000000a")
    );
}

#[test]
fn manager_defaults_to_dhcp() {
    let c = Config::load("coldscan.manager=https://m coldscan.token=t", None).unwrap();
    assert_eq!(c.net, NetConfig::Dhcp);
}

const TOML: &str = r#"
mode = "daemon"
name = "rack7"
jobs = 2

[manager]
url = "https://manager.example:8443"
token = "from-disk"
ca_bundle = "certs/ca.pem"
heartbeat_seconds = 10
delivery_seconds = 600

[network]
mode = "static"
address = "192.0.2.10/24"
gateway = "192.0.2.1"
dns = ["192.0.2.53"]
"#;

#[test]
fn toml_file() {
    let c = Config::load(BASE, Some(TOML)).unwrap();
    assert_eq!(c.mode, Mode::Daemon);
    assert_eq!(c.name.as_deref(), Some("rack7"));
    assert_eq!(c.jobs, 2);
    assert_eq!(c.manager.as_deref(), Some("https://manager.example:8443"));
    assert_eq!(c.token.as_deref(), Some("from-disk"));
    assert_eq!(c.ca_bundle.as_deref(), Some("certs/ca.pem"));
    assert_eq!(c.heartbeat_seconds, 10);
    assert_eq!(c.delivery_seconds, 600);
    let NetConfig::Static(s) = &c.net else {
        panic!("static expected")
    };
    assert_eq!(s.prefix, 24);
    assert_eq!(s.dns.len(), 1);
}

#[test]
fn cmdline_wins_over_toml() {
    let c = Config::load(
        "coldscan.mode=oneshot coldscan.token=from-cmdline coldscan.net=dhcp",
        Some(TOML),
    )
    .unwrap();
    assert_eq!(c.mode, Mode::Oneshot);
    assert_eq!(c.token.as_deref(), Some("from-cmdline"));
    assert_eq!(c.net, NetConfig::Dhcp);
    // Not overridden: still from the file.
    assert_eq!(c.jobs, 2);
}

#[test]
fn errors_name_key_and_reason() {
    let e = Config::load("coldscan.mode=fast", None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "kernel command line: coldscan.mode=\"fast\": expected oneshot or daemon"
    );
    let e = Config::load("coldscan.jobs=-1", None).unwrap_err();
    assert!(e.to_string().contains("coldscan.jobs"), "{e}");
    let e = Config::load("coldscan.jobs=100000", None).unwrap_err();
    assert!(e.to_string().contains("at most"), "{e}");
    let e = Config::load("coldscan.net=10.0.2.15/33,10.0.2.2", None).unwrap_err();
    assert!(e.to_string().contains("prefix length"), "{e}");
    let e = Config::load("coldscan.net=10.0.2.15", None).unwrap_err();
    assert!(e.to_string().contains("coldscan.net"), "{e}");
    let e = Config::load("coldscan.manager=ftp://x coldscan.token=t", None).unwrap_err();
    assert!(e.to_string().contains("http://"), "{e}");
    let e = Config::load("coldscan.self=xyz", None).unwrap_err();
    assert!(e.to_string().contains("GUID"), "{e}");
}

#[test]
fn unknown_keys_are_errors() {
    assert_eq!(
        Config::load("coldscan.mdoe=daemon", None).unwrap_err(),
        ConfigError::UnknownKey {
            origin: Origin::Cmdline,
            key: "coldscan.mdoe".into()
        }
    );
    let e = Config::load("", Some("[manager]\nurl = \"http://m\"\ntokn = \"x\"\n")).unwrap_err();
    assert!(matches!(e, ConfigError::Toml { .. }), "{e:?}");
    assert!(e.to_string().contains("tokn"), "{e}");
}

#[test]
fn toml_type_errors() {
    let e = Config::load("", Some("jobs = \"two\"\n")).unwrap_err();
    assert!(e.to_string().contains("jobs"), "{e}");
    let e = Config::load("", Some("jobs = 3\n[network]\nmode = \"wifi\"\n")).unwrap_err();
    assert!(e.to_string().contains("network.mode"), "{e}");
    let e = Config::load("", Some("[network]\nmode = \"static\"\n")).unwrap_err();
    assert!(e.to_string().contains("network.address"), "{e}");
    let e = Config::load("", Some("[manager]\nca_bundle = \"../etc/x\"\n")).unwrap_err();
    assert!(e.to_string().contains("config disk"), "{e}");
}

#[test]
fn cross_checks() {
    let e = Config::load("coldscan.mode=daemon", None).unwrap_err();
    assert!(matches!(e, ConfigError::Missing { .. }), "{e:?}");
    let e = Config::load("coldscan.manager=http://m", None).unwrap_err();
    assert!(e.to_string().contains("token"), "{e}");
    let e = Config::load(
        "coldscan.manager=http://m coldscan.token=t coldscan.net=off",
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("network is off"), "{e}");
}

#[test]
fn token_is_not_echoed() {
    let e = Config::load("coldscan.token=s\u{7f}cret", None).unwrap_err();
    assert!(!e.to_string().contains("cret"), "{e}");
}

#[test]
fn selftest_and_self_disk() {
    let c = Config::load("coldscan.selftest=seccomp-socket", None).unwrap();
    assert_eq!(c.selftest.as_deref(), Some("socket"));
    let e = Config::load("coldscan.selftest=rm", None).unwrap_err();
    assert!(e.to_string().contains("coldscan.selftest"), "{e}");
    let guid = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    assert_eq!(
        self_disk_from_cmdline(&format!("quiet coldscan.self={guid}")).unwrap(),
        Some(guid.to_ascii_lowercase())
    );
    assert_eq!(self_disk_from_cmdline("quiet").unwrap(), None);
    assert!(self_disk_from_cmdline("coldscan.self=nope").is_err());
}

#[test]
fn signature_source() {
    let base = "coldscan.mode=daemon coldscan.manager=http://m coldscan.token=t";
    let c = Config::load(base, None).unwrap();
    assert_eq!(c.signatures, SignatureSource::Manager);
    let toml = "[manager]\nsignatures = \"local\"\n";
    let c = Config::load(base, Some(toml)).unwrap();
    assert_eq!(c.signatures, SignatureSource::Local);
    let c = Config::load(&format!("{base} coldscan.signatures=manager"), Some(toml)).unwrap();
    assert_eq!(c.signatures, SignatureSource::Manager);
    let e = Config::load(&format!("{base} coldscan.signatures=cloud"), None).unwrap_err();
    assert!(e.to_string().contains("coldscan.signatures"), "{e}");
}

#[test]
fn delivery_deadline_is_bounded() {
    let c = Config::load(&format!("{BASE} coldscan.delivery_seconds=15"), Some(TOML)).unwrap();
    assert_eq!(c.delivery_seconds, 15, "the command line wins");
    for bad in ["0", "-1", "x", "86401"] {
        let e = Config::load(&format!("{BASE} coldscan.delivery_seconds={bad}"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("coldscan.delivery_seconds"), "{e}");
    }
}
