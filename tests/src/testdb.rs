//! Test signature databases, generated at run time and never committed (DESIGN.md section 4).
//!
//! [`write_test_db`] writes into a directory:
//! - `test.hdb`: `sigtool --sha256` of Debian's `clamav-testfiles/clam.exe`; with it, libclamav
//!   detects all 44 files of that package (archives, packers, documents) as `clam.exe.UNOFFICIAL`.
//! - `eicar.ndb`: a body signature for the EICAR test string, named [`EICAR_SIGNATURE`]
//!   (libclamav appends `.UNOFFICIAL`).
//!
//! The EICAR string is assembled from pieces ([`eicar`]) so that no source file contains it.
//! `scripts/make-test-db` writes the same files for shell scripts.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Where Debian's `clamav-testfiles` package puts its files.
pub const TESTFILES_DIR: &str = "/usr/share/clamav-testfiles";

/// Name of the EICAR body signature in `eicar.ndb`.
pub const EICAR_SIGNATURE: &str = "Coldscan.Test.EICAR";

/// The name libclamav reports for [`EICAR_SIGNATURE`].
pub const EICAR_REPORTED: &str = "Coldscan.Test.EICAR.UNOFFICIAL";

/// The name libclamav reports for the clamav-testfiles hash signature.
pub const CLAM_REPORTED: &str = "clam.exe.UNOFFICIAL";

/// The 68-byte EICAR anti-malware test string, assembled at run time.
pub fn eicar() -> Vec<u8> {
    let pieces = [
        "X5O!P%@AP[4\\PZX5",
        "4(P^)7CC)7}$",
        "EICAR-STANDARD-",
        "ANTIVIRUS-TEST-",
        "FILE!$H+H*",
    ];
    pieces.concat().into_bytes()
}

/// The files of `clamav-testfiles`, sorted (44 on Debian 12).
pub fn testfiles() -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(TESTFILES_DIR)
        .with_context(|| format!("{TESTFILES_DIR}: install the clamav-testfiles package"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Writes `test.hdb` and `eicar.ndb` into `dir` (created if needed) and returns `dir`.
pub fn write_test_db(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let clam = Path::new(TESTFILES_DIR).join("clam.exe");
    let out = Command::new("sigtool")
        .arg("--sha256")
        .arg(&clam)
        .output()
        .context("running sigtool (package clamav)")?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "sigtool --sha256 {} failed: {}",
            clam.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(dir.join("test.hdb"), &out.stdout)?;
    std::fs::write(dir.join("eicar.ndb"), eicar_ndb())?;
    Ok(dir.to_path_buf())
}

/// The `.ndb` line for EICAR: `Name:TargetType:Offset:HexSignature` (any type, any offset).
pub fn eicar_ndb() -> String {
    format!("{EICAR_SIGNATURE}:0:*:{}\n", hex::encode(eicar()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eicar_is_the_standard_string() {
        use sha2::Digest;
        let e = eicar();
        assert_eq!(e.len(), 68);
        // The published sha256 of the 68-byte EICAR file.
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&e)),
            "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
        );
    }

    #[test]
    fn writes_both_databases() {
        let dir = std::env::temp_dir().join(format!("coldscan-testdb-{}", std::process::id()));
        write_test_db(&dir).unwrap();
        let hdb = std::fs::read_to_string(dir.join("test.hdb")).unwrap();
        assert!(hdb.ends_with(":544:clam.exe\n"), "{hdb}");
        assert!(std::fs::read_to_string(dir.join("eicar.ndb"))
            .unwrap()
            .starts_with("Coldscan.Test.EICAR:0:*:58354f21"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
