//! `coldscan-manager` commands. Every command but `serve` works on the database directly.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::store::{Filter, Role, Store};

/// The coldscan central manager: appliances report to it, it hands out scan jobs, shows
/// results on a web page and calls webhooks on detection.
#[derive(Debug, Parser)]
#[command(name = "coldscan-manager", version, about)]
pub struct Cli {
    /// Database: `sqlite:PATH` (default `sqlite:coldscan-manager.db`) or `postgres://...`.
    #[arg(long, global = true, default_value = "sqlite:coldscan-manager.db")]
    pub db: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API and the web page.
    Serve(ServeArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Queue a scan job.
    Enqueue {
        /// What to scan (path, device or nbd:// URL as the appliance sees it).
        target: String,
        /// Only this appliance may take it.
        #[arg(long)]
        appliance: Option<String>,
    },
    /// List scans, newest first.
    Scans {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Most rows.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// List detections, newest first.
    Detections {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Most rows.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Manage webhooks.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// The signature database daemon appliances fetch from this manager.
    #[command(subcommand)]
    Signatures(crate::signatures::SignaturesCommand),
    /// Act on libvirt domains (quarantine).
    #[command(subcommand)]
    Vm(crate::libvirt::quarantine_cli::VmCommand),
    /// Manage hypervisor connections (libvirt).
    #[command(subcommand)]
    Hypervisor(crate::vm_cli::HypervisorCommand),
    /// List the VM inventory with each VM's last scan.
    Vms {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Queue a scan of a running VM (name or UUID) through a point-in-time backup.
    ScanVm {
        /// The VM: name or UUID.
        vm: String,
        /// Only this appliance may scan its disks.
        #[arg(long)]
        appliance: Option<String>,
    },
    /// List VM scan jobs with their disk jobs, newest first.
    VmJobs {
        /// Only this VM (name or UUID).
        #[arg(long)]
        vm: Option<String>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set a VM's scan policy (kept by UUID: it follows renames and migrations).
    VmPolicy(crate::vm_cli::PolicyArgs),
}

/// `serve` options.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Largest request body (`16M`, `512K`, bytes): larger ones get 413.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub body_limit: usize,
    /// Lease of a claimed job when the claim does not ask for one (seconds).
    #[arg(long, default_value_t = 3600)]
    pub lease: i64,
    /// Base of the webhook retry backoff in milliseconds (waits base * 2^attempt, at least 1 s).
    #[arg(long, default_value_t = 1000)]
    pub webhook_backoff_ms: u64,
    /// Address VM backups' NBD servers listen on (TCP, on the hypervisor host) for connections
    /// without their own (`hypervisor add --nbd-listen`); without it, local connections export
    /// on a unix socket (for a scanner on this host).
    #[arg(long, value_name = "IP")]
    pub nbd_listen: Option<String>,
    /// TCP ports for NBD servers, `FIRST-LAST`.
    #[arg(long, default_value = "10809-10872", value_parser = parse_ports)]
    pub nbd_ports: (u16, u16),
    /// Where local VM backups keep their unix socket and scratch files.
    #[arg(long, default_value = "/var/lib/coldscan-manager/backups")]
    pub work_dir: PathBuf,
    /// Seconds between two inventory reads of a hypervisor connection.
    #[arg(long, default_value_t = 10)]
    pub inventory_interval: u64,
    /// Milliseconds between two looks at the VM jobs.
    #[arg(long, default_value_t = 1000)]
    pub vm_tick_ms: u64,
    /// VM backups open at once per storage pool (`hypervisor pool-limit` sets one pool's).
    #[arg(long, default_value_t = crate::store::vms::DEFAULT_MAX_BACKUPS)]
    pub pool_backups: i64,
    /// This manager's name as the holder of VM backups (default: the host name); keep it
    /// across restarts so that a restarted manager ends the backups it left.
    #[arg(long)]
    pub manager_id: Option<String>,
    /// Seconds of silence after which another manager's VM backups are ended.
    #[arg(long, default_value_t = 60)]
    pub stale_after: i64,
}

/// Parses `FIRST-LAST` port ranges.
pub fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    s.split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .filter(|(a, b): &(u16, u16)| *a > 0 && a <= b)
        .ok_or_else(|| format!("{s:?} is not a port range like 10809-10872"))
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: only its hash is stored).
    Create {
        /// `appliance` or `admin`.
        #[arg(long, value_enum)]
        role: Role,
        /// Name (the appliance's name for appliance tokens).
        name: String,
    },
    /// List tokens (names and roles; never the tokens).
    List,
    /// Revoke a token: it is refused from now on.
    Revoke {
        /// Its name.
        name: String,
    },
}

/// `webhook` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Add a hook called on every report with detections: a URL to POST to, or a local
    /// command (`--command`) that gets the same JSON payload on its standard input.
    Add {
        /// URL to POST to (`http://` or `https://`).
        #[arg(required_unless_present = "command", conflicts_with = "command")]
        url: Option<String>,
        /// Program to run instead (no arguments; payload on stdin; exit 0 means done).
        #[arg(long, value_name = "PROGRAM")]
        command: Option<PathBuf>,
        /// File holding the HMAC secret (first line); required for URLs.
        #[arg(long, required_unless_present = "command")]
        secret_file: Option<PathBuf>,
    },
    /// List webhooks.
    List,
    /// Stop a webhook.
    Remove {
        /// Its id.
        id: i64,
    },
}

/// Parses `64M`-style sizes.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size (examples: 65536, 512K, 64M)"))
}

/// Runs a command other than `serve` on `store`.
pub async fn run<S: Store>(store: S, command: Command) -> anyhow::Result<()> {
    let now = crate::time::now();
    match command {
        Command::Serve(_) => unreachable_serve(),
        Command::Token(TokenCommand::Create { role, name }) => {
            anyhow::ensure!(
                !name.is_empty() && name.len() <= 200 && !name.chars().any(char::is_control),
                "token names are 1 to 200 printable characters"
            );
            let token = crate::tokens::new_token()?;
            store
                .create_token(&name, role, &crate::tokens::hash(&token), now)
                .await?;
            println!("{token}");
            eprintln!(
                "token {name:?} (role {}) created; it is shown only this once",
                role.as_str()
            );
        }
        Command::Token(TokenCommand::List) => {
            for t in store.list_tokens().await? {
                println!(
                    "{}\t{}\tcreated {}\t{}",
                    t.name,
                    t.role,
                    crate::time::rfc3339(t.created),
                    t.revoked
                        .map(|r| format!("revoked {}", crate::time::rfc3339(r)))
                        .unwrap_or_else(|| "active".into())
                );
            }
        }
        Command::Token(TokenCommand::Revoke { name }) => {
            anyhow::ensure!(
                store.revoke_token(&name, now).await?,
                "no active token named {name:?}"
            );
            eprintln!("token {name:?} revoked");
        }
        Command::Enqueue { target, appliance } => {
            let id = store
                .enqueue_job(&target, appliance.as_deref(), now)
                .await?;
            println!("{id}");
        }
        Command::Scans { json, limit } => {
            let rows = store.list_scans(None, limit.clamp(1, 100_000)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for s in rows {
                    println!(
                        "{}\t{}\t{}\t{}\tfiles {}\tdetections {}\tnot scanned {}\tsignatures {}",
                        s.id,
                        s.appliance,
                        s.started,
                        s.targets.join(","),
                        s.files,
                        s.detections,
                        s.not_scanned,
                        s.db.as_ref()
                            .map(crate::store::ScanDb::label)
                            .unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        Command::Detections { json, limit } => {
            let rows = store
                .list_detections(&Filter::default(), None, limit.clamp(1, 100_000))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for d in rows {
                    println!(
                        "scan {}\t{}\tpartition {}\t{}{}\t{}",
                        d.scan,
                        d.target,
                        d.partition,
                        d.path,
                        d.stream
                            .map(|s| format!(" (stream {s})"))
                            .unwrap_or_default(),
                        d.signature
                    );
                }
            }
        }
        Command::Webhook(WebhookCommand::Add {
            url,
            command,
            secret_file,
        }) => {
            let target = match (url, command) {
                (Some(url), None) => {
                    anyhow::ensure!(
                        url.starts_with("http://") || url.starts_with("https://"),
                        "webhook URLs start with http:// or https://"
                    );
                    url
                }
                (None, Some(program)) => {
                    anyhow::ensure!(
                        program.is_absolute(),
                        "give the command as an absolute path: {}",
                        program.display()
                    );
                    let text = program.to_str().context("the command path is not UTF-8")?;
                    format!("{}{text}", crate::webhook::COMMAND_PREFIX)
                }
                _ => anyhow::bail!("give a URL or --command, not both"),
            };
            let secret = match secret_file {
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    let secret = text.lines().next().unwrap_or("").trim().to_string();
                    anyhow::ensure!(
                        !secret.is_empty(),
                        "{}: no secret on its first line",
                        file.display()
                    );
                    secret
                }
                None => String::new(),
            };
            let id = store.add_webhook(&target, &secret, now).await?;
            println!("{id}");
        }
        Command::Webhook(WebhookCommand::List) => {
            for w in store.list_webhooks().await? {
                println!(
                    "{}\t{}\t{}",
                    w.id,
                    w.url,
                    if w.enabled { "enabled" } else { "removed" }
                );
            }
        }
        Command::Webhook(WebhookCommand::Remove { id }) => {
            anyhow::ensure!(store.disable_webhook(id).await?, "no enabled webhook {id}");
        }
        Command::Signatures(c) => crate::signatures::run(&store, c).await?,
        Command::Vm(c) => crate::libvirt::quarantine_cli::run(&store, c).await?,
        Command::Hypervisor(c) => crate::vm_cli::hypervisor(&store, c).await?,
        Command::Vms { json } => crate::vm_cli::vms(&store, json).await?,
        Command::ScanVm { vm, appliance } => {
            crate::vm_cli::scan_vm(&store, &vm, appliance.as_deref()).await?
        }
        Command::VmJobs { vm, json } => crate::vm_cli::vm_jobs(&store, vm.as_deref(), json).await?,
        Command::VmPolicy(args) => crate::vm_cli::vm_policy(&store, args).await?,
    }
    Ok(())
}

fn unreachable_serve() {
    // `main` runs `serve` itself.
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("64M"), Ok(64 << 20));
        assert_eq!(super::parse_size("4096"), Ok(4096));
        assert!(super::parse_size("0").is_err());
        assert!(super::parse_size("x").is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(super::parse_ports("10809-10872"), Ok((10809, 10872)));
        assert!(super::parse_ports("10872-10809").is_err());
        assert!(super::parse_ports("0-5").is_err());
    }
}
