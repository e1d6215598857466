//! The scan report (DESIGN.md section 3): what was scanned, what was found, and what could not be
//! scanned and why. Serialized as JSON for `--json`, stored by the manager, and checked against
//! `docs/report.schema.json` by a test.

use serde::{Deserialize, Serialize};

use crate::error::Reason;

/// Version of the report's structure, `schema_version` in the JSON. Readers (the manager)
/// refuse versions they do not know; additive fields do not change it.
pub const SCHEMA_VERSION: u32 = 1;

/// A complete scan report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScanReport {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Always `coldscan`.
    pub tool: String,
    /// coldscan's version.
    pub version: String,
    /// The engine used.
    pub engine: EngineInfo,
    /// RFC 3339 UTC start time.
    pub started: String,
    /// RFC 3339 UTC end time.
    pub finished: String,
    /// One entry per target given.
    pub targets: Vec<TargetReport>,
    /// Totals.
    pub stats: ScanStats,
    /// Every detection.
    pub detections: Vec<Detection>,
    /// Everything that was not (fully) scanned, with the reason.
    pub not_scanned: Vec<NotScanned>,
}

/// Engine identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngineInfo {
    /// Engine name (`clamav`).
    pub name: String,
    /// Engine version (`1.4.6`).
    pub version: String,
    /// Number of signatures loaded.
    pub signatures: u64,
    /// Which signature database was loaded; absent in reports of older versions and in reports
    /// written when no engine could be loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<DbIdentity>,
}

/// The identity of the signature database an engine loaded, so that a report says exactly which
/// signatures judged it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DbIdentity {
    /// libclamav's database version (`CL_ENGINE_DB_VERSION`: the version of the `daily`
    /// database loaded, as `clamscan --version` shows it; 0 when none is loaded, e.g. with only
    /// `.hdb`/`.ndb` files of one's own).
    pub version: u64,
    /// Lowercase hex SHA-256 over the database files loaded: per database directory, its
    /// database files in byte order of their names, each as name, a NUL byte, its length (8
    /// bytes little-endian) and its bytes; directories (and files given directly) in load order.
    pub sha256: String,
    /// The version the manager gave this database (`coldscan-manager signatures set --version`),
    /// when the appliance fetched it from its manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager_version: Option<String>,
}

/// One target (disk image, device, NBD export or directory).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetReport {
    /// The target as given.
    pub target: String,
    /// `raw`, `qcow2`, ..., `directory`, or `file` (a host file that is not a disk image,
    /// scanned as one file).
    pub format: String,
    /// Paths of the chain's layers, top first.
    pub chain: Vec<String>,
    /// Virtual size in bytes (0 for directories).
    pub size: u64,
    /// Volumes found.
    pub partitions: Vec<PartitionReport>,
}

/// One volume of a target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionReport {
    /// 1-based partition index, 0 for a whole-disk volume.
    pub index: u32,
    /// The logical volume (`vg/lv`) when the volume is one; absent for partitions. `partition`
    /// is then the partition holding the LV's first extent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// `gpt`, `mbr` or `none`.
    pub scheme: String,
    /// Partition type (GPT type GUID or MBR type byte as `0x83`).
    #[serde(rename = "type")]
    pub type_id: String,
    /// Byte offset on the disk.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Filesystem found (`ext4`, `ntfs`, `fat32`...), or null.
    pub fs: Option<String>,
    /// `ok`, `unrecognized`, or `error: ...`.
    pub status: String,
}

/// Totals of a scan.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ScanStats {
    /// Files (and streams) scanned.
    pub files: u64,
    /// Bytes of content scanned.
    pub bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Of `files`, those whose verdict came from the verdict cache (content scanned before by
    /// the same engine, signatures and limits) instead of a scan.
    #[serde(default)]
    pub cached_files: u64,
}

/// One detection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Detection {
    /// The target.
    pub target: String,
    /// Partition index (0 for whole-disk volumes and directories).
    pub partition: u32,
    /// The logical volume (`vg/lv`) when the volume is one; absent for partitions. `partition`
    /// is then the partition holding the LV's first extent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Absolute path inside the volume (or the host path for directory targets).
    pub path: String,
    /// NTFS stream name, if any.
    pub stream: Option<String>,
    /// File size in bytes.
    pub size: u64,
    /// sha256 of the content, lowercase hex.
    pub sha256: Option<String>,
    /// Signature name as the engine reports it.
    pub signature: String,
    /// The verdict came from the verdict cache (the content was scanned in an earlier scan).
    #[serde(default)]
    pub cached: bool,
}

/// Something that was not scanned, or not completely.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct NotScanned {
    /// The target.
    pub target: String,
    /// Partition index, or null when the whole target could not be opened.
    pub partition: Option<u32>,
    /// The logical volume (`vg/lv`) when the volume is one; absent for partitions. `partition`
    /// is then the partition holding the LV's first extent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Path inside the volume, or null for a whole volume/target.
    pub path: Option<String>,
    /// Fixed reason.
    pub reason: Reason,
    /// The error message, naming object and byte offset.
    pub detail: String,
}

/// Current time as RFC 3339 UTC with second precision, without a date-time dependency.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339_from_unix(secs)
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339_from_unix(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_from_unix(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
