//! `coldscan-manager vm quarantine|release [--uri URI] DOMAIN`: the quarantine of a libvirt domain
//! from the command line ([`super::quarantine`]), logged as done by `cli`; `vm quarantines` and
//! `vm overlays` (snapshots of the fallback not committed back yet) list.

use std::sync::Arc;

use crate::libvirt::quarantine::{self, Actor, Outcome};
use crate::libvirt::{blocking, Hypervisor};
use crate::store::Store;

/// The libvirt URI to reach `domain` through: `uri` when given, else the URI its quarantine was
/// recorded with (for a release), else its connection in the VM inventory.
async fn resolve_uri<S: Store>(
    store: &S,
    uri: Option<String>,
    domain: &str,
) -> anyhow::Result<String> {
    if let Some(uri) = uri {
        return Ok(uri);
    }
    let vm = store.find_vm(domain).await?;
    let uuid = vm.as_ref().map_or(domain, |v| v.uuid.as_str());
    if let Some(q) = store.quarantine_of(uuid).await? {
        return Ok(q.uri);
    }
    let Some(vm) = vm else {
        anyhow::bail!("no VM {domain:?} in the inventory: give its connection with --uri");
    };
    store
        .list_hypervisors()
        .await?
        .into_iter()
        .find(|h| h.name == vm.hypervisor)
        .map(|h| h.uri)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "VM {domain:?} was last seen on connection {}, which is no longer registered: \
                 give --uri",
                vm.hypervisor
            )
        })
}

/// `vm` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum VmCommand {
    /// Cut a domain off the network: every interface's link down, live and persistent; the
    /// previous states are recorded for `release`. A domain already quarantined is left alone.
    Quarantine {
        /// libvirt URI (`qemu:///system`, `qemu+ssh://host/system`); default: the connection
        /// the VM inventory last saw the domain on.
        #[arg(long)]
        uri: Option<String>,
        /// Domain name or UUID.
        domain: String,
        /// Why (kept in the log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End a domain's quarantine: every interface's link as it was before.
    Release {
        /// libvirt URI; default: the one the quarantine was made through, else the connection
        /// the VM inventory last saw the domain on.
        #[arg(long)]
        uri: Option<String>,
        /// Domain name or UUID.
        domain: String,
    },
    /// List quarantined domains and the action log.
    Quarantines {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the disk-only snapshots (the fallback for hypervisors without backup jobs) whose
    /// overlays are not committed back yet, with why the last try did not finish.
    Overlays {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `vm` subcommand.
pub async fn run<S: Store>(store: &S, command: VmCommand) -> anyhow::Result<()> {
    let print = |verb: &str, o: &Outcome| {
        println!(
            "{} ({}): {}",
            o.name,
            o.uuid,
            if o.changed {
                verb.to_string()
            } else {
                format!("nothing to do (not {verb} again)")
            }
        );
    };
    match command {
        VmCommand::Quarantine {
            uri,
            domain,
            reason,
        } => {
            let uri = resolve_uri(store, uri, &domain).await?;
            let hv = blocking(move || Hypervisor::connect(&uri))
                .await
                .map(Arc::new)?;
            let actor = Actor {
                who: "cli".into(),
                reason,
            };
            let o = quarantine::quarantine(&hv, &domain, store, &actor).await?;
            print("quarantined", &o);
        }
        VmCommand::Release { uri, domain } => {
            let uri = resolve_uri(store, uri, &domain).await?;
            let hv = blocking(move || Hypervisor::connect(&uri))
                .await
                .map(Arc::new)?;
            let actor = Actor {
                who: "cli".into(),
                reason: String::new(),
            };
            let o = quarantine::release(&hv, &domain, store, &actor).await?;
            print("released", &o);
        }
        VmCommand::Overlays { json } => {
            let rows = store.list_overlays().await?;
            if json {
                let doc = serde_json::json!({ "overlays": rows });
                println!("{}", serde_json::to_string_pretty(&doc)?);
                return Ok(());
            }
            for o in rows {
                println!(
                    "{}\t{}\t{}\tVM job {}\tsince {}\ttries {}\tnext {}\t{}",
                    o.tag,
                    o.name,
                    o.uuid,
                    o.vm_job,
                    crate::time::rfc3339(o.since),
                    o.tries,
                    crate::time::rfc3339(o.next_try),
                    o.last_error.unwrap_or_default()
                );
            }
        }
        VmCommand::Quarantines { json } => {
            let active = store.list_quarantines().await?;
            let log = store.quarantine_log(100).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({ "quarantines": active, "log": log })
                    )?
                );
                return Ok(());
            }
            for q in active {
                println!(
                    "quarantined\t{}\t{}\t{}\tsince {}\tby {}",
                    q.name,
                    q.uuid,
                    q.uri,
                    crate::time::rfc3339(q.since),
                    q.actor
                );
            }
            for l in log {
                println!(
                    "{}\t{}\t{}\t{}\tby {}\t{}\tbefore {}\tafter {}",
                    crate::time::rfc3339(l.at),
                    l.action,
                    l.name,
                    l.uuid,
                    l.actor,
                    l.reason,
                    l.before,
                    l.after
                );
            }
        }
    }
    Ok(())
}
