//! The client side of the wire protocol on scripted server bytes.

use super::*;

use crate::disk::nbd::script::Script;

fn greeting(flags: u16) -> Vec<u8> {
    let mut v = NBD_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v
}

fn option_reply(reply: u32, data: &[u8]) -> Vec<u8> {
    let mut v = OPTION_REPLY_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&OPT_GO.to_be_bytes());
    v.extend_from_slice(&reply.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn go_with_block_sizes_then_a_read() {
    let mut server = greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    let mut export = INFO_EXPORT.to_be_bytes().to_vec();
    export.extend_from_slice(&(1u64 << 20).to_be_bytes());
    export.extend_from_slice(&(TFLAG_HAS_FLAGS | TFLAG_READ_ONLY).to_be_bytes());
    server.extend(option_reply(REP_INFO, &export));
    let mut bs = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    for v in [512u32, 4096, 1 << 20] {
        bs.extend_from_slice(&v.to_be_bytes());
    }
    server.extend(option_reply(REP_INFO, &bs));
    server.extend(option_reply(REP_ACK, &[]));
    server.extend(SIMPLE_REPLY_MAGIC.to_be_bytes());
    server.extend(0u32.to_be_bytes());
    server.extend(7u64.to_be_bytes());
    server.extend([1, 2, 3, 4]);
    let mut s = Script {
        input: std::io::Cursor::new(server),
        written: Vec::new(),
    };
    let info = handshake(&mut s, "disk", "t").unwrap();
    assert_eq!(info.size, 1 << 20);
    assert!(info.read_only());
    assert_eq!(info.min_block, 512);
    assert_eq!(&s.written[0..4], &3u32.to_be_bytes());
    let mut buf = [0u8; 4];
    assert_eq!(read_at(&mut s, 7, 4096, &mut buf, "t").unwrap(), None);
    assert_eq!(buf, [1, 2, 3, 4]);
    // The read request: magic, flags 0, CMD_READ, cookie, offset, length.
    let req = &s.written[s.written.len() - 28..];
    assert_eq!(&req[0..4], &REQUEST_MAGIC.to_be_bytes());
    assert_eq!(&req[6..8], &CMD_READ.to_be_bytes());
    assert_eq!(&req[16..24], &4096u64.to_be_bytes());
}

#[test]
fn falls_back_to_export_name_and_reads_the_zero_padding() {
    let mut server = greeting(FLAG_FIXED_NEWSTYLE);
    server.extend(option_reply(REP_ERR_UNSUP, &[]));
    server.extend(12345u64.to_be_bytes());
    server.extend(TFLAG_HAS_FLAGS.to_be_bytes());
    server.extend([0u8; 124]);
    let mut s = Script {
        input: std::io::Cursor::new(server),
        written: Vec::new(),
    };
    let info = handshake(&mut s, "", "t").unwrap();
    assert_eq!(info.size, 12345);
    assert!(!info.negotiated_with_go);
    assert!(!info.read_only());
}

#[test]
fn errors_are_reported_not_panics() {
    // Unknown export.
    let mut server = greeting(FLAG_FIXED_NEWSTYLE);
    server.extend(option_reply(REP_FLAG_ERROR | 6, b"no such export"));
    let mut s = Script {
        input: std::io::Cursor::new(server),
        written: Vec::new(),
    };
    let err = handshake(&mut s, "x", "t").unwrap_err();
    assert!(err.to_string().contains("no such export"), "{err}");
    assert!(err.to_string().contains("NBD_REP_ERR_UNKNOWN"), "{err}");
    // Oversized reply, truncated stream, wrong magic, bad block sizes.
    let mut big = greeting(FLAG_FIXED_NEWSTYLE);
    big.extend(OPTION_REPLY_MAGIC.to_be_bytes());
    big.extend(OPT_GO.to_be_bytes());
    big.extend(REP_INFO.to_be_bytes());
    big.extend(u32::MAX.to_be_bytes());
    let mut bad_bs = greeting(FLAG_FIXED_NEWSTYLE);
    let mut bs = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    for v in [3u32, 4096, 1] {
        bs.extend_from_slice(&v.to_be_bytes());
    }
    bad_bs.extend(option_reply(REP_INFO, &bs));
    for input in [big, bad_bs, greeting(0)[..10].to_vec(), vec![0u8; 64]] {
        let mut s = Script {
            input: std::io::Cursor::new(input),
            written: Vec::new(),
        };
        assert!(handshake(&mut s, "", "t").is_err());
    }
    // A server error on read.
    let mut reply = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
    reply.extend(5u32.to_be_bytes());
    reply.extend(1u64.to_be_bytes());
    let mut s = Script {
        input: std::io::Cursor::new(reply),
        written: Vec::new(),
    };
    assert_eq!(read_at(&mut s, 1, 0, &mut [0u8; 8], "t").unwrap(), Some(5));
    // A reply to another request.
    let mut reply = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
    reply.extend(0u32.to_be_bytes());
    reply.extend(2u64.to_be_bytes());
    let mut s = Script {
        input: std::io::Cursor::new(reply),
        written: Vec::new(),
    };
    assert!(read_at(&mut s, 1, 0, &mut [0u8; 8], "t").is_err());
}

fn starttls_reply(reply: u32, data: &[u8]) -> Vec<u8> {
    let mut v = OPTION_REPLY_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&OPT_STARTTLS.to_be_bytes());
    v.extend_from_slice(&reply.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn run_starttls(server: Vec<u8>) -> (Result<()>, Vec<u8>) {
    let mut s = Script {
        input: std::io::Cursor::new(server),
        written: Vec::new(),
    };
    let r = greet(&mut s, "t").and_then(|g| starttls(&mut s, g, "vda", "t"));
    (r, s.written)
}

#[test]
fn starttls_is_the_first_option_and_only_an_empty_ack_accepts_it() {
    let fixed = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;
    // Acknowledged: client flags, then STARTTLS with no data, nothing else.
    let mut server = greeting(fixed);
    server.extend(starttls_reply(REP_ACK, &[]));
    let (r, written) = run_starttls(server);
    r.unwrap();
    let mut expected = u32::from(fixed).to_be_bytes().to_vec();
    expected.extend(IHAVEOPT.to_be_bytes());
    expected.extend(OPT_STARTTLS.to_be_bytes());
    expected.extend(0u32.to_be_bytes());
    assert_eq!(written, expected);
    // Unknown informational replies before the ACK are skipped.
    let mut server = greeting(fixed);
    server.extend(starttls_reply(REP_FLAG_ERROR >> 1, b"hello"));
    server.extend(starttls_reply(REP_ACK, &[]));
    run_starttls(server).0.unwrap();
    // Refusals are NotOffered errors naming the export and the server's message.
    for code in [
        REP_ERR_UNSUP,
        REP_ERR_POLICY,
        REP_ERR_INVALID,
        REP_FLAG_ERROR | 99,
    ] {
        let mut server = greeting(fixed);
        server.extend(starttls_reply(code, b"no TLS here"));
        let err = run_starttls(server).0.unwrap_err();
        match &err {
            Error::Tls {
                failure: TlsFailure::NotOffered,
                detail,
                ..
            } => assert!(
                detail.contains("\"vda\"") && detail.contains("no TLS here"),
                "{detail}"
            ),
            other => panic!("{other:?}"),
        }
    }
    // Without fixed newstyle STARTTLS cannot be sent: refused before any option is written.
    let (r, written) = run_starttls(greeting(FLAG_NO_ZEROES));
    assert!(matches!(
        r,
        Err(Error::Tls {
            failure: TlsFailure::NotOffered,
            ..
        })
    ));
    assert_eq!(written.len(), 4, "only the client flags");
}

#[test]
fn malformed_starttls_replies_are_errors() {
    let fixed = FLAG_FIXED_NEWSTYLE;
    let mut ack_with_data = greeting(fixed);
    ack_with_data.extend(starttls_reply(REP_ACK, b"x"));
    let mut wrong_option = greeting(fixed);
    wrong_option.extend(option_reply(REP_ACK, &[]));
    let mut oversize = greeting(fixed);
    oversize.extend(OPTION_REPLY_MAGIC.to_be_bytes());
    oversize.extend(OPT_STARTTLS.to_be_bytes());
    oversize.extend(REP_ERR_UNSUP.to_be_bytes());
    oversize.extend((MAX_OPTION_REPLY + 1).to_be_bytes());
    let mut truncated = greeting(fixed);
    truncated.extend(&starttls_reply(REP_ERR_POLICY, b"message")[..25]);
    let mut endless = greeting(fixed);
    for _ in 0..=MAX_OPTION_REPLIES {
        endless.extend(starttls_reply(REP_SERVER, &[]));
    }
    for server in [ack_with_data, wrong_option, oversize, truncated, endless] {
        let err = run_starttls(server).0.unwrap_err();
        assert!(
            matches!(err, Error::Corrupt { .. } | Error::Io { .. }),
            "{err:?}"
        );
    }
}

#[test]
fn a_server_requiring_tls_says_to_use_nbds() {
    let mut server = greeting(FLAG_FIXED_NEWSTYLE);
    server.extend(option_reply(REP_ERR_TLS_REQD, b"TLS required"));
    let mut s = Script {
        input: std::io::Cursor::new(server),
        written: Vec::new(),
    };
    let err = handshake(&mut s, "vda", "nbd://h/vda").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Tls {
                failure: TlsFailure::RequiredByServer,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("use nbds://"), "{err}");
}
