//! A DHCPv4 client for one interface (RFC 2131 sections 3.1 and 4.4, options RFC 2132):
//! DISCOVER, OFFER, REQUEST, ACK to obtain a lease; REQUEST in the RENEWING state (unicast to the
//! server, `ciaddr` set, section 4.3.2) and REBINDING state (broadcast) to extend it, which
//! [`super::renewal`] schedules at T1 and T2 (section 4.4.5).
//!
//! Packets go over a UDP socket bound to port 68 and to the interface (`SO_BINDTODEVICE`), sent
//! to the limited broadcast address with the BROADCAST flag set, so that servers answer by
//! broadcast before the interface has an address. Every field read from the network is bounds
//! checked; a malformed packet is skipped, never trusted.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// Fixed part of a BOOTP/DHCP message, up to and including the magic cookie.
const FIXED_LEN: usize = 240;
/// The magic cookie (RFC 2131 section 3).
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const OP_REQUEST: u8 = 1;
const OP_REPLY: u8 = 2;
const HTYPE_ETHERNET: u8 = 1;
const FLAG_BROADCAST: u16 = 0x8000;
const OPT_PAD: u8 = 0;
const OPT_SUBNET_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_LEASE_TIME: u8 = 51;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMETER_LIST: u8 = 55;
const OPT_END: u8 = 255;
/// Most DNS servers kept from a lease.
const MAX_DNS: usize = 3;
/// Time to wait for each answer before sending again.
const ANSWER_WAIT: Duration = Duration::from_secs(4);
/// Attempts (DISCOVER or REQUEST) before giving up on an interface.
const ATTEMPTS: u32 = 4;

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// DHCPDISCOVER.
    Discover = 1,
    /// DHCPOFFER.
    Offer = 2,
    /// DHCPREQUEST.
    Request = 3,
    /// DHCPACK.
    Ack = 5,
    /// DHCPNAK.
    Nak = 6,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<MessageType> {
        Some(match v {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            _ => return None,
        })
    }
}

/// What a server's answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// OFFER, ACK or NAK.
    pub kind: MessageType,
    /// Transaction id.
    pub xid: u32,
    /// The address offered (`yiaddr`).
    pub address: Ipv4Addr,
    /// Prefix length from the subnet mask (option 1), if given.
    pub prefix: Option<u8>,
    /// First router (option 3).
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// Server identifier (option 54).
    pub server: Option<Ipv4Addr>,
    /// Lease time in seconds (option 51).
    pub lease_seconds: Option<u32>,
}

/// A lease obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Our address.
    pub address: Ipv4Addr,
    /// Prefix length (24 when the server gave no mask).
    pub prefix: u8,
    /// Default gateway.
    pub router: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// The server that granted it.
    pub server: Option<Ipv4Addr>,
    /// Lease time in seconds.
    pub lease_seconds: Option<u32>,
}

/// Builds a DISCOVER or REQUEST from `mac` with transaction id `xid`; a REQUEST names the
/// offered address and the server (RFC 2131 section 4.3.2, SELECTING state).
pub fn build(
    kind: MessageType,
    xid: u32,
    mac: [u8; 6],
    requested: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut p = vec![0u8; FIXED_LEN];
    p[0] = OP_REQUEST;
    p[1] = HTYPE_ETHERNET;
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10..12].copy_from_slice(&FLAG_BROADCAST.to_be_bytes());
    p[28..34].copy_from_slice(&mac);
    p[236..240].copy_from_slice(&MAGIC);
    p.extend_from_slice(&[OPT_MESSAGE_TYPE, 1, kind as u8]);
    if let Some((address, server)) = requested {
        p.extend_from_slice(&[OPT_REQUESTED_IP, 4]);
        p.extend_from_slice(&address.octets());
        p.extend_from_slice(&[OPT_SERVER_ID, 4]);
        p.extend_from_slice(&server.octets());
    }
    p.extend_from_slice(&[
        OPT_PARAMETER_LIST,
        4,
        OPT_SUBNET_MASK,
        OPT_ROUTER,
        OPT_DNS,
        OPT_LEASE_TIME,
    ]);
    p.push(OPT_END);
    // BOOTP relays expect at least 300 bytes (RFC 1542 section 2.1).
    p.resize(p.len().max(300), 0);
    p
}

fn ip(b: &[u8]) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// Prefix length of a contiguous netmask; `None` for a non-contiguous one.
fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// Parses a server's answer addressed to `mac`. `None` for anything that is not a well-formed
/// BOOTREPLY with a DHCP message type for us.
pub fn parse(packet: &[u8], mac: [u8; 6]) -> Option<Reply> {
    if packet.len() < FIXED_LEN || packet[0] != OP_REPLY || packet[236..240] != MAGIC {
        return None;
    }
    if packet[28..34] != mac {
        return None;
    }
    let xid = u32::from_be_bytes(packet[4..8].try_into().ok()?);
    let address = ip(&packet[16..20])?;
    let mut reply = Reply {
        kind: MessageType::Nak,
        xid,
        address,
        prefix: None,
        router: None,
        dns: Vec::new(),
        server: None,
        lease_seconds: None,
    };
    let mut kind = None;
    let mut at = FIXED_LEN;
    while let Some(&code) = packet.get(at) {
        match code {
            OPT_END => break,
            OPT_PAD => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let len = usize::from(*packet.get(at + 1)?);
        let value = packet.get(at + 2..at + 2 + len)?;
        match code {
            OPT_MESSAGE_TYPE if len == 1 => kind = MessageType::from_u8(value[0]),
            OPT_SUBNET_MASK if len == 4 => reply.prefix = mask_prefix(ip(value)?),
            OPT_ROUTER if len >= 4 => reply.router = ip(value),
            OPT_DNS => {
                reply.dns = value.chunks_exact(4).filter_map(ip).take(MAX_DNS).collect();
            }
            OPT_SERVER_ID if len == 4 => reply.server = ip(value),
            OPT_LEASE_TIME if len == 4 => {
                reply.lease_seconds = Some(u32::from_be_bytes(value.try_into().ok()?))
            }
            _ => {}
        }
        at += 2 + len;
    }
    reply.kind = kind?;
    Some(reply)
}

/// DHCP on one interface failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhcpError {
    /// The socket could not be set up.
    #[error("DHCP on {interface}: socket: {source}")]
    Socket {
        /// Interface name.
        interface: String,
        /// The error.
        source: std::io::Error,
    },
    /// No server answered in time.
    #[error("DHCP on {interface}: no {waiting_for} after {attempts} attempts")]
    NoAnswer {
        /// Interface name.
        interface: String,
        /// OFFER or ACK.
        waiting_for: &'static str,
        /// Attempts made.
        attempts: u32,
    },
    /// The server refused our REQUEST.
    #[error("DHCP on {interface}: the server refused the address (NAK)")]
    Refused {
        /// Interface name.
        interface: String,
    },
}

/// A random transaction id.
fn random_xid() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = t.to_ne_bytes();
    }
    u32::from_ne_bytes(b)
}

/// A REQUEST extending the lease of `address` (RFC 2131 section 4.3.2, RENEWING and REBINDING
/// states): `ciaddr` is our address, and neither the requested address nor the server
/// identifier option is sent; no BROADCAST flag (we can receive unicast now).
pub fn build_renewal(xid: u32, mac: [u8; 6], address: Ipv4Addr) -> Vec<u8> {
    let mut p = build(MessageType::Request, xid, mac, None);
    p[10..12].copy_from_slice(&0u16.to_be_bytes());
    p[12..16].copy_from_slice(&address.octets());
    p
}

/// A UDP socket on port 68 bound to `interface`.
fn client_socket(interface: &str) -> Result<std::net::UdpSocket, DhcpError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock_err = |source: std::io::Error| DhcpError::Socket {
        interface: interface.to_string(),
        source,
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(sock_err)?;
    socket.set_reuse_address(true).map_err(sock_err)?;
    socket.set_broadcast(true).map_err(sock_err)?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(sock_err)?;
    socket
        .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into())
        .map_err(sock_err)?;
    Ok(socket.into())
}

/// Extends `lease` on `interface`: a renewal REQUEST sent to `to` (the server's port 67 while
/// RENEWING, the broadcast address while REBINDING). `Ok` with the ACK's lease; a NAK is
/// [`DhcpError::Refused`].
pub fn renew(
    interface: &str,
    mac: [u8; 6],
    lease: &Lease,
    to: SocketAddrV4,
) -> Result<Lease, DhcpError> {
    let socket = client_socket(interface)?;
    let xid = random_xid();
    let ack = exchange(
        &socket,
        to,
        interface,
        mac,
        xid,
        &build_renewal(xid, mac, lease.address),
        &[MessageType::Ack, MessageType::Nak],
        "ACK",
    )?;
    if ack.kind == MessageType::Nak {
        return Err(DhcpError::Refused {
            interface: interface.to_string(),
        });
    }
    Ok(Lease {
        address: ack.address,
        prefix: ack.prefix.unwrap_or(lease.prefix),
        router: ack.router.or(lease.router),
        dns: if ack.dns.is_empty() {
            lease.dns.clone()
        } else {
            ack.dns
        },
        server: ack.server.or(lease.server),
        lease_seconds: ack.lease_seconds,
    })
}

/// Sends `packet` to `to` and waits for an answer of a kind in `want` to transaction `xid`,
/// [`ATTEMPTS`] times.
#[allow(clippy::too_many_arguments)]
fn exchange(
    socket: &std::net::UdpSocket,
    to: SocketAddrV4,
    interface: &str,
    mac: [u8; 6],
    xid: u32,
    packet: &[u8],
    want: &[MessageType],
    waiting_for: &'static str,
) -> Result<Reply, DhcpError> {
    let sock_err = |source: std::io::Error| DhcpError::Socket {
        interface: interface.to_string(),
        source,
    };
    for _ in 0..ATTEMPTS {
        socket.send_to(packet, to).map_err(sock_err)?;
        let deadline = Instant::now() + ANSWER_WAIT;
        let mut buf = [0u8; 1500];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left)).map_err(sock_err)?;
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(sock_err(e)),
            };
            if let Some(reply) = parse(&buf[..n], mac) {
                if reply.xid == xid && want.contains(&reply.kind) {
                    return Ok(reply);
                }
            }
        }
    }
    Err(DhcpError::NoAnswer {
        interface: interface.to_string(),
        waiting_for,
        attempts: ATTEMPTS,
    })
}

/// Obtains a lease on `interface` (which must be up) for the hardware address `mac`.
pub fn obtain(interface: &str, mac: [u8; 6]) -> Result<Lease, DhcpError> {
    let socket = client_socket(interface)?;
    let server = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    let xid = random_xid();

    let exchange = |packet: &[u8], want: &[MessageType], waiting_for: &'static str| {
        exchange(
            &socket,
            server,
            interface,
            mac,
            xid,
            packet,
            want,
            waiting_for,
        )
    };
    let offer = exchange(
        &build(MessageType::Discover, xid, mac, None),
        &[MessageType::Offer],
        "OFFER",
    )?;
    let server_id = offer.server.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let ack = exchange(
        &build(
            MessageType::Request,
            xid,
            mac,
            Some((offer.address, server_id)),
        ),
        &[MessageType::Ack, MessageType::Nak],
        "ACK",
    )?;
    if ack.kind == MessageType::Nak {
        return Err(DhcpError::Refused {
            interface: interface.to_string(),
        });
    }
    Ok(Lease {
        address: ack.address,
        prefix: ack.prefix.or(offer.prefix).unwrap_or(24),
        router: ack.router.or(offer.router),
        dns: if ack.dns.is_empty() {
            offer.dns
        } else {
            ack.dns
        },
        server: ack.server.or(offer.server),
        lease_seconds: ack.lease_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// A reply as QEMU's user-mode network (slirp) sends it.
    fn reply(kind: u8, xid: u32) -> Vec<u8> {
        let mut p = vec![0u8; FIXED_LEN];
        p[0] = OP_REPLY;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&xid.to_be_bytes());
        p[16..20].copy_from_slice(&[10, 0, 2, 15]);
        p[28..34].copy_from_slice(&MAC);
        p[236..240].copy_from_slice(&MAGIC);
        p.extend_from_slice(&[53, 1, kind, 54, 4, 10, 0, 2, 2, 51, 4, 0, 1, 0x51, 0x80]);
        p.extend_from_slice(&[1, 4, 255, 255, 255, 0, 3, 4, 10, 0, 2, 2, 6, 4, 10, 0, 2, 3]);
        p.extend_from_slice(&[0, 0, 255]);
        p
    }

    #[test]
    fn parses_a_slirp_offer() {
        let r = parse(&reply(2, 0xdead_beef), MAC).unwrap();
        assert_eq!(r.kind, MessageType::Offer);
        assert_eq!(r.xid, 0xdead_beef);
        assert_eq!(r.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(r.prefix, Some(24));
        assert_eq!(r.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(r.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(r.server, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(r.lease_seconds, Some(86400));
    }

    #[test]
    fn refuses_what_is_not_for_us() {
        assert!(parse(&reply(2, 1), [0; 6]).is_none());
        let mut request = reply(2, 1);
        request[0] = OP_REQUEST;
        assert!(parse(&request, MAC).is_none());
        assert!(parse(&reply(2, 1)[..200], MAC).is_none());
        let mut no_type = reply(2, 1);
        no_type[FIXED_LEN] = 12; // hostname option instead of the message type
        assert!(parse(&no_type, MAC).is_none());
    }

    #[test]
    fn truncated_options_never_panic() {
        let full = reply(5, 9);
        for cut in FIXED_LEN..full.len() {
            let _ = parse(&full[..cut], MAC);
        }
        // An option whose length runs past the end.
        let mut long = full[..FIXED_LEN].to_vec();
        long.extend_from_slice(&[53, 200, 2]);
        assert!(parse(&long, MAC).is_none());
    }

    #[test]
    fn builds_discover_and_request() {
        let d = build(MessageType::Discover, 7, MAC, None);
        assert!(d.len() >= 300);
        assert_eq!(d[0], OP_REQUEST);
        assert_eq!(&d[236..240], &MAGIC);
        assert_eq!(&d[240..243], &[53, 1, 1]);
        assert_eq!(u16::from_be_bytes([d[10], d[11]]), FLAG_BROADCAST);
        let r = build(
            MessageType::Request,
            7,
            MAC,
            Some((Ipv4Addr::new(10, 0, 2, 15), Ipv4Addr::new(10, 0, 2, 2))),
        );
        assert_eq!(&r[240..249], &[53, 1, 3, 50, 4, 10, 0, 2, 15]);
    }

    #[test]
    fn netmask_prefix() {
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(mask_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
    }
}
