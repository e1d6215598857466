//! The appliance's network, configured by PID 1 itself (the kernel's `IP_PNP` is off): links up
//! over rtnetlink ([`netlink`]), then DHCPv4 ([`dhcp`], the lease kept alive by [`renewal`]) or
//! the static address of `coldscan.net=IP/PREFIX,GW[,DNS]`. Ethernet interfaces only
//! (virtio-net, vmxnet3, e1000/e1000e, netvsc all present as `ARPHRD_ETHER`); no socket ever
//! listens.
#![forbid(unsafe_code)]

pub mod dhcp;
pub mod netlink;
pub mod renewal;

use std::net::Ipv4Addr;
use std::path::Path;

use super::config::{NetConfig, StaticNet};

/// `ARPHRD_ETHER` (`include/uapi/linux/if_arp.h`).
const ARPHRD_ETHER: &str = "1";
/// Most interfaces considered.
const MAX_INTERFACES: usize = 64;

/// A network interface seen in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Kernel name (`eth0`, `ens3`).
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// Hardware address.
    pub mac: [u8; 6],
    /// Driver name (`virtio_net`, `e1000e`...), if known.
    pub driver: Option<String>,
}

/// Parses `52:54:00:12:34:56`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The Ethernet interfaces under `sysfs_root/class/net`, sorted by name.
pub fn interfaces(sysfs_root: &Path) -> Vec<Interface> {
    let class = sysfs_root.join("class/net");
    let Ok(entries) = std::fs::read_dir(&class) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names.truncate(MAX_INTERFACES);
    let read = |name: &str, attr: &str| {
        std::fs::read_to_string(class.join(name).join(attr))
            .ok()
            .map(|s| s.trim().to_string())
    };
    names
        .into_iter()
        .filter(|n| read(n, "type").as_deref() == Some(ARPHRD_ETHER))
        .filter_map(|name| {
            let index = read(&name, "ifindex")?.parse().ok()?;
            let mac = parse_mac(&read(&name, "address")?)?;
            let driver = std::fs::read_link(class.join(&name).join("device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            Some(Interface {
                name,
                index,
                mac,
                driver,
            })
        })
        .collect()
}

/// The network as configured, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetState {
    /// Interface used.
    pub interface: String,
    /// How the address was obtained (`dhcp from 10.0.2.2`, `static`).
    pub method: String,
    /// Address and prefix.
    pub address: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
}

impl std::fmt::Display for NetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} ({})",
            self.interface, self.address, self.prefix, self.method
        )?;
        if let Some(gw) = self.gateway {
            write!(f, " gateway {gw}")?;
        }
        if !self.dns.is_empty() {
            let dns: Vec<String> = self.dns.iter().map(|d| d.to_string()).collect();
            write!(f, " dns {}", dns.join(","))?;
        }
        Ok(())
    }
}

/// Writes `/etc/resolv.conf` for the resolver of the HTTP client.
fn write_resolv_conf(dns: &[Ipv4Addr]) {
    if dns.is_empty() {
        return;
    }
    let text: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    let _ = std::fs::create_dir_all("/etc");
    if let Err(e) = std::fs::write("/etc/resolv.conf", text) {
        super::console::say(&format!("network: cannot write /etc/resolv.conf: {e}"));
    }
}

/// Configures the network as `config` says. `Ok(None)` when it is off.
pub fn configure(config: &NetConfig) -> Result<Option<NetState>, String> {
    if *config == NetConfig::Off {
        return Ok(None);
    }
    let mut rt = netlink::RouteSocket::open().map_err(|e| e.to_string())?;
    // Loopback first: local name resolution and nothing else use it.
    let _ = rt.link_up(1);
    let ifaces = interfaces(Path::new("/sys"));
    if ifaces.is_empty() {
        return Err("no Ethernet interface found (is the NIC's driver in the module list?)".into());
    }
    for i in &ifaces {
        rt.link_up(i.index)
            .map_err(|e| format!("{}: {e}", i.name))?;
    }
    match config {
        NetConfig::Off => Ok(None),
        NetConfig::Static(s) => configure_static(&mut rt, &ifaces[0], s).map(Some),
        NetConfig::Dhcp => {
            let mut errors = Vec::new();
            for i in &ifaces {
                match dhcp::obtain(&i.name, i.mac) {
                    Ok(lease) => {
                        let s = StaticNet {
                            address: lease.address,
                            prefix: lease.prefix,
                            gateway: lease.router,
                            dns: lease.dns.clone(),
                        };
                        let mut state = configure_static(&mut rt, i, &s)?;
                        state.method = match (lease.server, lease.lease_seconds) {
                            (Some(srv), Some(t)) => format!("dhcp from {srv}, lease {t} s"),
                            (Some(srv), None) => format!("dhcp from {srv}"),
                            _ => "dhcp".into(),
                        };
                        renewal::spawn(i.name.clone(), i.mac, lease);
                        return Ok(Some(state));
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            Err(errors.join("; "))
        }
    }
}

fn configure_static(
    rt: &mut netlink::RouteSocket,
    iface: &Interface,
    s: &StaticNet,
) -> Result<NetState, String> {
    rt.add_address(iface.index, s.address, s.prefix)
        .map_err(|e| format!("{}: {e}", iface.name))?;
    if let Some(gw) = s.gateway {
        match rt.add_default_route(iface.index, gw) {
            Ok(()) => {}
            Err(netlink::NetlinkError::Refused { errno, .. })
                if errno.raw_os_error() == Some(17) => {}
            Err(e) => return Err(format!("{}: {e}", iface.name)),
        }
    }
    write_resolv_conf(&s.dns);
    Ok(NetState {
        interface: iface.name.clone(),
        method: "static".into(),
        address: s.address,
        prefix: s.prefix,
        gateway: s.gateway,
        dns: s.dns.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("52:54:00:12:34:56\n"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac("zz:54:00:12:34:56"), None);
    }

    #[test]
    fn interfaces_from_a_sysfs_tree() {
        let root = tempfile::tempdir().unwrap();
        let add = |name: &str, kind: &str, index: &str, mac: &str| {
            let d = root.path().join("class/net").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(d.join("ifindex"), format!("{index}\n")).unwrap();
            std::fs::write(d.join("address"), format!("{mac}\n")).unwrap();
        };
        add("lo", "772", "1", "00:00:00:00:00:00");
        add("eth1", "1", "3", "52:54:00:00:00:02");
        add("eth0", "1", "2", "52:54:00:00:00:01");
        let found = interfaces(root.path());
        let names: Vec<&str> = found.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1"]);
        assert_eq!(found[0].index, 2);
        assert!(interfaces(&root.path().join("none")).is_empty());
    }
}
