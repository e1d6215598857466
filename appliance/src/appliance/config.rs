//! Appliance configuration: the kernel command line (`coldscan.*` keys) and the optional config
//! disk's `coldscan.toml`, merged with one rule: **a key on the kernel command line wins over the
//! same setting in `coldscan.toml`, which wins over the default**. The command line is what the
//! operator chose for this boot (boot loader entry, hypervisor's kernel arguments); the config
//! disk is the site-wide file.
//!
//! Bad configuration is an error naming the key and the reason: the appliance never guesses.
//! Unknown `coldscan.*` keys and unknown TOML keys are errors too (a typo must not silently fall
//! back to a default). Kernel parameters outside the `coldscan.` namespace are not ours and are
//! ignored.

use std::fmt;
use std::net::Ipv4Addr;

use serde::Deserialize;

/// Largest `jobs` value accepted (threads are cheap, but a typo like `jobs=1000` is not meant).
pub const MAX_JOBS: usize = 256;
/// Longest accepted token, URL or name (bytes).
pub const MAX_VALUE_LEN: usize = 4096;

/// Where a setting came from, for error messages and the console's status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The kernel command line.
    Cmdline,
    /// `coldscan.toml` on the config disk.
    ConfigDisk,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Cmdline => "kernel command line",
            Origin::ConfigDisk => "coldscan.toml",
        })
    }
}

/// A configuration error: which key, from where, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("{origin}: {key}={value:?}: {reason}")]
    Invalid {
        /// Where the key was read.
        origin: Origin,
        /// The key (`coldscan.net`, `manager.url`).
        key: String,
        /// The offending value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A key we do not know.
    #[error("{origin}: unknown key {key}")]
    UnknownKey {
        /// Where the key was read.
        origin: Origin,
        /// The key.
        key: String,
    },
    /// `coldscan.toml` is not valid TOML or has wrong types.
    #[error("coldscan.toml: {detail}")]
    Toml {
        /// The parser's message (with line and column, and the key when known).
        detail: String,
    },
    /// A required setting is missing (e.g. `daemon` mode without a manager).
    #[error("missing {key}: {reason}")]
    Missing {
        /// The key expected.
        key: String,
        /// Why it is needed.
        reason: String,
    },
}

/// What the appliance does after boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Scan every guest disk once, report, power off.
    #[default]
    Oneshot,
    /// Register with the manager, claim jobs, scan, report, repeat.
    Daemon,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        match s {
            "oneshot" => Some(Mode::Oneshot),
            "daemon" => Some(Mode::Daemon),
            _ => None,
        }
    }

    /// The name as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Oneshot => "oneshot",
            Mode::Daemon => "daemon",
        }
    }
}

/// Where a daemon's signature database comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureSource {
    /// The manager's current database when it has one (checked between jobs), else the
    /// appliance's own (baked into the image or on the config disk).
    #[default]
    Manager,
    /// Only the appliance's own database.
    Local,
}

impl SignatureSource {
    fn parse(origin: Origin, key: &str, value: &str) -> Result<SignatureSource, ConfigError> {
        match value {
            "manager" => Ok(SignatureSource::Manager),
            "local" => Ok(SignatureSource::Local),
            _ => Err(invalid(origin, key, value, "expected manager or local")),
        }
    }
}

/// A static IPv4 configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNet {
    /// The appliance's address.
    pub address: Ipv4Addr,
    /// Prefix length (0-32).
    pub prefix: u8,
    /// Default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
}

/// How the network is configured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetConfig {
    /// No network (the default when no manager is configured).
    #[default]
    Off,
    /// DHCPv4 on the first interface that gets a lease.
    Dhcp,
    /// Static address.
    Static(StaticNet),
}

/// The merged configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Oneshot or daemon.
    pub mode: Mode,
    /// Manager base URL (`http://` or `https://`), without a trailing slash.
    pub manager: Option<String>,
    /// Bearer token for the manager.
    pub token: Option<String>,
    /// Network configuration.
    pub net: NetConfig,
    /// Scan threads (0: one per core).
    pub jobs: usize,
    /// This appliance's name as the manager shows it.
    pub name: Option<String>,
    /// GPT disk GUID of the appliance's own boot disk (lowercase), if given.
    pub self_disk: Option<String>,
    /// CA bundle (PEM) path on the config disk, for HTTPS to the manager.
    pub ca_bundle: Option<String>,
    /// Seconds between heartbeats in daemon mode.
    pub heartbeat_seconds: u64,
    /// Seconds oneshot mode keeps trying to deliver its reports before powering off
    /// (`coldscan.delivery_seconds`, `manager.delivery_seconds`).
    pub delivery_seconds: u64,
    /// Hardening self-test (`coldscan.selftest=seccomp-socket|seccomp-execve`): the first scan
    /// worker attempts that forbidden call, and must be killed for it and reported.
    pub selftest: Option<String>,
    /// Where a daemon's signatures come from (`coldscan.signatures=manager|local`,
    /// `manager.signatures`).
    pub signatures: SignatureSource,
}

/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT_SECONDS: u64 = 30;
/// Default delivery deadline of oneshot mode.
pub const DEFAULT_DELIVERY_SECONDS: u64 = 180;
/// Longest delivery deadline accepted (a day).
pub const MAX_DELIVERY_SECONDS: u64 = 86_400;

/// `coldscan.toml` as written by an operator (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    mode: Option<String>,
    name: Option<String>,
    jobs: Option<i64>,
    manager: Option<TomlManager>,
    network: Option<TomlNetwork>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlManager {
    url: Option<String>,
    token: Option<String>,
    ca_bundle: Option<String>,
    heartbeat_seconds: Option<i64>,
    signatures: Option<String>,
    delivery_seconds: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlNetwork {
    mode: Option<String>,
    address: Option<String>,
    gateway: Option<String>,
    #[serde(default)]
    dns: Vec<String>,
}

/// The value of the last `coldscan.self=` on a kernel command line, checked: needed before
/// the config disk is found (the appliance's own disk is told apart by it).
pub fn self_disk_from_cmdline(cmdline: &str) -> Result<Option<String>, ConfigError> {
    cmdline_pairs(cmdline)
        .into_iter()
        .rev()
        .find(|(k, _)| *k == "coldscan.self")
        .map(|(k, v)| parse_guid(Origin::Cmdline, k, v))
        .transpose()
}

/// The `coldscan.*` keys of a kernel command line, in order, as `(key, value)`.
fn cmdline_pairs(cmdline: &str) -> Vec<(&str, &str)> {
    cmdline
        .split_ascii_whitespace()
        .filter(|w| w.starts_with("coldscan."))
        .map(|w| w.split_once('=').unwrap_or((w, "")))
        .collect()
}

fn invalid(origin: Origin, key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin,
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn check_len(origin: Origin, key: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(invalid(origin, key, value, "empty value"));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(invalid(origin, key, "...", "value too long"));
    }
    Ok(())
}

/// Checks a manager URL: `http://` or `https://`, a host, no spaces, no query or fragment.
fn parse_manager(origin: Origin, key: &str, value: &str) -> Result<String, ConfigError> {
    check_len(origin, key, value)?;
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| invalid(origin, key, value, "must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(invalid(origin, key, value, "no host"));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(invalid(
            origin,
            key,
            value,
            "spaces, control characters, query or fragment not allowed",
        ));
    }
    Ok(value.trim_end_matches('/').to_string())
}

fn parse_token(origin: Origin, key: &str, value: &str) -> Result<String, ConfigError> {
    check_len(origin, key, value)?;
    if !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            origin,
            key,
            "<hidden>",
            "a token is printable ASCII without spaces",
        ));
    }
    Ok(value.to_string())
}

fn parse_jobs(origin: Origin, key: &str, value: &str) -> Result<usize, ConfigError> {
    let n: usize = value
        .parse()
        .map_err(|_| invalid(origin, key, value, "not a whole number"))?;
    if n > MAX_JOBS {
        return Err(invalid(
            origin,
            key,
            value,
            format!("at most {MAX_JOBS} (0 means one per core)"),
        ));
    }
    Ok(n)
}

fn parse_delivery(origin: Origin, key: &str, value: &str) -> Result<u64, ConfigError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|s| (1..=MAX_DELIVERY_SECONDS).contains(s))
        .ok_or_else(|| {
            invalid(
                origin,
                key,
                value,
                format!("1-{MAX_DELIVERY_SECONDS} seconds"),
            )
        })
}

fn parse_ip(origin: Origin, key: &str, value: &str) -> Result<Ipv4Addr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(origin, key, value, "not an IPv4 address"))
}

/// `IP/PREFIX`.
fn parse_cidr(origin: Origin, key: &str, value: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    let (ip, prefix) = value
        .split_once('/')
        .ok_or_else(|| invalid(origin, key, value, "expected IP/PREFIX"))?;
    let address = parse_ip(origin, key, ip)?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| invalid(origin, key, value, "prefix length must be 1-32"))?;
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        return Err(invalid(origin, key, value, "not a host address"));
    }
    Ok((address, prefix))
}

/// `coldscan.net=dhcp|off|IP/PREFIX,GW[,DNS]`.
fn parse_net(origin: Origin, key: &str, value: &str) -> Result<NetConfig, ConfigError> {
    match value {
        "dhcp" => return Ok(NetConfig::Dhcp),
        "off" | "none" => return Ok(NetConfig::Off),
        _ => {}
    }
    let parts: Vec<&str> = value.split(',').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(invalid(
            origin,
            key,
            value,
            "expected dhcp, off, or IP/PREFIX,GATEWAY[,DNS]",
        ));
    }
    let (address, prefix) = parse_cidr(origin, key, parts[0])?;
    let gateway = parse_ip(origin, key, parts[1])?;
    let dns = match parts.get(2) {
        Some(d) => vec![parse_ip(origin, key, d)?],
        None => Vec::new(),
    };
    Ok(NetConfig::Static(StaticNet {
        address,
        prefix,
        gateway: Some(gateway),
        dns,
    }))
}

/// A GPT GUID as the partition reader prints it (lowercase, 8-4-4-4-12).
fn parse_guid(origin: Origin, key: &str, value: &str) -> Result<String, ConfigError> {
    let lower = value.to_ascii_lowercase();
    let groups: Vec<&str> = lower.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        return Err(invalid(origin, key, value, "not a GUID (8-4-4-4-12 hex)"));
    }
    Ok(lower)
}

fn parse_name(origin: Origin, key: &str, value: &str) -> Result<String, ConfigError> {
    check_len(origin, key, value)?;
    if value.len() > 64
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            origin,
            key,
            value,
            "1-64 characters of A-Z a-z 0-9 - _ .",
        ));
    }
    Ok(value.to_string())
}

impl Config {
    /// Merges a config disk's `coldscan.toml` (if any) and then the kernel command line over
    /// the defaults, and checks the result.
    pub fn load(cmdline: &str, toml_text: Option<&str>) -> Result<Config, ConfigError> {
        let mut config = Config {
            heartbeat_seconds: DEFAULT_HEARTBEAT_SECONDS,
            delivery_seconds: DEFAULT_DELIVERY_SECONDS,
            ..Config::default()
        };
        let mut net_set = false;
        if let Some(text) = toml_text {
            net_set |= config.apply_toml(text)?;
        }
        net_set |= config.apply_cmdline(cmdline)?;
        if !net_set && config.manager.is_some() {
            // A manager without a network setting: DHCP is the documented default then.
            config.net = NetConfig::Dhcp;
        }
        config.check()?;
        Ok(config)
    }

    /// Applies `coldscan.*` keys; returns whether the network was set.
    fn apply_cmdline(&mut self, cmdline: &str) -> Result<bool, ConfigError> {
        let o = Origin::Cmdline;
        let mut net_set = false;
        for (key, value) in cmdline_pairs(cmdline) {
            match key {
                "coldscan.mode" => {
                    self.mode = Mode::parse(value)
                        .ok_or_else(|| invalid(o, key, value, "expected oneshot or daemon"))?
                }
                "coldscan.manager" => self.manager = Some(parse_manager(o, key, value)?),
                "coldscan.token" => self.token = Some(parse_token(o, key, value)?),
                "coldscan.net" => {
                    self.net = parse_net(o, key, value)?;
                    net_set = true;
                }
                "coldscan.jobs" => self.jobs = parse_jobs(o, key, value)?,
                "coldscan.delivery_seconds" => {
                    self.delivery_seconds = parse_delivery(o, key, value)?
                }
                "coldscan.name" => self.name = Some(parse_name(o, key, value)?),
                "coldscan.self" => self.self_disk = Some(parse_guid(o, key, value)?),
                "coldscan.signatures" => self.signatures = SignatureSource::parse(o, key, value)?,
                "coldscan.selftest" => {
                    self.selftest = Some(match value {
                        "seccomp-socket" => "socket".to_string(),
                        "seccomp-execve" => "execve".to_string(),
                        _ => {
                            return Err(invalid(
                                o,
                                key,
                                value,
                                "expected seccomp-socket or seccomp-execve",
                            ))
                        }
                    })
                }
                _ => {
                    return Err(ConfigError::UnknownKey {
                        origin: o,
                        key: key.to_string(),
                    })
                }
            }
        }
        Ok(net_set)
    }

    /// Applies `coldscan.toml`; returns whether the network was set.
    fn apply_toml(&mut self, text: &str) -> Result<bool, ConfigError> {
        let o = Origin::ConfigDisk;
        let file: TomlFile = toml::from_str(text).map_err(|e| ConfigError::Toml {
            detail: e.to_string().trim_end().replace('\n', " "),
        })?;
        if let Some(mode) = &file.mode {
            self.mode = Mode::parse(mode)
                .ok_or_else(|| invalid(o, "mode", mode, "expected oneshot or daemon"))?;
        }
        if let Some(name) = &file.name {
            self.name = Some(parse_name(o, "name", name)?);
        }
        if let Some(jobs) = file.jobs {
            self.jobs = parse_jobs(o, "jobs", &jobs.to_string())?;
        }
        if let Some(m) = &file.manager {
            if let Some(url) = &m.url {
                self.manager = Some(parse_manager(o, "manager.url", url)?);
            }
            if let Some(token) = &m.token {
                self.token = Some(parse_token(o, "manager.token", token)?);
            }
            if let Some(ca) = &m.ca_bundle {
                check_len(o, "manager.ca_bundle", ca)?;
                if ca.split('/').any(|c| c == "..") {
                    return Err(invalid(
                        o,
                        "manager.ca_bundle",
                        ca,
                        "must stay on the config disk",
                    ));
                }
                self.ca_bundle = Some(ca.trim_start_matches('/').to_string());
            }
            if let Some(v) = &m.signatures {
                self.signatures = SignatureSource::parse(o, "manager.signatures", v)?;
            }
            if let Some(d) = m.delivery_seconds {
                self.delivery_seconds =
                    parse_delivery(o, "manager.delivery_seconds", &d.to_string())?;
            }
            if let Some(h) = m.heartbeat_seconds {
                self.heartbeat_seconds = u64::try_from(h)
                    .ok()
                    .filter(|h| (1..=3600).contains(h))
                    .ok_or_else(|| {
                    invalid(
                        o,
                        "manager.heartbeat_seconds",
                        &h.to_string(),
                        "1-3600 seconds",
                    )
                })?;
            }
        }
        let Some(n) = &file.network else {
            return Ok(false);
        };
        let mode = n.mode.as_deref().unwrap_or(if n.address.is_some() {
            "static"
        } else {
            "dhcp"
        });
        self.net = match mode {
            "dhcp" | "off" if n.address.is_some() || n.gateway.is_some() => {
                return Err(invalid(
                    o,
                    "network.address",
                    n.address.as_deref().unwrap_or(""),
                    format!("not used with network.mode = {mode:?}"),
                ))
            }
            "dhcp" => NetConfig::Dhcp,
            "off" => NetConfig::Off,
            "static" => {
                let addr = n.address.as_deref().ok_or_else(|| ConfigError::Missing {
                    key: "network.address".into(),
                    reason: "network.mode = \"static\" needs an address (IP/PREFIX)".into(),
                })?;
                let (address, prefix) = parse_cidr(o, "network.address", addr)?;
                let gateway = n
                    .gateway
                    .as_deref()
                    .map(|g| parse_ip(o, "network.gateway", g))
                    .transpose()?;
                let dns = n
                    .dns
                    .iter()
                    .map(|d| parse_ip(o, "network.dns", d))
                    .collect::<Result<_, _>>()?;
                NetConfig::Static(StaticNet {
                    address,
                    prefix,
                    gateway,
                    dns,
                })
            }
            other => {
                return Err(invalid(
                    o,
                    "network.mode",
                    other,
                    "expected dhcp, static or off",
                ))
            }
        };
        Ok(true)
    }

    /// Cross-key checks.
    fn check(&self) -> Result<(), ConfigError> {
        if self.mode == Mode::Daemon && self.manager.is_none() {
            return Err(ConfigError::Missing {
                key: "coldscan.manager (or manager.url)".into(),
                reason: "daemon mode takes its jobs from a manager".into(),
            });
        }
        if self.manager.is_some() && self.token.is_none() {
            return Err(ConfigError::Missing {
                key: "coldscan.token (or manager.token)".into(),
                reason: "the manager accepts reports only with a token".into(),
            });
        }
        if self.manager.is_some() && self.net == NetConfig::Off {
            return Err(ConfigError::Missing {
                key: "coldscan.net (or [network])".into(),
                reason: "a manager is configured but the network is off".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
