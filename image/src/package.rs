//! Debian packages the image is built from: the lock file, `apt-get download`, `dpkg-deb`.
//!
//! The lock file (`image/kernel.lock`) pins each package by name, version and sha256. A package is
//! fetched by its exact name and version (never a glob) into a cache directory and checked
//! against the lock. When the pinned version has left the archive (Debian drops superseded
//! kernel builds within weeks), the archive's current build is used with a warning saying how to
//! update the lock; apt has then checked it against the archive's signed index. `--kernel-deb` /
//! `--stub-deb` take a package file for offline, exactly reproducible builds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use crate::util::{run, sha256_file};

/// One pinned package of the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Debian package name, e.g. `linux-image-6.1.0-57-amd64`.
    pub package: String,
    /// Debian version, e.g. `6.1.192-3`.
    pub version: String,
    /// Hex SHA-256 of the `.deb` file.
    pub sha256: String,
}

/// The lock file: one [`Pin`] per section (`kernel`, `stub`).
#[derive(Debug, Clone)]
pub struct Lock {
    sections: BTreeMap<String, Pin>,
}

impl Lock {
    /// Parses the lock file's TOML subset: `[section]` headers and `key = "value"` lines.
    pub fn parse(text: &str) -> Result<Self> {
        let mut raw: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut section: Option<String> = None;
        for (no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = Some(name.trim().to_string());
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                bail!("line {}: expected `key = \"value\"`", no + 1);
            };
            let value = value.trim();
            let Some(value) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
                bail!("line {}: value must be a quoted string", no + 1);
            };
            let Some(s) = &section else {
                bail!("line {}: key outside a [section]", no + 1);
            };
            raw.entry(s.clone())
                .or_default()
                .insert(key.trim().to_string(), value.to_string());
        }
        let mut sections = BTreeMap::new();
        for (name, mut keys) in raw {
            let mut take = |k: &str| {
                keys.remove(k)
                    .with_context(|| format!("[{name}] has no `{k}`"))
            };
            let pin = Pin {
                package: take("package")?,
                version: take("version")?,
                sha256: take("sha256")?,
            };
            ensure!(
                pin.sha256.len() == 64 && pin.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
                "[{name}] sha256 is not 64 hex digits"
            );
            sections.insert(name, pin);
        }
        Ok(Self { sections })
    }

    /// Reads and parses the lock file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read lock file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("lock file {}", path.display()))
    }

    /// The pin of `section`.
    pub fn pin(&self, section: &str) -> Result<&Pin> {
        self.sections
            .get(section)
            .with_context(|| format!("the lock file has no [{section}] section"))
    }
}

/// Where a package used by the build came from (recorded in `build.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// The pinned build, fetched and checked against the lock's sha256.
    Lock,
    /// The archive's current build, because the pinned one has left the archive.
    ArchiveCurrent,
    /// A package file given on the command line.
    File,
}

/// A package file ready to unpack, with what identifies it.
#[derive(Debug, Clone, Serialize)]
pub struct Package {
    /// Debian package name.
    pub package: String,
    /// Debian version.
    pub version: String,
    /// Hex SHA-256 of the `.deb`.
    pub sha256: String,
    /// Where it came from.
    pub origin: Origin,
    /// The `.deb` file.
    #[serde(skip)]
    pub path: PathBuf,
}

/// Takes a package file from the command line: checks it is a readable Debian package named
/// `expect_prefix...` and reads its name and version with `dpkg-deb`.
pub fn from_file(path: &Path, expect_prefix: &str) -> Result<Package> {
    ensure!(
        path.is_file(),
        "package file {} does not exist",
        path.display()
    );
    let out = run(Command::new("dpkg-deb")
        .args(["--show", "--showformat=${Package}\\n${Version}\\n"])
        .arg(path))
    .with_context(|| format!("{} is not a readable Debian package", path.display()))?;
    let mut lines = out.lines();
    let package = lines.next().unwrap_or_default().to_string();
    let version = lines.next().unwrap_or_default().to_string();
    ensure!(
        package.starts_with(expect_prefix),
        "{} holds package {package:?}, expected {expect_prefix}*",
        path.display()
    );
    Ok(Package {
        package,
        version,
        sha256: sha256_file(path)?,
        origin: Origin::File,
        path: path.to_path_buf(),
    })
}

/// Fetches the pinned package into `cache` (or finds it there) and checks its sha256. When the
/// pinned version is no longer in the archive, fetches `fallback`'s current build instead (the
/// package named by `fallback()`, e.g. the kernel's current ABI) and warns.
pub fn fetch_pinned(
    pin: &Pin,
    cache: &Path,
    fallback: impl FnOnce() -> Result<String>,
) -> Result<Package> {
    std::fs::create_dir_all(cache)
        .with_context(|| format!("cannot create cache directory {}", cache.display()))?;
    let cached = cache.join(deb_file_name(&pin.package, &pin.version));
    if !cached.is_file() {
        if let Err(e) = apt_download(&pin.package, &pin.version, cache) {
            let current = fallback().with_context(|| {
                format!(
                    "the pinned {} {} cannot be fetched ({e:#}) and the archive offers no current build",
                    pin.package, pin.version
                )
            })?;
            let version = candidate_version(&current)?;
            let path = cache.join(deb_file_name(&current, &version));
            if !path.is_file() {
                apt_download(&current, &version, cache)?;
            }
            let sha256 = sha256_file(&path)?;
            eprintln!(
                "coldscan-image: warning: the pinned {} {} has left the archive; building with the \
                 archive's current {current} {version} (sha256 {sha256}, checked by apt against the \
                 archive's signed index). This build is not the locked one: to lock it, set \
                 package = \"{current}\", version = \"{version}\", sha256 = \"{sha256}\" in the lock \
                 file, or pass the saved package file for an exact rebuild.",
                pin.package, pin.version
            );
            return Ok(Package {
                package: current,
                version,
                sha256,
                origin: Origin::ArchiveCurrent,
                path,
            });
        }
    }
    let sha256 = sha256_file(&cached)?;
    if sha256 != pin.sha256 {
        // A corrupt cache entry is removed so that the next build fetches it again.
        let _ = std::fs::remove_file(&cached);
        bail!(
            "{} has sha256 {sha256}, the lock says {}: the package differs from the pinned build \
             (removed from the cache)",
            cached.display(),
            pin.sha256
        );
    }
    Ok(Package {
        package: pin.package.clone(),
        version: pin.version.clone(),
        sha256,
        origin: Origin::Lock,
        path: cached,
    })
}

/// Fetches the archive's current build of `package` (used for `--kernel-version`).
pub fn fetch_current(package: &str, cache: &Path) -> Result<Package> {
    std::fs::create_dir_all(cache)
        .with_context(|| format!("cannot create cache directory {}", cache.display()))?;
    let version = candidate_version(package)?;
    let path = cache.join(deb_file_name(package, &version));
    if !path.is_file() {
        apt_download(package, &version, cache)?;
    }
    Ok(Package {
        package: package.to_string(),
        sha256: sha256_file(&path)?,
        version,
        origin: Origin::ArchiveCurrent,
        path,
    })
}

/// The archive's candidate version of `package` (`apt-cache show --no-all-versions`).
pub fn candidate_version(package: &str) -> Result<String> {
    field_of_candidate(package, "Version")
}

/// The package the metapackage `meta` depends on whose name starts with `prefix` (e.g. the
/// current `linux-image-6.1.0-NN-amd64` behind `linux-image-amd64`).
pub fn current_dependency(meta: &str, prefix: &str) -> Result<String> {
    let depends = field_of_candidate(meta, "Depends")?;
    depends
        .split(',')
        .map(|d| d.trim().split([' ', '(']).next().unwrap_or_default())
        .find(|name| name.starts_with(prefix))
        .map(str::to_string)
        .with_context(|| format!("{meta} depends on no {prefix}* package ({depends})"))
}

fn field_of_candidate(package: &str, field: &str) -> Result<String> {
    let out = run(Command::new("apt-cache").args(["show", "--no-all-versions", package]))
        .with_context(|| format!("the archive has no package {package}"))?;
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}: ")))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("apt-cache show {package} gives no {field}"))
}

/// `apt-get download NAME=VERSION` into `dir`: the exact package, never a pattern. apt checks the
/// file against the archive's signed index; it is downloaded into a temporary directory and
/// renamed, so an interrupted download never looks like a cached package.
fn apt_download(package: &str, version: &str, dir: &Path) -> Result<()> {
    ensure!(
        !package.contains(['*', '?', '[', '/']),
        "refusing a package pattern: {package}"
    );
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot write into cache directory {}", dir.display()))?;
    run(Command::new("apt-get")
        .args(["download", "-q"])
        .arg(format!("{package}={version}"))
        .current_dir(tmp.path()))
    .with_context(|| format!("apt-get download {package}={version}"))?;
    let name = deb_file_name(package, version);
    ensure!(
        tmp.path().join(&name).is_file(),
        "apt-get download {package}={version} wrote no {name}"
    );
    std::fs::rename(tmp.path().join(&name), dir.join(&name))
        .with_context(|| format!("cannot move {name} into {}", dir.display()))?;
    Ok(())
}

/// The file name `apt-get download` gives a package (an epoch's `:` becomes `%3a`).
fn deb_file_name(package: &str, version: &str) -> String {
    format!("{package}_{}_amd64.deb", version.replace(':', "%3a"))
}

/// Unpacks a package's files into `dir` with `dpkg-deb -x`.
pub fn extract(package: &Package, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&package.path)
        .arg(dir))
    .with_context(|| {
        format!(
            "cannot unpack {} (corrupt or truncated package?)",
            package.path.display()
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_lock_file_parses() {
        let lock = Lock::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel.lock")).unwrap();
        assert!(lock
            .pin("kernel")
            .unwrap()
            .package
            .starts_with("linux-image-"));
        assert_eq!(lock.pin("stub").unwrap().package, "systemd-boot-efi");
        assert!(lock.pin("nope").is_err());
    }

    #[test]
    fn lock_errors_name_the_line() {
        let e = Lock::parse("[kernel]\npackage = unquoted\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = Lock::parse("[kernel]\npackage = \"x\"\nversion = \"1\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("sha256"), "{e:#}");
    }

    #[test]
    fn deb_names_follow_apt() {
        assert_eq!(deb_file_name("a", "1:2.3-4"), "a_1%3a2.3-4_amd64.deb");
    }
}
