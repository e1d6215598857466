//! Where fixtures live and how they are built once: `<target>/fixtures/<name>/`, a stamp file
//! holding [`stamp`] (factory version and source hash), an exclusive `flock` per fixture so that concurrent test
//! binaries wait for one builder, and an atomic rename of a fully built temporary directory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Bumped by hand when a fixture changes in a way its sources do not show (a tool's
/// behaviour); [`stamp`] also covers every change of the factory's sources.
pub const FACTORY_VERSION: &str = "coldscan-fixtures 1";

/// The factory's sources: a change to any of them invalidates every cached fixture.
const SOURCES: &[&str] = &[
    include_str!("content.rs"),
    include_str!("tree.rs"),
    include_str!("trees.rs"),
    include_str!("manifest.rs"),
    include_str!("images.rs"),
    include_str!("journal.rs"),
    include_str!("layers.rs"),
    include_str!("ntfs.rs"),
    include_str!("fixtures.rs"),
    include_str!("testdb.rs"),
    include_str!("lvm.rs"),
    include_str!("md.rs"),
    include_str!("thin.rs"),
    include_str!("wof.rs"),
    include_str!("xfs.rs"),
    include_str!("crash.rs"),
    include_str!("btrfs.rs"),
    include_str!("rhel.rs"),
    include_str!("lvm_snapshot.rs"),
    include_str!("dm_guest.rs"),
];

/// What a fixture's `stamp` file holds: the factory version and a hash of its sources (and of
/// the NTFS populator's source when present, and of the names and sizes of the installed
/// `clamav-testfiles`, which the infected fixtures copy at build time).
pub fn stamp() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for s in SOURCES {
        h.update(s.as_bytes());
    }
    if let Ok(c) = fs::read(workspace_root().join(crate::ntfs::POPULATOR_SOURCE)) {
        h.update(&c);
    }
    for f in crate::testdb::testfiles().unwrap_or_default() {
        let len = fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        h.update(format!("{} {len}\n", f.display()).as_bytes());
    }
    format!("{FACTORY_VERSION} {}", hex::encode(h.finalize()))
}

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The cargo target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// `<target>/fixtures`.
pub fn fixtures_root() -> PathBuf {
    target_dir().join("fixtures")
}

/// Holds an exclusive advisory lock until dropped (released by the kernel if the process dies,
/// so a crashed builder never wedges the others).
#[derive(Debug)]
pub struct BuildLock {
    _file: File,
}

impl BuildLock {
    /// Blocks until the lock named `name` under `root` is ours.
    pub fn acquire(root: &Path, name: &str) -> anyhow::Result<BuildLock> {
        fs::create_dir_all(root)?;
        let path = root.join(format!(".{name}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(BuildLock { _file: file })
    }
}

/// Returns `<root>/<name>`, building it with `build` (which fills the directory it is given)
/// unless a build of the current factory version is there already.
pub fn cached(name: &str, build: &dyn Fn(&Path) -> anyhow::Result<()>) -> anyhow::Result<PathBuf> {
    let root = fixtures_root();
    let dir = root.join(name);
    let stamp_file = dir.join("stamp");
    let stamp = stamp();
    if fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
        return Ok(dir);
    }
    let _lock = BuildLock::acquire(&root, name)?;
    if fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
        return Ok(dir);
    }
    let tmp = root.join(format!(".{name}.building"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    build(&tmp).with_context(|| format!("building fixture {name}"))?;
    fs::write(tmp.join("stamp"), &stamp)?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&tmp, &dir)?;
    Ok(dir)
}
