//! The VHD dynamic disk header ("Virtual Hard Disk Image Format Specification", section
//! "Dynamic Disk Header Format", with its parent locator entries). 1024 bytes, big-endian, at
//! the footer's data offset of dynamic and differencing disks.

use crate::block::{be, read_vec, BlockSource};
use crate::error::{Error, Result};

/// Size of the header.
pub const HEADER_SIZE: u64 = 1024;
/// `cxsparse`.
pub const COOKIE: &[u8; 8] = b"cxsparse";
/// Smallest block size accepted (one sector).
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest block size accepted (256 MiB; the spec's default is 2 MiB).
pub const MAX_BLOCK_SIZE: u32 = 256 << 20;
/// Longest parent locator data read.
pub const MAX_LOCATOR_BYTES: u32 = 64 * 1024;

/// One parent locator entry.
#[derive(Debug, Clone)]
pub struct ParentLocator {
    /// Platform code: `W2ku`, `W2ru`, `Wi2k`, `Wi2r`, `Mac `, `MacX`.
    pub code: [u8; 4],
    /// Byte length of the locator data.
    pub data_length: u32,
    /// Byte offset of the locator data in the file.
    pub data_offset: u64,
}

/// A parsed dynamic disk header.
#[derive(Debug, Clone)]
pub struct DynamicHeader {
    /// Byte offset of the block allocation table.
    pub table_offset: u64,
    /// Entries in the BAT.
    pub max_table_entries: u32,
    /// Bytes per block (a power of two).
    pub block_size: u32,
    /// Unique id of the parent's footer (differencing disks).
    pub parent_unique_id: [u8; 16],
    /// Parent file name (UTF-16BE in the header; informative).
    pub parent_name: String,
    /// Non-empty parent locator entries.
    pub locators: Vec<ParentLocator>,
    /// Whether the checksum matched.
    pub checksum_ok: bool,
}

impl DynamicHeader {
    /// Reads the header at `offset` of `file`.
    pub fn read(file: &dyn BlockSource, offset: u64) -> Result<DynamicHeader> {
        let name = file.name();
        let b = read_vec(file, offset, HEADER_SIZE, HEADER_SIZE).map_err(|_| {
            Error::corrupt(
                name,
                offset,
                "VHD dynamic header lies past the end of the file",
            )
        })?;
        if b.get(0..8) != Some(&COOKIE[..]) {
            return Err(Error::corrupt(
                name,
                offset,
                "VHD dynamic header: bad cookie",
            ));
        }
        let stored = be::u32(&b, 36).unwrap_or(0);
        let checksum_ok = super::footer::checksum(&b, 36..40) == stored;
        let block_size = be::u32(&b, 32).unwrap_or(0);
        if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
        {
            return Err(Error::corrupt(
                name,
                offset + 32,
                format!("VHD block size {block_size} is not a power of two in {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"),
            ));
        }
        let mut parent_unique_id = [0u8; 16];
        parent_unique_id.copy_from_slice(b.get(40..56).unwrap_or(&[0; 16]));
        let name_units: Vec<u16> = b
            .get(64..576)
            .unwrap_or(&[])
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let mut locators = Vec::new();
        for i in 0..8usize {
            let at = 576 + i * 24;
            let mut code = [0u8; 4];
            code.copy_from_slice(b.get(at..at + 4).unwrap_or(&[0; 4]));
            let data_length = be::u32(&b, at + 8).unwrap_or(0);
            let data_offset = be::u64(&b, at + 16).unwrap_or(0);
            if code != [0; 4] && data_length > 0 {
                locators.push(ParentLocator {
                    code,
                    data_length,
                    data_offset,
                });
            }
        }
        Ok(DynamicHeader {
            table_offset: be::u64(&b, 16).unwrap_or(0),
            max_table_entries: be::u32(&b, 28).unwrap_or(0),
            block_size,
            parent_unique_id,
            parent_name: String::from_utf16_lossy(&name_units),
            locators,
            checksum_ok,
        })
    }

    /// Candidate parent paths (relative to the image's directory, `/`-separated), most
    /// trustworthy first: relative Windows locators, Mac locators, then the file names of
    /// absolute Windows locators and of the header's parent name (the chain policy confines
    /// every candidate; the parent's unique id is checked after opening).
    pub fn parent_candidates(&self, file: &dyn BlockSource) -> Result<Vec<String>> {
        let mut relative = Vec::new();
        let mut other = Vec::new();
        for loc in &self.locators {
            if loc.data_length > MAX_LOCATOR_BYTES {
                return Err(Error::limit(
                    file.name(),
                    format!("VHD parent locator of {} bytes", loc.data_length),
                ));
            }
            let data = read_vec(
                file,
                loc.data_offset,
                u64::from(loc.data_length),
                u64::from(MAX_LOCATOR_BYTES),
            )
            .map_err(|_| {
                Error::corrupt(
                    file.name(),
                    loc.data_offset,
                    "VHD parent locator data lies past the end of the file",
                )
            })?;
            let utf16le = |d: &[u8]| {
                let units: Vec<u16> = d
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|&u| u != 0)
                    .collect();
                String::from_utf16_lossy(&units)
            };
            match &loc.code {
                b"W2ru" => relative.push(windows_relative(&utf16le(&data))),
                b"Wi2r" => relative.push(windows_relative(&latin(&data))),
                b"W2ku" => other.push(windows_absolute(&utf16le(&data))),
                b"Wi2k" => other.push(windows_absolute(&latin(&data))),
                b"MacX" | b"Mac " => {
                    let s = latin(&data);
                    let s = s
                        .strip_prefix("file://localhost")
                        .or_else(|| s.strip_prefix("file://"))
                        .unwrap_or(&s)
                        .to_string();
                    relative.push(s);
                }
                _ => {}
            }
        }
        if !self.parent_name.is_empty() {
            other.push(file_name(&self.parent_name));
        }
        relative.extend(other);
        relative.retain(|s| !s.is_empty());
        relative.dedup();
        Ok(relative)
    }
}

fn latin(d: &[u8]) -> String {
    let n = d.iter().position(|&b| b == 0).unwrap_or(d.len());
    String::from_utf8_lossy(d.get(..n).unwrap_or(&[])).into_owned()
}

/// `.\dir\parent.vhd` -> `dir/parent.vhd`.
pub(crate) fn windows_relative(s: &str) -> String {
    let s = s.replace('\\', "/");
    let mut t = s.as_str();
    while let Some(rest) = t.strip_prefix("./") {
        t = rest;
    }
    t.to_string()
}

/// An absolute Windows path (`C:\\vms\\base.vhd`, `\\\\server\\share\\base.vhd`) names a file on
/// another machine: only its file name is looked for beside the image. Anything else is passed
/// on as written, for the chain policy to judge.
pub(crate) fn windows_absolute(s: &str) -> String {
    let b = s.as_bytes();
    let drive = b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':';
    if drive || s.starts_with("\\\\") {
        file_name(s)
    } else {
        s.replace('\\', "/")
    }
}

/// The last component of a Windows or Unix path.
fn file_name(s: &str) -> String {
    s.rsplit(['\\', '/']).next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths_become_relative_names() {
        assert_eq!(windows_relative(".\\base.vhd"), "base.vhd");
        assert_eq!(windows_relative(".\\d\\base.vhd"), "d/base.vhd");
        assert_eq!(windows_relative("..\\..\\x"), "../../x");
        assert_eq!(windows_absolute("C:\\vms\\base.vhd"), "base.vhd");
        assert_eq!(windows_absolute("/etc/shadow"), "/etc/shadow");
    }
}
