//! Compressed qcow2 clusters (QEMU `docs/interop/qcow2.txt`, "Compressed Clusters Descriptor"
//! and the `compression_type` header field).
//!
//! A compressed cluster is one raw deflate stream (zlib without header, type 0) or one
//! Zstandard frame (type 1) that must decode to exactly one cluster. The stored length is rounded
//! up to 512-byte sectors, so trailing bytes after the stream are normal and ignored.

use std::io::Read;

use crate::disk::qcow2::header::Compression;
use crate::error::{Error, Result};

/// Decompresses `input` into `out` (exactly one cluster).
pub fn decompress(
    name: &str,
    offset: u64,
    method: Compression,
    input: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let bad = |why: String| {
        Error::corrupt(
            name,
            offset,
            format!("qcow2 {} compressed cluster: {why}", method.as_str()),
        )
    };
    match method {
        Compression::Zlib => {
            let mut d = flate2::Decompress::new(false);
            let status = d
                .decompress(input, out, flate2::FlushDecompress::Finish)
                .map_err(|e| bad(e.to_string()))?;
            // A complete stream, or output full (QEMU accepts Z_BUF_ERROR with a full buffer).
            let produced = d.total_out();
            if produced != out.len() as u64 {
                return Err(bad(format!(
                    "decoded {produced} of {} bytes ({status:?})",
                    out.len()
                )));
            }
        }
        Compression::Zstd => {
            let mut src = input;
            let mut dec = ruzstd::decoding::StreamingDecoder::new(&mut src)
                .map_err(|e| bad(e.to_string()))?;
            dec.read_exact(out).map_err(|e| bad(e.to_string()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = vec![0u8; 4096];
        for m in [Compression::Zlib, Compression::Zstd] {
            assert!(decompress("t", 0, m, &[0xff; 100], &mut out).is_err());
            assert!(decompress("t", 0, m, &[], &mut out).is_err());
        }
    }

    #[test]
    fn raw_deflate_must_fill_the_cluster() {
        use std::io::Write;
        let data: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        let mut z = enc.finish().unwrap();
        z.extend_from_slice(&[0u8; 300]); // sector padding
        let mut out = vec![0u8; 4096];
        decompress("t", 0, Compression::Zlib, &z, &mut out).unwrap();
        assert_eq!(out, data);
        let mut big = vec![0u8; 8192];
        assert!(decompress("t", 0, Compression::Zlib, &z, &mut big).is_err());
    }
}
