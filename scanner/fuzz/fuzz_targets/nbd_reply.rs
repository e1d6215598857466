//! Fuzzes the NBD client's protocol parser: the input is everything the server sends (greeting,
//! option replies, read replies); the client negotiates and then issues a few reads.
#![no_main]

use std::io::{Cursor, Read, Write};

use coldscan_scanner::disk::nbd::protocol;
use libfuzzer_sys::fuzz_target;

/// A server that says `input` and swallows what the client writes.
struct Server<'a> {
    input: Cursor<&'a [u8]>,
}

impl Read for Server<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Server<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut s = Server {
        input: Cursor::new(data),
    };
    let Ok(info) = protocol::handshake(&mut s, "export", "fuzz") else {
        return;
    };
    let _ = info.read_only();
    let mut buf = vec![0u8; 4096];
    for cookie in 1..=4u64 {
        let len = (info.size % 4096) as usize;
        if protocol::read_at(&mut s, cookie, 0, &mut buf[..len], "fuzz").is_err() {
            break;
        }
    }
});
