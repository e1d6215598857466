//! Data runs ("mapping pairs") of non-resident attributes.
//!
//! Encoding from the Linux-NTFS "NTFS Documentation" ("Concepts -> Data Runs") and libntfs-3g
//! `runlist.c` (`ntfs_mapping_pairs_decompress`): each run starts with a header byte whose low
//! nibble is the byte count of the run length (unsigned) and whose high nibble is the byte count
//! of the LCN delta (signed, relative to the previous run's LCN); a delta of zero bytes marks a
//! sparse run; a zero header byte ends the list.

use crate::error::{Error, Result};

/// Most runs accepted for one stream (all extents together). A 1 TiB file fragmented into 4 KiB
/// pieces would need 2^28; real files stay far below this.
pub const MAX_RUNS: usize = 1 << 22;

/// A contiguous range of virtual clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First virtual cluster number.
    pub vcn: u64,
    /// Length in clusters (> 0).
    pub len: u64,
    /// First logical cluster on the volume, `None` for a sparse run (reads as zeros).
    pub lcn: Option<u64>,
}

impl Run {
    /// One past the last VCN.
    pub fn end(&self) -> u64 {
        self.vcn.saturating_add(self.len)
    }
}

fn read_le(bytes: &[u8], signed: bool) -> u64 {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    if signed && !bytes.is_empty() && bytes.len() < 8 && bytes[bytes.len() - 1] & 0x80 != 0 {
        v |= u64::MAX << (8 * bytes.len());
    }
    v
}

/// Decodes the mapping pairs of one attribute extent starting at `lowest_vcn`, appending to
/// `out`. LCNs must stay within `total_clusters`. `position` (the pairs' volume byte offset)
/// and `object` name the structure in errors.
pub fn decode(
    pairs: &[u8],
    lowest_vcn: u64,
    total_clusters: u64,
    object: &str,
    position: u64,
    out: &mut Vec<Run>,
) -> Result<()> {
    let bad =
        |at: usize, what: String| Error::corrupt(object, position.saturating_add(at as u64), what);
    let mut at = 0usize;
    let mut vcn = lowest_vcn;
    let mut lcn: i64 = 0;
    loop {
        let Some(&header) = pairs.get(at) else {
            return Err(bad(at, "data runs run past the attribute end".into()));
        };
        if header == 0 {
            return Ok(());
        }
        let len_bytes = usize::from(header & 0x0F);
        let off_bytes = usize::from(header >> 4);
        if len_bytes == 0 || len_bytes > 8 || off_bytes > 8 {
            return Err(bad(at, format!("data run header byte {header:#04x}")));
        }
        let fields = pairs
            .get(at + 1..at + 1 + len_bytes + off_bytes)
            .ok_or_else(|| bad(at, "data run cut off by the attribute end".into()))?;
        let len = read_le(&fields[..len_bytes], false);
        if len == 0 || len > i64::MAX as u64 {
            return Err(bad(at, format!("data run length {len}")));
        }
        let run_lcn = if off_bytes == 0 {
            None
        } else {
            let delta = read_le(&fields[len_bytes..], true) as i64;
            lcn = lcn
                .checked_add(delta)
                .ok_or_else(|| bad(at, "data run LCN overflows".into()))?;
            let start = u64::try_from(lcn)
                .map_err(|_| bad(at, format!("data run starts at negative cluster {lcn}")))?;
            if start.checked_add(len).is_none_or(|e| e > total_clusters) {
                return Err(bad(
                    at,
                    format!("data run of {len} clusters at cluster {start} is past the volume end ({total_clusters} clusters)"),
                ));
            }
            Some(start)
        };
        if out.len() >= MAX_RUNS {
            return Err(Error::limit(
                object,
                format!("more than {MAX_RUNS} data runs in one stream"),
            ));
        }
        out.push(Run {
            vcn,
            len,
            lcn: run_lcn,
        });
        vcn = vcn
            .checked_add(len)
            .ok_or_else(|| bad(at, "VCN overflows".into()))?;
        at += 1 + len_bytes + off_bytes;
    }
}

/// Sorts the runs of several extents, checks they form one gapless VCN range from 0 and
/// merges neighbours that are contiguous on disk (so that one read covers them).
pub fn normalize(mut runs: Vec<Run>, object: &str) -> Result<Vec<Run>> {
    runs.sort_by_key(|r| r.vcn);
    let mut out: Vec<Run> = Vec::with_capacity(runs.len());
    let mut expect = 0u64;
    for r in runs {
        if r.vcn != expect {
            return Err(Error::corrupt(
                object,
                0,
                format!(
                    "data runs are not contiguous: VCN {} follows VCN {expect}",
                    r.vcn
                ),
            ));
        }
        expect = r.end();
        if let Some(last) = out.last_mut() {
            let joins = match (last.lcn, r.lcn) {
                (None, None) => true,
                (Some(a), Some(b)) => a.checked_add(last.len) == Some(b),
                _ => false,
            };
            if joins {
                last.len += r.len;
                continue;
            }
        }
        out.push(r);
    }
    Ok(out)
}

/// Index of the run containing `vcn`, if any.
pub fn find(runs: &[Run], vcn: u64) -> Option<usize> {
    let i = runs.partition_point(|r| r.end() <= vcn);
    runs.get(i).filter(|r| r.vcn <= vcn).map(|_| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_runs_sparse_and_negative_deltas() {
        // 0x21: 1 length byte, 2 offset bytes: 0x10 clusters at 0x1000;
        // 0x01: sparse 0x08 clusters; 0x11: 4 clusters at delta -0x10 (0xF0).
        let pairs = [0x21, 0x10, 0x00, 0x10, 0x01, 0x08, 0x11, 0x04, 0xF0, 0x00];
        let mut runs = Vec::new();
        decode(&pairs, 0, 1 << 20, "v", 0, &mut runs).unwrap();
        assert_eq!(
            runs,
            vec![
                Run {
                    vcn: 0,
                    len: 16,
                    lcn: Some(0x1000)
                },
                Run {
                    vcn: 16,
                    len: 8,
                    lcn: None
                },
                Run {
                    vcn: 24,
                    len: 4,
                    lcn: Some(0xFF0)
                },
            ]
        );
        assert_eq!(find(&runs, 17), Some(1));
        assert_eq!(find(&runs, 28), None);
    }

    #[test]
    fn rejects_hostile_runs() {
        let mut r = Vec::new();
        assert!(decode(&[0x21, 0x10, 0x00], 0, 1 << 20, "v", 0, &mut r).is_err());
        assert!(
            decode(&[0x11, 0x10, 0x80, 0], 0, 1 << 20, "v", 0, &mut r).is_err(),
            "negative LCN"
        );
        assert!(
            decode(&[0x21, 0x10, 0xFF, 0x7F, 0], 0, 100, "v", 0, &mut r).is_err(),
            "past volume"
        );
        assert!(decode(&[0x19, 0], 0, 100, "v", 0, &mut r).is_err());
        assert!(
            decode(&[0x01, 0x00, 0], 0, 100, "v", 0, &mut r).is_err(),
            "zero length"
        );
        let gap = vec![
            Run {
                vcn: 0,
                len: 1,
                lcn: Some(1),
            },
            Run {
                vcn: 2,
                len: 1,
                lcn: Some(2),
            },
        ];
        assert!(normalize(gap, "v").is_err());
        let joined = normalize(
            vec![
                Run {
                    vcn: 1,
                    len: 1,
                    lcn: Some(6),
                },
                Run {
                    vcn: 0,
                    len: 1,
                    lcn: Some(5),
                },
            ],
            "v",
        )
        .unwrap();
        assert_eq!(
            joined,
            vec![Run {
                vcn: 0,
                len: 2,
                lcn: Some(5)
            }]
        );
    }
}
