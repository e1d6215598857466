//! A read-only NBD server exporting [`BlockSource`]s by name, on plain threads: one accepting,
//! one per connection. The byte-level session (fixed newstyle negotiation, simple replies) is in
//! [`super::server_protocol`], after the NBD project's `doc/proto.md`.
//!
//! Exports are served in clear (`NBD_OPT_STARTTLS` is answered `NBD_REP_ERR_UNSUP`): listen on
//! an address only the readers reach, or on a Unix socket. Nothing is ever written: writes,
//! trims and zeroing are refused with `EPERM`.
//!
//! A client cannot hold the server: at most [`ServerOptions::max_connections`] connections are
//! served (further ones are closed at once), the negotiation must end within
//! [`ServerOptions::negotiation_timeout`], the next request must arrive within
//! [`ServerOptions::idle_timeout`] and each request be answered within
//! [`ServerOptions::request_timeout`] (deadlines, not per-read timeouts, so a client trickling
//! a byte at a time is cut off too). [`ExportServer::stop`] (or dropping the server) closes the
//! listener, shuts every connection down and joins the threads, waiting at most
//! [`STOP_WAIT`] for a thread stuck in a read of the source.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::protocol::MAX_EXPORT_NAME;
use super::server_protocol::{Session, Step};
use crate::block::SharedSource;
use crate::error::{Error, Result};

/// How often the accepting thread looks for new connections and for a stop request.
pub const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// Longest [`ExportServer::stop`] waits for its threads before leaving them detached (a thread
/// can only be stuck in a read of the exported source; its socket is already shut down).
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// Limits of an [`ExportServer`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Time from accepting a connection to the end of its negotiation.
    pub negotiation_timeout: Duration,
    /// Time a negotiated connection may stay silent before its next request.
    pub idle_timeout: Duration,
    /// Time to receive one request's payload and send its reply.
    pub request_timeout: Duration,
    /// Most connections served at once; further ones are closed as soon as they are accepted.
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            negotiation_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(120),
            max_connections: 64,
        }
    }
}

/// Counters of an [`ExportServer`], for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    /// Bytes sent to clients in successful read replies.
    pub bytes_read: u64,
    /// Connections open now.
    pub open_connections: usize,
    /// Connections accepted and served since the start.
    pub accepted: u64,
    /// Connections closed at once because [`ServerOptions::max_connections`] were open.
    pub turned_away: u64,
}

/// A client connection.
#[derive(Debug)]
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    fn try_clone(&self) -> std::io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        // Already closed by the peer is fine.
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    fn prepare(&self) -> std::io::Result<()> {
        match self {
            Socket::Tcp(s) => {
                s.set_nonblocking(false)?;
                // Replies go out whole; do not hold the last segment back.
                s.set_nodelay(true)
            }
            Socket::Unix(s) => s.set_nonblocking(false),
        }
    }

    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        match self {
            Socket::Tcp(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
            Socket::Unix(s) => {
                s.set_read_timeout(Some(t))?;
                s.set_write_timeout(Some(t))
            }
        }
    }

    fn peer(&self) -> String {
        match self {
            Socket::Tcp(s) => match s.peer_addr() {
                Ok(a) => format!("NBD client {a}"),
                Err(_) => "NBD client".to_string(),
            },
            Socket::Unix(_) => "NBD client (unix socket)".to_string(),
        }
    }
}

/// A socket whose every read and write must end before a deadline.
#[derive(Debug)]
struct DeadlineStream {
    socket: Socket,
    deadline: Instant,
}

impl DeadlineStream {
    /// Arms the socket's timeouts with the time left, or fails when none is.
    fn arm(&self) -> std::io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "NBD client too slow",
            ));
        }
        self.socket.set_timeouts(left)
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm()?;
        match &mut self.socket {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm()?;
        match &mut self.socket {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> std::io::Result<Socket> {
        Ok(match self {
            Listener::Tcp(l) => Socket::Tcp(l.accept()?.0),
            Listener::Unix(l) => Socket::Unix(l.accept()?.0),
        })
    }
}

/// Connections being served, and whether the server is stopping (both under one lock, so that
/// no connection is admitted after [`ExportServer::stop`] shut the others down).
#[derive(Debug, Default)]
struct Live {
    stopping: bool,
    next_id: u64,
    sockets: std::collections::HashMap<u64, Socket>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    exports: Vec<(String, SharedSource)>,
    options: ServerOptions,
    stopping: AtomicBool,
    live: Mutex<Live>,
    bytes_read: AtomicU64,
    accepted: AtomicU64,
    turned_away: AtomicU64,
}

impl Shared {
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The Unix socket file the server created, removed on stop if it is still that file.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

/// A read-only NBD server (fixed newstyle) exporting named block sources, on its own threads.
#[derive(Debug)]
pub struct ExportServer {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    local_addr: Option<SocketAddr>,
    socket_file: Option<SocketFile>,
}

fn check_exports(exports: &[(String, SharedSource)]) -> Result<()> {
    for (i, (name, _)) in exports.iter().enumerate() {
        if name.len() > MAX_EXPORT_NAME || name.contains('\0') {
            return Err(Error::limit(
                format!("NBD export {:?}", &name[..name.len().min(64)]),
                format!("export names are at most {MAX_EXPORT_NAME} bytes without NUL"),
            ));
        }
        if exports[..i].iter().any(|(n, _)| n == name) {
            return Err(Error::Refused {
                object: format!("NBD export {name:?}"),
                detail: "exported twice under the same name".to_string(),
            });
        }
    }
    Ok(())
}

impl ExportServer {
    /// Listens on TCP `addr` (port 0 allowed) and serves `exports` until stopped or dropped.
    pub fn start_tcp(addr: SocketAddr, exports: Vec<(String, SharedSource)>) -> Result<Self> {
        Self::start_tcp_with(addr, exports, ServerOptions::default())
    }

    /// [`ExportServer::start_tcp`] with explicit limits.
    pub fn start_tcp_with(
        addr: SocketAddr,
        exports: Vec<(String, SharedSource)>,
        options: ServerOptions,
    ) -> Result<Self> {
        check_exports(&exports)?;
        let object = format!("NBD server on {addr}");
        let listener = TcpListener::bind(addr).map_err(|e| Error::io(&object, 0, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io(&object, 0, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(&object, 0, e))?;
        Self::start(Listener::Tcp(listener), Some(local), None, exports, options)
    }

    /// Same on a Unix socket at `path` (created 0600; removed on stop). A stale socket file
    /// that nobody listens on is replaced; any other existing file is refused.
    pub fn start_unix(path: &Path, exports: Vec<(String, SharedSource)>) -> Result<Self> {
        Self::start_unix_with(path, exports, ServerOptions::default())
    }

    /// [`ExportServer::start_unix`] with explicit limits.
    pub fn start_unix_with(
        path: &Path,
        exports: Vec<(String, SharedSource)>,
        options: ServerOptions,
    ) -> Result<Self> {
        check_exports(&exports)?;
        let object = path.display().to_string();
        let io = |e| Error::io(&object, 0, e);
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            let stale = meta.file_type().is_socket() && UnixStream::connect(path).is_err();
            if !stale {
                return Err(Error::Refused {
                    object: object.clone(),
                    detail: "exists (and is not a stale socket): not replaced".to_string(),
                });
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        let made = (|| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            listener.set_nonblocking(true)?;
            std::fs::symlink_metadata(path)
        })();
        let meta = match made {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(io(e));
            }
        };
        let file = SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        Self::start(Listener::Unix(listener), None, Some(file), exports, options)
    }

    fn start(
        listener: Listener,
        local_addr: Option<SocketAddr>,
        socket_file: Option<SocketFile>,
        exports: Vec<(String, SharedSource)>,
        options: ServerOptions,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            exports,
            options,
            stopping: AtomicBool::new(false),
            live: Mutex::new(Live::default()),
            bytes_read: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            turned_away: AtomicU64::new(0),
        });
        let for_thread = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("nbd-accept".to_string())
            .spawn(move || accept_loop(&for_thread, &listener));
        let acceptor = match spawned {
            Ok(h) => h,
            Err(e) => {
                if let Some(f) = &socket_file {
                    let _ = std::fs::remove_file(&f.path);
                }
                return Err(Error::io("NBD server", 0, e));
            }
        };
        Ok(ExportServer {
            shared,
            acceptor: Some(acceptor),
            local_addr,
            socket_file,
        })
    }

    /// Where it listens (for TCP: the bound address; `None` for a Unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Bytes read by clients so far, and connections open now (for logs/tests).
    pub fn stats(&self) -> ServerStats {
        let open = self.shared.live().sockets.len();
        ServerStats {
            bytes_read: self.shared.bytes_read.load(Ordering::Relaxed),
            open_connections: open,
            accepted: self.shared.accepted.load(Ordering::Relaxed),
            turned_away: self.shared.turned_away.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, shuts down every open connection, joins all threads (waiting at most
    /// [`STOP_WAIT`]), removes a Unix socket file.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        let threads = {
            let mut live = self.shared.live();
            live.stopping = true;
            self.shared.stopping.store(true, Ordering::SeqCst);
            for s in live.sockets.values() {
                s.shutdown();
            }
            std::mem::take(&mut live.threads)
        };
        let deadline = Instant::now() + STOP_WAIT;
        join_until(acceptor, deadline);
        // The acceptor may have admitted one more connection before it saw the flag; it was
        // registered under the lock, so it is shut down above or refused.
        let late = std::mem::take(&mut self.shared.live().threads);
        for t in threads.into_iter().chain(late) {
            join_until(t, deadline);
        }
        if let Some(f) = self.socket_file.take() {
            // Only the file this server created: a new one at the same path is someone else's.
            if std::fs::symlink_metadata(&f.path)
                .is_ok_and(|m| m.dev() == f.dev && m.ino() == f.ino)
            {
                let _ = std::fs::remove_file(&f.path);
            }
        }
    }
}

impl Drop for ExportServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Joins `t` if it ends before `deadline`; otherwise leaves it detached.
fn join_until(t: JoinHandle<()>, deadline: Instant) {
    while !t.is_finished() {
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = t.join();
}

fn accept_loop(shared: &Arc<Shared>, listener: &Listener) {
    while !shared.stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok(socket) => admit(shared, socket),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Nothing pending (or a transient failure such as running out of descriptors):
            // look again shortly, and forget the threads that ended meanwhile.
            Err(_) => {
                shared.live().threads.retain(|t| !t.is_finished());
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
    // Dropping the listener closes it: new connections are refused from here on.
}

/// Registers and starts serving `socket`, or closes it if the server is full or stopping.
fn admit(shared: &Arc<Shared>, socket: Socket) {
    let mut live = shared.live();
    if live.stopping {
        return;
    }
    if live.sockets.len() >= shared.options.max_connections {
        shared.turned_away.fetch_add(1, Ordering::Relaxed);
        socket.shutdown();
        return;
    }
    let Ok(handle) = socket.try_clone() else {
        return;
    };
    if socket.prepare().is_err() {
        return;
    }
    let id = live.next_id;
    live.next_id = live.next_id.wrapping_add(1);
    live.sockets.insert(id, handle);
    let for_thread = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name(format!("nbd-conn-{id}"))
        .spawn(move || {
            let _registered = Registered {
                shared: &for_thread,
                id,
            };
            serve_connection(&for_thread, socket);
        });
    match spawned {
        Ok(t) => {
            live.threads.push(t);
            shared.accepted.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            if let Some(s) = live.sockets.remove(&id) {
                s.shutdown();
            }
        }
    }
}

/// Removes a connection from the live set when its thread ends, however it ends.
struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.shared.live().sockets.remove(&self.id) {
            s.shutdown();
        }
    }
}

/// The instant `d` from now; a timeout too large to represent means a year.
fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// One connection: negotiation under one deadline, then requests each under their own.
fn serve_connection(shared: &Shared, socket: Socket) {
    let peer = socket.peer();
    let opts = &shared.options;
    let mut stream = DeadlineStream {
        socket,
        deadline: deadline_after(opts.negotiation_timeout),
    };
    let mut session = Session::new(&shared.exports, &shared.bytes_read, peer);
    // Any error ends the connection; the client sees it closed, as the protocol prescribes for
    // violations and for an unknown `NBD_OPT_EXPORT_NAME`.
    if session.greet(&mut stream).is_err() {
        return;
    }
    loop {
        match session.option(&mut stream) {
            Ok(Step::Continue) => {}
            Ok(Step::Transmission) => break,
            Ok(Step::Close) | Err(_) => return,
        }
    }
    while !shared.stopping.load(Ordering::SeqCst) {
        stream.deadline = deadline_after(opts.idle_timeout);
        let Ok(request) = session.read_request(&mut stream) else {
            return;
        };
        stream.deadline = deadline_after(opts.request_timeout);
        match session.answer(&mut stream, &request) {
            Ok(Step::Continue) => {}
            Ok(_) | Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests;
