//! Byte-level tests of the server session: scripted client bytes in, the server's bytes parsed.

use std::io::Cursor;
use std::sync::Arc;

use super::*;
use crate::block::{check_bounds, BlockSource, MemSource};
use crate::disk::nbd::protocol::{
    CMD_FLUSH, INFO_DESCRIPTION, OPT_STARTTLS, OPT_STRUCTURED_REPLY, REP_FLAG_ERROR,
};

use crate::disk::nbd::script::Script;

/// Fails every read that touches `[bad_from, bad_to)`.
#[derive(Debug)]
struct Failing {
    inner: MemSource,
    bad_from: u64,
    bad_to: u64,
}

impl BlockSource for Failing {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_bounds("failing", offset, buf.len(), self.size())?;
        let end = offset + buf.len() as u64;
        if offset < self.bad_to && end > self.bad_from {
            return Err(Error::io(
                "failing",
                offset,
                std::io::Error::other("bad sector"),
            ));
        }
        self.inner.read_exact_at(offset, buf)
    }
    fn name(&self) -> &str {
        "failing"
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn exports() -> Vec<(String, SharedSource)> {
    let vda: SharedSource = Arc::new(MemSource::new(data(1 << 16), "vda"));
    let vdb: SharedSource = Arc::new(MemSource::new(vec![0xee; 512], "vdb"));
    vec![("vda".to_string(), vda), ("vdb".to_string(), vdb)]
}

/// Client bytes.
#[derive(Default)]
struct Client(Vec<u8>);

impl Client {
    fn new(flags: u32) -> Self {
        Client(flags.to_be_bytes().to_vec())
    }
    fn option(mut self, option: u32, data: &[u8]) -> Self {
        self.0.extend(IHAVEOPT.to_be_bytes());
        self.0.extend(option.to_be_bytes());
        self.0.extend((data.len() as u32).to_be_bytes());
        self.0.extend(data);
        self
    }
    fn info(self, option: u32, name: &str, infos: &[u16]) -> Self {
        let mut d = (name.len() as u32).to_be_bytes().to_vec();
        d.extend(name.as_bytes());
        d.extend((infos.len() as u16).to_be_bytes());
        for i in infos {
            d.extend(i.to_be_bytes());
        }
        self.option(option, &d)
    }
    fn go(self, name: &str) -> Self {
        self.info(OPT_GO, name, &[INFO_BLOCK_SIZE])
    }
    fn request(mut self, flags: u16, command: u16, cookie: u64, offset: u64, len: u32) -> Self {
        self.0.extend(REQUEST_MAGIC.to_be_bytes());
        self.0.extend(flags.to_be_bytes());
        self.0.extend(command.to_be_bytes());
        self.0.extend(cookie.to_be_bytes());
        self.0.extend(offset.to_be_bytes());
        self.0.extend(len.to_be_bytes());
        self
    }
    fn read(self, cookie: u64, offset: u64, len: u32) -> Self {
        self.request(0, CMD_READ, cookie, offset, len)
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend(b);
        self
    }
    fn disc(self) -> Self {
        self.request(0, CMD_DISC, 0, 0, 0)
    }
}

const BOTH: u32 = CLIENT_FLAG_FIXED_NEWSTYLE | CLIENT_FLAG_NO_ZEROES;

/// Runs a session over `client` on `exports`; returns its result, the server's bytes after the
/// greeting (checked) and the bytes-read counter.
fn run_on(exports: &[(String, SharedSource)], client: Client) -> (Result<()>, Server, u64) {
    let mut s = Script {
        input: Cursor::new(client.0),
        written: Vec::new(),
    };
    let bytes = AtomicU64::new(0);
    let r = serve(&mut s, exports, &bytes, "test client");
    let mut out = Server(Cursor::new(s.written));
    assert_eq!(out.u64(), NBD_MAGIC);
    assert_eq!(out.u64(), IHAVEOPT);
    assert_eq!(out.u16(), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    (r, out, bytes.load(Ordering::Relaxed))
}

fn run(client: Client) -> (Result<()>, Server, u64) {
    run_on(&exports(), client)
}

/// The server's bytes, parsed.
struct Server(Cursor<Vec<u8>>);

impl Server {
    fn take(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.0
            .read_exact(&mut b)
            .expect("server sent less than expected");
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    /// One option reply: (option, reply type, data).
    fn reply(&mut self) -> (u32, u32, Vec<u8>) {
        assert_eq!(self.u64(), OPTION_REPLY_MAGIC);
        let option = self.u32();
        let reply = self.u32();
        let len = self.u32() as usize;
        (option, reply, self.take(len))
    }
    /// The replies to a successful GO/INFO up to the ACK: (size, flags, block sizes if sent).
    fn info(&mut self, option: u32) -> (u64, u16, Option<[u32; 3]>) {
        let mut export: Option<(u64, u16)> = None;
        let mut blocks = None;
        loop {
            let (o, r, d) = self.reply();
            assert_eq!(o, option);
            match r {
                REP_ACK => return (export.unwrap().0, export.unwrap().1, blocks),
                REP_INFO => match u16::from_be_bytes([d[0], d[1]]) {
                    INFO_EXPORT => {
                        assert_eq!(d.len(), 12);
                        let size = u64::from_be_bytes(d[2..10].try_into().unwrap());
                        export = Some((size, u16::from_be_bytes([d[10], d[11]])));
                    }
                    INFO_BLOCK_SIZE => {
                        assert_eq!(d.len(), 14);
                        let at = |o: usize| u32::from_be_bytes(d[o..o + 4].try_into().unwrap());
                        blocks = Some([at(2), at(6), at(10)]);
                    }
                    INFO_NAME => {}
                    other => panic!("unexpected information {other}"),
                },
                other => panic!("unexpected reply {other:#x}"),
            }
        }
    }
    /// One simple reply: (error, cookie).
    fn simple(&mut self) -> (u32, u64) {
        assert_eq!(self.u32(), SIMPLE_REPLY_MAGIC);
        (self.u32(), self.u64())
    }
    fn at_end(&self) -> bool {
        self.0.position() == self.0.get_ref().len() as u64
    }
}

#[test]
fn go_reads_and_a_refused_write_leaves_the_connection_usable() {
    let client = Client::new(BOTH)
        .go("vda")
        .read(1, 0, 16)
        .request(0, CMD_WRITE, 2, 0, 8)
        .bytes(&[0x41; 8])
        .read(3, 1000, 100)
        .request(0, CMD_TRIM, 4, 0, 512)
        .request(0, CMD_WRITE_ZEROES, 5, 0, 512)
        .request(0, CMD_FLUSH, 6, 0, 0)
        .request(0, 99, 7, 0, 0)
        .request(1, CMD_READ, 8, 0, 16)
        .read(9, (1 << 16) - 1, 1)
        .disc();
    let (r, mut out, bytes) = run(client);
    r.unwrap();
    let (size, flags, blocks) = out.info(OPT_GO);
    assert_eq!(size, 1 << 16);
    assert_eq!(
        flags,
        TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_CAN_MULTI_CONN
    );
    assert_eq!(blocks, Some([1, 4096, 32 << 20]));
    let d = data(1 << 16);
    assert_eq!(out.simple(), (0, 1));
    assert_eq!(out.take(16), d[..16]);
    assert_eq!(out.simple(), (NBD_EPERM, 2));
    assert_eq!(out.simple(), (0, 3));
    assert_eq!(out.take(100), d[1000..1100]);
    assert_eq!(out.simple(), (NBD_EPERM, 4));
    assert_eq!(out.simple(), (NBD_EPERM, 5));
    assert_eq!(out.simple(), (NBD_EINVAL, 6));
    assert_eq!(out.simple(), (NBD_EINVAL, 7));
    assert_eq!(out.simple(), (NBD_EINVAL, 8));
    assert_eq!(out.simple(), (0, 9));
    assert_eq!(out.take(1), d[(1 << 16) - 1..]);
    assert!(out.at_end());
    assert_eq!(bytes, 117);
}

#[test]
fn reads_out_of_range_or_of_bad_length_are_einval() {
    let client = Client::new(BOTH)
        .go("vda")
        .read(1, 1 << 16, 1)
        .read(2, (1 << 16) - 8, 16)
        .read(3, u64::MAX - 3, 8)
        .read(4, 0, 0)
        .read(5, 0, (32 << 20) + 1)
        .read(6, 8, 8)
        .disc();
    let (r, mut out, bytes) = run(client);
    r.unwrap();
    out.info(OPT_GO);
    for cookie in 1..=5 {
        assert_eq!(out.simple(), (NBD_EINVAL, cookie));
    }
    assert_eq!(out.simple(), (0, 6));
    assert_eq!(out.take(8), data(16)[8..]);
    assert!(out.at_end());
    assert_eq!(bytes, 8);
}

#[test]
fn a_source_read_error_is_eio_and_the_connection_goes_on() {
    let big = 3 * REPLY_CHUNK;
    let failing: SharedSource = Arc::new(Failing {
        inner: MemSource::new(data(big), "vda"),
        bad_from: 4096,
        bad_to: 8192,
    });
    let exports = vec![("".to_string(), failing)];
    let client = Client::new(BOTH)
        .go("")
        .read(1, 4096, 512)
        .read(2, 0, 4096)
        .disc();
    let (r, mut out, _) = run_on(&exports, client);
    r.unwrap();
    out.info(OPT_GO);
    assert_eq!(out.simple(), (NBD_EIO, 1));
    assert_eq!(out.simple(), (0, 2));
    assert_eq!(out.take(4096), data(4096));
    assert!(out.at_end());

    // An error after the first piece of a long reply went out can only close the connection.
    let failing: SharedSource = Arc::new(Failing {
        inner: MemSource::new(data(big), "vda"),
        bad_from: 2 * REPLY_CHUNK as u64,
        bad_to: 2 * REPLY_CHUNK as u64 + 1,
    });
    let exports = vec![("".to_string(), failing)];
    let client = Client::new(BOTH)
        .go("")
        .read(1, 0, big as u32)
        .read(2, 0, 8);
    let (r, mut out, bytes) = run_on(&exports, client);
    assert!(r.is_err());
    out.info(OPT_GO);
    assert_eq!(out.simple(), (0, 1));
    assert_eq!(out.take(2 * REPLY_CHUNK), data(2 * REPLY_CHUNK));
    assert!(out.at_end());
    assert_eq!(bytes, 0);
}

#[test]
fn oversize_options_and_bad_magics_close_the_connection() {
    // An option longer than the limit: no reply, closed before its data is read.
    let mut c = Client::new(BOTH);
    c.0.extend(IHAVEOPT.to_be_bytes());
    c.0.extend(OPT_GO.to_be_bytes());
    c.0.extend((MAX_OPTION_LENGTH + 1).to_be_bytes());
    let (r, out, _) = run(c);
    assert!(r.is_err());
    assert!(out.at_end());
    // Garbage instead of IHAVEOPT.
    let (r, out, _) = run(Client::new(BOTH).bytes(b"GARBAGE!GARBAGE!GARBAGE!"));
    assert!(r.is_err());
    assert!(out.at_end());
    // Garbage instead of a request.
    let (r, mut out, _) = run(Client::new(BOTH).go("vda").bytes(&[0x55; 28]));
    assert!(r.is_err());
    out.info(OPT_GO);
    assert!(out.at_end());
    // Unknown client flags.
    let (r, out, _) = run(Client::new(BOTH | 4).go("vda"));
    assert!(r.is_err());
    assert!(out.at_end());
    // Too many options.
    let mut c = Client::new(BOTH);
    for _ in 0..=MAX_OPTIONS {
        c = c.option(OPT_LIST, &[]);
    }
    let (r, _, _) = run(c);
    assert!(r.is_err());
    // A write payload beyond the largest request, and one cut short.
    let (r, mut out, _) =
        run(Client::new(BOTH)
            .go("vda")
            .request(0, CMD_WRITE, 1, 0, MAX_BLOCK + 1));
    assert!(r.is_err());
    out.info(OPT_GO);
    assert!(out.at_end());
    let (r, mut out, _) = run(Client::new(BOTH)
        .go("vda")
        .request(0, CMD_WRITE, 1, 0, 64)
        .bytes(&[0; 10]));
    assert!(r.is_err());
    out.info(OPT_GO);
    assert!(out.at_end());
    // Truncated anywhere: an error, never a panic.
    let full = Client::new(BOTH).go("vda").read(1, 0, 16).disc().0;
    for cut in 0..full.len() {
        let (r, _, _) = run(Client(full[..cut].to_vec()));
        assert!(r.is_err(), "cut at {cut}");
    }
}

#[test]
fn starttls_and_structured_replies_are_unsupported_then_go_works() {
    let client = Client::new(BOTH)
        .option(OPT_STARTTLS, &[])
        .option(OPT_STRUCTURED_REPLY, &[])
        .option(0x1234, b"whatever")
        .go("vdb")
        .read(1, 0, 512)
        .disc();
    let (r, mut out, bytes) = run(client);
    r.unwrap();
    for option in [OPT_STARTTLS, OPT_STRUCTURED_REPLY, 0x1234] {
        let (o, reply, _) = out.reply();
        assert_eq!((o, reply), (option, REP_ERR_UNSUP));
    }
    assert_eq!(out.info(OPT_GO).0, 512);
    assert_eq!(out.simple(), (0, 1));
    assert_eq!(out.take(512), vec![0xee; 512]);
    assert_eq!(bytes, 512);
}

#[test]
fn abort_is_acknowledged_and_ends_the_session() {
    let (r, mut out, _) = run(Client::new(BOTH).option(OPT_ABORT, &[]).go("vda"));
    r.unwrap();
    assert_eq!(out.reply(), (OPT_ABORT, REP_ACK, vec![]));
    assert!(out.at_end());
}

#[test]
fn list_names_every_export() {
    let (r, mut out, _) = run(Client::new(BOTH)
        .option(OPT_LIST, &[])
        .option(OPT_LIST, b"x")
        .option(OPT_ABORT, &[]));
    r.unwrap();
    for name in ["vda", "vdb"] {
        let (o, reply, d) = out.reply();
        assert_eq!((o, reply), (OPT_LIST, REP_SERVER));
        assert_eq!(&d[..4], &(name.len() as u32).to_be_bytes());
        assert_eq!(&d[4..], name.as_bytes());
    }
    assert_eq!(out.reply(), (OPT_LIST, REP_ACK, vec![]));
    assert_eq!(out.reply().1, REP_ERR_INVALID);
    assert_eq!(out.reply().1, REP_ACK);
}

#[test]
fn info_describes_without_selecting_and_errors_are_replies() {
    let client = Client::new(CLIENT_FLAG_FIXED_NEWSTYLE)
        .info(OPT_INFO, "vdb", &[INFO_NAME, INFO_DESCRIPTION])
        .info(OPT_INFO, "nope", &[])
        .info(OPT_GO, "nope", &[])
        // Name length past the data; request count that does not match.
        .option(OPT_GO, &[0, 0, 0, 9, b'v'])
        .option(OPT_GO, &[0, 0, 0, 3, b'v', b'd', b'a', 0, 2, 0, 3])
        .option(OPT_GO, &[0, 0])
        .info(OPT_GO, "vda", &[])
        .read(1, 0, 4)
        .disc();
    let (r, mut out, _) = run(client);
    r.unwrap();
    let (size, _, blocks) = out.info(OPT_INFO);
    assert_eq!((size, blocks), (512, None));
    assert_eq!(out.reply().1, REP_ERR_UNKNOWN);
    assert_eq!(out.reply().1, REP_ERR_UNKNOWN);
    for _ in 0..3 {
        let (o, reply, _) = out.reply();
        assert_eq!((o, reply), (OPT_GO, REP_ERR_INVALID));
        assert_ne!(reply & REP_FLAG_ERROR, 0);
    }
    assert_eq!(out.info(OPT_GO).0, 1 << 16);
    assert_eq!(out.simple(), (0, 1));
    assert_eq!(out.take(4), data(4));
}

#[test]
fn export_name_with_and_without_zeroes_and_unknown_names_close() {
    for (flags, zeroes) in [(BOTH, 0), (CLIENT_FLAG_FIXED_NEWSTYLE, 124), (0, 124)] {
        let client = Client::new(flags)
            .option(OPT_EXPORT_NAME, b"vdb")
            .read(1, 0, 2)
            .disc();
        let (r, mut out, _) = run(client);
        r.unwrap();
        assert_eq!(out.u64(), 512);
        assert_eq!(out.u16(), EXPORT_FLAGS);
        assert_eq!(out.take(zeroes), vec![0u8; zeroes]);
        assert_eq!(out.simple(), (0, 1));
        assert_eq!(out.take(2), vec![0xee; 2]);
        assert!(out.at_end());
    }
    let (r, out, _) = run(Client::new(BOTH).option(OPT_EXPORT_NAME, b"vdz"));
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    assert!(out.at_end());
    let long = vec![b'a'; MAX_EXPORT_NAME + 1];
    let (r, out, _) = run(Client::new(BOTH).option(OPT_EXPORT_NAME, &long));
    assert!(r.is_err());
    assert!(out.at_end());
}
