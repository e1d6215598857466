//! The VMDK text descriptor: VMware "Virtual Disk Format 1.1", section "The Descriptor File"
//! (header keys, extent descriptions, the disk database), as a separate `.vmdk` file or embedded
//! in a hosted sparse extent.
//!
//! The descriptor comes from an untrusted image: its size is bounded ([`MAX_DESCRIPTOR_BYTES`]),
//! so is the number of extents ([`MAX_EXTENTS`]) and their total size; file names are returned as
//! written and resolved by the caller under the chain policy.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Largest descriptor accepted (real ones are well under 10 KiB).
pub const MAX_DESCRIPTOR_BYTES: u64 = 1 << 20;
/// Most extents accepted in one descriptor (a 4 TiB `twoGbMaxExtent*` disk has 2048).
pub const MAX_EXTENTS: usize = 4096;
/// `parentCID` value meaning "no parent".
pub const NO_PARENT_CID: u32 = 0xffff_ffff;

/// Access mode of an extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `RW`.
    ReadWrite,
    /// `RDONLY`.
    ReadOnly,
    /// `NOACCESS`: the extent may not be read.
    NoAccess,
}

/// Type of an extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentKind {
    /// `SPARSE`: hosted sparse extent (`KDMV`).
    Sparse,
    /// `FLAT`: raw data at an offset of a file.
    Flat,
    /// `ZERO`: reads as zeros, no file.
    Zero,
    /// `VMFS`: ESX flat extent (`-flat.vmdk`).
    Vmfs,
    /// `VMFSSPARSE`: ESX sparse extent (`-delta.vmdk`, `COWD`).
    VmfsSparse,
    /// `VMFSRDM` / `VMFSRAW`: raw device mapping.
    VmfsRaw,
    /// `SESPARSE`: ESXi space-efficient sparse extent.
    SeSparse,
    /// `VSANSPARSE`: vSAN sparse extent.
    VsanSparse,
}

impl ExtentKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "SPARSE" => ExtentKind::Sparse,
            "FLAT" => ExtentKind::Flat,
            "ZERO" => ExtentKind::Zero,
            "VMFS" => ExtentKind::Vmfs,
            "VMFSSPARSE" => ExtentKind::VmfsSparse,
            "VMFSRDM" | "VMFSRAW" => ExtentKind::VmfsRaw,
            "SESPARSE" => ExtentKind::SeSparse,
            "VSANSPARSE" => ExtentKind::VsanSparse,
            _ => return None,
        })
    }

    /// The name as written in descriptors.
    pub fn as_str(self) -> &'static str {
        match self {
            ExtentKind::Sparse => "SPARSE",
            ExtentKind::Flat => "FLAT",
            ExtentKind::Zero => "ZERO",
            ExtentKind::Vmfs => "VMFS",
            ExtentKind::VmfsSparse => "VMFSSPARSE",
            ExtentKind::VmfsRaw => "VMFSRDM",
            ExtentKind::SeSparse => "SESPARSE",
            ExtentKind::VsanSparse => "VSANSPARSE",
        }
    }
}

/// One extent description line: `RW 2048 FLAT "disk-flat.vmdk" 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// Access mode.
    pub access: Access,
    /// Size in sectors.
    pub sectors: u64,
    /// Type.
    pub kind: ExtentKind,
    /// File name as written (untrusted), absent for `ZERO`.
    pub file: Option<String>,
    /// Offset in sectors inside the file (flat extents).
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `version`.
    pub version: Option<String>,
    /// `CID`: content id, changed on every write.
    pub cid: Option<u32>,
    /// `parentCID`: the parent's CID when this disk was created ([`NO_PARENT_CID`]: none).
    pub parent_cid: Option<u32>,
    /// `createType`.
    pub create_type: Option<String>,
    /// `parentFileNameHint`.
    pub parent_hint: Option<String>,
    /// Extent lines in order.
    pub extents: Vec<ExtentLine>,
    /// Disk database (`ddb.*`) entries.
    pub ddb: BTreeMap<String, String>,
}

impl Descriptor {
    /// Parses descriptor text (up to a NUL, as embedded descriptors are NUL-padded). `object`
    /// and `at` name where it came from for errors.
    pub fn parse(bytes: &[u8], object: &str, at: u64) -> Result<Self> {
        if bytes.len() as u64 > MAX_DESCRIPTOR_BYTES {
            return Err(Error::limit(
                object,
                format!(
                    "VMDK descriptor of {} bytes exceeds the {MAX_DESCRIPTOR_BYTES}-byte limit",
                    bytes.len()
                ),
            ));
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(bytes.get(..end).unwrap_or(&[]));
        let mut d = Descriptor::default();
        let mut total: u64 = 0;
        let mut line_at = at;
        for raw in text.split('\n') {
            let here = line_at;
            line_at = line_at.saturating_add(raw.len() as u64 + 1);
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let corrupt = |detail: String| Error::corrupt(object, here, detail);
            if let Some(ext) = parse_extent(line).map_err(corrupt)? {
                if d.extents.len() >= MAX_EXTENTS {
                    return Err(Error::limit(
                        object,
                        format!("VMDK descriptor with more than {MAX_EXTENTS} extents"),
                    ));
                }
                total = total
                    .checked_add(ext.sectors)
                    .filter(|&t| t <= crate::disk::MAX_VIRTUAL_SIZE / 512)
                    .ok_or_else(|| {
                        corrupt(format!(
                            "extents add up to more than the {}-byte limit",
                            crate::disk::MAX_VIRTUAL_SIZE
                        ))
                    })?;
                d.extents.push(ext);
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                // Unknown lines are ignored, as VMware does.
                continue;
            };
            let key = key.trim();
            let value = unquote(value.trim());
            let hex = |v: &str| {
                u32::from_str_radix(v, 16)
                    .map_err(|_| corrupt(format!("{key} {v:?} is not a hexadecimal number")))
            };
            match key {
                "version" => d.version = Some(value.to_string()),
                "CID" => d.cid = Some(hex(value)?),
                "parentCID" => d.parent_cid = Some(hex(value)?),
                "createType" => d.create_type = Some(value.to_string()),
                "parentFileNameHint" => d.parent_hint = Some(value.to_string()),
                k if k.starts_with("ddb.") => {
                    d.ddb.insert(k.to_string(), value.to_string());
                }
                _ => {}
            }
        }
        Ok(d)
    }

    /// Total size of the extents in sectors (bounded in [`Descriptor::parse`]).
    pub fn total_sectors(&self) -> u64 {
        self.extents.iter().map(|e| e.sectors).sum()
    }

    /// Whether the descriptor names a parent disk.
    pub fn has_parent(&self) -> bool {
        self.parent_hint.as_deref().is_some_and(|h| !h.is_empty())
    }
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Parses an extent line, `Ok(None)` if the line is not one.
fn parse_extent(line: &str) -> std::result::Result<Option<ExtentLine>, String> {
    let (access_word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let access = match access_word {
        "RW" => Access::ReadWrite,
        "RDONLY" => Access::ReadOnly,
        "NOACCESS" => Access::NoAccess,
        _ => return Ok(None),
    };
    let rest = rest.trim_start();
    let (sectors_word, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let sectors: u64 = sectors_word
        .parse()
        .map_err(|_| format!("extent size {sectors_word:?} is not a number"))?;
    let rest = rest.trim_start();
    let (kind_word, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let kind =
        ExtentKind::parse(kind_word).ok_or_else(|| format!("unknown extent type {kind_word:?}"))?;
    let rest = rest.trim_start();
    let (file, rest) = if let Some(quoted) = rest.strip_prefix('"') {
        let close = quoted
            .find('"')
            .ok_or_else(|| "extent file name without a closing quote".to_string())?;
        (
            Some(quoted.get(..close).unwrap_or("").to_string()),
            quoted.get(close + 1..).unwrap_or(""),
        )
    } else {
        (None, rest)
    };
    if file.is_none() && kind != ExtentKind::Zero {
        return Err(format!("{} extent without a file name", kind.as_str()));
    }
    let offset_word = rest.split_whitespace().next();
    let offset = match offset_word {
        Some(w) => w
            .parse()
            .map_err(|_| format!("extent offset {w:?} is not a number"))?,
        None => 0,
    };
    Ok(Some(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_DELTA: &str = "# Disk DescriptorFile\nversion=1\nCID=2ef88bb7\n\
        parentCID=9d91d6ea\ncreateType=\"monolithicSparse\"\nparentFileNameHint=\"base.vmdk\"\n\n\
        # Extent description\nRW 10240 SPARSE \"top.vmdk\"\n\n# The Disk Data Base\n#DDB\n\n\
        ddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n\0\0\0garbage";

    #[test]
    fn parses_a_qemu_delta_descriptor() {
        let d = Descriptor::parse(QEMU_DELTA.as_bytes(), "x", 0).unwrap();
        assert_eq!(d.cid, Some(0x2ef8_8bb7));
        assert_eq!(d.parent_cid, Some(0x9d91_d6ea));
        assert_eq!(d.create_type.as_deref(), Some("monolithicSparse"));
        assert_eq!(d.parent_hint.as_deref(), Some("base.vmdk"));
        assert_eq!(
            d.ddb.get("ddb.adapterType").map(String::as_str),
            Some("ide")
        );
        assert_eq!(
            d.extents,
            vec![ExtentLine {
                access: Access::ReadWrite,
                sectors: 10240,
                kind: ExtentKind::Sparse,
                file: Some("top.vmdk".into()),
                offset: 0,
            }]
        );
    }

    #[test]
    fn parses_flat_zero_and_names_with_spaces() {
        let text = "RW 100 FLAT \"my disk-flat.vmdk\" 2048\nRDONLY 50 ZERO\n\
                    NOACCESS 8 VMFS \"esx-flat.vmdk\"\nRW 4 SESPARSE \"x-sesparse.vmdk\"\n";
        let d = Descriptor::parse(text.as_bytes(), "x", 0).unwrap();
        assert_eq!(d.extents.len(), 4);
        assert_eq!(d.extents[0].file.as_deref(), Some("my disk-flat.vmdk"));
        assert_eq!(d.extents[0].offset, 2048);
        assert_eq!(d.extents[1].kind, ExtentKind::Zero);
        assert_eq!(d.extents[2].access, Access::NoAccess);
        assert_eq!(d.extents[3].kind, ExtentKind::SeSparse);
        assert_eq!(d.total_sectors(), 162);
    }

    #[test]
    fn refuses_malformed_lines_and_absurd_sizes() {
        for bad in [
            "RW x SPARSE \"a\"",
            "RW 10 BOGUS \"a\"",
            "RW 10 FLAT",
            "RW 10 FLAT \"unterminated",
            "RW 10 FLAT \"a\" notanumber",
            "RW 99999999999999999 FLAT \"a\" 0",
            "CID=zzzz",
        ] {
            assert!(Descriptor::parse(bad.as_bytes(), "x", 0).is_err(), "{bad}");
        }
        let many = "RW 1 ZERO\n".repeat(MAX_EXTENTS + 1);
        assert!(matches!(
            Descriptor::parse(many.as_bytes(), "x", 0),
            Err(Error::Limit { .. })
        ));
        let huge = vec![b'#'; MAX_DESCRIPTOR_BYTES as usize + 1];
        assert!(matches!(
            Descriptor::parse(&huge, "x", 0),
            Err(Error::Limit { .. })
        ));
    }
}
