//! A scripted peer for the wire-protocol tests of both sides: the bytes it says, and what the
//! code under test wrote to it.

use std::io::{Cursor, Read, Write};

/// Bytes to return to the reader, and what was written.
pub(crate) struct Script {
    /// What the peer says.
    pub input: Cursor<Vec<u8>>,
    /// What the code under test wrote.
    pub written: Vec<u8>,
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
