//! The qcow2 internal snapshot table (QEMU `docs/interop/qcow2.txt`, "Snapshots").
//!
//! Each entry (8-byte aligned) holds the snapshot's L1 table offset and size, its id and name
//! strings, dates, and extra data whose bytes 8-15 (when present) are the virtual disk size at
//! the time of the snapshot.

use crate::block::{be, read_vec, BlockSource};
use crate::error::{Error, Result};

/// Most snapshots accepted (QEMU's `QCOW_MAX_SNAPSHOTS`).
pub const MAX_SNAPSHOTS: u32 = 65536;
/// Largest snapshot table read (QEMU's `QCOW_MAX_SNAPSHOTS_SIZE`, 64 MiB).
pub const MAX_TABLE_BYTES: u64 = 64 << 20;
/// Fixed part of an entry.
const ENTRY_FIXED: u64 = 40;

/// One internal snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Unique id string (usually a number).
    pub id: String,
    /// Name given by the user.
    pub name: String,
    /// Byte offset of the snapshot's L1 table.
    pub l1_table_offset: u64,
    /// Entries in that L1 table.
    pub l1_size: u32,
    /// Creation time, seconds since the epoch.
    pub date_sec: u32,
    /// Virtual disk size of the snapshot, when recorded in its extra data.
    pub disk_size: Option<u64>,
}

/// Reads `count` snapshot entries at `offset`.
pub fn read_table(file: &dyn BlockSource, offset: u64, count: u32) -> Result<Vec<Snapshot>> {
    let name = file.name();
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > MAX_SNAPSHOTS {
        return Err(Error::limit(
            name,
            format!("{count} qcow2 snapshots (more than {MAX_SNAPSHOTS})"),
        ));
    }
    if offset & 7 != 0 {
        return Err(Error::corrupt(
            name,
            offset,
            "qcow2 snapshot table is not 8-byte aligned",
        ));
    }
    let mut out = Vec::new();
    let mut pos = offset;
    for _ in 0..count {
        if pos - offset > MAX_TABLE_BYTES {
            return Err(Error::limit(
                name,
                format!("qcow2 snapshot table larger than {MAX_TABLE_BYTES} bytes"),
            ));
        }
        let fixed = read_vec(file, pos, ENTRY_FIXED, ENTRY_FIXED).map_err(|_| {
            Error::corrupt(
                name,
                pos,
                "qcow2 snapshot entry lies past the end of the file",
            )
        })?;
        let l1_table_offset = be::u64(&fixed, 0).unwrap_or(0);
        let l1_size = be::u32(&fixed, 8).unwrap_or(0);
        let id_len = u64::from(be::u16(&fixed, 12).unwrap_or(0));
        let name_len = u64::from(be::u16(&fixed, 14).unwrap_or(0));
        let date_sec = be::u32(&fixed, 16).unwrap_or(0);
        let extra_len = u64::from(be::u32(&fixed, 36).unwrap_or(0));
        if extra_len > 1024 {
            return Err(Error::corrupt(
                name,
                pos,
                format!("qcow2 snapshot extra data of {extra_len} bytes (more than 1024)"),
            ));
        }
        let var_len = extra_len + id_len + name_len;
        let var = read_vec(file, pos + ENTRY_FIXED, var_len, 1024 + 2 * 65535).map_err(|_| {
            Error::corrupt(
                name,
                pos,
                "qcow2 snapshot entry lies past the end of the file",
            )
        })?;
        let extra = var.get(..extra_len as usize).unwrap_or(&[]);
        let disk_size = if extra_len >= 16 {
            be::u64(extra, 8)
        } else {
            None
        };
        let id_end = (extra_len + id_len) as usize;
        let id = String::from_utf8_lossy(var.get(extra_len as usize..id_end).unwrap_or(&[]))
            .into_owned();
        let sname = String::from_utf8_lossy(var.get(id_end..).unwrap_or(&[])).into_owned();
        out.push(Snapshot {
            id,
            name: sname,
            l1_table_offset,
            l1_size,
            date_sec,
            disk_size,
        });
        pos = (pos + ENTRY_FIXED + var_len + 7) & !7;
    }
    Ok(out)
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, proleptic Gregorian).
pub fn format_date(secs: u32) -> String {
    let secs = i64::from(secs);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Finds the snapshot whose id or name is `wanted` (ids first, as `qemu-img snapshot -a`).
pub fn find<'a>(snapshots: &'a [Snapshot], wanted: &str) -> Option<&'a Snapshot> {
    snapshots
        .iter()
        .find(|s| s.id == wanted)
        .or_else(|| snapshots.iter().find(|s| s.name == wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(format_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_date(1_795_487_101), "2026-11-24 02:25:01 UTC");
    }
}
