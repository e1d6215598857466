//! The ground-truth manifest: one JSON object per planted name, in the shape of
//! `coldscan ls --format jsonl --hash sha256` minus `disk`.
//!
//! Conventions (shared with the filesystem parsers' contract in `scanner/src/fs/mod.rs`): the
//! root directory is not listed; directories and symlinks are listed with `sha256: null`; a
//! symlink's size is its target's length; NTFS named streams are `path:stream` with `stream`
//! set; directory sizes are allocation details of each filesystem and are written as `null`
//! here and ignored when comparing ([`Record::normalized`]).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::tree::{Node, Tree};

/// One listed name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Record {
    /// 1-based partition index, 0 for a whole-disk filesystem.
    pub partition: u32,
    /// The logical volume (`vg/lv`) holding the file, absent for partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Filesystem kind as `coldscan` names it (`ext4`, `ntfs`, `fat32`...).
    pub fs: String,
    /// Absolute path (`path:stream` for a named stream).
    pub path: String,
    /// Stream name for named streams.
    pub stream: Option<String>,
    /// Logical size (`None` for directories in the manifest).
    pub size: Option<u64>,
    /// Hex SHA-256 of the content, for files and streams.
    pub sha256: Option<String>,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
}

impl Record {
    /// The record as compared: directory sizes dropped.
    pub fn normalized(&self) -> Record {
        let mut r = self.clone();
        if r.kind == "dir" {
            r.size = None;
        }
        r
    }
}

/// Hex SHA-256 of a node's content (files, sparse files).
fn node_sha256(node: &Node, tree: &Tree) -> (u64, String) {
    let mut h = Sha256::new();
    let size = match node {
        Node::File(c) => {
            c.for_each_chunk(&mut |b| {
                h.update(b);
                Ok(())
            })
            .expect("hashing does not fail");
            c.len()
        }
        Node::Sparse { size, runs } => {
            let zeros = vec![0u8; 1 << 20];
            let mut pos = 0u64;
            let feed_zeros = |h: &mut Sha256, mut n: u64| {
                while n > 0 {
                    let k = n.min(zeros.len() as u64);
                    h.update(&zeros[..k as usize]);
                    n -= k;
                }
            };
            for (off, c) in runs {
                feed_zeros(&mut h, off - pos);
                c.for_each_chunk(&mut |b| {
                    h.update(b);
                    Ok(())
                })
                .expect("hashing does not fail");
                pos = off + c.len();
            }
            feed_zeros(&mut h, size - pos);
            *size
        }
        Node::HardLink(t) => {
            return node_sha256(
                tree.file_content(t).expect("hard link to a planted file"),
                tree,
            )
        }
        Node::Dir | Node::Symlink(_) => unreachable!("not a file"),
    };
    (size, hex::encode(h.finalize()))
}

/// The manifest of `tree` planted in partition `partition` with filesystem `fs`.
pub fn from_tree(partition: u32, fs: &str, tree: &Tree) -> Vec<Record> {
    let mut out = Vec::with_capacity(tree.nodes.len() + tree.streams.len());
    let rec = |path: &str, stream: Option<&str>, size, sha256, kind: &str| Record {
        partition,
        volume: None,
        fs: fs.to_string(),
        path: path.to_string(),
        stream: stream.map(str::to_string),
        size,
        sha256,
        kind: kind.to_string(),
    };
    for (path, node) in &tree.nodes {
        out.push(match node {
            Node::Dir => rec(path, None, None, None, "dir"),
            Node::Symlink(t) => rec(path, None, Some(t.len() as u64), None, "symlink"),
            n => {
                let (size, sha) = node_sha256(n, tree);
                rec(path, None, Some(size), Some(sha), "file")
            }
        });
    }
    for s in &tree.streams {
        let mut h = Sha256::new();
        s.content
            .for_each_chunk(&mut |b| {
                h.update(b);
                Ok(())
            })
            .expect("hashing does not fail");
        let path = format!("{}:{}", s.file, s.name);
        out.push(rec(
            &path,
            Some(&s.name),
            Some(s.content.len()),
            Some(hex::encode(h.finalize())),
            "file",
        ));
    }
    out.sort();
    out
}

/// Writes records as JSON lines.
pub fn write_jsonl(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    let mut s = String::new();
    for r in records {
        s.push_str(&serde_json::to_string(r)?);
        s.push('\n');
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

/// Parses JSON lines (manifests, or `coldscan ls --format jsonl` output whose extra `disk`
/// field is ignored).
pub fn parse_jsonl(text: &str) -> anyhow::Result<Vec<Record>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {}: {l}", i + 1)))
        .collect()
}

/// Reads a JSON-lines file.
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_jsonl(&text)
}

/// Compares two listings as sets of normalised records. Returns a readable difference, or
/// `None` when they are equal.
pub fn diff(expected: &[Record], actual: &[Record]) -> Option<String> {
    let e: BTreeSet<Record> = expected.iter().map(Record::normalized).collect();
    let a: BTreeSet<Record> = actual.iter().map(Record::normalized).collect();
    if e == a && expected.len() == actual.len() {
        return None;
    }
    let mut s = String::new();
    let missing: Vec<_> = e.difference(&a).collect();
    let extra: Vec<_> = a.difference(&e).collect();
    let _ = writeln!(
        s,
        "{} expected, {} listed; {} missing, {} unexpected",
        expected.len(),
        actual.len(),
        missing.len(),
        extra.len()
    );
    const SHOW: usize = 40;
    for r in missing.iter().take(SHOW) {
        let _ = writeln!(s, "- {}", serde_json::to_string(r).unwrap_or_default());
    }
    if missing.len() > SHOW {
        let _ = writeln!(s, "- ... {} more", missing.len() - SHOW);
    }
    for r in extra.iter().take(SHOW) {
        let _ = writeln!(s, "+ {}", serde_json::to_string(r).unwrap_or_default());
    }
    if extra.len() > SHOW {
        let _ = writeln!(s, "+ ... {} more", extra.len() - SHOW);
    }
    if missing.is_empty() && extra.is_empty() {
        let _ = writeln!(
            s,
            "(same records, but duplicates: an entry was listed more than once)"
        );
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Content;

    #[test]
    fn manifest_of_a_small_tree() {
        let mut t = Tree::new();
        t.file("/d/a", b"abc");
        t.add("/d/link", Node::HardLink("/d/a".into()));
        t.add("/s", Node::Symlink("d/a".into()));
        t.add(
            "/sp",
            Node::Sparse {
                size: 10,
                runs: vec![(2, Content::text("xy"))],
            },
        );
        t.stream("/d/a", "ads", Content::text("hidden"));
        let m = from_tree(1, "ntfs", &t);
        let find = |p: &str| m.iter().find(|r| r.path == p).unwrap().clone();
        assert_eq!(find("/d").kind, "dir");
        assert_eq!(find("/d/a").sha256, find("/d/link").sha256);
        assert_eq!(
            find("/d/a").sha256.unwrap(),
            crate::content::sha256_hex(b"abc")
        );
        assert_eq!(find("/s").size, Some(3));
        assert_eq!(
            find("/sp").sha256.unwrap(),
            crate::content::sha256_hex(b"\0\0xy\0\0\0\0\0\0")
        );
        assert_eq!(find("/d/a:ads").stream.as_deref(), Some("ads"));
        let text = m
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect::<String>();
        assert_eq!(parse_jsonl(&text).unwrap(), m);
        assert!(diff(&m, &m).is_none());
        assert!(diff(&m, &m[1..]).unwrap().contains("1 missing"));
    }
}
