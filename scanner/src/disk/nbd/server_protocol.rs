//! The NBD wire protocol, server side, read-only, following the NBD project's protocol
//! description (`doc/proto.md`): "Fixed newstyle negotiation" (greeting, client flags, option
//! haggling and its termination), "Option types" (`NBD_OPT_EXPORT_NAME`, `NBD_OPT_ABORT`,
//! `NBD_OPT_LIST`, `NBD_OPT_INFO`, `NBD_OPT_GO`; everything else, `NBD_OPT_STARTTLS` and
//! `NBD_OPT_STRUCTURED_REPLY` included, is answered `NBD_REP_ERR_UNSUP`), "Information types"
//! (`NBD_INFO_EXPORT`, `NBD_INFO_NAME`, `NBD_INFO_BLOCK_SIZE`), "Transmission" (requests and
//! simple replies only) and "Request types" (`NBD_CMD_READ`, `NBD_CMD_DISC`; writes are refused
//! with `EPERM`, anything else with `EINVAL`).
//!
//! The inverse of the client in [`super::protocol`], on any `Read + Write`, so that it is tested
//! and fuzzed on bytes. Every length the client sends is bounded before anything is allocated,
//! every offset is checked against the export's size with checked arithmetic, and nothing here
//! panics: a client that breaks a mandatory rule of the protocol gets its connection closed
//! (an `Err`), one that asks for something refused gets an error reply and may go on.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use super::protocol::{
    io_err, read_array, read_u32, read_u64, CLIENT_FLAG_FIXED_NEWSTYLE, CLIENT_FLAG_NO_ZEROES,
    CMD_DISC, CMD_READ, CMD_TRIM, CMD_WRITE, CMD_WRITE_ZEROES, FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES,
    IHAVEOPT, INFO_BLOCK_SIZE, INFO_EXPORT, INFO_NAME, MAX_EXPORT_NAME, NBD_EINVAL, NBD_EIO,
    NBD_EPERM, NBD_MAGIC, OPTION_REPLY_MAGIC, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO,
    OPT_LIST, REP_ACK, REP_ERR_INVALID, REP_ERR_UNKNOWN, REP_ERR_UNSUP, REP_INFO, REP_SERVER,
    REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, TFLAG_CAN_MULTI_CONN, TFLAG_HAS_FLAGS, TFLAG_READ_ONLY,
};
use crate::block::SharedSource;
use crate::error::{Error, Result};

/// Longest option data accepted; a longer option closes the connection (the longest valid one,
/// `NBD_OPT_GO` with a 4096-byte name and every information type, is far shorter).
pub const MAX_OPTION_LENGTH: u32 = 64 * 1024;
/// Most options accepted in one negotiation before the client is taken for a denial of service.
pub const MAX_OPTIONS: usize = 256;
/// Minimum block size announced: any byte-granular read is served.
pub const MIN_BLOCK: u32 = 1;
/// Preferred block size announced.
pub const PREFERRED_BLOCK: u32 = 4096;
/// Largest request announced and accepted (a longer read is `EINVAL`; a longer write payload
/// cannot be skipped safely and closes the connection).
pub const MAX_BLOCK: u32 = 32 << 20;
/// Reads are served in pieces of this size: a read error in the first piece is an `EIO` reply,
/// one in a later piece (after the reply header went out) closes the connection, as the
/// protocol requires for simple replies. Also the most a connection buffers.
pub const REPLY_CHUNK: usize = 1 << 20;
/// Transmission flags of every export: read-only, and consistent across connections (the
/// sources are immutable and uncached), so clients may read over several at once.
pub const EXPORT_FLAGS: u16 = TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_CAN_MULTI_CONN;

/// What the connection does after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Go on in the same phase.
    Continue,
    /// Negotiation ended with an export selected: the transmission phase begins.
    Transmission,
    /// The client ended the session cleanly (`NBD_OPT_ABORT`, `NBD_CMD_DISC`): close.
    Close,
}

/// One transmission request as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags (`NBD_CMD_FLAG_*`).
    pub flags: u16,
    /// Command type (`NBD_CMD_*`).
    pub command: u16,
    /// The client's handle, echoed in the reply.
    pub cookie: u64,
    /// Byte offset in the export.
    pub offset: u64,
    /// Length in bytes (of the range, or of the payload for a write).
    pub length: u32,
}

/// The server's side of one connection: negotiation state, then the selected export.
pub struct Session<'a> {
    exports: &'a [(String, SharedSource)],
    bytes_read: &'a AtomicU64,
    peer: String,
    no_zeroes: bool,
    options: usize,
    export: Option<&'a SharedSource>,
    chunk: Vec<u8>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("options", &self.options)
            .field("export", &self.export.map(|e| e.name()))
            .finish()
    }
}

fn write_all<S: Write>(s: &mut S, peer: &str, bytes: &[u8]) -> Result<()> {
    s.write_all(bytes).map_err(|e| io_err(peer, e))
}

fn flush<S: Write>(s: &mut S, peer: &str) -> Result<()> {
    s.flush().map_err(|e| io_err(peer, e))
}

/// A violation of a mandatory rule by the client: the connection is closed.
fn violation(peer: &str, detail: impl Into<String>) -> Error {
    Error::corrupt(peer, 0, format!("NBD client: {}", detail.into()))
}

impl<'a> Session<'a> {
    /// A session serving `exports` to the client `peer` (named in errors), adding the bytes it
    /// sends in read replies to `bytes_read`.
    pub fn new(
        exports: &'a [(String, SharedSource)],
        bytes_read: &'a AtomicU64,
        peer: impl Into<String>,
    ) -> Self {
        Session {
            exports,
            bytes_read,
            peer: peer.into(),
            no_zeroes: false,
            options: 0,
            export: None,
            chunk: Vec::new(),
        }
    }

    /// The export selected by the negotiation, once it ended.
    pub fn export(&self) -> Option<&'a SharedSource> {
        self.export
    }

    fn find(&self, name: &[u8]) -> Option<&'a SharedSource> {
        self.exports
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, s)| s)
    }

    /// Sends the greeting (fixed newstyle, no zeroes) and reads the client's flags; unknown
    /// client flags close the connection, as the protocol requires.
    pub fn greet<S: Read + Write>(&mut self, s: &mut S) -> Result<()> {
        let mut msg = [0u8; 18];
        msg[0..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
        msg[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
        msg[16..18].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
        write_all(s, &self.peer, &msg)?;
        flush(s, &self.peer)?;
        let flags = read_u32(s, &self.peer)?;
        if flags & !(CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES) != 0 {
            return Err(violation(
                &self.peer,
                format!("unknown client flags {flags:#x}"),
            ));
        }
        // Fixed newstyle is honoured even from a client that did not set its flag (the protocol
        // allows it): it only changes how unknown options are answered.
        self.no_zeroes = flags & CLIENT_FLAG_NO_ZEROES != 0;
        Ok(())
    }

    fn option_reply<S: Write>(
        &self,
        s: &mut S,
        option: u32,
        reply: u32,
        data: &[u8],
    ) -> Result<()> {
        // Replies are built from bounded names and short constant messages.
        let len = u32::try_from(data.len()).map_err(|_| violation(&self.peer, "reply too long"))?;
        let mut msg = Vec::with_capacity(20 + data.len());
        msg.extend_from_slice(&OPTION_REPLY_MAGIC.to_be_bytes());
        msg.extend_from_slice(&option.to_be_bytes());
        msg.extend_from_slice(&reply.to_be_bytes());
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(data);
        write_all(s, &self.peer, &msg)
    }

    /// Reads and answers one option of the negotiation.
    pub fn option<S: Read + Write>(&mut self, s: &mut S) -> Result<Step> {
        let magic = read_u64(s, &self.peer)?;
        if magic != IHAVEOPT {
            return Err(violation(
                &self.peer,
                format!("option magic {magic:#x}, not IHAVEOPT"),
            ));
        }
        let option = read_u32(s, &self.peer)?;
        let len = read_u32(s, &self.peer)?;
        if len > MAX_OPTION_LENGTH {
            return Err(violation(
                &self.peer,
                format!("option {option} of {len} bytes (at most {MAX_OPTION_LENGTH})"),
            ));
        }
        self.options += 1;
        if self.options > MAX_OPTIONS {
            return Err(violation(
                &self.peer,
                format!("more than {MAX_OPTIONS} options"),
            ));
        }
        // Bounded by MAX_OPTION_LENGTH above.
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data).map_err(|e| io_err(&self.peer, e))?;
        let step = match option {
            OPT_EXPORT_NAME => self.export_name(s, &data)?,
            OPT_ABORT => {
                // The client may already have closed: the acknowledgement is best effort.
                let _ = self
                    .option_reply(s, option, REP_ACK, &[])
                    .and_then(|()| flush(s, &self.peer));
                return Ok(Step::Close);
            }
            OPT_LIST => {
                if data.is_empty() {
                    for (name, _) in self.exports {
                        let mut d = Vec::with_capacity(4 + name.len());
                        // Export names are at most MAX_EXPORT_NAME bytes (checked by the server).
                        d.extend_from_slice(&(name.len() as u32).to_be_bytes());
                        d.extend_from_slice(name.as_bytes());
                        self.option_reply(s, option, REP_SERVER, &d)?;
                    }
                    self.option_reply(s, option, REP_ACK, &[])?;
                } else {
                    self.option_reply(s, option, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")?;
                }
                Step::Continue
            }
            OPT_INFO | OPT_GO => self.info_or_go(s, option, &data)?,
            _ => {
                // STARTTLS (exports are served in clear), STRUCTURED_REPLY (simple replies
                // only), metadata contexts, extended headers and anything unknown.
                self.option_reply(s, option, REP_ERR_UNSUP, b"not supported by this server")?;
                Step::Continue
            }
        };
        flush(s, &self.peer)?;
        Ok(step)
    }

    /// `NBD_OPT_EXPORT_NAME`: no reply is possible on failure, so an unknown export closes.
    fn export_name<S: Write>(&mut self, s: &mut S, name: &[u8]) -> Result<Step> {
        let Some(export) = (name.len() <= MAX_EXPORT_NAME)
            .then(|| self.find(name))
            .flatten()
        else {
            return Err(Error::NotFound {
                object: self.peer.clone(),
                detail: format!(
                    "NBD client asked for export {:?}, which is not served",
                    String::from_utf8_lossy(&name[..name.len().min(256)])
                ),
            });
        };
        let mut msg = Vec::with_capacity(10 + 124);
        msg.extend_from_slice(&export.size().to_be_bytes());
        msg.extend_from_slice(&EXPORT_FLAGS.to_be_bytes());
        if !self.no_zeroes {
            msg.extend_from_slice(&[0u8; 124]);
        }
        write_all(s, &self.peer, &msg)?;
        self.export = Some(export);
        Ok(Step::Transmission)
    }

    /// `NBD_OPT_INFO` and `NBD_OPT_GO`: name length, name, count of information requests and
    /// the requests; the export's size and flags always, block sizes and name when asked.
    fn info_or_go<S: Write>(&mut self, s: &mut S, option: u32, data: &[u8]) -> Result<Step> {
        let parsed = parse_info_request(data);
        let Some((name, requests)) = parsed else {
            self.option_reply(s, option, REP_ERR_INVALID, b"malformed information request")?;
            return Ok(Step::Continue);
        };
        let Some(export) = self.find(name) else {
            self.option_reply(s, option, REP_ERR_UNKNOWN, b"no such export")?;
            return Ok(Step::Continue);
        };
        let mut info = Vec::with_capacity(12);
        info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
        info.extend_from_slice(&export.size().to_be_bytes());
        info.extend_from_slice(&EXPORT_FLAGS.to_be_bytes());
        self.option_reply(s, option, REP_INFO, &info)?;
        let asked = |kind: u16| {
            requests
                .chunks_exact(2)
                .any(|r| u16::from_be_bytes([r[0], r[1]]) == kind)
        };
        if asked(INFO_BLOCK_SIZE) {
            let mut bs = Vec::with_capacity(14);
            bs.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
            for v in [MIN_BLOCK, PREFERRED_BLOCK, MAX_BLOCK] {
                bs.extend_from_slice(&v.to_be_bytes());
            }
            self.option_reply(s, option, REP_INFO, &bs)?;
        }
        if asked(INFO_NAME) {
            let mut n = Vec::with_capacity(2 + name.len());
            n.extend_from_slice(&INFO_NAME.to_be_bytes());
            n.extend_from_slice(name);
            self.option_reply(s, option, REP_INFO, &n)?;
        }
        self.option_reply(s, option, REP_ACK, &[])?;
        if option == OPT_GO {
            self.export = Some(export);
            Ok(Step::Transmission)
        } else {
            Ok(Step::Continue)
        }
    }

    /// Reads one request header of the transmission phase (what the connection waits for
    /// between requests).
    pub fn read_request<S: Read>(&mut self, s: &mut S) -> Result<Request> {
        let h: [u8; 28] = read_array(s, &self.peer)?;
        let field = |at: usize, n: usize| {
            h[at..at + n]
                .iter()
                .fold(0u64, |v, b| v << 8 | u64::from(*b))
        };
        let magic = field(0, 4);
        if magic != u64::from(REQUEST_MAGIC) {
            return Err(violation(&self.peer, format!("request magic {magic:#x}")));
        }
        // Each field is at most as wide as its type.
        Ok(Request {
            flags: field(4, 2) as u16,
            command: field(6, 2) as u16,
            cookie: field(8, 8),
            offset: field(16, 8),
            length: field(24, 4) as u32,
        })
    }

    fn simple_reply<S: Write>(&self, s: &mut S, cookie: u64, error: u32) -> Result<()> {
        write_all(s, &self.peer, &simple_reply_header(cookie, error))
    }

    /// Answers `req` (reading and dropping a write's payload first).
    pub fn answer<S: Read + Write>(&mut self, s: &mut S, req: &Request) -> Result<Step> {
        let Some(export) = self.export else {
            return Err(violation(
                &self.peer,
                "request before an export was selected",
            ));
        };
        match req.command {
            CMD_READ => self.read(s, export, req)?,
            CMD_DISC => return Ok(Step::Close),
            CMD_WRITE => {
                if req.length > MAX_BLOCK {
                    return Err(violation(
                        &self.peer,
                        format!("write payload of {} bytes", req.length),
                    ));
                }
                let want = u64::from(req.length);
                let got = std::io::copy(&mut Read::by_ref(s).take(want), &mut std::io::sink())
                    .map_err(|e| io_err(&self.peer, e))?;
                if got != want {
                    return Err(violation(&self.peer, "write payload cut short"));
                }
                self.simple_reply(s, req.cookie, NBD_EPERM)?;
            }
            CMD_TRIM | CMD_WRITE_ZEROES => self.simple_reply(s, req.cookie, NBD_EPERM)?,
            // Flush, cache, block status and anything else: not offered by the export's flags.
            _ => self.simple_reply(s, req.cookie, NBD_EINVAL)?,
        }
        flush(s, &self.peer)?;
        Ok(Step::Continue)
    }

    fn read<S: Write>(&mut self, s: &mut S, export: &SharedSource, req: &Request) -> Result<()> {
        let in_range = req
            .offset
            .checked_add(u64::from(req.length))
            .is_some_and(|end| end <= export.size());
        // No command flag is offered for reads (FUA and DF need flags this export lacks).
        if req.flags != 0 || req.length == 0 || req.length > MAX_BLOCK || !in_range {
            return self.simple_reply(s, req.cookie, NBD_EINVAL);
        }
        let total = req.length as usize;
        let first = total.min(REPLY_CHUNK);
        // The reply header and the first piece go out in one write: [header | data].
        let need = SIMPLE_REPLY_LEN + first;
        if self.chunk.len() < need {
            self.chunk.resize(need, 0);
        }
        let (header, body) = self.chunk.split_at_mut(SIMPLE_REPLY_LEN);
        if export
            .read_exact_at(req.offset, &mut body[..first])
            .is_err()
        {
            return self.simple_reply(s, req.cookie, NBD_EIO);
        }
        header.copy_from_slice(&simple_reply_header(req.cookie, 0));
        write_all(s, &self.peer, &self.chunk[..need])?;
        let mut done = first;
        while done < total {
            let n = (total - done).min(REPLY_CHUNK);
            // In range: offset + length was checked against the size above.
            let at = req.offset + done as u64;
            let body = &mut self.chunk[SIMPLE_REPLY_LEN..SIMPLE_REPLY_LEN + n];
            export.read_exact_at(at, body).map_err(|e| {
                // The header promised data: only closing the connection is left.
                violation(
                    &self.peer,
                    format!("read failed after the reply began: {e}"),
                )
            })?;
            write_all(s, &self.peer, body)?;
            done += n;
        }
        self.bytes_read
            .fetch_add(u64::from(req.length), Ordering::Relaxed);
        Ok(())
    }
}

/// Length of a simple reply header.
const SIMPLE_REPLY_LEN: usize = 16;

/// A simple reply header: magic, error, the request's handle.
fn simple_reply_header(cookie: u64, error: u32) -> [u8; SIMPLE_REPLY_LEN] {
    let mut msg = [0u8; SIMPLE_REPLY_LEN];
    msg[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    msg[4..8].copy_from_slice(&error.to_be_bytes());
    msg[8..16].copy_from_slice(&cookie.to_be_bytes());
    msg
}

/// Splits `NBD_OPT_INFO`/`NBD_OPT_GO` data into the export name and the information requests
/// (2 bytes each); `None` if the lengths do not add up exactly or the name is too long.
fn parse_info_request(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let name_len = usize::try_from(u32::from_be_bytes(data.get(0..4)?.try_into().ok()?)).ok()?;
    if name_len > MAX_EXPORT_NAME {
        return None;
    }
    let rest = data.get(4..)?;
    let name = rest.get(..name_len)?;
    let rest = rest.get(name_len..)?;
    let count = usize::from(u16::from_be_bytes(rest.get(0..2)?.try_into().ok()?));
    let requests = rest.get(2..)?;
    (requests.len() == count.checked_mul(2)?).then_some((name, requests))
}

/// Runs a whole session on `s` without timeouts (tests and fuzzing; the server adds deadlines
/// between the steps): greeting, negotiation, then requests until the client disconnects.
pub fn serve<S: Read + Write>(
    s: &mut S,
    exports: &[(String, SharedSource)],
    bytes_read: &AtomicU64,
    peer: &str,
) -> Result<()> {
    let mut session = Session::new(exports, bytes_read, peer);
    session.greet(s)?;
    loop {
        match session.option(s)? {
            Step::Continue => {}
            Step::Transmission => break,
            Step::Close => return Ok(()),
        }
    }
    loop {
        let req = session.read_request(s)?;
        if session.answer(s, &req)? == Step::Close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
