//! The signature database the manager holds for its appliances (`coldscan-manager signatures
//! set --version V FILES...`): daemon appliances ask for it between jobs (`GET
//! /api/v1/signatures`), download it as one tar bundle ([`bundle`],
//! `GET /api/v1/signatures/bundle`), check its digest, load it and name it in their reports.
//!
//! The digest is the one the scanner computes over the database files it loads (`engine.db.sha256`
//! in reports, `docs/report.md`): files in byte order of their names, each as name, a NUL byte,
//! the length as 8 bytes little-endian, and the content. An appliance that loads exactly this set
//! reports exactly this digest. The manager does not link libclamav: it checks names, sizes and
//! the digest, and the appliance finds out whether libclamav accepts the content (it keeps its
//! old database if not).

pub mod bundle;

use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::Digest;

use crate::store::signatures::{NewSignatureSet, SetOutcome, SignatureFile, SignatureStore};

/// Most files in a set.
pub const MAX_FILES: usize = 256;
/// Largest set, all files together (bytes). The official ClamAV databases are ~350 MB today.
pub const MAX_SET_BYTES: u64 = 1 << 30;
/// Longest file name (a tar header's name field holds 100 bytes).
pub const MAX_NAME_BYTES: usize = 100;
/// Longest version string.
pub const MAX_VERSION_BYTES: usize = 100;

/// File name extensions libclamav loads from a database directory (the scanner's list): only
/// such files count in the digest, so a set holds nothing else.
const DB_EXTENSIONS: &[&str] = &[
    "cvd", "cld", "cud", "hdb", "hsb", "hdu", "hsu", "mdb", "msb", "mdu", "msu", "ndb", "ndu",
    "ldb", "ldu", "idb", "cdb", "crb", "cat", "fp", "sfp", "ign", "ign2", "ftm", "pdb", "gdb",
    "wdb", "cbc", "info", "yar", "yara", "pwdb", "imp",
];

/// Whether `name` may be a file of a set: a plain name (`A-Z a-z 0-9 . _ -`, not starting with
/// a dot, at most [`MAX_NAME_BYTES`]) with an extension libclamav loads.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{name:?}: names are 1 to {MAX_NAME_BYTES} bytes long"
        ));
    }
    if name.starts_with('.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "{name:?}: names are plain file names of A-Z a-z 0-9 . _ - (not starting with a dot)"
        ));
    }
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    if !ext.is_some_and(|e| DB_EXTENSIONS.contains(&e.as_str())) {
        return Err(format!(
            "{name:?} is not a signature database libclamav loads (.cvd .cld .hdb .ndb .ldb .yar ...)"
        ));
    }
    Ok(())
}

/// Whether `version` is acceptable: 1 to [`MAX_VERSION_BYTES`] printable ASCII characters.
pub fn check_version(version: &str) -> Result<(), String> {
    if version.is_empty()
        || version.len() > MAX_VERSION_BYTES
        || !version.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(format!(
            "version {version:?}: 1 to {MAX_VERSION_BYTES} printable ASCII characters, no spaces"
        ));
    }
    Ok(())
}

/// The database digest of `files` (sorted by name here; see the module documentation).
pub fn digest(files: &[SignatureFile]) -> String {
    let mut sorted: Vec<&SignatureFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut h = sha2::Sha256::new();
    for f in sorted {
        h.update(f.name.as_bytes());
        h.update([0]);
        h.update((f.content.len() as u64).to_le_bytes());
        h.update(&f.content);
    }
    hex::encode(h.finalize())
}

/// Reads the files of a set from `paths`: files as given, directories as their database files
/// (other files in a directory are skipped, as libclamav skips them). Checks names, duplicates,
/// count and total size; returns the files sorted by name.
pub fn read_files(paths: &[PathBuf]) -> anyhow::Result<Vec<SignatureFile>> {
    let mut chosen: Vec<PathBuf> = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
        if meta.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("listing {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && check_name(&name_of(f)).is_ok())
                .collect();
            inside.sort();
            anyhow::ensure!(
                !inside.is_empty(),
                "{}: no signature database files in it",
                p.display()
            );
            chosen.extend(inside);
        } else {
            chosen.push(p.clone());
        }
    }
    anyhow::ensure!(!chosen.is_empty(), "no signature files given");
    anyhow::ensure!(
        chosen.len() <= MAX_FILES,
        "{} files: a set holds at most {MAX_FILES}",
        chosen.len()
    );
    let mut files: Vec<SignatureFile> = Vec::new();
    let mut total: u64 = 0;
    for p in chosen {
        let name = name_of(&p);
        check_name(&name).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        anyhow::ensure!(
            !files.iter().any(|f| f.name == name),
            "two files named {name:?}"
        );
        let size = std::fs::metadata(&p)
            .with_context(|| format!("{}", p.display()))?
            .len();
        total = total.saturating_add(size);
        anyhow::ensure!(
            total <= MAX_SET_BYTES,
            "the set is over {MAX_SET_BYTES} bytes"
        );
        let content = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        anyhow::ensure!(!content.is_empty(), "{}: empty file", p.display());
        files.push(SignatureFile { name, content });
    }
    files.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(files)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `signatures` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SignaturesCommand {
    /// Make FILES (database files, or directories of them) the current signature database,
    /// under VERSION; daemon appliances load it between jobs.
    Set {
        /// The version (a name you choose: `2026-12-06.1`); reports name it.
        #[arg(long)]
        version: String,
        /// Database files (`.cvd .cld .hdb .ndb .ldb .yar` ...) or directories holding them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show the current signature database.
    Show {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `signatures` subcommand.
pub async fn run<S: SignatureStore>(store: &S, command: SignaturesCommand) -> anyhow::Result<()> {
    match command {
        SignaturesCommand::Set { version, files } => {
            check_version(&version).map_err(anyhow::Error::msg)?;
            let files = read_files(&files)?;
            let sha256 = digest(&files);
            let outcome = store
                .set_signatures(&NewSignatureSet {
                    version: &version,
                    sha256: &sha256,
                    files: &files,
                    now: crate::time::now(),
                })
                .await?;
            println!("{version}\t{sha256}");
            eprintln!(
                "signatures {version}: {} file(s), {}",
                files.len(),
                match outcome {
                    SetOutcome::Stored => "now the current database",
                    SetOutcome::Unchanged => "already the current database (nothing changed)",
                }
            );
        }
        SignaturesCommand::Show { json } => {
            let current = store.current_signatures().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&current)?);
                return Ok(());
            }
            let Some(set) = current else {
                println!("no signature database set (appliances use their own)");
                return Ok(());
            };
            println!(
                "version {}\nsha256 {}\nsize {}\nset {}",
                set.version,
                set.sha256,
                set.size,
                crate::time::rfc3339(set.created)
            );
            for f in set.files {
                println!("{}\t{}\t{}", f.name, f.size, f.sha256);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_database_names() {
        for ok in [
            "main.cvd",
            "daily.cld",
            "test.hdb",
            "Eicar_1-2.NDB",
            "x.yara",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".hidden.ndb",
            "../x.ndb",
            "a/b.ndb",
            "notes.txt",
            "noext",
            "sp ace.ndb",
            &format!("{}.ndb", "a".repeat(100)),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_version("2026-12-06.1").is_ok());
        assert!(check_version("").is_err());
        assert!(check_version("a b").is_err());
    }

    #[test]
    fn the_digest_is_the_scanners_over_sorted_files() {
        let f = |n: &str, c: &[u8]| SignatureFile {
            name: n.into(),
            content: c.to_vec(),
        };
        let a = digest(&[f("b.ndb", b"B"), f("a.hdb", b"AA")]);
        assert_eq!(a, digest(&[f("a.hdb", b"AA"), f("b.ndb", b"B")]));
        let mut expected = sha2::Sha256::new();
        for (n, c) in [("a.hdb", &b"AA"[..]), ("b.ndb", b"B")] {
            expected.update(n.as_bytes());
            expected.update([0]);
            expected.update((c.len() as u64).to_le_bytes());
            expected.update(c);
        }
        assert_eq!(a, hex::encode(expected.finalize()));
        // Moving a byte from one file's end to the next file's start changes it.
        assert_ne!(a, digest(&[f("a.hdb", b"A"), f("b.ndb", b"AB")]));
    }

    #[test]
    fn directories_give_their_database_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("z.ndb"), b"Z:0:*:5a\n").unwrap();
        std::fs::write(dir.path().join("a.hdb"), b"x:1:y\n").unwrap();
        std::fs::write(dir.path().join("README"), b"not a database").unwrap();
        let files = read_files(&[dir.path().to_path_buf()]).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.hdb", "z.ndb"]);
        let twice = read_files(&[dir.path().into(), dir.path().join("a.hdb")]);
        assert!(twice.unwrap_err().to_string().contains("two files"));
        assert!(read_files(&[dir.path().join("README")]).is_err());
    }
}
