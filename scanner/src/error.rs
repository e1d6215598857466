//! The library's error type.
//!
//! Every error names the object it concerns (an image file, `disk.qcow2 partition 2`, a path inside
//! a volume) and, where one exists, the byte offset that was bad. [`Error::reason`] maps each error
//! to the fixed set of report reasons of DESIGN.md section 3, so a caller can put it into
//! `not_scanned` without string matching.

use std::fmt;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why something could not be read or scanned: the `reason` field of a report entry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Reason {
    /// Larger than a configured size limit.
    TooLarge,
    /// Encrypted content (EFS, encrypted archive, encrypted image).
    Encrypted,
    /// Compressed with a method we do not decode (CompactOS XPRESS/LZX, ...).
    UnsupportedCompression,
    /// A filesystem, format or feature that coldscan does not read.
    UnsupportedFilesystem,
    /// On-disk structures that are inconsistent or out of range.
    Corrupt,
    /// The underlying read failed.
    IoError,
    /// A safety limit was hit (recursion depth, chain length, file count, archive limits).
    Limit,
    /// A path from an untrusted image was refused (backing file outside the allowed directories).
    Refused,
    /// The scan engine reported an error for this object.
    EngineError,
    /// A device the volume needs is not among the targets (a PV of a VG spanning disks).
    MissingDevice,
}

impl Reason {
    /// The string used in reports (`too-large`, `corrupt`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too-large",
            Reason::Encrypted => "encrypted",
            Reason::UnsupportedCompression => "unsupported-compression",
            Reason::UnsupportedFilesystem => "unsupported-filesystem",
            Reason::Corrupt => "corrupt",
            Reason::IoError => "io-error",
            Reason::Limit => "limit",
            Reason::Refused => "refused",
            Reason::EngineError => "engine-error",
            Reason::MissingDevice => "missing-device",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a TLS connection to a network disk failed: the kind of an [`Error::Tls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsFailure {
    /// TLS was required but the server does not offer it (it refused `NBD_OPT_STARTTLS`, or
    /// does not speak the negotiation that carries it). Nothing was read in clear.
    NotOffered,
    /// The server requires TLS but the URL asked for a plain connection (`nbd://`).
    RequiredByServer,
    /// The CA bundle, client certificate or key could not be loaded.
    Credentials,
    /// The server's certificate was not accepted: not signed by a trusted CA, expired, or not
    /// issued for the name the server was reached by.
    ServerNotTrusted,
    /// The handshake failed otherwise, or the server ended the session right after it (it
    /// wants a client certificate it did not get, or does not trust the one it got).
    Handshake,
}

/// Errors of every layer: block sources, disk formats, partition tables, filesystems, engines.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A read of the underlying file or device failed.
    #[error("{object}: I/O error at byte {offset:#x}: {source}")]
    Io {
        /// What was being read.
        object: String,
        /// Byte offset of the failed read within `object`.
        offset: u64,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A read reached past the end of a source (truncated image, partition past the disk end).
    #[error("{object}: read of {len} bytes at byte {offset:#x} is past the end ({size:#x} bytes)")]
    OutOfBounds {
        /// What was being read.
        object: String,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// Size of the object.
        size: u64,
    },
    /// An on-disk structure is inconsistent.
    #[error("{object}: corrupt at byte {offset:#x}: {detail}")]
    Corrupt {
        /// The structure's owner (image, volume, file).
        object: String,
        /// Byte offset of the bad structure within `object`.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A valid structure that coldscan does not support.
    #[error("{object}: unsupported: {detail}")]
    Unsupported {
        /// The object.
        object: String,
        /// What is unsupported, naming the variant or feature.
        detail: String,
        /// The report reason (unsupported filesystem / compression).
        reason: Reason,
    },
    /// Encrypted content.
    #[error("{object}: encrypted: {detail}")]
    Encrypted {
        /// The object.
        object: String,
        /// Which encryption.
        detail: String,
    },
    /// A safety limit was hit.
    #[error("{object}: limit exceeded: {detail}")]
    Limit {
        /// The object.
        object: String,
        /// Which limit, with its value.
        detail: String,
    },
    /// A path named by an untrusted image was refused.
    #[error("{object}: refused: {detail}")]
    Refused {
        /// The object naming the path.
        object: String,
        /// The path and why it was refused.
        detail: String,
    },
    /// Something named by the user or by a structure does not exist.
    #[error("{object}: not found: {detail}")]
    NotFound {
        /// The container searched.
        object: String,
        /// What was not found.
        detail: String,
    },
    /// A device that a volume needs was not found among the targets.
    #[error("{object}: missing device: {detail}")]
    MissingDevice {
        /// The volume that needs the device.
        object: String,
        /// Which device (its UUID) and why it is needed.
        detail: String,
    },
    /// A network disk could not be reached over TLS as required, or the server requires TLS
    /// that was not asked for (`nbds://` exports).
    #[error("{object}: TLS: {detail}")]
    Tls {
        /// The URL of the export.
        object: String,
        /// What failed.
        failure: TlsFailure,
        /// What happened and what to do about it.
        detail: String,
    },
    /// The scan engine failed.
    #[error("{object}: engine error: {detail}")]
    Engine {
        /// The object being scanned, or the engine / database.
        object: String,
        /// The engine's message.
        detail: String,
    },
}

impl Error {
    /// Builds an [`Error::Corrupt`].
    pub fn corrupt(object: impl Into<String>, offset: u64, detail: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            offset,
            detail: detail.into(),
        }
    }

    /// Builds an [`Error::Unsupported`] for a filesystem or format feature.
    pub fn unsupported(object: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Unsupported {
            object: object.into(),
            detail: detail.into(),
            reason: Reason::UnsupportedFilesystem,
        }
    }

    /// Builds an [`Error::Unsupported`] for a compression method.
    pub fn unsupported_compression(object: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Unsupported {
            object: object.into(),
            detail: detail.into(),
            reason: Reason::UnsupportedCompression,
        }
    }

    /// Builds an [`Error::Limit`].
    pub fn limit(object: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Limit {
            object: object.into(),
            detail: detail.into(),
        }
    }

    /// Builds an [`Error::Io`].
    pub fn io(object: impl Into<String>, offset: u64, source: std::io::Error) -> Self {
        Error::Io {
            object: object.into(),
            offset,
            source,
        }
    }

    /// The report reason for this error.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Io { .. } => Reason::IoError,
            Error::OutOfBounds { .. } | Error::Corrupt { .. } | Error::NotFound { .. } => {
                Reason::Corrupt
            }
            Error::Unsupported { reason, .. } => *reason,
            Error::Encrypted { .. } => Reason::Encrypted,
            Error::Limit { .. } => Reason::Limit,
            Error::Refused { .. } => Reason::Refused,
            // The export could not be read (securely): like a failed read of a disk.
            Error::Tls { .. } => Reason::IoError,
            Error::Engine { .. } => Reason::EngineError,
            Error::MissingDevice { .. } => Reason::MissingDevice,
        }
    }

    /// Converts into a `std::io::Error` for crates that read through `std::io` traits, keeping
    /// this error as the inner error so [`Error::from_io`] can recover it.
    pub fn into_io(self) -> std::io::Error {
        let kind = match &self {
            Error::Io { source, .. } => source.kind(),
            Error::OutOfBounds { .. } => std::io::ErrorKind::UnexpectedEof,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, self)
    }

    /// Recovers an [`Error`] wrapped by [`Error::into_io`], or wraps a foreign I/O error.
    pub fn from_io(object: impl Into<String>, offset: u64, err: std::io::Error) -> Self {
        if err.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            // `into_inner` cannot fail here: we just checked there is an inner error of our type.
            if let Some(inner) = err.into_inner() {
                if let Ok(ours) = inner.downcast::<Error>() {
                    return *ours;
                }
            }
            return Error::io(
                object,
                offset,
                std::io::Error::other("unrecoverable wrapped error"),
            );
        }
        Error::io(object, offset, err)
    }
}
