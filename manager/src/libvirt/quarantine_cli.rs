//! `coldscan-manager vm quarantine|release --uri URI DOMAIN`: the quarantine of a libvirt domain
//! from the command line ([`super::quarantine`]), logged as done by `cli`.

use crate::libvirt::quarantine::{self, Actor, Outcome};
use crate::libvirt::Hypervisor;
use crate::store::quarantine::QuarantineStore;

/// `vm` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum VmCommand {
    /// Cut a domain off the network: every interface's link down, live and persistent; the
    /// previous states are recorded for `release`. A domain already quarantined is left alone.
    Quarantine {
        /// libvirt URI (`qemu:///system`, `qemu+ssh://host/system`).
        #[arg(long)]
        uri: String,
        /// Domain name or UUID.
        domain: String,
        /// Why (kept in the log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End a domain's quarantine: every interface's link as it was before.
    Release {
        /// libvirt URI.
        #[arg(long)]
        uri: String,
        /// Domain name or UUID.
        domain: String,
    },
    /// List quarantined domains and the action log.
    Quarantines {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `vm` subcommand.
pub async fn run<S: QuarantineStore>(store: &S, command: VmCommand) -> anyhow::Result<()> {
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
            let hv = Hypervisor::connect(&uri)?;
            let actor = Actor {
                who: "cli".into(),
                reason,
            };
            let o = quarantine::quarantine(&hv, &domain, store, &actor).await?;
            print("quarantined", &o);
        }
        VmCommand::Release { uri, domain } => {
            let hv = Hypervisor::connect(&uri)?;
            let actor = Actor {
                who: "cli".into(),
                reason: String::new(),
            };
            let o = quarantine::release(&hv, &domain, store, &actor).await?;
            print("released", &o);
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
