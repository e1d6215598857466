//! Load generator for `scripts/bench-manager` (`make bench`): posts `--reports` scan reports to a
//! running manager from `--clients` concurrent clients (one appliance token each, read from
//! `--tokens FILE`, one per line), each report under its own idempotency key, and re-posts every
//! hundredth one under the same key (a client retry, which must answer 200 and store nothing).
//! Prints reports/s and latency percentiles; exits non-zero on any unexpected answer.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

struct Args {
    url: String,
    tokens: Vec<String>,
    reports: usize,
    clients: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut url = None;
    let mut tokens = None;
    let mut reports = 10_000;
    let mut clients = 16;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--url" => url = Some(value()?),
            "--tokens" => {
                let text = std::fs::read_to_string(value()?)?;
                tokens = Some(text.lines().map(str::to_string).collect::<Vec<_>>());
            }
            "--reports" => reports = value()?.parse()?,
            "--clients" => clients = value()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    let tokens: Vec<String> = tokens.context("--tokens FILE")?;
    if tokens.len() < clients {
        bail!("{} tokens for {clients} clients", tokens.len());
    }
    Ok(Args {
        url: url.context("--url URL")?,
        tokens,
        reports,
        clients,
    })
}

/// A report of realistic shape: one target, three partitions, one detection, two files not
/// scanned.
fn report(client: usize, n: usize) -> String {
    let target = format!("/vmfs/volumes/ds{client}/vm-{n}/vm-{n}-flat.vmdk");
    serde_json::json!({
        "schema_version": 1, "tool": "coldscan", "version": "0.1.0",
        "engine": {"name": "clamav", "version": "1.4.3", "signatures": 8_700_000},
        "started": "2026-12-06T20:00:00Z", "finished": "2026-12-06T20:01:40Z",
        "targets": [{"target": target, "format": "vmdk", "chain": [target], "size": 42_949_672_960u64,
            "partitions": [
                {"index": 1, "scheme": "gpt", "type": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b", "start": 1_048_576, "size": 104_857_600, "fs": "fat32", "status": "ok"},
                {"index": 2, "scheme": "gpt", "type": "e3c9e316-0b5c-4db8-817d-f92df00215ae", "start": 105_906_176, "size": 16_777_216, "fs": null, "status": "ok"},
                {"index": 3, "scheme": "gpt", "type": "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7", "start": 122_683_392, "size": 42_826_989_568u64, "fs": "ntfs", "status": "ok"}]}],
        "stats": {"files": 184_211, "bytes": 21_474_836_480u64, "seconds": 100.2},
        "detections": [{"target": target, "partition": 3, "path": "/Users/Public/Downloads/invoice.exe",
            "stream": null, "size": 68, "sha256": "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f",
            "signature": "Win.Test.EICAR_HDB-1"}],
        "not_scanned": [
            {"target": target, "partition": 3, "path": "/pagefile.sys", "reason": "too-large", "detail": "4294967296 bytes > --max-filesize"},
            {"target": target, "partition": 3, "path": "/Users/a/secret.zip", "reason": "encrypted", "detail": "encrypted archive"}]
    })
    .to_string()
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let per_client = args.reports / args.clients;
    let extra = args.reports % args.clients;
    let start = Instant::now();
    let results: Vec<anyhow::Result<(Vec<Duration>, usize)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.clients)
            .map(|c| {
                let args = &args;
                s.spawn(move || -> anyhow::Result<(Vec<Duration>, usize)> {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(120)))
                        .build()
                        .into();
                    let url = format!("{}/api/v1/reports", args.url);
                    let auth = format!("Bearer {}", args.tokens[c]);
                    let mine = per_client + usize::from(c < extra);
                    let mut latencies = Vec::with_capacity(mine);
                    let mut retries = 0;
                    for n in 0..mine {
                        let body = report(c, n);
                        let key = format!("bench-{c}-{n}");
                        let posts = if n % 100 == 0 { 2 } else { 1 };
                        for attempt in 0..posts {
                            let t = Instant::now();
                            let mut r = agent
                                .post(&url)
                                .header("Authorization", &auth)
                                .header("Content-Type", "application/json")
                                .header("Idempotency-Key", &key)
                                .send(body.as_bytes())
                                .with_context(|| format!("POST {url}"))?;
                            let status = r.status().as_u16();
                            let text = r.body_mut().read_to_string().unwrap_or_default();
                            let want = if attempt == 0 { 201 } else { 200 };
                            if status != want {
                                bail!("report {key}: HTTP {status} (expected {want}): {text}");
                            }
                            if attempt == 0 {
                                latencies.push(t.elapsed());
                            } else {
                                retries += 1;
                            }
                        }
                    }
                    Ok((latencies, retries))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let wall = start.elapsed();
    let mut latencies = Vec::new();
    let mut retries = 0;
    for r in results {
        let (l, n) = r?;
        latencies.extend(l);
        retries += n;
    }
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "{} reports in {:.2} s from {} clients: {:.0} reports/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} retries under the same key answered 200",
        latencies.len(),
        wall.as_secs_f64(),
        args.clients,
        latencies.len() as f64 / wall.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
        retries
    );
    Ok(())
}
