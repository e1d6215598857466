//! The dissect oracles (PyPI, pure Python, independent of coldscan): `dissect.volume` for LVM2
//! reads a linear logical volume from its PVs, so that the bytes coldscan maps can be checked
//! (its striped LV reading is wrong and its thin reading needs aligned reads: use it for linear
//! LVs); `dissect.xfs` and `dissect.btrfs` list a filesystem (paths, kinds, sizes, SHA-256) as
//! `coldscan ls` does. They live in a venv under `target/dissect-venv`, created on first use
//! with `pip` (`dissect.btrfs[full]` for its zstd support).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cache;
use crate::manifest::Record;
use crate::tools::{check, command};

const SCRIPT: &str = r#"
import shutil, sys
from dissect.util.stream import RangeStream
from dissect.volume.lvm import LVM2
out, name = sys.argv[1], sys.argv[2]
fhs = []
for spec in sys.argv[3:]:
    path, off, size = spec.rsplit(":", 2)
    fhs.append(RangeStream(open(path, "rb"), int(off), int(size)))
lvm = LVM2(fhs)
lv = [l for l in lvm.vg.lv if l.name == name][0]
with open(out, "wb") as f:
    shutil.copyfileobj(lv.open(), f, 1 << 20)
"#;

/// Lists a whole-disk XFS or Btrfs image as JSON lines: one [`Record`] per entry, or
/// `{"path", "error"}` where dissect fails on an entry (its walk goes on).
const LIST_SCRIPT: &str = r#"
import hashlib, json, stat, sys
kind, image = sys.argv[1], sys.argv[2]
fh = open(image, "rb")
if kind == "xfs":
    from dissect.xfs import XFS
    fs = XFS(fh)
    def entries(node):
        for child in node.iterdir():
            if child.filename not in (".", ".."):
                yield child.filename, child
    def fmt(node):
        return stat.S_IFMT(node.inode.di_mode)
else:
    from dissect.btrfs import Btrfs
    fs = Btrfs(fh)
    def entries(node):
        for name, child in node.iterdir():
            if name not in (".", ".."):
                yield name, child
    def fmt(node):
        return stat.S_IFMT(node.mode)
def emit(**r):
    print(json.dumps(r))
stack = [("", fs.get("/"))]
while stack:
    prefix, node = stack.pop()
    try:
        children = list(entries(node))
    except Exception as e:
        emit(path=prefix or "/", error=f"listing: {type(e).__name__}: {e}")
        continue
    for name, child in children:
        path = prefix + "/" + name
        rec = dict(partition=0, volume=None, fs=kind, path=path, stream=None, size=None, sha256=None)
        try:
            f = fmt(child)
            if f == stat.S_IFDIR:
                stack.append((path, child))
                rec["kind"] = "dir"
            elif f == stat.S_IFLNK:
                rec["kind"] = "symlink"
                rec["size"] = len(child.link.encode(errors="surrogateescape"))
            elif f == stat.S_IFREG:
                h = hashlib.sha256()
                stream = child.open()
                while True:
                    b = stream.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
                rec["kind"] = "file"
                rec["size"] = child.size
                rec["sha256"] = h.hexdigest()
            else:
                rec["kind"] = "other"
                rec["size"] = child.size
        except Exception as e:
            emit(path=path, error=f"{type(e).__name__}: {e}")
            continue
        emit(**rec)
"#;

/// What a dissect filesystem oracle listed: records, and the entries it failed on (path,
/// error).
#[derive(Debug, Default)]
pub struct OracleListing {
    /// The entries listed.
    pub records: Vec<Record>,
    /// Entries dissect could not read: (path, its error).
    pub errors: Vec<(String, String)>,
}

/// Lists the whole-disk filesystem `image` (`kind` `xfs` or `btrfs`) with dissect.
pub fn list_fs(kind: &str, image: &Path) -> anyhow::Result<OracleListing> {
    anyhow::ensure!(
        matches!(kind, "xfs" | "btrfs"),
        "no dissect oracle for {kind}"
    );
    let py = python()?;
    let out = check(
        command(py.to_str().context("path")?)
            .args(["-c", LIST_SCRIPT, kind])
            .arg(image),
    )?;
    let mut listing = OracleListing::default();
    for line in out.stdout_text().lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("dissect printed {line}"))?;
        if let Some(e) = v.get("error") {
            listing.errors.push((
                v["path"].as_str().unwrap_or_default().to_string(),
                e.as_str().unwrap_or_default().to_string(),
            ));
        } else {
            listing.records.push(serde_json::from_value(v)?);
        }
    }
    listing.records.sort();
    Ok(listing)
}

/// The venv's python, installing the dissect packages on first use.
pub fn python() -> anyhow::Result<PathBuf> {
    let venv = cache::target_dir().join("dissect-venv");
    let py = venv.join("bin/python");
    let _lock = cache::BuildLock::acquire(&cache::target_dir(), "dissect-venv")?;
    let ok = py.exists()
        && command(py.to_str().context("path")?)
            .args([
                "-c",
                "import dissect.volume.lvm, dissect.xfs, dissect.btrfs; from backports import zstd",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        check(command("python3").args(["-m", "venv"]).arg(&venv))?;
        check(command(py.to_str().context("path")?).args([
            "-m",
            "pip",
            "install",
            "-q",
            "dissect.volume",
            "dissect.xfs",
            "dissect.btrfs[full]",
        ]))
        .context("installing dissect.volume, dissect.xfs and dissect.btrfs from PyPI into target/dissect-venv")?;
    }
    Ok(py)
}

/// Writes the content of LV `lv` (the name without the VG) of the VG on `pvs` (file, byte
/// offset, byte length of each PV) to `out`, as dissect.volume reads it.
pub fn read_lv(out: &Path, lv: &str, pvs: &[(PathBuf, u64, u64)]) -> anyhow::Result<()> {
    let py = python()?;
    let mut cmd = command(py.to_str().context("path")?);
    cmd.args(["-c", SCRIPT]).arg(out).arg(lv);
    for (p, off, size) in pvs {
        cmd.arg(format!("{}:{off}:{size}", p.display()));
    }
    check(&mut cmd)?;
    Ok(())
}
