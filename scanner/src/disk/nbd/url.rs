//! NBD URLs, with the scheme names of libnbd's `nbd_connect_uri(3)` (the NBD project's
//! `doc/uri.md`): `nbd://HOST[:PORT][/EXPORT]` and `nbd+unix:///EXPORT?socket=PATH` are plain
//! NBD; `nbds://` and `nbds+unix://` are the same with TLS required.

use std::path::PathBuf;

use crate::error::{Error, Result};

use super::DEFAULT_PORT;

/// URL schemes: (prefix, Unix socket, TLS required).
const SCHEMES: [(&str, bool, bool); 4] = [
    ("nbd://", false, false),
    ("nbds://", false, true),
    ("nbd+unix://", true, false),
    ("nbds+unix://", true, true),
];

/// Whether `spec` names an NBD export (`nbd://`, `nbds://`, `nbd+unix://`, `nbds+unix://`)
/// rather than a file.
pub fn is_nbd_url(spec: &str) -> bool {
    SCHEMES
        .iter()
        .any(|(prefix, _, _)| spec.starts_with(prefix))
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// TCP host and port.
    Tcp {
        /// Host name or address (IPv6 without brackets).
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix domain socket.
    Unix(PathBuf),
}

/// A parsed NBD URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdUrl {
    /// The server.
    pub endpoint: Endpoint,
    /// The export name (empty: the server's default export).
    pub export: String,
    /// TLS is required (`nbds://`, `nbds+unix://`): the connection is upgraded with
    /// `NBD_OPT_STARTTLS` before anything else, and never continues in clear.
    pub tls: bool,
}

fn percent_decode(s: &str, url: &str) -> Result<String> {
    let bad = || Error::corrupt(url, 0, "bad percent escape in NBD URL");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

impl NbdUrl {
    /// Parses `nbd[s]://host[:port][/export]` or `nbd[s]+unix:///export?socket=PATH`.
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |why: &str| Error::NotFound {
            object: url.to_string(),
            detail: format!("invalid NBD URL: {why}"),
        };
        let (rest, unix, tls) = SCHEMES
            .iter()
            .find_map(|&(prefix, unix, tls)| url.strip_prefix(prefix).map(|r| (r, unix, tls)))
            .ok_or_else(|| invalid("not nbd://, nbds://, nbd+unix:// or nbds+unix://"))?;
        if unix {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let export = percent_decode(path.strip_prefix('/').unwrap_or(path), url)?;
            let socket = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("socket="))
                .ok_or_else(|| invalid("a Unix socket URL needs ?socket=PATH"))?;
            return Ok(NbdUrl {
                endpoint: Endpoint::Unix(PathBuf::from(percent_decode(socket, url)?)),
                export,
                tls,
            });
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid("unclosed [IPv6]"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| invalid("bad port"))?,
            None => DEFAULT_PORT,
        };
        Ok(NbdUrl {
            endpoint: Endpoint::Tcp {
                host: host.to_string(),
                port,
            },
            export: percent_decode(path, url)?,
            tls,
        })
    }
}
