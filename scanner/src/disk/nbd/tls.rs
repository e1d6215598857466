//! TLS for NBD connections (`nbds://`, `nbds+unix://`), following the NBD protocol's "TLS
//! support" section (`doc/proto.md`) as QEMU and libnbd implement it: after the server
//! acknowledges `NBD_OPT_STARTTLS` ([`super::protocol::starttls`]) the client runs a TLS 1.2 or
//! 1.3 handshake on the same socket, and the rest of the negotiation and the whole transmission
//! phase go through the TLS session. TLS is rustls with the ring provider.
//!
//! Trust: the server's certificate must chain to the CA bundle given ([`NbdTls::ca`]), and only
//! to it; without one, to the system's trust store (the PEM bundle at the first of
//! [`SYSTEM_CA_BUNDLES`] that exists). It must be issued for the host of the URL, or for
//! [`NbdTls::hostname`] when the server is reached by another name or address (for a Unix socket,
//! `localhost` unless overridden). A client certificate and key ([`NbdTls::cert`],
//! [`NbdTls::key`]) are sent when given: QEMU's `tls-creds-x509,verify-peer=on` (libvirt's
//! `backup_tls_x509_verify`) requires one.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{Endpoint, Stream};
use crate::error::{Error, Result, TlsFailure};

/// Largest PEM file read (a system CA bundle is about 200 KiB).
pub const MAX_PEM_FILE: u64 = 4 << 20;

/// System trust stores (PEM bundles) tried in order when no CA is given: Debian/Ubuntu,
/// Fedora/RHEL, openSUSE, Alpine.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Server name checked against the certificate of a server reached by a Unix socket, unless
/// [`NbdTls::hostname`] says otherwise.
pub const UNIX_SOCKET_SERVER_NAME: &str = "localhost";

/// TLS credentials for `nbds://` and `nbds+unix://` exports (PEM files, read when the export is
/// opened).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NbdTls {
    /// CA certificates (PEM) that sign the server's certificate: the only trust anchors. `None`:
    /// the system's trust store.
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM, the client's own certificate first), for servers that
    /// verify their peers. Needs [`NbdTls::key`].
    pub cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of [`NbdTls::cert`].
    pub key: Option<PathBuf>,
    /// Name the server's certificate must be issued for, instead of the URL's host (the server
    /// is reached by an address or a name its certificate does not carry).
    pub hostname: Option<String>,
}

/// [`NbdTls`] loaded: the client configuration every connection to one export uses.
#[derive(Clone)]
pub(super) struct TlsClient {
    config: Arc<ClientConfig>,
    hostname: Option<String>,
    client_auth: bool,
    /// Where the trust anchors came from, for errors.
    trust: String,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("hostname", &self.hostname)
            .field("client_auth", &self.client_auth)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

fn credentials(object: &str, detail: String) -> Error {
    Error::Tls {
        object: object.to_string(),
        failure: TlsFailure::Credentials,
        detail,
    }
}

fn handshake_failed(object: &str, detail: String) -> Error {
    Error::Tls {
        object: object.to_string(),
        failure: TlsFailure::Handshake,
        detail,
    }
}

/// Reads a PEM file of at most [`MAX_PEM_FILE`] bytes.
fn read_pem(path: &Path, what: &str, object: &str) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| {
        credentials(
            object,
            format!("cannot open the {what} {}: {e}", path.display()),
        )
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            credentials(
                object,
                format!("cannot read the {what} {}: {e}", path.display()),
            )
        })?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(credentials(
            object,
            format!(
                "the {what} {} is larger than {MAX_PEM_FILE} bytes",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}

/// Every certificate of a PEM file; none is an error naming the file.
fn certificates(path: &Path, what: &str, object: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read_pem(path, what, object)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, pem::Error>>()
        .map_err(|e| {
            credentials(
                object,
                format!("the {what} {} is not valid PEM: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(credentials(
            object,
            format!(
                "the {what} {} holds no certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

fn private_key(path: &Path, object: &str) -> Result<PrivateKeyDer<'static>> {
    let bytes = read_pem(path, "client key", object)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound => {
                "holds no private key (PEM PKCS#8, PKCS#1 or SEC1: -----BEGIN ... PRIVATE KEY-----)"
                    .to_string()
            }
            other => format!("is not a valid PEM private key: {other}"),
        };
        credentials(object, format!("the client key {} {why}", path.display()))
    })
}

/// The trust anchors and where they came from.
fn trust_anchors(ca: Option<&Path>, object: &str) -> Result<(RootCertStore, String)> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = ca {
        for (i, cert) in certificates(ca, "CA bundle", object)?
            .into_iter()
            .enumerate()
        {
            roots.add(cert).map_err(|e| {
                credentials(
                    object,
                    format!(
                        "certificate {} of the CA bundle {} is not a usable CA: {e}",
                        i + 1,
                        ca.display()
                    ),
                )
            })?;
        }
        return Ok((roots, format!("the CA bundle {}", ca.display())));
    }
    for bundle in SYSTEM_CA_BUNDLES {
        let path = Path::new(bundle);
        if !path.is_file() {
            continue;
        }
        let bytes = read_pem(path, "system CA bundle", object)?;
        // The system bundle may hold certificates webpki cannot use: skip those, as browsers do.
        roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&bytes).flatten());
        if !roots.is_empty() {
            return Ok((
                roots,
                format!("the system's trust store {bundle} (no CA was given)"),
            ));
        }
    }
    Err(credentials(
        object,
        format!(
            "no CA bundle was given and no system trust store was found ({}): give the CA that \
             signed the server's certificate",
            SYSTEM_CA_BUNDLES.join(", ")
        ),
    ))
}

impl NbdTls {
    /// Reads the CA bundle (or the system trust store), the client certificate and key, and
    /// builds the client configuration. `object` (the export's URL) names errors.
    pub(super) fn load(&self, object: &str) -> Result<TlsClient> {
        let (roots, trust) = trust_anchors(self.ca.as_deref(), object)?;
        // ring is the project's provider (no aws-lc, no OpenSSL); rustls deprecates it only for
        // lacking post-quantum key exchange, which QEMU's GnuTLS does not need.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| credentials(object, format!("TLS configuration: {e}")))?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, "client certificate", object)?;
                let key_der = private_key(key, object)?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    credentials(
                        object,
                        format!(
                            "the client certificate {} and key {} cannot be used together: \
                                 {e}",
                            cert.display(),
                            key.display()
                        ),
                    )
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), None) => {
                return Err(credentials(
                    object,
                    format!(
                        "the client certificate {} was given without its key",
                        cert.display()
                    ),
                ))
            }
            (None, Some(key)) => {
                return Err(credentials(
                    object,
                    format!(
                        "the client key {} was given without its certificate",
                        key.display()
                    ),
                ))
            }
        };
        if let Some(name) = &self.hostname {
            server_name(name, object)?;
        }
        Ok(TlsClient {
            config: Arc::new(config),
            hostname: self.hostname.clone(),
            client_auth: self.cert.is_some(),
            trust,
        })
    }
}

fn server_name(name: &str, object: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_string()).map_err(|e| {
        credentials(
            object,
            format!("{name:?} is not a host name or address for TLS: {e}"),
        )
    })
}

/// A byte stream that fails once `deadline` has passed, and gives each read or write only the
/// time left: the whole TLS handshake is bounded, not each of its messages.
struct Deadline<'a> {
    stream: &'a mut Box<dyn Stream>,
    deadline: Instant,
}

impl Deadline<'_> {
    fn arm(&mut self) -> std::io::Result<()> {
        match self.deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => self.stream.set_timeouts(left),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the TLS handshake took too long",
            )),
        }
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.arm()?;
        self.stream.read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.arm()?;
        self.stream.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.arm()?;
        self.stream.flush()
    }
}

/// A connection inside its TLS session.
#[derive(Debug)]
pub(super) struct TlsStream(StreamOwned<ClientConnection, Box<dyn Stream>>);

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Stream for TlsStream {
    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        self.0.sock.set_timeouts(t)
    }

    fn close(&mut self) {
        // Best effort, as the protocol asks of a client ending the session.
        self.0.conn.send_close_notify();
        let _ = self.0.flush();
    }
}

impl TlsClient {
    /// The name the server's certificate must carry.
    fn name_for(&self, endpoint: &Endpoint) -> String {
        match (&self.hostname, endpoint) {
            (Some(name), _) => name.clone(),
            (None, Endpoint::Tcp { host, .. }) => host.clone(),
            (None, Endpoint::Unix(_)) => UNIX_SOCKET_SERVER_NAME.to_string(),
        }
    }

    /// Runs the TLS handshake on `stream` (the server has acknowledged `NBD_OPT_STARTTLS`),
    /// finishing by `deadline`. Returns the TLS stream and a description for `info`.
    pub(super) fn handshake(
        &self,
        mut stream: Box<dyn Stream>,
        endpoint: &Endpoint,
        deadline: Instant,
        object: &str,
    ) -> Result<(TlsStream, String)> {
        let name = self.name_for(endpoint);
        let server = server_name(&name, object)?;
        let mut conn = ClientConnection::new(self.config.clone(), server)
            .map_err(|e| handshake_failed(object, format!("TLS setup: {e}")))?;
        {
            let mut io = Deadline {
                stream: &mut stream,
                deadline,
            };
            while conn.is_handshaking() {
                conn.complete_io(&mut io)
                    .map_err(|e| handshake_error(e, &name, &self.trust, object))?;
            }
        }
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS 1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS 1.2",
            _ => "TLS",
        };
        let description = format!(
            "{version}, server certificate verified for {name}, {}",
            if self.client_auth {
                "client certificate sent"
            } else {
                "no client certificate"
            }
        );
        Ok((TlsStream(StreamOwned::new(conn, stream)), description))
    }
}

/// The error of a failed TLS handshake, saying what to do about it.
fn handshake_error(e: std::io::Error, name: &str, trust: &str, object: &str) -> Error {
    let hint_client_cert = "the server may require a client certificate (and key) that was not \
                            given, or not trust the one given (coldscan --nbd-tls-cert, \
                            --nbd-tls-key)";
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(cert)) => {
            use rustls::CertificateError as C;
            let detail = match cert {
                C::UnknownIssuer => format!(
                    "the server's certificate is not trusted: no CA of {trust} signed it ({e})"
                ),
                C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                    "the server's certificate is not issued for {name:?} ({e}): reach the \
                     server by a name its certificate carries, or set the TLS hostname to one \
                     (coldscan --nbd-tls-hostname)"
                ),
                _ => format!("the server's certificate was not accepted: {e}"),
            };
            Error::Tls {
                object: object.to_string(),
                failure: TlsFailure::ServerNotTrusted,
                detail,
            }
        }
        Some(rustls::Error::AlertReceived(alert)) => handshake_failed(
            object,
            format!("the server refused the TLS handshake (alert {alert:?}): {hint_client_cert}"),
        ),
        Some(other) => handshake_failed(object, format!("TLS handshake failed: {other}")),
        None if matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) =>
        {
            handshake_failed(object, format!("no TLS handshake in time: {e}"))
        }
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => handshake_failed(
            object,
            format!(
                "the server closed the connection during the TLS handshake: {hint_client_cert}"
            ),
        ),
        None => handshake_failed(object, format!("TLS handshake failed: {e}")),
    }
}

/// Maps a transport failure right after the handshake (while options are still being
/// negotiated) to the TLS failure it most likely is: with TLS 1.3 a server that does not accept
/// the client's certificate (or its absence) says so only after the client finished its side.
/// Other errors pass through.
pub(super) fn after_handshake(e: Error, object: &str) -> Error {
    match e {
        Error::Io { source, .. } => {
            let detail = match source
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                Some(rustls::Error::AlertReceived(alert)) => format!(
                    "the server ended the TLS session after the handshake (alert {alert:?})"
                ),
                _ if source.kind() == std::io::ErrorKind::UnexpectedEof => {
                    "the server closed the connection right after the TLS handshake".to_string()
                }
                _ => format!("the server ended the TLS session after the handshake ({source})"),
            };
            handshake_failed(
                object,
                format!(
                    "{detail}: it may require a client certificate (and key) that was not given, \
                     or not trust the one given (coldscan --nbd-tls-cert, --nbd-tls-key)"
                ),
            )
        }
        other => other,
    }
}

#[cfg(test)]
mod tests;
