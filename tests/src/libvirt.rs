//! The local libvirt daemons for end-to-end tests: [`Daemons::up`] makes sure `qemu:///system`
//! answers (`scripts/libvirt-up`), and the last holder to let go stops the daemons that were
//! started for the tests (`scripts/libvirt-down`), leaving ones that already ran alone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Holders now, and whether the tests started the daemons.
static HOLDERS: Mutex<(usize, bool)> = Mutex::new((0, false));

fn script(name: &str) -> PathBuf {
    crate::cache::workspace_root().join("scripts").join(name)
}

fn answers() -> bool {
    Command::new("virsh")
        .args(["-c", "qemu:///system", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A hold on the local libvirt daemons.
#[derive(Debug)]
pub struct Daemons(());

impl Daemons {
    /// Starts the daemons unless they answer already.
    pub fn up() -> anyhow::Result<Daemons> {
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        if holders.0 == 0 {
            let started = !answers();
            let out = Command::new(script("libvirt-up")).output()?;
            anyhow::ensure!(
                out.status.success(),
                "libvirt-up: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            holders.1 = started;
        }
        holders.0 += 1;
        Ok(Daemons(()))
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        let mut holders = HOLDERS.lock().unwrap_or_else(|e| e.into_inner());
        holders.0 = holders.0.saturating_sub(1);
        if holders.0 == 0 && holders.1 {
            let _ = Command::new(script("libvirt-down")).status();
            holders.1 = false;
        }
    }
}

/// What a scan of a running domain must not change: its disk list (`virsh domblklist
/// --details` on `qemu:///system`) and its image's backing chain (each layer's file, format and
/// backing file, not sizes: the guest writes), as text to compare before and after.
pub fn disk_chain(domain: &str, disk: &Path) -> anyhow::Result<(String, String)> {
    let output = |cmd: &mut Command| -> anyhow::Result<String> {
        let out = cmd.output()?;
        anyhow::ensure!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let blk = output(Command::new("virsh").args([
        "-c",
        "qemu:///system",
        "domblklist",
        domain,
        "--details",
    ]))?;
    let info = output(
        Command::new("qemu-img")
            .args(["info", "-U", "--backing-chain", "--output=json"])
            .arg(disk),
    )?;
    let info: serde_json::Value = serde_json::from_str(&info)?;
    let chain: Vec<_> = info
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("qemu-img info --backing-chain: not a JSON array"))?
        .iter()
        .map(|i| {
            (
                i["filename"].clone(),
                i["format"].clone(),
                i["backing-filename"].clone(),
            )
        })
        .collect();
    Ok((blk, format!("{chain:?}")))
}
