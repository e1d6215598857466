//! The tree spec: what the factory plants in a filesystem. It is materialised into a host
//! staging directory (for `mkfs.ext4 -d` and `mcopy -s`) or turned into commands for the NTFS
//! populator, and the ground-truth manifest is derived from it, never from the built image.

use std::collections::{BTreeMap, BTreeSet};

use crate::content::{seed_of, Content};

/// One planted name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file.
    File(Content),
    /// A sparse file of `size` bytes: zeros (holes) except for the given data runs.
    Sparse {
        /// Logical size.
        size: u64,
        /// `(offset, content)` runs, sorted, not overlapping.
        runs: Vec<(u64, Content)>,
    },
    /// A second name of the regular file at the given path (planted earlier).
    HardLink(String),
    /// A symbolic link with this target.
    Symlink(String),
}

/// A named data stream (NTFS alternate data stream) of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Path of the file carrying the stream.
    pub file: String,
    /// Stream name.
    pub name: String,
    /// Stream content.
    pub content: Content,
}

/// Filesystem capabilities that decide what of a tree can be planted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// ext2/3/4: everything but streams and compression.
    Ext,
    /// FAT through mtools: no links, no streams, names limited to what mtools encodes
    /// correctly (BMP characters without combining marks, no control characters).
    Fat,
    /// NTFS through libntfs-3g: everything.
    Ntfs,
}

/// A tree of planted names, keyed by absolute path (`/a/b`), parents before children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// Every planted name.
    pub nodes: BTreeMap<String, Node>,
    /// Alternate data streams (NTFS only).
    pub streams: Vec<Stream>,
    /// Directories marked compressed before their files were created (NTFS only).
    pub compressed_dirs: BTreeSet<String>,
}

/// Parent of an absolute path (`/` for top-level names).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Tree {
        Tree::default()
    }

    /// Adds `path` and any missing parent directories.
    pub fn add(&mut self, path: &str, node: Node) -> &mut Tree {
        assert!(path.starts_with('/') && path.len() > 1, "bad path {path:?}");
        let p = parent(path);
        if p != "/" && !self.nodes.contains_key(p) {
            self.add(p, Node::Dir);
        }
        self.nodes.insert(path.to_string(), node);
        self
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str) -> &mut Tree {
        self.add(path, Node::Dir)
    }

    /// Adds a file with the given bytes.
    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Tree {
        self.add(path, Node::File(Content::Bytes(data.to_vec())))
    }

    /// Adds a file of `len` pseudo-random bytes seeded from its path.
    pub fn random_file(&mut self, path: &str, len: u64) -> &mut Tree {
        self.add(
            path,
            Node::File(Content::Random {
                seed: seed_of(path),
                len,
            }),
        )
    }

    /// Adds a stream to an existing file.
    pub fn stream(&mut self, file: &str, name: &str, content: Content) -> &mut Tree {
        self.streams.push(Stream {
            file: file.to_string(),
            name: name.to_string(),
            content,
        });
        self
    }

    /// The regular-file content behind `path` (following a hard link), if it is one.
    pub fn file_content(&self, path: &str) -> Option<&Node> {
        match self.nodes.get(path)? {
            Node::HardLink(t) => self.file_content(t),
            n @ (Node::File(_) | Node::Sparse { .. }) => Some(n),
            _ => None,
        }
    }

    /// The part of the tree a filesystem of `flavour` can hold.
    pub fn for_flavour(&self, flavour: Flavour) -> Tree {
        match flavour {
            Flavour::Ntfs => self.clone(),
            Flavour::Ext => Tree {
                nodes: self.nodes.clone(),
                streams: Vec::new(),
                compressed_dirs: BTreeSet::new(),
            },
            Flavour::Fat => {
                let mut out = Tree::new();
                for (path, node) in &self.nodes {
                    let parent_planted =
                        parent(path) == "/" || out.nodes.contains_key(parent(path));
                    if !fat_name_ok(path) || !parent_planted {
                        continue;
                    }
                    match node {
                        Node::HardLink(_) | Node::Symlink(_) => continue,
                        n => out.nodes.insert(path.clone(), n.clone()),
                    };
                }
                out
            }
        }
    }
}

/// Whether mtools stores every component of `path` as a correct long name: BMP characters
/// only (it mangles surrogate pairs), no combining marks (it drops them), no control or
/// FAT-reserved characters, no trailing dot or space, and non-ASCII only in names that do
/// not fit 8.3 anyway (8.3 names are stored in an OEM code page, which is ambiguous).
pub fn fat_name_ok(path: &str) -> bool {
    path.split('/').filter(|c| !c.is_empty()).all(|c| {
        let chars_ok = c.chars().all(|ch| {
            (ch as u32) >= 0x20
                && (ch as u32) < 0x1_0000
                && !('\u{300}'..='\u{36f}').contains(&ch)
                && !"\"*/:<>?\\|\u{7f}".contains(ch)
        });
        let non_ascii_fits_83 = !c.is_ascii() && {
            let (stem, ext) = c.rsplit_once('.').unwrap_or((c, ""));
            stem.chars().count() <= 8 && ext.chars().count() <= 3 && !c.contains(' ')
        };
        chars_ok && !non_ascii_fits_83 && !c.ends_with('.') && !c.ends_with(' ')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_sorted_first() {
        let mut t = Tree::new();
        t.file("/a/b/c.txt", b"x");
        let keys: Vec<_> = t.nodes.keys().cloned().collect();
        assert_eq!(keys, ["/a", "/a/b", "/a/b/c.txt"]);
        assert_eq!(parent("/a"), "/");
    }

    #[test]
    fn fat_names() {
        assert!(fat_name_ok("/Name With Spaces.txt"));
        assert!(fat_name_ok("/日本語のファイル名.txt"));
        assert!(!fat_name_ok("/emoji_🦀.bin"));
        assert!(!fat_name_ok("/cafe\u{301} long name.txt"));
        assert!(!fat_name_ok("/line\nbreak.txt"));
        assert!(!fat_name_ok("/café.txt"));
        assert!(fat_name_ok("/deep/readme.txt"));
    }
}
