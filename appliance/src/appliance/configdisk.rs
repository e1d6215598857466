//! The optional config disk: a small FAT or ext4 filesystem labelled `COLDSCAN-CFG` (ext4) or
//! `COLDSCANCFG` (FAT labels hold at most 11 characters), read with coldscan's own filesystem
//! readers, never mounted. It may hold:
//!
//! - `coldscan.toml`: the site configuration (the kernel command line wins over it);
//! - `db/`: signature databases (anything libclamav loads) that **replace** the image's baked
//!   ones, so that signatures update without rebuilding the image;
//! - the CA bundle named by `manager.ca_bundle`.
//!
//! Files are copied to `/run/coldscan/` (tmpfs) within named limits; names are checked so that
//! nothing on the disk chooses a path outside that directory.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coldscan_scanner::block::{FileSource, SharedSource, Window};
use coldscan_scanner::fs::{self as cfs, EntryKind, SharedFilesystem, WalkEvent};
use coldscan_scanner::partition;

/// Largest `coldscan.toml` read.
pub const MAX_TOML_BYTES: u64 = 64 * 1024;
/// Largest CA bundle read.
pub const MAX_CA_BYTES: u64 = 1024 * 1024;
/// Most signature database bytes copied from the config disk (they live in RAM).
pub const MAX_DB_BYTES: u64 = 2 << 30;
/// Most database files copied.
pub const MAX_DB_FILES: usize = 256;
/// Where the config disk's files are copied.
pub const RUN_DIR: &str = "/run/coldscan/config";

/// What was read from the config disk.
#[derive(Debug, Default, Clone)]
pub struct ConfigDisk {
    /// `coldscan.toml`, if present.
    pub toml: Option<String>,
    /// Directory of copied signature databases, if `db/` had any.
    pub db_dir: Option<PathBuf>,
    /// Database files copied.
    pub db_files: Vec<String>,
    /// The filesystem found on it (the spool mounts it with the matching kernel driver).
    pub kind: Option<cfs::FsKind>,
    /// The filesystem's directory entries seen (for the CA bundle lookup).
    files: Vec<(String, u64)>,
    fs: Option<SharedFilesystem>,
}

/// Reading the config disk failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigDiskError {
    /// The disk or its filesystem could not be read.
    #[error("config disk {device}: {detail}")]
    Unreadable {
        /// The device.
        device: String,
        /// What failed.
        detail: String,
    },
    /// A file is larger than its limit.
    #[error("config disk: {path} is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// Path on the config disk.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Writing the copy failed.
    #[error("config disk: copying {path}: {source}")]
    Copy {
        /// Path on the config disk.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Opens the filesystem of partition `index` (0: the whole disk) of `source`.
fn open_volume(
    source: SharedSource,
    index: u32,
    device: &str,
) -> Result<(SharedFilesystem, cfs::FsKind), ConfigDiskError> {
    let bad = |detail: String| ConfigDiskError::Unreadable {
        device: device.to_string(),
        detail,
    };
    let volume: SharedSource = if index == 0 {
        source
    } else {
        let table = partition::read_table(source.as_ref()).map_err(|e| bad(e.to_string()))?;
        let p = table
            .partitions
            .iter()
            .find(|p| p.index == index)
            .ok_or_else(|| bad(format!("no partition {index}")))?;
        Arc::new(
            Window::new(
                source.clone(),
                p.start,
                p.size,
                format!("partition {index}"),
            )
            .map_err(|e| bad(e.to_string()))?,
        )
    };
    let kind = cfs::probe(&volume)
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("no filesystem recognised".into()))?;
    let fs = cfs::open(volume, kind).map_err(|e| bad(e.to_string()))?;
    Ok((fs, kind))
}

/// A name from the disk usable as one file name in our copy directory.
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn read_file(fs: &SharedFilesystem, path: &str, limit: u64) -> Result<Vec<u8>, ConfigDiskError> {
    let unreadable = |detail: String| ConfigDiskError::Unreadable {
        device: "filesystem".into(),
        detail: format!("{path}: {detail}"),
    };
    let entry = fs.lookup(path).map_err(|e| unreadable(e.to_string()))?;
    if entry.size > limit {
        return Err(ConfigDiskError::TooLarge {
            path: path.to_string(),
            size: entry.size,
            limit,
        });
    }
    let mut reader = fs.open(&entry).map_err(|e| unreadable(e.to_string()))?;
    let mut out = Vec::with_capacity(usize::try_from(entry.size).unwrap_or(0));
    cfs::read_all(reader.as_mut(), path, &mut |chunk| {
        out.extend_from_slice(chunk)
    })
    .map_err(|e| unreadable(e.to_string()))?;
    Ok(out)
}

impl ConfigDisk {
    /// Reads partition `index` of `device` (a block device or, in tests, an image file) and
    /// copies its databases under `run_dir`.
    pub fn read(device: &Path, index: u32, run_dir: &Path) -> Result<ConfigDisk, ConfigDiskError> {
        let name = device.display().to_string();
        let source = FileSource::open(device).map_err(|e| ConfigDiskError::Unreadable {
            device: name.clone(),
            detail: e.to_string(),
        })?;
        let source: SharedSource = Arc::new(source);
        let (fs, kind) = open_volume(source, index, &name)?;
        let mut disk = Self::read_fs(fs, run_dir)?;
        disk.kind = Some(kind);
        Ok(disk)
    }

    fn read_fs(fs: SharedFilesystem, run_dir: &Path) -> Result<ConfigDisk, ConfigDiskError> {
        let mut files = Vec::new();
        fs.walk(&mut |ev| {
            if let WalkEvent::Entry(e) = ev {
                if e.kind == EntryKind::File && e.stream.is_none() {
                    files.push((e.path, e.size));
                }
            }
        })
        .map_err(|e| ConfigDiskError::Unreadable {
            device: "filesystem".into(),
            detail: e.to_string(),
        })?;
        let mut disk = ConfigDisk {
            files,
            fs: Some(fs.clone()),
            ..ConfigDisk::default()
        };
        // FAT short names are upper case: compare case-insensitively.
        if let Some(path) = disk.find("coldscan.toml") {
            let bytes = read_file(&fs, &path, MAX_TOML_BYTES)?;
            disk.toml = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
        let dbs: Vec<(String, String, u64)> = disk
            .files
            .iter()
            .filter_map(|(p, size)| {
                let (dir, name) = p.trim_start_matches('/').split_once('/')?;
                (dir.eq_ignore_ascii_case("db") && !name.contains('/') && safe_name(name))
                    .then(|| (p.clone(), name.to_string(), *size))
            })
            .take(MAX_DB_FILES)
            .collect();
        let total: u64 = dbs.iter().map(|d| d.2).sum();
        if total > MAX_DB_BYTES {
            return Err(ConfigDiskError::TooLarge {
                path: "/db".into(),
                size: total,
                limit: MAX_DB_BYTES,
            });
        }
        if !dbs.is_empty() {
            let dir = run_dir.join("db");
            std::fs::create_dir_all(&dir).map_err(|source| ConfigDiskError::Copy {
                path: "/db".into(),
                source,
            })?;
            for (path, name, _) in dbs {
                let bytes = read_file(&fs, &path, MAX_DB_BYTES)?;
                std::fs::write(dir.join(&name), bytes).map_err(|source| ConfigDiskError::Copy {
                    path: path.clone(),
                    source,
                })?;
                disk.db_files.push(name);
            }
            disk.db_dir = Some(dir);
        }
        Ok(disk)
    }

    /// The path of a top-level file named `name` (case-insensitive), if present.
    fn find(&self, name: &str) -> Option<String> {
        self.files
            .iter()
            .find(|(p, _)| p.trim_start_matches('/').eq_ignore_ascii_case(name))
            .map(|(p, _)| p.clone())
    }

    /// Copies the CA bundle at `path` (relative to the config disk's root, as `coldscan.toml`
    /// names it) to `run_dir` and returns the copy's path.
    pub fn copy_ca_bundle(&self, path: &str, run_dir: &Path) -> Result<PathBuf, ConfigDiskError> {
        let want = format!("/{}", path.trim_start_matches('/'));
        let found = self
            .files
            .iter()
            .find(|(p, _)| p.eq_ignore_ascii_case(&want))
            .map(|(p, _)| p.clone())
            .ok_or_else(|| ConfigDiskError::Unreadable {
                device: "filesystem".into(),
                detail: format!("{want}: not found (manager.ca_bundle)"),
            })?;
        let fs = self
            .fs
            .as_ref()
            .ok_or_else(|| ConfigDiskError::Unreadable {
                device: "filesystem".into(),
                detail: "not open".into(),
            })?;
        let bytes = read_file(fs, &found, MAX_CA_BYTES)?;
        std::fs::create_dir_all(run_dir).map_err(|source| ConfigDiskError::Copy {
            path: found.clone(),
            source,
        })?;
        let dest = run_dir.join("ca-bundle.pem");
        std::fs::write(&dest, bytes).map_err(|source| ConfigDiskError::Copy {
            path: found,
            source,
        })?;
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(cmd: &mut Command) {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A FAT config disk made by mkfs.vfat + mcopy, as an operator would.
    #[test]
    fn reads_a_fat_config_disk() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("cfg.img");
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("db")).unwrap();
        std::fs::write(tree.join("coldscan.toml"), "mode = \"oneshot\"\n").unwrap();
        std::fs::write(tree.join("db/site.hdb"), "0123:4:Test.Sig\n").unwrap();
        std::fs::write(tree.join("db/../x"), "").unwrap();
        std::fs::write(tree.join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
        run(Command::new("truncate").arg("-s").arg("4M").arg(&img));
        run(Command::new("mkfs.vfat")
            .args(["-n", "COLDSCANCFG"])
            .arg(&img));
        for f in ["coldscan.toml", "db", "ca.pem"] {
            run(Command::new("mcopy")
                .args(["-s", "-i"])
                .arg(&img)
                .arg(tree.join(f))
                .arg("::"));
        }
        let role = super::super::discovery::role_of_path(&img, None);
        assert_eq!(
            role,
            super::super::discovery::DiskRole::Config { partition: 0 }
        );
        let run_dir = dir.path().join("run");
        let disk = ConfigDisk::read(&img, 0, &run_dir).unwrap();
        assert_eq!(disk.toml.as_deref(), Some("mode = \"oneshot\"\n"));
        assert!(matches!(
            disk.kind,
            Some(cfs::FsKind::Fat12 | cfs::FsKind::Fat16)
        ));
        assert_eq!(disk.db_files, ["site.hdb"]);
        assert_eq!(
            std::fs::read_to_string(run_dir.join("db/site.hdb")).unwrap(),
            "0123:4:Test.Sig\n"
        );
        let ca = disk.copy_ca_bundle("ca.pem", &run_dir).unwrap();
        assert!(std::fs::read_to_string(ca)
            .unwrap()
            .starts_with("-----BEGIN"));
        assert!(disk.copy_ca_bundle("missing.pem", &run_dir).is_err());
    }

    /// An ext4 config disk labelled COLDSCAN-CFG (mkfs.ext4 -d).
    #[test]
    fn reads_an_ext4_config_disk() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("cfg.img");
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("coldscan.toml"), "jobs = 2\n").unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-L", "COLDSCAN-CFG", "-d"])
            .arg(&tree)
            .arg(&img)
            .arg("4M"));
        let role = super::super::discovery::role_of_path(&img, None);
        assert_eq!(
            role,
            super::super::discovery::DiskRole::Config { partition: 0 }
        );
        let disk = ConfigDisk::read(&img, 0, &dir.path().join("run")).unwrap();
        assert_eq!(disk.toml.as_deref(), Some("jobs = 2\n"));
        assert_eq!(disk.kind, Some(cfs::FsKind::Ext4));
        assert!(disk.db_dir.is_none());
    }

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "x y", "é"] {
            assert!(!safe_name(bad), "{bad}");
        }
        assert!(safe_name("main.cvd"));
    }
}
