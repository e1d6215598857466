//! A read-only NBD (Network Block Device) client as a [`BlockSource`], following the NBD
//! project's protocol description (`doc/proto.md`; wire details in [`protocol`]).
//!
//! Targets are `nbd://host[:port]/export` (port 10809 by default) and
//! `nbd+unix:///export?socket=PATH`, or `nbds://` / `nbds+unix://` for the same with TLS required
//! (libnbd's URI schemes; credentials in [`NbdTls`], the session in [`tls`]): such a connection
//! sends `NBD_OPT_STARTTLS` before any other option and never continues in clear. The export is the guest's virtual disk as the server presents
//! it (`qemu-nbd -f qcow2` exports the decoded disk): nothing inside it is probed for an image
//! format. Reads go through a small pool of connections so that parallel scans do not serialize;
//! extra connections are opened only when the server says they are consistent
//! (`NBD_FLAG_CAN_MULTI_CONN`) and accepts them promptly (`qemu-nbd` serves one connection unless
//! `--shared` says otherwise). Every (re)connection repeats the whole negotiation, TLS included.
//! Every connect, TLS handshake and read has a timeout, so a dead server fails the
//! scan instead of hanging it; `NBD_CMD_DISC` is sent when a connection is dropped.
//!
//! The other side, a read-only server exporting block sources (the manager exports a frozen
//! snapshot image this way), is [`server::ExportServer`].

pub mod protocol;
#[cfg(test)]
mod script;
pub mod server;
pub mod server_protocol;
pub mod tls;
mod url;

pub use tls::NbdTls;
pub use url::{is_nbd_url, Endpoint, NbdUrl};

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::block::{check_bounds, BlockSource};
use crate::disk::{ChainLink, DiskFormat, OpenedDisk, MAX_VIRTUAL_SIZE};
use crate::error::{Error, Result};

use protocol::{ExportInfo, TFLAG_CAN_MULTI_CONN};
use tls::TlsClient;

/// Default NBD TCP port.
pub const DEFAULT_PORT: u16 = 10809;
/// Time allowed to connect and negotiate the first connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to negotiate an additional pooled connection before concluding the server
/// serves no more connections.
pub const EXTRA_CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for any one read or write on a connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest single read request sent (servers may announce a smaller maximum).
pub const MAX_REQUEST: u32 = 32 << 20;
/// Most connections held open to one export.
pub const MAX_CONNECTIONS: usize = 4;

/// A byte stream to the server with timeouts.
trait Stream: Read + Write + Send + fmt::Debug {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()>;

    /// Ends a session layered on the stream (TLS's `close_notify`), best effort.
    fn close(&mut self) {}
}

impl Stream for TcpStream {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

impl Stream for UnixStream {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

/// One negotiated connection in the transmission phase.
#[derive(Debug)]
struct Connection {
    stream: Box<dyn Stream>,
    next_cookie: u64,
    object: String,
}

impl Connection {
    /// Connects, negotiates (with TLS first when `url` requires it: `tls` is then `Some`) and
    /// returns the connection, what the server told about the export, and for TLS a
    /// description of the session.
    fn open(
        url: &NbdUrl,
        tls: Option<&TlsClient>,
        object: &str,
        timeout: Duration,
    ) -> Result<(Self, ExportInfo, Option<String>)> {
        let deadline = Instant::now() + timeout;
        let io = |e| Error::io(object, 0, e);
        let stream: Box<dyn Stream> = match &url.endpoint {
            Endpoint::Tcp { host, port } => {
                let addrs = (host.as_str(), *port).to_socket_addrs().map_err(io)?;
                let mut last = None;
                let mut connected = None;
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            connected = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let s = connected.ok_or_else(|| {
                    io(last.unwrap_or_else(|| std::io::Error::other("host has no address")))
                })?;
                // Requests are small and answered one at a time: do not delay them.
                s.set_nodelay(true).map_err(io)?;
                Box::new(s)
            }
            Endpoint::Unix(path) => Box::new(UnixStream::connect(path).map_err(io)?),
        };
        let mut stream = stream;
        stream.set_timeouts(timeout).map_err(io)?;
        let greeting = protocol::greet(&mut stream, object)?;
        let (stream, info, description) = match (url.tls, tls) {
            (false, _) => {
                let info = protocol::negotiate(&mut stream, &url.export, greeting, object)?;
                (stream, info, None)
            }
            (true, Some(tls)) => {
                protocol::starttls(&mut stream, greeting, &url.export, object)?;
                let (mut secure, description) =
                    tls.handshake(stream, &url.endpoint, deadline, object)?;
                secure.set_timeouts(timeout).map_err(io)?;
                let info = protocol::negotiate(&mut secure, &url.export, greeting, object)
                    .map_err(|e| tls::after_handshake(e, object))?;
                (Box::new(secure) as Box<dyn Stream>, info, Some(description))
            }
            (true, None) => {
                return Err(Error::Tls {
                    object: object.to_string(),
                    failure: crate::error::TlsFailure::Credentials,
                    detail: "TLS is required but no TLS configuration was loaded".to_string(),
                })
            }
        };
        stream.set_timeouts(IO_TIMEOUT).map_err(io)?;
        let conn = Connection {
            stream,
            next_cookie: 1,
            object: object.to_string(),
        };
        Ok((conn, info, description))
    }

    /// Reads at `offset`: `Ok(Some(code))` is a server error reply (the connection stays usable).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<Option<u32>> {
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        protocol::read_at(&mut self.stream, cookie, offset, buf, &self.object)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Best effort: the server drops the connection either way.
        let _ = protocol::disconnect(&mut self.stream, self.next_cookie, &self.object);
        self.stream.close();
    }
}

#[derive(Debug)]
struct Pool {
    idle: Vec<Connection>,
    open: usize,
    max: usize,
}

/// An NBD export, read-only.
#[derive(Debug)]
pub struct NbdSource {
    name: String,
    url: NbdUrl,
    info: ExportInfo,
    tls: Option<TlsClient>,
    tls_session: Option<String>,
    pool: Mutex<Pool>,
    returned: Condvar,
}

impl NbdSource {
    /// Connects to the export named by `url` (`nbd://...`; `nbds://...` trusting the system's
    /// trust store, without a client certificate).
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with_tls(url, None)
    }

    /// Connects to the export named by `url`, with the TLS credentials `tls` for `nbds://` and
    /// `nbds+unix://` URLs (`None`: the system's trust store, no client certificate).
    /// Credentials given for a plain `nbd://` URL are refused rather than ignored: the URL's
    /// scheme decides whether TLS is required, and asking for TLS with a plain URL is a mistake.
    pub fn connect_with_tls(url: &str, tls: Option<&NbdTls>) -> Result<Self> {
        let parsed = NbdUrl::parse(url)?;
        let client = match (parsed.tls, tls) {
            (true, Some(tls)) => Some(tls.load(url)?),
            (true, None) => Some(NbdTls::default().load(url)?),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(Error::Refused {
                    object: url.to_string(),
                    detail: "TLS credentials were given for a plain nbd:// URL: use nbds:// (or \
                             nbds+unix://) to connect with TLS"
                        .to_string(),
                })
            }
        };
        let (conn, info, tls_session) =
            Connection::open(&parsed, client.as_ref(), url, CONNECT_TIMEOUT)?;
        if info.size > MAX_VIRTUAL_SIZE {
            return Err(Error::limit(
                url,
                format!(
                    "NBD export of {} bytes exceeds the {MAX_VIRTUAL_SIZE}-byte limit",
                    info.size
                ),
            ));
        }
        let max = if info.flags & TFLAG_CAN_MULTI_CONN != 0 {
            MAX_CONNECTIONS
        } else {
            1
        };
        Ok(NbdSource {
            name: url.to_string(),
            url: parsed,
            info,
            tls: client,
            tls_session,
            pool: Mutex::new(Pool {
                idle: vec![conn],
                open: 1,
                max,
            }),
            returned: Condvar::new(),
        })
    }

    /// What the server told about the export.
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes an idle connection, opens a new one if allowed, or waits for one.
    fn checkout(&self) -> Result<Connection> {
        let deadline = Instant::now() + IO_TIMEOUT + CONNECT_TIMEOUT;
        let mut pool = self.lock();
        loop {
            if let Some(c) = pool.idle.pop() {
                return Ok(c);
            }
            if pool.open < pool.max || pool.open == 0 {
                let first = pool.open == 0;
                pool.open += 1;
                drop(pool);
                let timeout = if first {
                    CONNECT_TIMEOUT
                } else {
                    EXTRA_CONNECTION_TIMEOUT
                };
                let opened = Connection::open(&self.url, self.tls.as_ref(), &self.name, timeout);
                pool = self.lock();
                match opened {
                    Ok((c, info, _)) if info.size == self.info.size => return Ok(c),
                    Ok(_) => {
                        pool.open -= 1;
                        return Err(Error::corrupt(
                            &self.name,
                            0,
                            "the export changed size between connections",
                        ));
                    }
                    Err(e) => {
                        pool.open -= 1;
                        if first || pool.open == 0 {
                            return Err(e);
                        }
                        // The server serves no more connections: share the ones we have.
                        pool.max = pool.open;
                        continue;
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::io(
                    &self.name,
                    0,
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no NBD connection free"),
                ));
            }
            pool = self
                .returned
                .wait_timeout(pool, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn checkin(&self, conn: Option<Connection>) {
        let mut pool = self.lock();
        match conn {
            Some(c) => pool.idle.push(c),
            None => pool.open = pool.open.saturating_sub(1),
        }
        drop(pool);
        self.returned.notify_one();
    }

    /// One request on a pooled connection, retried once on a fresh connection if the transport
    /// failed (a server restart, a dropped connection).
    fn request(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut attempt = 0;
        loop {
            let mut conn = self.checkout()?;
            match conn.read_at(offset, buf) {
                Ok(None) => {
                    self.checkin(Some(conn));
                    return Ok(());
                }
                Ok(Some(code)) => {
                    self.checkin(Some(conn));
                    // NBD error values are Linux errno values (EIO, EINVAL, ENOMEM, ...).
                    let code = i32::try_from(code).unwrap_or(i32::MAX);
                    return Err(Error::Io {
                        object: self.name.clone(),
                        offset,
                        source: std::io::Error::from_raw_os_error(code),
                    });
                }
                Err(e) => {
                    // The connection is out of step or gone: drop it, retry once on a new one.
                    self.checkin(None);
                    attempt += 1;
                    if attempt > 1 {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Largest aligned request length.
    fn max_request(&self) -> u64 {
        let min = u64::from(self.info.min_block);
        let max = u64::from(self.info.max_block.min(MAX_REQUEST)).max(min);
        max - max % min
    }
}

impl BlockSource for NbdSource {
    fn size(&self) -> u64 {
        self.info.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds(&self.name, offset, buf.len(), self.info.size)?;
        let min = u64::from(self.info.min_block);
        let end = offset + buf.len() as u64;
        if offset % min != 0 || end % min != 0 {
            // Widen to the server's minimum block size, then copy out the part asked for.
            let start = offset - offset % min;
            let wide_end = end.div_ceil(min).saturating_mul(min).min(self.info.size);
            let mut wide = vec![0u8; (wide_end - start) as usize];
            self.read_exact_at(start, &mut wide)?;
            let from = (offset - start) as usize;
            buf.copy_from_slice(&wide[from..from + buf.len()]);
            return Ok(());
        }
        let step = self.max_request();
        let mut done = 0u64;
        for piece in buf.chunks_mut(step as usize) {
            self.request(offset + done, piece)?;
            done += piece.len() as u64;
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Opens the NBD export `url` as a virtual disk (`nbds://` with the system's trust store).
pub fn open(url: &str) -> Result<OpenedDisk> {
    open_with_tls(url, None)
}

/// Opens the NBD export `url` as a virtual disk, with the TLS credentials `tls` for `nbds://`
/// and `nbds+unix://` URLs (see [`NbdSource::connect_with_tls`]).
pub fn open_with_tls(url: &str, tls: Option<&NbdTls>) -> Result<OpenedDisk> {
    let source = NbdSource::connect_with_tls(url, tls)?;
    let info = source.info().clone();
    let mut details = vec![
        ("export".to_string(), source.url.export.clone()),
        (
            "negotiation".to_string(),
            if info.negotiated_with_go {
                "fixed newstyle, NBD_OPT_GO"
            } else {
                "newstyle, NBD_OPT_EXPORT_NAME"
            }
            .to_string(),
        ),
        ("read-only".to_string(), info.read_only().to_string()),
        (
            "transmission flags".to_string(),
            format!("{:#06x}", info.flags),
        ),
    ];
    details.push((
        "tls".to_string(),
        source
            .tls_session
            .clone()
            .unwrap_or_else(|| "no (plain NBD)".to_string()),
    ));
    if info.negotiated_with_go {
        details.push((
            "block sizes".to_string(),
            format!(
                "min {} preferred {} max {}",
                info.min_block, info.preferred_block, info.max_block
            ),
        ));
    }
    Ok(OpenedDisk {
        chain: vec![ChainLink {
            path: url.to_string(),
            format: DiskFormat::Nbd,
            virtual_size: info.size,
        }],
        source: std::sync::Arc::new(source),
        format: DiskFormat::Nbd,
        details,
    })
}

#[cfg(test)]
mod tests;
