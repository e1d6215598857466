//! Fuzzes the NBD server's session: the input is everything a client sends (client flags,
//! options, requests and write payloads), served against two small in-memory exports. The first
//! byte picks whether a valid negotiation (`NBD_OPT_GO` for "vda") is prepended, so that the
//! transmission phase is reached without the fuzzer having to find it.
#![no_main]

use std::io::{Cursor, Read, Write};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use coldscan_scanner::block::{MemSource, SharedSource};
use coldscan_scanner::disk::nbd::protocol::{IHAVEOPT, INFO_BLOCK_SIZE, OPT_GO};
use coldscan_scanner::disk::nbd::server_protocol;
use libfuzzer_sys::fuzz_target;

/// A client that says `input` and whose received bytes are only counted.
struct Client {
    input: Cursor<Vec<u8>>,
    received: u64,
}

impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.received += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn negotiated_prefix() -> Vec<u8> {
    let mut v = 3u32.to_be_bytes().to_vec();
    v.extend(IHAVEOPT.to_be_bytes());
    v.extend(OPT_GO.to_be_bytes());
    v.extend(11u32.to_be_bytes());
    v.extend(3u32.to_be_bytes());
    v.extend(b"vda");
    v.extend(1u16.to_be_bytes());
    v.extend(INFO_BLOCK_SIZE.to_be_bytes());
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = if mode & 1 == 1 {
        negotiated_prefix()
    } else {
        Vec::new()
    };
    input.extend_from_slice(rest);
    let disk: Vec<u8> = (0..8192u32).map(|i| (i * 31 + i / 256) as u8).collect();
    let exports: Vec<(String, SharedSource)> = vec![
        ("vda".to_string(), Arc::new(MemSource::new(disk, "vda"))),
        (String::new(), Arc::new(MemSource::new(vec![0u8; 513], "default"))),
    ];
    let mut client = Client {
        input: Cursor::new(input),
        received: 0,
    };
    let bytes = AtomicU64::new(0);
    let _ = server_protocol::serve(&mut client, &exports, &bytes, "fuzz");
    // The server never sends more data than the exports hold per request it answered.
    assert!(bytes.into_inner() <= client.received);
});
