//! Actions on detection: webhooks and local commands.
//!
//! When a new report holds detections, the manager writes one delivery per (webhook, target
//! with detections) in the same transaction that stores the report (an outbox: nothing is lost
//! across restarts, nothing is sent twice for one report). A worker POSTs each delivery:
//!
//! ```json
//! {"event":"detection","scan":12,"appliance":"esx-01","target":"/vm/a.qcow2",
//!  "detections":[{"target","partition","path","stream","size","sha256","signature"}]}
//! ```
//!
//! with `Content-Type: application/json` and `X-Coldscan-Signature: sha256=HEX`, the
//! HMAC-SHA256 of the body with the webhook's secret. Any 2xx answer is success; anything else is
//! retried with exponential backoff (`base * 2^attempt`, at most [`MAX_BACKOFF_SECS`]) up to
//! [`MAX_ATTEMPTS`] attempts. Every attempt is logged in the delivery log (`GET
//! /api/v1/deliveries`, the web page).
//!
//! A hook may also be a local command (`webhook add --command PROGRAM`, stored as
//! `command:PROGRAM`): the program runs without arguments, with the same JSON payload on its
//! standard input and `COLDSCAN_SIGNATURE` (the same HMAC, if the hook has a secret) and
//! `COLDSCAN_DELIVERY` (the delivery id, the same on every retry) in its environment; exit
//! status 0 is success, anything else (or running over [`COMMAND_TIMEOUT`]) is retried like an
//! HTTP failure.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::report::Report;
use crate::store::{DeliveryAttempt, DueDelivery, Store};

/// Signature header.
pub const SIGNATURE_HEADER: &str = "X-Coldscan-Signature";

/// Attempts before a delivery is marked failed.
pub const MAX_ATTEMPTS: i64 = 12;

/// Longest wait between attempts.
pub const MAX_BACKOFF_SECS: i64 = 3600;

/// How long one attempt may hold a delivery before another worker may try it.
const ATTEMPT_LEASE_SECS: i64 = 120;

/// Time limit of one POST.
const POST_TIMEOUT: Duration = Duration::from_secs(30);

/// Time limit of one run of a hook command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How a local-command hook is stored in place of a URL.
pub const COMMAND_PREFIX: &str = "command:";

/// Most bytes of a failed command's stderr kept in the delivery log.
const MAX_ERROR_BYTES: usize = 500;

/// The payloads for a new report: one per target with detections.
pub fn payloads(scan: i64, appliance: &str, report: &Report) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for target in report.target_names() {
        let detections: Vec<_> = report
            .detections
            .iter()
            .filter(|d| d.target == target)
            .collect();
        if detections.is_empty() {
            continue;
        }
        let body = serde_json::json!({
            "event": "detection",
            "scan": scan,
            "appliance": appliance,
            "target": target,
            "detections": detections,
        });
        out.push((target, body.to_string()));
    }
    // Detections on a target missing from `targets` still get a delivery.
    for d in &report.detections {
        if !out.iter().any(|(t, _)| *t == d.target) && !report.target_names().contains(&d.target) {
            let detections: Vec<_> = report
                .detections
                .iter()
                .filter(|x| x.target == d.target)
                .collect();
            let body = serde_json::json!({
                "event": "detection", "scan": scan, "appliance": appliance,
                "target": d.target, "detections": detections,
            });
            out.push((d.target.clone(), body.to_string()));
        }
    }
    out
}

/// `sha256=HEX` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable_hmac());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn unreachable_hmac() -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this is never reached.
    Hmac::<Sha256>::new_from_slice(b"").expect("HMAC takes any key length")
}

/// Backoff after `attempts` failed attempts.
pub fn backoff(base_ms: u64, attempts: i64) -> i64 {
    let shift = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
    let ms = base_ms.saturating_mul(1u64 << shift);
    i64::try_from(ms / 1000)
        .unwrap_or(i64::MAX)
        .clamp(1, MAX_BACKOFF_SECS)
}

/// Runs deliveries forever: polls for due ones every `poll`.
pub async fn worker<S: Store>(store: S, base_ms: u64, poll: Duration) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(POST_TIMEOUT))
        .max_redirects(0)
        .build()
        .into();
    loop {
        let now = crate::time::now();
        match store.claim_delivery(now, now + ATTEMPT_LEASE_SECS).await {
            Ok(Some(due)) => {
                let sig = signature(&due.secret, due.payload.as_bytes());
                let (status, error) = match due.url.strip_prefix(COMMAND_PREFIX) {
                    Some(program) => run_command(program, &due, &sig).await,
                    None => post(&agent, &due, sig).await,
                };
                let delivered = error.is_none();
                let attempts = due.attempts + 1;
                let now = crate::time::now();
                let attempt = DeliveryAttempt {
                    id: due.id,
                    status,
                    error,
                    delivered,
                    give_up: !delivered && attempts >= MAX_ATTEMPTS,
                    now,
                    next_attempt: now + backoff(base_ms, due.attempts),
                };
                if let Err(e) = store.record_attempt(&attempt).await {
                    eprintln!("coldscan-manager: webhook delivery {}: {e}", due.id);
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => eprintln!("coldscan-manager: webhook deliveries: {e}"),
        }
        tokio::time::sleep(poll).await;
    }
}

/// One POST of a delivery: the HTTP status and the error, if it failed.
async fn post(
    agent: &ureq::Agent,
    due: &DueDelivery,
    sig: String,
) -> (Option<i64>, Option<String>) {
    let agent = agent.clone();
    let url = due.url.clone();
    let body = due.payload.clone();
    let result = tokio::task::spawn_blocking(move || {
        agent
            .post(&url)
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, &sig)
            .send(body.as_bytes())
            .map(|r| r.status().as_u16())
    })
    .await;
    match result {
        Ok(Ok(s)) if (200..300).contains(&s) => (Some(i64::from(s)), None),
        Ok(Ok(s)) => (Some(i64::from(s)), Some(format!("HTTP {s}"))),
        Ok(Err(e)) => (None, Some(e.to_string())),
        Err(e) => (None, Some(e.to_string())),
    }
}

/// One run of a hook command: its exit code and the error, if it failed.
async fn run_command(program: &str, due: &DueDelivery, sig: &str) -> (Option<i64>, Option<String>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut cmd = tokio::process::Command::new(program);
    cmd.env("COLDSCAN_DELIVERY", due.id.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if !due.secret.is_empty() {
        cmd.env("COLDSCAN_SIGNATURE", sig);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (None, Some(format!("running {program}: {e}"))),
    };
    let payload = due.payload.clone();
    let mut stdin = child.stdin.take();
    let mut stderr = child.stderr.take();
    let run = async move {
        if let Some(mut s) = stdin.take() {
            // A command that does not read its input still gets judged by its exit status.
            let _ = s.write_all(payload.as_bytes()).await;
        }
        let mut err = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(64 * 1024).read_to_end(&mut err).await;
        }
        (child.wait().await, err)
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
        Err(_) => (
            None,
            Some(format!("{program} ran over {COMMAND_TIMEOUT:?}")),
        ),
        Ok((Err(e), _)) => (None, Some(format!("{program}: {e}"))),
        Ok((Ok(status), _)) if status.success() => (Some(0), None),
        Ok((Ok(status), err)) => {
            let mut text = String::from_utf8_lossy(&err).trim().to_string();
            if text.len() > MAX_ERROR_BYTES {
                let mut end = MAX_ERROR_BYTES;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
            (
                status.code().map(i64::from),
                Some(format!("{program}: {status}: {text}")),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(1000, 0), 1);
        assert_eq!(backoff(1000, 3), 8);
        assert_eq!(backoff(1000, 40), MAX_BACKOFF_SECS);
        assert_eq!(backoff(100, 0), 1);
    }

    #[test]
    fn one_payload_per_target_with_detections() {
        let v = crate::report::tests::sample();
        let r = Report::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        let p = payloads(7, "a1", &r);
        assert_eq!(p.len(), 1);
        let body: serde_json::Value = serde_json::from_str(&p[0].1).unwrap();
        assert_eq!(body["event"], "detection");
        assert_eq!(body["scan"], 7);
        assert_eq!(body["detections"][0]["signature"], "Eicar");
    }
}
