//! Quarantine end to end against libvirtd with QEMU (TCG): a persistent domain running the tiny
//! test guest with two network interfaces (one without a `<link>` element, one with
//! `<link state='up'/>`) is quarantined, quarantined again, and released; the domain's live and
//! persistent XML show each step, and the log holds one entry per real action. Needs root,
//! libvirt and QEMU (the daemons held through `coldscan_tests::libvirt::Daemons`); ignored by `cargo test`, run by `make e2e`.

use std::path::Path;
use std::process::Command;

use super::quarantine::{self, Actor, Link, Links};
use super::tests::{repo, run, virsh, URI};
use super::Hypervisor;
use crate::store::quarantine::QuarantineStore;
use crate::store::sqlite::SqliteStore;
use crate::store::Store;

const MAC_PLAIN: &str = "52:54:00:c5:00:01";
const MAC_UP: &str = "52:54:00:c5:00:02";

/// A persistent domain, destroyed and undefined on drop.
struct Guest {
    name: String,
}

impl Guest {
    fn start(dir: &Path, name: &str) -> Guest {
        let cache = repo().join("target/fixtures/libvirt-guest");
        let plant = dir.join("plant");
        std::fs::create_dir_all(&plant).unwrap();
        std::fs::write(plant.join("readme.txt"), b"a clean file\n").unwrap();
        let out = dir.join("guest");
        run(Command::new(repo().join("scripts/libvirt-test-guest"))
            .arg(&cache)
            .arg(&out)
            .arg(&plant));
        let xml = format!(
            "<domain type='qemu'><name>{name}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{k}</kernel><initrd>{i}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{d}'/><target dev='vda' bus='virtio'/></disk>
    <interface type='user'><mac address='{MAC_PLAIN}'/><model type='virtio'/></interface>
    <interface type='user'><mac address='{MAC_UP}'/><model type='e1000'/>
      <link state='up'/></interface>
    <serial type='file'><source path='{s}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices></domain>",
            k = cache.join("vmlinuz").display(),
            i = cache.join("initrd.img").display(),
            d = out.join("disk.qcow2").display(),
            s = dir.join("serial.log").display(),
        );
        let xml_file = dir.join("domain.xml");
        std::fs::write(&xml_file, xml).unwrap();
        virsh(&["define", xml_file.to_str().unwrap()]);
        let guest = Guest {
            name: name.to_string(),
        };
        virsh(&["start", name]);
        guest
    }

    /// `(mac, link state)` of every interface in the live or the persistent XML, read with
    /// `virsh dumpxml` (the test's independent view; the code under test uses the API).
    fn links(&self, inactive: bool) -> Vec<(String, Option<String>)> {
        let mut args = vec!["dumpxml", self.name.as_str()];
        if inactive {
            args.push("--inactive");
        }
        let xml = virsh(&args);
        let doc = roxmltree::Document::parse(&xml).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("interface"))
            .map(|i| {
                let mac = i
                    .children()
                    .find(|n| n.has_tag_name("mac"))
                    .and_then(|m| m.attribute("address"))
                    .unwrap()
                    .to_string();
                let link = i
                    .children()
                    .find(|n| n.has_tag_name("link"))
                    .and_then(|l| l.attribute("state"))
                    .map(str::to_string);
                (mac, link)
            })
            .collect()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        for args in [["destroy", &self.name], ["undefine", &self.name]] {
            let _ = Command::new("virsh").args(["-c", URI]).args(args).output();
        }
    }
}

fn pairs(links: &[Link]) -> Vec<(String, Option<String>)> {
    links
        .iter()
        .map(|l| (l.mac.clone(), l.state.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, libvirtd and QEMU: make e2e"]
async fn quarantine_cuts_every_link_live_and_persistent_and_release_restores_it() {
    // The shared hold: the other libvirt tests of this binary start and stop the same daemons.
    let _daemons = coldscan_tests::libvirt::Daemons::up().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("cs-q")
        .tempdir_in("/tmp")
        .unwrap();
    let name = format!("coldscan-quarantine-{}", std::process::id());
    let guest = Guest::start(dir.path(), &name);
    let original = vec![
        (MAC_PLAIN.to_string(), None),
        (MAC_UP.to_string(), Some("up".to_string())),
    ];
    assert_eq!(guest.links(false), original);
    assert_eq!(guest.links(true), original);
    let down = vec![
        (MAC_PLAIN.to_string(), Some("down".to_string())),
        (MAC_UP.to_string(), Some("down".to_string())),
    ];

    let store = SqliteStore::open(&format!("sqlite:{}", dir.path().join("m.db").display()))
        .await
        .unwrap();
    let hv = std::sync::Arc::new(Hypervisor::connect(URI).unwrap());
    let ops = Actor {
        who: "ops".into(),
        reason: "test".into(),
    };
    let q = quarantine::quarantine(&hv, &name, &store, &ops)
        .await
        .unwrap();
    assert!(q.changed);
    assert_eq!(pairs(q.before.live.as_ref().unwrap()), original);
    assert_eq!(pairs(q.after.config.as_ref().unwrap()), down);
    assert_eq!(guest.links(false), down, "live XML");
    assert_eq!(guest.links(true), down, "persistent XML");

    // Twice is once: nothing changes, nothing more is logged; by UUID as well as by name.
    let again = quarantine::quarantine(&hv, &q.uuid, &store, &ops)
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(store.quarantine_log(10).await.unwrap().len(), 1);
    // The policy hook is the same action.
    let policy = quarantine::on_detection(&hv, &q.uuid, 7, &store)
        .await
        .unwrap();
    assert!(!policy.changed);
    assert_eq!(guest.links(false), down);

    let r = quarantine::release(&hv, &name, &store, &ops).await.unwrap();
    assert!(r.changed);
    assert_eq!(guest.links(false), original, "live XML restored exactly");
    assert_eq!(
        guest.links(true),
        original,
        "persistent XML restored exactly"
    );
    assert_eq!(
        r.after,
        Links {
            live: q.before.live.clone(),
            config: q.before.config.clone()
        }
    );
    let r2 = quarantine::release(&hv, &name, &store, &ops).await.unwrap();
    assert!(!r2.changed);

    // The automatic trigger quarantines a VM that is not yet in quarantine, naming the scan.
    let p = quarantine::on_detection(&hv, &q.uuid, 42, &store)
        .await
        .unwrap();
    assert!(p.changed);
    assert_eq!(guest.links(true), down);
    let log = store.quarantine_log(10).await.unwrap();
    let actions: Vec<_> = log
        .iter()
        .map(|l| (l.action.as_str(), l.actor.as_str(), l.uuid.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("quarantine", "policy", q.uuid.as_str()),
            ("release", "ops", q.uuid.as_str()),
            ("quarantine", "ops", q.uuid.as_str())
        ]
    );
    assert_eq!(log[0].reason, "detections in scan 42");
    let before: Links = serde_json::from_str(&log[2].before).unwrap();
    assert_eq!(pairs(before.config.as_ref().unwrap()), original);

    // The command line's release, and the admin API on a running server, act the same way.
    super::quarantine_cli::run(
        &store,
        super::quarantine_cli::VmCommand::Release {
            uri: Some(URI.into()),
            domain: name.clone(),
        },
    )
    .await
    .unwrap();
    assert_eq!(guest.links(false), original);
    assert_eq!(guest.links(true), original);
    let admin = crate::tokens::new_token().unwrap();
    store
        .create_token(
            "ops-api",
            crate::store::Role::Admin,
            &crate::tokens::hash(&admin),
            1,
        )
        .await
        .unwrap();
    let state = crate::api::AppState {
        store: store.clone(),
        default_lease: 60,
        max_lease: 60,
        body_limit: 1 << 20,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, crate::api::router(state, 1 << 20))
            .await
            .unwrap()
    });
    let post = |path: &'static str, admin: String| {
        let body = serde_json::json!({"uri": URI, "domain": name, "reason": "api"}).to_string();
        tokio::task::spawn_blocking(move || {
            let mut r = ureq::post(&format!("http://{addr}{path}"))
                .header("Authorization", &format!("Bearer {admin}"))
                .header("Content-Type", "application/json")
                .config()
                .http_status_as_error(false)
                .build()
                .send(body.as_bytes())
                .unwrap();
            let status = r.status().as_u16();
            let text = r.body_mut().read_to_string().unwrap();
            (
                status,
                serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            )
        })
    };
    let (status, answer) = post("/api/v1/quarantines", admin.clone()).await.unwrap();
    assert_eq!(
        (status, &answer["changed"]),
        (200, &serde_json::json!(true)),
        "{answer}"
    );
    assert_eq!(guest.links(false), down);
    let (status, answer) = post("/api/v1/quarantines/release", admin.clone())
        .await
        .unwrap();
    assert_eq!(
        (status, &answer["changed"]),
        (200, &serde_json::json!(true)),
        "{answer}"
    );
    assert_eq!(guest.links(true), original);
    server.abort();
    let log = store.quarantine_log(10).await.unwrap();
    assert_eq!(log.len(), 6);
    assert_eq!(
        (log[0].actor.as_str(), log[1].reason.as_str()),
        ("ops-api", "api")
    );
    assert_eq!(log[2].actor, "cli");

    // A domain that does not exist: an error naming it, nothing logged.
    let err = quarantine::quarantine(&hv, "coldscan-no-such-vm", &store, &ops)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("coldscan-no-such-vm"), "{err}");
    assert_eq!(store.quarantine_log(10).await.unwrap().len(), 6);
    drop(hv);
    drop(guest);
    store.close().await;
}
