//! Fuzzes the NBD client's TLS upgrade: the input is everything the server sends (greeting,
//! replies to `NBD_OPT_STARTTLS`, then, as if the TLS session were transparent, the replies to
//! `NBD_OPT_GO` and a read). The TLS records themselves are rustls's to parse.
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
    let Ok(greeting) = protocol::greet(&mut s, "fuzz") else {
        return;
    };
    if protocol::starttls(&mut s, greeting, "vda", "fuzz").is_err() {
        return;
    }
    let Ok(info) = protocol::negotiate(&mut s, "vda", greeting, "fuzz") else {
        return;
    };
    let mut buf = vec![0u8; (info.size % 4096) as usize];
    let _ = protocol::read_at(&mut s, 1, 0, &mut buf, "fuzz");
});
