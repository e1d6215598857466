//! The client side of the coldscan manager's HTTP API (`docs/openapi.json`, README "Manager"),
//! shared by the host CLI (`coldscan scan --manager URL --token-file FILE`) and the appliance's
//! runtime, so that both post reports exactly alike.
//!
//! - [`ManagerClient`]: blocking calls on `ureq` (rustls with ring; optionally an extra CA bundle
//!   instead of the built-in Mozilla roots): [`ManagerClient::post_report`],
//!   [`ManagerClient::heartbeat`], [`ManagerClient::claim_job`], [`ManagerClient::complete_job`].
//!   Connection errors, timeouts, HTTP 5xx and 429 are retried with exponential backoff and jitter
//!   ([`RetryPolicy`]); any other 4xx is final (retrying the same request cannot help).
//! - [`Spool`]: a directory of reports not yet delivered. Each report is written atomically with
//!   its idempotency key, delivered oldest first, and deleted only once the manager answered
//!   200/201, so that a report is stored exactly once however often delivery is retried.
//! - [`deliver_report`]: what a scan does with its finished report (spool it, then deliver
//!   everything pending; or post it directly without a spool).
#![forbid(unsafe_code)]

mod signatures;
mod spool;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use signatures::{SignatureFileInfo, SignatureSet};
pub use spool::{Spool, SpoolDelivery, SpooledReport};

/// Largest answer body read from the manager: answers are small JSON objects.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// Longest `Retry-After` honoured, so that a confused server cannot park a client for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why a call to the manager failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The manager could not be reached (connection refused, DNS, timeout) on any attempt.
    #[error("manager at {url} unreachable after {attempts} attempt(s): {detail}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last transport error.
        detail: String,
    },
    /// The manager refused the request with a 4xx status: final, never retried.
    #[error("manager refused {what}: HTTP {status}: {message}")]
    Refused {
        /// The call (`report`, `heartbeat`, ...).
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// The manager's error message.
        message: String,
    },
    /// The manager kept failing (5xx or 429) on every attempt.
    #[error("manager failed {what} with HTTP {status} after {attempts} attempt(s): {message}")]
    Failing {
        /// The call.
        what: &'static str,
        /// The last HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The manager's last error message.
        message: String,
    },
    /// The answer did not match the API.
    #[error("unexpected answer from the manager to {what}: {detail}")]
    Protocol {
        /// The call.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A transport error that retrying cannot fix (TLS, bad URL).
    #[error("cannot call the manager at {url}: {detail}")]
    Transport {
        /// The URL called.
        url: String,
        /// The error.
        detail: String,
    },
    /// Bad client configuration (token file, CA file, URL).
    #[error("manager client configuration: {0}")]
    Config(String),
    /// A spool file operation failed.
    #[error("spool {path}: {source}")]
    Spool {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ClientError {
    /// True when sending the same request again can never succeed (the manager refused it or
    /// answered nonsense): a spool sets such a report aside instead of retrying it forever.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ClientError::Refused { .. } | ClientError::Protocol { .. }
        )
    }
}

/// Retry schedule for transient failures: attempt `n` (0-based) waits a random time between
/// half and all of `min(max_delay, initial_delay * 2^n)` ("equal jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (at least 1).
    pub attempts: u32,
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Longest delay between attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts over about 15 to 30 seconds.
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (0-based), jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        let ceiling = self
            .initial_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        let half = ceiling / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let extra = if jitter_ms == 0 {
            0
        } else {
            random_u64() % (jitter_ms + 1)
        };
        half + Duration::from_millis(extra)
    }
}

/// How to reach the manager.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `https://manager.example:8443` (the API lives under `/api/v1`).
    pub url: String,
    /// Bearer token (role `appliance`).
    pub token: String,
    /// PEM bundle of CA certificates trusted instead of the built-in Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Time limit of one HTTP exchange.
    pub timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// A configuration with the default timeout (60 s) and retry policy.
    pub fn new(url: &str, token: &str) -> ClientConfig {
        ClientConfig {
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            ca_file: None,
            timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// Reads a token file: the token is its first non-empty line, surrounding blanks ignored.
pub fn read_token_file(path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Config(format!("token file {}: {e}", path.display())))?;
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ClientError::Config(format!(
            "token file {}: no token in it (one line of printable ASCII expected)",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// Where the manager stored a posted report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostedReport {
    /// The scan's id on the manager.
    pub id: i64,
    /// True when this call stored it (201); false when the key had been seen before (200).
    pub created: bool,
}

/// What an appliance tells the manager about itself (`POST /api/v1/heartbeat`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Heartbeat {
    /// Free-form state, e.g. `idle`, `scanning`.
    pub status: String,
    /// coldscan's version.
    pub version: String,
    /// Disks the appliance sees.
    pub disks: Vec<String>,
    /// The manager's version of the signature database it scans with, once it fetched and
    /// loaded one (absent while it uses its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signatures: Option<String>,
}

/// A scan job handed out by the manager.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Job {
    /// Job id.
    pub id: i64,
    /// What to scan (a disk path, device or `nbd://` URL, as the administrator enqueued it).
    pub target: String,
    /// RFC 3339 UTC end of the lease: complete the job before it, or it is handed out again.
    pub lease_expires: String,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Scanned; the report was posted and got this id.
    Report(i64),
    /// Could not be done; the message says why.
    Error(String),
}

/// A blocking client of the manager API. Cheap to share by reference; `Send + Sync`.
#[derive(Debug)]
pub struct ManagerClient {
    agent: ureq::Agent,
    base: String,
    authorization: String,
    retry: RetryPolicy,
}

/// One HTTP answer: status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl ManagerClient {
    /// A client for `config` (reads the CA file if one is given).
    pub fn new(config: &ClientConfig) -> Result<ManagerClient, ClientError> {
        let url = config.url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ClientError::Config(format!(
                "manager URL {url:?} must start with http:// or https://"
            )));
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| ClientError::Config(format!("CA file {}: {e}", ca.display())))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(ClientError::Config(format!(
                            "CA file {}: {e}",
                            ca.display()
                        )))
                    }
                }
            }
            if certs.is_empty() {
                return Err(ClientError::Config(format!(
                    "CA file {}: no certificate in it",
                    ca.display()
                )));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            .max_redirects(0)
            .user_agent(concat!("coldscan/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls.build())
            .build()
            .into();
        Ok(ManagerClient {
            agent,
            base: url.to_string(),
            authorization: format!("Bearer {}", config.token),
            retry: config.retry,
        })
    }

    /// `POST /api/v1/reports`: stores `report` (the JSON of a scan report) under
    /// `idempotency_key`. Posting the same key again returns the same id with `created` false.
    pub fn post_report(
        &self,
        report: &[u8],
        idempotency_key: &str,
    ) -> Result<PostedReport, ClientError> {
        const WHAT: &str = "report";
        let answer = self.post(WHAT, "/api/v1/reports", report, Some(idempotency_key))?;
        let created = match answer.status {
            201 => true,
            200 => false,
            s => return Err(unexpected_status(WHAT, s)),
        };
        #[derive(Deserialize)]
        struct Id {
            id: i64,
        }
        let id: Id = decode(WHAT, &answer.body)?;
        Ok(PostedReport { id: id.id, created })
    }

    /// `POST /api/v1/heartbeat`.
    pub fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<(), ClientError> {
        const WHAT: &str = "heartbeat";
        let body = encode(WHAT, heartbeat)?;
        let answer = self.post(WHAT, "/api/v1/heartbeat", &body, None)?;
        expect_no_content(WHAT, &answer)
    }

    /// `POST /api/v1/jobs/claim`: the next job for this appliance, or `None` when there is
    /// none. `lease` asks for a lease length (the manager bounds it; default its own).
    pub fn claim_job(&self, lease: Option<Duration>) -> Result<Option<Job>, ClientError> {
        const WHAT: &str = "job claim";
        let body = match lease {
            Some(l) => serde_json::json!({ "lease_seconds": l.as_secs().max(1) }),
            None => serde_json::json!({}),
        };
        let answer = self.post(WHAT, "/api/v1/jobs/claim", &encode(WHAT, &body)?, None)?;
        match answer.status {
            200 => decode(WHAT, &answer.body).map(Some),
            204 => Ok(None),
            s => Err(unexpected_status(WHAT, s)),
        }
    }

    /// `POST /api/v1/jobs/{id}/complete`.
    pub fn complete_job(&self, id: i64, outcome: &JobOutcome) -> Result<(), ClientError> {
        const WHAT: &str = "job completion";
        let body = match outcome {
            JobOutcome::Report(report) => serde_json::json!({ "report": report }),
            JobOutcome::Error(error) => serde_json::json!({ "error": error }),
        };
        let path = format!("/api/v1/jobs/{id}/complete");
        let answer = self.post(WHAT, &path, &encode(WHAT, &body)?, None)?;
        expect_no_content(WHAT, &answer)
    }

    /// POSTs `body` with retries of transient failures; returns the first non-transient answer
    /// with a 2xx status, or the error.
    fn post(
        &self,
        what: &'static str,
        path: &str,
        body: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{path}", self.base);
        let attempts = self.retry.attempts.max(1);
        let mut attempt = 0;
        loop {
            let mut request = self
                .agent
                .post(&url)
                .header("Authorization", &self.authorization)
                .header("Content-Type", "application/json");
            if let Some(key) = idempotency_key {
                request = request.header("Idempotency-Key", key);
            }
            let (wait, failure) = match request.send(body) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let retry_after = retry_after(&response);
                    let mut body = Vec::new();
                    let read = response
                        .body_mut()
                        .as_reader()
                        .take(MAX_ANSWER_BYTES)
                        .read_to_end(&mut body);
                    if let Err(e) = read {
                        (
                            None,
                            ClientError::Unreachable {
                                url: url.clone(),
                                attempts: attempt + 1,
                                detail: format!("reading the answer: {e}"),
                            },
                        )
                    } else if (200..300).contains(&status) {
                        return Ok(Answer { status, body });
                    } else if status == 429 || status >= 500 {
                        (
                            retry_after,
                            ClientError::Failing {
                                what,
                                status,
                                attempts: attempt + 1,
                                message: error_message(&body),
                            },
                        )
                    } else {
                        return Err(ClientError::Refused {
                            what,
                            status,
                            message: error_message(&body),
                        });
                    }
                }
                Err(e) if is_transient(&e) => (
                    None,
                    ClientError::Unreachable {
                        url: url.clone(),
                        attempts: attempt + 1,
                        detail: e.to_string(),
                    },
                ),
                Err(e) => {
                    return Err(ClientError::Transport {
                        url,
                        detail: e.to_string(),
                    })
                }
            };
            attempt += 1;
            if attempt >= attempts {
                return Err(failure);
            }
            std::thread::sleep(wait.unwrap_or_else(|| self.retry.delay(attempt - 1)));
        }
    }
}

/// What a scan does with its finished report: with a spool, store it there first (so that
/// nothing is lost if the manager is down or this process dies) and then deliver everything
/// pending, oldest first; without one, post it directly under a fresh idempotency key.
pub fn deliver_report(
    client: &ManagerClient,
    spool: Option<&Spool>,
    report: &[u8],
) -> Result<SpoolDelivery, ClientError> {
    match spool {
        Some(spool) => {
            spool.store(report)?;
            Ok(spool.deliver(client))
        }
        None => {
            let key = new_idempotency_key();
            let posted = client.post_report(report, &key)?;
            Ok(SpoolDelivery {
                delivered: vec![(key, posted)],
                ..SpoolDelivery::default()
            })
        }
    }
}

/// A random (version 4) UUID, used as the idempotency key of one report.
pub fn new_idempotency_key() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Fills `buf` from the operating system's random source.
fn fill_random(buf: &mut [u8]) {
    // Without an OS random source there is nothing better to do than a time-derived value:
    // keys then are still unique per process and time, and jitter still varies.
    if getrandom::fill(buf).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = nanos.to_le_bytes()[i % 16];
        }
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    fill_random(&mut b);
    u64::from_le_bytes(b)
}

/// Connection-level failures worth another attempt. A TLS failure (a certificate the CA bundle
/// does not trust, a wrong host name) is not one, although it reaches us as an I/O error
/// carrying rustls's error: the same handshake fails the same way every time.
fn is_transient(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::Io(io) => !is_tls_failure(io),
        ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_) => true,
        _ => false,
    }
}

/// Whether an I/O error is rustls refusing the handshake.
fn is_tls_failure(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

/// `Retry-After: SECONDS`, bounded.
fn retry_after(response: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    let secs: u64 = response
        .headers()
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// The manager's `{"error": "..."}` message, or the body as text.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.error,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned(),
    }
}

fn unexpected_status(what: &'static str, status: u16) -> ClientError {
    ClientError::Protocol {
        what,
        detail: format!("HTTP {status}"),
    }
}

fn expect_no_content(what: &'static str, answer: &Answer) -> Result<(), ClientError> {
    if answer.status == 204 {
        Ok(())
    } else {
        Err(unexpected_status(what, answer.status))
    }
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(|e| ClientError::Protocol {
        what,
        detail: format!("encoding the request: {e}"),
    })
}

fn decode<T: for<'de> Deserialize<'de>>(what: &'static str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Protocol {
        what,
        detail: format!(
            "{e}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
    })
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tls_tests;

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
