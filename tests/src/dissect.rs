//! The `dissect.volume` oracle (PyPI, pure Python) for LVM2: reads a linear logical volume
//! from its PVs independently of coldscan, so that the bytes coldscan maps can be checked. It
//! lives in a venv under `target/dissect-venv`, created on first use with `pip`. (Its striped
//! LV reading is wrong and its thin reading needs aligned reads: use it for linear LVs.)

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cache;
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

/// The venv's python, installing `dissect.volume` on first use.
pub fn python() -> anyhow::Result<PathBuf> {
    let venv = cache::target_dir().join("dissect-venv");
    let py = venv.join("bin/python");
    let _lock = cache::BuildLock::acquire(&cache::target_dir(), "dissect-venv")?;
    let ok = py.exists()
        && command(py.to_str().context("path")?)
            .args(["-c", "import dissect.volume.lvm"])
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        check(command("python3").args(["-m", "venv"]).arg(&venv))?;
        check(
            command(venv.join("bin/pip").to_str().context("path")?).args([
                "install",
                "-q",
                "dissect.volume",
            ]),
        )
        .context("installing dissect.volume from PyPI into target/dissect-venv")?;
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
