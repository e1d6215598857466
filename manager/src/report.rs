//! The scan report as the manager accepts it: coldscan's report (`docs/report.md`,
//! `docs/report.schema.json`), `schema_version` 1.
//!
//! The manager checks the structure itself with its own types rather than trusting the poster:
//! every field it stores or lists must be there with the right type; unknown fields are allowed
//! (newer scanners add fields without changing the schema version) and stored as posted.
//! Nesting is bounded by serde_json's recursion limit (128 levels) and the size by the HTTP body
//! limit, so hostile input costs at most a bounded parse and ends in a [`ReportError`].

use serde::Deserialize;

/// Schema versions this manager understands.
pub const SUPPORTED_SCHEMA_VERSIONS: &[u64] = &[1];

/// Longest string accepted in the fields the manager indexes (paths, names, signatures).
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed report: {0}")]
    Malformed(String),
    /// No `schema_version` field.
    #[error("malformed report: no schema_version (supported: {SUPPORTED_SCHEMA_VERSIONS:?})")]
    NoVersion,
    /// A `schema_version` this manager does not know.
    #[error("unknown report schema_version {0} (supported: {SUPPORTED_SCHEMA_VERSIONS:?})")]
    UnknownVersion(String),
    /// Well-formed JSON with values out of range.
    #[error("invalid report: {0}")]
    Invalid(String),
}

/// A validated report: the parts the manager indexes.
// Fields are checked for presence and type; not all are indexed.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    /// Always `coldscan`.
    pub tool: String,
    /// The scanner's version.
    pub version: String,
    /// The engine.
    pub engine: Engine,
    /// RFC 3339 start.
    pub started: String,
    /// RFC 3339 end.
    pub finished: String,
    /// Targets scanned.
    pub targets: Vec<Target>,
    /// Totals.
    pub stats: Stats,
    /// Detections.
    pub detections: Vec<Detection>,
    /// What was not scanned.
    pub not_scanned: Vec<NotScanned>,
}

/// The engine used.
// Fields are checked for presence and type; not all are indexed.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
pub struct Engine {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Signatures loaded.
    pub signatures: u64,
    /// The signature database (absent in reports of older scanners).
    #[serde(default)]
    pub db: Option<EngineDb>,
}

/// The signature database a report names (`engine.db`).
#[derive(Debug, Clone, Deserialize)]
pub struct EngineDb {
    /// libclamav's database version.
    pub version: u64,
    /// Digest of the database files (64 hex digits).
    pub sha256: String,
    /// The manager's version of it, when fetched from a manager.
    #[serde(default)]
    pub manager_version: Option<String>,
}

/// One target of a report.
// Fields are checked for presence and type; not all are indexed.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
pub struct Target {
    /// The target as given.
    pub target: String,
    /// Its format.
    pub format: String,
    /// Chain layers.
    pub chain: Vec<String>,
    /// Virtual size.
    pub size: u64,
    /// Volumes.
    pub partitions: Vec<Partition>,
}

/// One volume of a target.
// Fields are checked for presence and type; not all are indexed.
#[allow(dead_code)]
#[derive(Debug, Clone, Deserialize)]
pub struct Partition {
    /// Index.
    pub index: u32,
    /// Partition scheme.
    pub scheme: String,
    /// Type.
    #[serde(rename = "type")]
    pub type_id: String,
    /// Start byte.
    pub start: u64,
    /// Size.
    pub size: u64,
    /// Filesystem.
    pub fs: Option<String>,
    /// Status.
    pub status: String,
}

/// Totals.
#[derive(Debug, Clone, Deserialize)]
pub struct Stats {
    /// Files scanned.
    pub files: u64,
    /// Bytes scanned.
    pub bytes: u64,
    /// Seconds.
    pub seconds: f64,
}

/// One detection.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Detection {
    /// Target.
    pub target: String,
    /// Partition index.
    pub partition: u32,
    /// Path in the volume.
    pub path: String,
    /// NTFS stream.
    pub stream: Option<String>,
    /// Size.
    pub size: u64,
    /// Content hash.
    pub sha256: Option<String>,
    /// Signature.
    pub signature: String,
}

/// One thing not scanned.
#[derive(Debug, Clone, Deserialize)]
pub struct NotScanned {
    /// Target.
    pub target: String,
    /// Partition index.
    pub partition: Option<u32>,
    /// Path.
    pub path: Option<String>,
    /// Reason (a small fixed set, kept as text: newer scanners may add reasons).
    pub reason: String,
    /// Detail.
    pub detail: String,
}

/// Only the version, read first so that a report of an unknown version gets that error rather
/// than a complaint about a missing field.
#[derive(Deserialize)]
struct Versioned {
    schema_version: Option<serde_json::Value>,
}

impl Report {
    /// Parses and checks `body`.
    pub fn parse(body: &[u8]) -> Result<Report, ReportError> {
        let versioned: Versioned = serde_json::from_slice(body).map_err(malformed)?;
        match versioned.schema_version {
            None => return Err(ReportError::NoVersion),
            Some(v)
                if v.as_u64()
                    .is_some_and(|v| SUPPORTED_SCHEMA_VERSIONS.contains(&v)) => {}
            Some(v) => {
                let mut shown = v.to_string();
                shown.truncate(40);
                return Err(ReportError::UnknownVersion(shown));
            }
        }
        let report: Report = serde_json::from_slice(body).map_err(malformed)?;
        report.check()?;
        Ok(report)
    }

    fn check(&self) -> Result<(), ReportError> {
        if self.tool != "coldscan" {
            return Err(ReportError::Invalid(format!(
                "tool is {:?}, expected \"coldscan\"",
                truncated(&self.tool)
            )));
        }
        if !self.stats.seconds.is_finite() || self.stats.seconds < 0.0 {
            return Err(ReportError::Invalid("stats.seconds is negative".into()));
        }
        for (name, value) in [
            ("stats.files", self.stats.files),
            ("stats.bytes", self.stats.bytes),
        ] {
            fits_i64(name, value)?;
        }
        if let Some(db) = &self.engine.db {
            fits_i64("engine.db.version", db.version)?;
            if db.sha256.len() != 64 || !db.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ReportError::Invalid(format!(
                    "engine.db.sha256 {:?} is not 64 hex digits",
                    truncated(&db.sha256)
                )));
            }
        }
        let mut strings: Vec<(&str, &str)> = vec![
            ("started", &self.started),
            ("finished", &self.finished),
            ("version", &self.version),
        ];
        if let Some(v) = self
            .engine
            .db
            .as_ref()
            .and_then(|d| d.manager_version.as_ref())
        {
            strings.push(("engine.db.manager_version", v));
        }
        for t in &self.targets {
            strings.push(("targets[].target", &t.target));
            strings.push(("targets[].format", &t.format));
        }
        for d in &self.detections {
            fits_i64("detections[].size", d.size)?;
            strings.push(("detections[].target", &d.target));
            strings.push(("detections[].path", &d.path));
            strings.push(("detections[].signature", &d.signature));
            if let Some(s) = &d.stream {
                strings.push(("detections[].stream", s));
            }
            if let Some(h) = &d.sha256 {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ReportError::Invalid(format!(
                        "detections[].sha256 {:?} is not 64 hex digits",
                        truncated(h)
                    )));
                }
            }
        }
        for n in &self.not_scanned {
            strings.push(("not_scanned[].target", &n.target));
            strings.push(("not_scanned[].reason", &n.reason));
            strings.push(("not_scanned[].detail", &n.detail));
            if let Some(p) = &n.path {
                strings.push(("not_scanned[].path", p));
            }
        }
        for (name, s) in strings {
            if s.len() > MAX_FIELD_BYTES {
                return Err(ReportError::Invalid(format!(
                    "{name} is {} bytes long (at most {MAX_FIELD_BYTES})",
                    s.len()
                )));
            }
            if s.contains('\0') {
                return Err(ReportError::Invalid(format!(
                    "{name} contains a NUL character"
                )));
            }
        }
        Ok(())
    }

    /// The distinct target names, in report order.
    pub fn target_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for t in &self.targets {
            if !names.contains(&t.target) {
                names.push(t.target.clone());
            }
        }
        names
    }
}

fn fits_i64(name: &str, value: u64) -> Result<(), ReportError> {
    i64::try_from(value)
        .map(|_| ())
        .map_err(|_| ReportError::Invalid(format!("{name} {value} is out of range")))
}

fn malformed(e: serde_json::Error) -> ReportError {
    ReportError::Malformed(e.to_string())
}

fn truncated(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid report with one detection.
    pub(crate) fn sample() -> serde_json::Value {
        serde_json::json!({
            "schema_version": 1, "tool": "coldscan", "version": "0.1.0",
            "engine": {"name": "clamav", "version": "1.4", "signatures": 2},
            "started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:01Z",
            "targets": [{"target": "/vm/a.qcow2", "format": "qcow2", "chain": [], "size": 1,
                "partitions": [{"index": 1, "scheme": "gpt", "type": "x", "start": 0, "size": 1,
                    "fs": "ext4", "status": "ok"}]}],
            "stats": {"files": 3, "bytes": 10, "seconds": 0.5},
            "detections": [{"target": "/vm/a.qcow2", "partition": 1, "path": "/e.com",
                "stream": null, "size": 68, "sha256": null, "signature": "Eicar"}],
            "not_scanned": [{"target": "/vm/a.qcow2", "partition": null, "path": null,
                "reason": "corrupt", "detail": "bad"}],
            "a_future_field": {"nested": [1, 2, 3]}
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Report, ReportError> {
        Report::parse(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn accepts_a_report_with_unknown_fields() {
        let r = parse(&sample()).unwrap();
        assert_eq!(r.detections.len(), 1);
        assert_eq!(r.target_names(), vec!["/vm/a.qcow2".to_string()]);
    }

    #[test]
    fn the_signature_database_is_read_when_named_and_optional_otherwise() {
        assert!(parse(&sample()).unwrap().engine.db.is_none());
        let mut v = sample();
        v["engine"]["db"] = serde_json::json!({"version": 0, "sha256": "ab".repeat(32),
            "manager_version": "2026-12-06.1"});
        let db = parse(&v).unwrap().engine.db.unwrap();
        assert_eq!(
            (db.version, db.manager_version.as_deref()),
            (0, Some("2026-12-06.1"))
        );
        v["engine"]["db"]
            .as_object_mut()
            .unwrap()
            .remove("manager_version");
        assert!(parse(&v)
            .unwrap()
            .engine
            .db
            .unwrap()
            .manager_version
            .is_none());
        v["engine"]["db"]["sha256"] = serde_json::json!("zz");
        assert!(matches!(parse(&v), Err(ReportError::Invalid(_))));
        v["engine"]["db"] = serde_json::json!({"version": -1, "sha256": "ab".repeat(32)});
        assert!(parse(&v).is_err());
    }

    #[test]
    fn refuses_versions() {
        let mut v = sample();
        v["schema_version"] = serde_json::json!(2);
        assert!(matches!(parse(&v), Err(ReportError::UnknownVersion(_))));
        v["schema_version"] = serde_json::json!("1");
        assert!(matches!(parse(&v), Err(ReportError::UnknownVersion(_))));
        v.as_object_mut().unwrap().remove("schema_version");
        assert!(matches!(parse(&v), Err(ReportError::NoVersion)));
    }

    #[test]
    fn refuses_wrong_shapes() {
        for (field, value) in [
            ("detections", serde_json::json!({})),
            ("tool", serde_json::json!("other")),
            (
                "stats",
                serde_json::json!({"files": -1, "bytes": 0, "seconds": 0}),
            ),
            ("targets", serde_json::json!([{"target": 1}])),
        ] {
            let mut v = sample();
            v[field] = value;
            assert!(parse(&v).is_err(), "{field}");
        }
        let mut v = sample();
        v["detections"][0]["sha256"] = serde_json::json!("zz");
        assert!(matches!(parse(&v), Err(ReportError::Invalid(_))));
        assert!(Report::parse(b"").is_err());
        assert!(Report::parse(b"[]").is_err());
        assert!(Report::parse(b"{\"schema_version\":1,").is_err());
        assert!(Report::parse(b"\xff\xfe").is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for depth in [200, 100_000] {
            let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            for body in [
                deep.clone(),
                format!("{{\"schema_version\":{deep}}}"),
                format!("{{\"schema_version\":1,\"extra\":{deep}}}"),
                format!("{{\"schema_version\":1,\"detections\":{deep}}}"),
            ] {
                assert!(Report::parse(body.as_bytes()).is_err(), "depth {depth}");
            }
        }
    }

    #[test]
    fn huge_arrays_of_the_wrong_type_are_refused() {
        let mut v = sample();
        v["detections"] = serde_json::json!(vec![0; 1_000_000]);
        let err = parse(&v).unwrap_err().to_string();
        assert!(err.starts_with("malformed report"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any bytes: an error or a report, never a panic.
        #[test]
        fn any_bytes(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let _ = Report::parse(&body);
        }

        /// A valid report cut short anywhere is refused.
        #[test]
        fn truncated(cut in 0usize..1000) {
            let body = serde_json::to_vec(&sample()).unwrap();
            let cut = cut % body.len();
            proptest::prop_assert!(Report::parse(&body[..cut]).is_err());
        }

        /// A valid report with bytes overwritten (invalid UTF-8 included): never a panic, and
        /// whatever is accepted still passes the checks.
        #[test]
        fn mutated(edits in proptest::collection::vec((0usize..2000, proptest::prelude::any::<u8>()), 1..8)) {
            let mut body = serde_json::to_vec(&sample()).unwrap();
            let len = body.len();
            for (at, byte) in edits {
                body[at % len] = byte;
            }
            if let Ok(r) = Report::parse(&body) {
                proptest::prop_assert!(r.check().is_ok());
            }
        }
    }
}
