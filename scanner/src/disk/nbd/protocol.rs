//! The NBD wire protocol, client side, following the NBD project's protocol description
//! (`doc/proto.md`): sections "Fixed newstyle negotiation", "Option types" (`NBD_OPT_GO`,
//! `NBD_OPT_EXPORT_NAME`, `NBD_OPT_STARTTLS`), "TLS support" (the upgrade; the TLS session
//! itself is in `tls`), "Information types" (`NBD_INFO_EXPORT`, `NBD_INFO_BLOCK_SIZE`),
//! "Transmission" (request and simple reply messages) and "Request types" (`NBD_CMD_READ`,
//! `NBD_CMD_DISC`).
//!
//! The constants are shared with the server side (`server_protocol`).
//!
//! Everything here works on any `Read + Write`, so the parser is tested and fuzzed on bytes. Only
//! reads and the disconnect request are ever sent: no write, trim or flush command exists here.
//! Every length the server sends is bounded before anything is allocated.

use std::io::{Read, Write};

use crate::error::{Error, Result, TlsFailure};

/// `NBDMAGIC`: first 8 bytes the server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle negotiation magic (and the prefix of every option request).
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Oldstyle negotiation magic (not supported: no export names, obsolete).
pub const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;
/// Magic of option replies.
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of transmission requests.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of simple replies.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of structured replies (never negotiated by this client).
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flag: the server supports fixed newstyle negotiation.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle negotiation.
pub const CLIENT_FLAG_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: the server must omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const CLIENT_FLAG_NO_ZEROES: u32 = 1 << 1;
/// Transmission flag: flags are valid.
pub const TFLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: the export is read-only.
pub const TFLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: several connections see consistent data.
pub const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

/// Option: select the export and end negotiation (no reply on failure but a closed socket).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: end the negotiation (the server acknowledges, then both close).
pub const OPT_ABORT: u32 = 2;
/// Option: list the exports (one `NBD_REP_SERVER` each, then `NBD_REP_ACK`).
pub const OPT_LIST: u32 = 3;
/// Option: upgrade the connection to TLS.
pub const OPT_STARTTLS: u32 = 5;
/// Option: information about an export without selecting it.
pub const OPT_INFO: u32 = 6;
/// Option: select the export with replies (information and errors).
pub const OPT_GO: u32 = 7;
/// Option: use structured replies in the transmission phase.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option reply: done.
pub const REP_ACK: u32 = 1;
/// Option reply: the name of one export (to `NBD_OPT_LIST`).
pub const REP_SERVER: u32 = 2;
/// Option reply: information about the export.
pub const REP_INFO: u32 = 3;
/// Option reply error bit.
pub const REP_FLAG_ERROR: u32 = 1 << 31;
/// Option reply error: the option is not supported.
pub const REP_ERR_UNSUP: u32 = REP_FLAG_ERROR | 1;
/// Option reply error: the option is known but forbidden by the server's policy.
pub const REP_ERR_POLICY: u32 = REP_FLAG_ERROR | 2;
/// Option reply error: the option's data is malformed.
pub const REP_ERR_INVALID: u32 = REP_FLAG_ERROR | 3;
/// Option reply error: TLS is required (the client must send `NBD_OPT_STARTTLS` first).
pub const REP_ERR_TLS_REQD: u32 = REP_FLAG_ERROR | 5;
/// Option reply error: no such export.
pub const REP_ERR_UNKNOWN: u32 = REP_FLAG_ERROR | 6;
/// Option reply error: the server is shutting down.
pub const REP_ERR_SHUTDOWN: u32 = REP_FLAG_ERROR | 7;
/// Information type: export size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Information type: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// Information type: a human-readable description of the export.
pub const INFO_DESCRIPTION: u16 = 2;
/// Information type: block size constraints.
pub const INFO_BLOCK_SIZE: u16 = 3;
/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write (its payload follows the request).
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect.
pub const CMD_DISC: u16 = 2;
/// Command: flush written data to stable storage.
pub const CMD_FLUSH: u16 = 3;
/// Command: discard a range.
pub const CMD_TRIM: u16 = 4;
/// Command: write zeroes to a range (no payload).
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Transmission error: operation not permitted (a write to a read-only export).
pub const NBD_EPERM: u32 = 1;
/// Transmission error: input/output error.
pub const NBD_EIO: u32 = 5;
/// Transmission error: out of memory.
pub const NBD_ENOMEM: u32 = 12;
/// Transmission error: invalid request (bad range, length, flags or command).
pub const NBD_EINVAL: u32 = 22;
/// Transmission error: no space left.
pub const NBD_ENOSPC: u32 = 28;
/// Transmission error: the server is shutting down.
pub const NBD_ESHUTDOWN: u32 = 108;

/// Longest option reply payload accepted (descriptions and messages are short).
pub const MAX_OPTION_REPLY: u32 = 64 * 1024;
/// Most option replies accepted for one `NBD_OPT_GO` or `NBD_OPT_STARTTLS`.
pub const MAX_OPTION_REPLIES: usize = 64;
/// Longest export name sent (the protocol's limit is 4096 bytes).
pub const MAX_EXPORT_NAME: usize = 4096;
/// Largest minimum block size accepted (the protocol caps it at 64 KiB).
pub const MAX_MIN_BLOCK: u32 = 64 * 1024;

/// What the server told about the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags (`TFLAG_*`).
    pub flags: u16,
    /// Minimum block size: requests are aligned to it.
    pub min_block: u32,
    /// Preferred block size.
    pub preferred_block: u32,
    /// Largest request payload the server accepts.
    pub max_block: u32,
    /// How the export was selected: `NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME`.
    pub negotiated_with_go: bool,
}

impl ExportInfo {
    /// Whether the server marked the export read-only.
    pub fn read_only(&self) -> bool {
        self.flags & TFLAG_READ_ONLY != 0
    }
}

pub(super) fn io_err(object: &str, e: std::io::Error) -> Error {
    Error::io(object, 0, e)
}

fn proto(object: &str, detail: impl Into<String>) -> Error {
    Error::corrupt(object, 0, format!("NBD protocol: {}", detail.into()))
}

pub(super) fn read_array<const N: usize>(s: &mut impl Read, object: &str) -> Result<[u8; N]> {
    let mut b = [0u8; N];
    s.read_exact(&mut b).map_err(|e| io_err(object, e))?;
    Ok(b)
}

pub(super) fn read_u16(s: &mut impl Read, object: &str) -> Result<u16> {
    Ok(u16::from_be_bytes(read_array(s, object)?))
}

pub(super) fn read_u32(s: &mut impl Read, object: &str) -> Result<u32> {
    Ok(u32::from_be_bytes(read_array(s, object)?))
}

pub(super) fn read_u64(s: &mut impl Read, object: &str) -> Result<u64> {
    Ok(u64::from_be_bytes(read_array(s, object)?))
}

fn send_option(s: &mut impl Write, object: &str, option: u32, data: &[u8]) -> Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| proto(object, "option too long"))?;
    let mut msg = Vec::with_capacity(16 + data.len());
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&option.to_be_bytes());
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(data);
    s.write_all(&msg).map_err(|e| io_err(object, e))?;
    s.flush().map_err(|e| io_err(object, e))
}

/// What the server's greeting allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    /// Fixed newstyle negotiation: options get replies, and TLS can be negotiated.
    pub fixed_newstyle: bool,
    /// The server omits the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
    pub no_zeroes: bool,
}

/// Reads the server's greeting (newstyle only) and answers with the client flags.
pub fn greet<S: Read + Write>(s: &mut S, object: &str) -> Result<Greeting> {
    if read_u64(s, object)? != NBD_MAGIC {
        return Err(proto(object, "the server did not send NBDMAGIC"));
    }
    match read_u64(s, object)? {
        IHAVEOPT => {}
        OLDSTYLE_MAGIC => {
            return Err(Error::unsupported(
                object,
                "NBD oldstyle negotiation (the server must offer newstyle)",
            ))
        }
        _ => return Err(proto(object, "unknown negotiation magic")),
    }
    let server_flags = read_u16(s, object)?;
    let client_flags = u32::from(server_flags & (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
    s.write_all(&client_flags.to_be_bytes())
        .map_err(|e| io_err(object, e))?;
    Ok(Greeting {
        fixed_newstyle: server_flags & FLAG_FIXED_NEWSTYLE != 0,
        no_zeroes: server_flags & FLAG_NO_ZEROES != 0,
    })
}

/// Negotiates `export` (fixed newstyle, `NBD_OPT_GO` falling back to `NBD_OPT_EXPORT_NAME`) and
/// leaves `s` in the transmission phase: [`greet`] then [`negotiate`], in clear.
pub fn handshake<S: Read + Write>(s: &mut S, export: &str, object: &str) -> Result<ExportInfo> {
    check_export_name(export, object)?;
    let greeting = greet(s, object)?;
    negotiate(s, export, greeting, object)
}

fn check_export_name(export: &str, object: &str) -> Result<()> {
    if export.len() > MAX_EXPORT_NAME {
        return Err(Error::limit(
            object,
            "NBD export name longer than 4096 bytes",
        ));
    }
    Ok(())
}

/// Selects `export` after the greeting (and after TLS, if it was started): `NBD_OPT_GO`, or
/// `NBD_OPT_EXPORT_NAME` for servers without it. Leaves `s` in the transmission phase.
pub fn negotiate<S: Read + Write>(
    s: &mut S,
    export: &str,
    greeting: Greeting,
    object: &str,
) -> Result<ExportInfo> {
    check_export_name(export, object)?;
    if greeting.fixed_newstyle {
        if let Some(info) = go(s, export, object)? {
            return Ok(info);
        }
    }
    export_name(s, export, greeting.no_zeroes, object)
}

/// Asks the server to upgrade the connection to TLS (`NBD_OPT_STARTTLS`, "TLS support" in
/// `doc/proto.md`), as the first option. `Ok(())` is the server's `NBD_REP_ACK`: the TLS
/// handshake must follow at once. Any refusal is an [`Error::Tls`] ([`TlsFailure::NotOffered`])
/// naming `export`: a client that requires TLS never continues in clear.
pub fn starttls<S: Read + Write>(
    s: &mut S,
    greeting: Greeting,
    export: &str,
    object: &str,
) -> Result<()> {
    let refused = |why: String| Error::Tls {
        object: object.to_string(),
        failure: TlsFailure::NotOffered,
        detail: format!(
            "TLS was required for export {export:?} but the server does not offer it: {why}; \
             nothing was sent in clear"
        ),
    };
    if !greeting.fixed_newstyle {
        // The protocol allows STARTTLS only after fixed newstyle negotiation.
        return Err(refused(
            "it does not speak fixed newstyle negotiation".to_string(),
        ));
    }
    send_option(s, object, OPT_STARTTLS, &[])?;
    for _ in 0..MAX_OPTION_REPLIES {
        let (reply, payload) = read_option_reply(s, OPT_STARTTLS, "NBD_OPT_STARTTLS", object)?;
        match reply {
            REP_ACK if payload.is_empty() => return Ok(()),
            REP_ACK => return Err(proto(object, "NBD_OPT_STARTTLS acknowledged with data")),
            r if r & REP_FLAG_ERROR != 0 => {
                let msg = String::from_utf8_lossy(&payload);
                return Err(refused(format!(
                    "it answered NBD_OPT_STARTTLS with {} {msg:?}",
                    option_error_name(r)
                )));
            }
            _ => {} // Unknown non-error replies are ignored, as for NBD_OPT_GO.
        }
    }
    Err(proto(object, "too many option replies"))
}

/// Reads one option reply to `option`: its type and payload (bounded by [`MAX_OPTION_REPLY`]).
fn read_option_reply<S: Read>(
    s: &mut S,
    option: u32,
    option_name: &str,
    object: &str,
) -> Result<(u32, Vec<u8>)> {
    if read_u64(s, object)? != OPTION_REPLY_MAGIC {
        return Err(proto(object, "bad option reply magic"));
    }
    let replied_to = read_u32(s, object)?;
    let reply = read_u32(s, object)?;
    let len = read_u32(s, object)?;
    if replied_to != option {
        return Err(proto(
            object,
            format!("reply to option {replied_to}, not {option_name}"),
        ));
    }
    if len > MAX_OPTION_REPLY {
        return Err(proto(object, format!("option reply of {len} bytes")));
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload).map_err(|e| io_err(object, e))?;
    Ok((reply, payload))
}

/// `NBD_OPT_GO`; `Ok(None)` if the server does not support it.
fn go<S: Read + Write>(s: &mut S, export: &str, object: &str) -> Result<Option<ExportInfo>> {
    let mut data = Vec::with_capacity(export.len() + 8);
    // Bounded by MAX_EXPORT_NAME in `handshake`.
    data.extend_from_slice(&(export.len() as u32).to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    send_option(s, object, OPT_GO, &data)?;
    let mut size_flags = None;
    let mut blocks = None;
    for _ in 0..MAX_OPTION_REPLIES {
        let (reply, payload) = read_option_reply(s, OPT_GO, "NBD_OPT_GO", object)?;
        match reply {
            REP_ACK => {
                let Some((size, flags)) = size_flags else {
                    return Err(proto(object, "NBD_OPT_GO acknowledged without export size"));
                };
                let (min_block, preferred_block, max_block) = blocks.unwrap_or((1, 4096, u32::MAX));
                return Ok(Some(ExportInfo {
                    size,
                    flags,
                    min_block,
                    preferred_block,
                    max_block,
                    negotiated_with_go: true,
                }));
            }
            REP_INFO => {
                let kind = payload.get(0..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                match kind {
                    Some(INFO_EXPORT) if payload.len() == 12 => {
                        let size = u64::from_be_bytes(payload[2..10].try_into().unwrap_or([0; 8]));
                        let flags = u16::from_be_bytes([payload[10], payload[11]]);
                        size_flags = Some((size, flags));
                    }
                    Some(INFO_BLOCK_SIZE) if payload.len() == 14 => {
                        let at = |o: usize| {
                            u32::from_be_bytes(payload[o..o + 4].try_into().unwrap_or([0; 4]))
                        };
                        blocks = Some(check_block_sizes(at(2), at(6), at(10), object)?);
                    }
                    Some(INFO_EXPORT) | Some(INFO_BLOCK_SIZE) => {
                        return Err(proto(object, "information reply of the wrong length"))
                    }
                    // Name, description and unknown information are not needed.
                    _ => {}
                }
            }
            REP_ERR_UNSUP => return Ok(None),
            REP_ERR_TLS_REQD => {
                return Err(Error::Tls {
                    object: object.to_string(),
                    failure: TlsFailure::RequiredByServer,
                    detail: format!(
                        "the NBD server requires TLS for export {export:?} \
                         (NBD_REP_ERR_TLS_REQD): use nbds:// instead of nbd:// (with the CA that \
                         signed the server's certificate)"
                    ),
                })
            }
            r if r & REP_FLAG_ERROR != 0 => {
                let msg = String::from_utf8_lossy(&payload);
                return Err(Error::NotFound {
                    object: object.to_string(),
                    detail: format!(
                        "NBD server refused export {export:?} ({}): {msg}",
                        option_error_name(r)
                    ),
                });
            }
            _ => {} // Unknown non-error replies are ignored, as the protocol asks.
        }
    }
    Err(proto(object, "too many option replies"))
}

/// The protocol's name for an option reply error.
fn option_error_name(code: u32) -> String {
    let name = match code & !REP_FLAG_ERROR {
        1 => "NBD_REP_ERR_UNSUP",
        2 => "NBD_REP_ERR_POLICY",
        3 => "NBD_REP_ERR_INVALID",
        4 => "NBD_REP_ERR_PLATFORM",
        5 => "NBD_REP_ERR_TLS_REQD (TLS required)",
        6 => "NBD_REP_ERR_UNKNOWN (no such export)",
        7 => "NBD_REP_ERR_SHUTDOWN",
        8 => "NBD_REP_ERR_BLOCK_SIZE_REQD",
        9 => "NBD_REP_ERR_TOO_BIG",
        _ => return format!("error {code:#x}"),
    };
    name.to_string()
}

fn check_block_sizes(min: u32, preferred: u32, max: u32, object: &str) -> Result<(u32, u32, u32)> {
    if min == 0 || !min.is_power_of_two() || min > MAX_MIN_BLOCK {
        return Err(proto(object, format!("minimum block size {min}")));
    }
    if max < min {
        return Err(proto(
            object,
            format!("maximum block size {max} below minimum {min}"),
        ));
    }
    Ok((min, preferred.max(min), max))
}

/// `NBD_OPT_EXPORT_NAME` (no reply on failure: the server closes the connection).
fn export_name<S: Read + Write>(
    s: &mut S,
    export: &str,
    no_zeroes: bool,
    object: &str,
) -> Result<ExportInfo> {
    send_option(s, object, OPT_EXPORT_NAME, export.as_bytes())?;
    let size = read_u64(s, object).map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            Error::NotFound {
                object: object.to_string(),
                detail: format!("NBD server closed the connection: no export {export:?}?"),
            }
        }
        other => other,
    })?;
    let flags = read_u16(s, object)?;
    if !no_zeroes {
        let _zeroes: [u8; 124] = read_array(s, object)?;
    }
    Ok(ExportInfo {
        size,
        flags,
        min_block: 1,
        preferred_block: 4096,
        max_block: u32::MAX,
        negotiated_with_go: false,
    })
}

/// Reads `buf.len()` bytes at `offset` with one `NBD_CMD_READ` and its simple reply.
///
/// `Ok(Some(code))` is the server's error reply (an errno value): the request failed but the
/// connection remains usable. `Err` means the connection is unusable.
pub fn read_at<S: Read + Write>(
    s: &mut S,
    cookie: u64,
    offset: u64,
    buf: &mut [u8],
    object: &str,
) -> Result<Option<u32>> {
    let len = u32::try_from(buf.len()).map_err(|_| proto(object, "request too large"))?;
    send_request(s, CMD_READ, cookie, offset, len, object)?;
    let magic = read_u32(s, object)?;
    if magic == STRUCTURED_REPLY_MAGIC {
        return Err(proto(object, "structured reply that was never negotiated"));
    }
    if magic != SIMPLE_REPLY_MAGIC {
        return Err(proto(object, format!("bad reply magic {magic:#x}")));
    }
    let error = read_u32(s, object)?;
    let got_cookie = read_u64(s, object)?;
    if got_cookie != cookie {
        return Err(proto(object, "reply to another request"));
    }
    if error != 0 {
        return Ok(Some(error));
    }
    s.read_exact(buf)
        .map_err(|e| Error::io(object, offset, e))?;
    Ok(None)
}

fn send_request<S: Write>(
    s: &mut S,
    command: u16,
    cookie: u64,
    offset: u64,
    len: u32,
    object: &str,
) -> Result<()> {
    let mut msg = [0u8; 28];
    msg[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    msg[6..8].copy_from_slice(&command.to_be_bytes());
    msg[8..16].copy_from_slice(&cookie.to_be_bytes());
    msg[16..24].copy_from_slice(&offset.to_be_bytes());
    msg[24..28].copy_from_slice(&len.to_be_bytes());
    s.write_all(&msg).map_err(|e| io_err(object, e))?;
    s.flush().map_err(|e| io_err(object, e))
}

/// Sends `NBD_CMD_DISC` (no reply follows).
pub fn disconnect<S: Write>(s: &mut S, cookie: u64, object: &str) -> Result<()> {
    send_request(s, CMD_DISC, cookie, 0, 0, object)
}

#[cfg(test)]
mod tests;
