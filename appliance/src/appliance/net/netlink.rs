//! The few rtnetlink requests PID 1 needs (Linux `Documentation/userspace-api/netlink/intro.rst`,
//! `include/uapi/linux/rtnetlink.h`, `if_addr.h`, `if_link.h`): bring a link up, add an IPv4
//! address, add a default route. Messages are built by hand (each is a header, one fixed struct
//! and a few attributes) and every request is acknowledged (`NLM_F_ACK`), so a refusal is an
//! error with the kernel's errno.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

use rustix::fd::OwnedFd;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_REPLACE: u16 = 0x100;
const AF_INET: u8 = 2;
const IFF_UP: u32 = 0x1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
/// Size of `struct nlmsghdr`.
const HEADER_LEN: usize = 16;

/// A netlink request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// The socket could not be opened or used.
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    /// The kernel refused a request.
    #[error("{what}: refused by the kernel: {errno}")]
    Refused {
        /// The request.
        what: &'static str,
        /// The errno.
        errno: std::io::Error,
    },
    /// The answer did not parse.
    #[error("{what}: malformed netlink answer at byte {offset:#x}")]
    Malformed {
        /// The request.
        what: &'static str,
        /// Where.
        offset: usize,
    },
}

/// Appends one attribute (`struct rtattr`: length, type, payload, padded to 4 bytes).
fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

/// A complete message: header (length filled in), then `body`.
fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = HEADER_LEN + body.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(body);
    m
}

/// `RTM_NEWLINK` setting `IFF_UP` on interface `index`.
pub fn link_up_message(index: u32, seq: u32) -> Vec<u8> {
    // struct ifinfomsg: family, pad, type, index, flags, change.
    let mut body = vec![0u8, 0];
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.extend_from_slice(&(index as i32).to_ne_bytes());
    body.extend_from_slice(&IFF_UP.to_ne_bytes());
    body.extend_from_slice(&IFF_UP.to_ne_bytes());
    message(RTM_NEWLINK, 0, seq, &body)
}

/// `RTM_NEWADDR` adding `address/prefix` (with its broadcast address) to interface `index`.
pub fn add_address_message(index: u32, address: Ipv4Addr, prefix: u8, seq: u32) -> Vec<u8> {
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    let mut body = vec![AF_INET, prefix, 0, RT_SCOPE_UNIVERSE];
    body.extend_from_slice(&index.to_ne_bytes());
    attr(&mut body, IFA_LOCAL, &address.octets());
    attr(&mut body, IFA_ADDRESS, &address.octets());
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let broadcast = u32::from(address) | !mask;
    attr(&mut body, IFA_BROADCAST, &broadcast.to_be_bytes());
    message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, seq, &body)
}

/// `RTM_NEWROUTE`: a route to `dst/dst_len` through `gateway` (or on-link without one) on
/// interface `index`.
pub fn add_route_message(
    index: u32,
    dst: Ipv4Addr,
    dst_len: u8,
    gateway: Option<Ipv4Addr>,
    seq: u32,
) -> Vec<u8> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let scope = if gateway.is_some() {
        RT_SCOPE_UNIVERSE
    } else {
        RT_SCOPE_LINK
    };
    let mut body = vec![
        AF_INET,
        dst_len,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_BOOT,
        scope,
        RTN_UNICAST,
    ];
    body.extend_from_slice(&0u32.to_ne_bytes());
    if dst_len > 0 {
        attr(&mut body, RTA_DST, &dst.octets());
    }
    if let Some(gw) = gateway {
        attr(&mut body, RTA_GATEWAY, &gw.octets());
    }
    attr(&mut body, RTA_OIF, &index.to_ne_bytes());
    message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, seq, &body)
}

/// Reads the acknowledgement of request `seq` from `answer`: `Ok` for errno 0, the errno
/// otherwise.
pub fn parse_ack(what: &'static str, answer: &[u8], seq: u32) -> Result<(), NetlinkError> {
    let malformed = |offset| NetlinkError::Malformed { what, offset };
    let mut at = 0usize;
    while at + HEADER_LEN <= answer.len() {
        let word = |o: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(
                answer.get(at + o..at + o + 4)?.try_into().ok()?,
            ))
        };
        let len = word(0).ok_or_else(|| malformed(at))? as usize;
        let kind = u16::from_ne_bytes([answer[at + 4], answer[at + 5]]);
        let msg_seq = word(8).ok_or_else(|| malformed(at))?;
        if len < HEADER_LEN || at + len > answer.len() {
            return Err(malformed(at));
        }
        if kind == NLMSG_ERROR && msg_seq == seq {
            let errno = word(HEADER_LEN).ok_or_else(|| malformed(at + HEADER_LEN))? as i32;
            if errno == 0 {
                return Ok(());
            }
            return Err(NetlinkError::Refused {
                what,
                errno: std::io::Error::from_raw_os_error(-errno),
            });
        }
        at += (len + 3) & !3;
    }
    Err(malformed(at))
}

/// An open `NETLINK_ROUTE` socket.
#[derive(Debug)]
pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
}

impl RouteSocket {
    /// Opens the socket.
    pub fn open() -> Result<RouteSocket, NetlinkError> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| NetlinkError::Socket(e.into()))?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0))
            .map_err(|e| NetlinkError::Socket(e.into()))?;
        Ok(RouteSocket { fd, seq: 0 })
    }

    /// Sends one request built by `build(seq)` and waits for its acknowledgement.
    fn request(
        &mut self,
        what: &'static str,
        build: impl FnOnce(u32) -> Vec<u8>,
    ) -> Result<(), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let msg = build(self.seq);
        rustix::net::sendto(
            &self.fd,
            &msg,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map_err(|e| NetlinkError::Socket(e.into()))?;
        let mut buf = vec![0u8; 8192];
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut buf, RecvFlags::empty())
                .map_err(|e| NetlinkError::Socket(e.into()))?;
            match parse_ack(what, &buf[..n], self.seq) {
                Err(NetlinkError::Malformed { .. }) if n > 0 => continue,
                other => return other,
            }
        }
    }

    /// Brings interface `index` up.
    pub fn link_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        self.request("link up", |seq| link_up_message(index, seq))
    }

    /// Adds `address/prefix` to interface `index`.
    pub fn add_address(
        &mut self,
        index: u32,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        self.request("add address", |seq| {
            add_address_message(index, address, prefix, seq)
        })
    }

    /// Adds the default route through `gateway` on interface `index`.
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        self.request("add default route", |seq| {
            add_route_message(index, Ipv4Addr::UNSPECIFIED, 0, Some(gateway), seq)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_message_layout() {
        let m = add_address_message(2, Ipv4Addr::new(10, 0, 2, 15), 24, 7);
        assert_eq!(m.len(), HEADER_LEN + 8 + 3 * 8);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWADDR);
        assert_eq!(&m[16..20], &[AF_INET, 24, 0, 0]);
        // IFA_BROADCAST is the last attribute: 10.0.2.255.
        assert_eq!(&m[m.len() - 4..], &[10, 0, 2, 255]);
    }

    #[test]
    fn ack_parsing() {
        let ok = message(NLMSG_ERROR, 0, 5, &0i32.to_ne_bytes());
        parse_ack("x", &ok, 5).unwrap();
        let refused = message(NLMSG_ERROR, 0, 5, &(-17i32).to_ne_bytes());
        match parse_ack("x", &refused, 5) {
            Err(NetlinkError::Refused { errno, .. }) => assert_eq!(errno.raw_os_error(), Some(17)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_ack("x", &refused[..10], 5),
            Err(NetlinkError::Malformed { .. })
        ));
        let mut lying = refused.clone();
        lying[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(matches!(
            parse_ack("x", &lying, 5),
            Err(NetlinkError::Malformed { offset: 0, .. })
        ));
    }
}
