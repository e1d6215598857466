//! A bound on what a hostile size can inflate: a file may not claim more content than its
//! volume can hold.
//!
//! Holes read as zeros, so a corrupt inode or MFT record that claims terabytes of sparse (or
//! unreadable) content would make hashing, `cat` and scanning grind through terabytes of zeros.
//! Every opened filesystem is wrapped in [`SizeBounded`]: entries whose claimed size exceeds the
//! volume's size ([`MAX_CLAIMED_SIZE_PER_VOLUME_BYTE`] bytes per volume byte) are still listed,
//! but marked unreadable with reason `limit`, and opening them fails with that error. Real
//! sparse files that large are rare (`/var/log/lastlog` on some systems): they are reported,
//! never silently skipped.

use crate::error::{Error, Reason, Result};
use crate::fs::{
    FileEntry, FileReader, Filesystem, FsKind, SharedFilesystem, Unreadable, WalkEvent,
};

/// Bytes of content a file may claim per byte of its volume.
pub const MAX_CLAIMED_SIZE_PER_VOLUME_BYTE: u64 = 1;

/// A filesystem whose entries are bounded by the size of the volume holding it.
#[derive(Debug)]
pub struct SizeBounded {
    inner: SharedFilesystem,
    limit: u64,
}

impl SizeBounded {
    /// Wraps `inner`, a filesystem on a volume of `volume_size` bytes.
    pub fn new(inner: SharedFilesystem, volume_size: u64) -> Self {
        SizeBounded {
            inner,
            limit: volume_size.saturating_mul(MAX_CLAIMED_SIZE_PER_VOLUME_BYTE),
        }
    }

    /// The largest size an entry may claim.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn over_limit(&self, entry: &FileEntry) -> Option<String> {
        (entry.size > self.limit).then(|| {
            format!(
                "claims {} bytes, more than its {}-byte volume can hold (limit: the volume size)",
                entry.size, self.limit
            )
        })
    }

    fn bound(&self, mut entry: FileEntry) -> FileEntry {
        if entry.unreadable.is_none() {
            if let Some(detail) = self.over_limit(&entry) {
                entry.unreadable = Some(Unreadable {
                    reason: Reason::Limit,
                    detail,
                });
            }
        }
        entry
    }
}

impl Filesystem for SizeBounded {
    fn kind(&self) -> FsKind {
        self.inner.kind()
    }

    fn label(&self) -> Option<String> {
        self.inner.label()
    }

    fn notes(&self) -> Vec<String> {
        self.inner.notes()
    }

    fn walk(&self, visit: &mut dyn FnMut(WalkEvent)) -> Result<()> {
        self.inner.walk(&mut |ev| match ev {
            WalkEvent::Entry(e) => visit(WalkEvent::Entry(self.bound(e))),
            other => visit(other),
        })
    }

    fn open(&self, entry: &FileEntry) -> Result<Box<dyn FileReader + '_>> {
        if let Some(detail) = self.over_limit(entry) {
            return Err(Error::limit(&entry.path, detail));
        }
        self.inner.open(entry)
    }

    fn lookup(&self, path: &str) -> Result<FileEntry> {
        self.inner.lookup(path).map(|e| self.bound(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{EntryKind, FileId};

    #[derive(Debug)]
    struct Claims(u64);

    impl Filesystem for Claims {
        fn kind(&self) -> FsKind {
            FsKind::Ext4
        }
        fn walk(&self, visit: &mut dyn FnMut(WalkEvent)) -> Result<()> {
            for (i, size) in [10, self.0].into_iter().enumerate() {
                visit(WalkEvent::Entry(FileEntry {
                    path: format!("/f{i}"),
                    stream: None,
                    kind: EntryKind::File,
                    size,
                    id: FileId {
                        node: i as u64,
                        stream: 0,
                    },
                    unreadable: None,
                }));
            }
            Ok(())
        }
        fn open(&self, _: &FileEntry) -> Result<Box<dyn FileReader + '_>> {
            Err(Error::unsupported("claims", "not read in this test"))
        }
    }

    #[test]
    fn entries_claiming_more_than_the_volume_are_listed_as_limit() {
        let fs = SizeBounded::new(std::sync::Arc::new(Claims(1 << 40)), 1 << 20);
        let mut seen = Vec::new();
        fs.walk(&mut |ev| {
            if let WalkEvent::Entry(e) = ev {
                seen.push(e)
            }
        })
        .unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen[0].unreadable.is_none());
        let u = seen[1].unreadable.as_ref().unwrap();
        assert_eq!(u.reason, Reason::Limit);
        assert_eq!(fs.open(&seen[1]).err().unwrap().reason(), Reason::Limit);
        // Exactly the volume size is still allowed.
        let fs = SizeBounded::new(std::sync::Arc::new(Claims(1 << 20)), 1 << 20);
        fs.walk(&mut |ev| {
            if let WalkEvent::Entry(e) = ev {
                assert!(e.unreadable.is_none());
            }
        })
        .unwrap();
    }
}
