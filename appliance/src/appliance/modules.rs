//! Kernel module loading (Linux `finit_module(2)`).
//!
//! The image's kernel has its disk, network and input drivers as modules and no `modprobe`: the
//! image builder writes the module closure in dependency order to [`MODULE_LIST`], one path per
//! line (`#` comments and blank lines ignored), and PID 1 loads them in that order. A path is
//! absolute under `/lib/modules/` or `/usr/lib/modules/` (as `coldscan-image` writes them), or
//! relative to `/lib/modules/<release>/`. `ENODEV` (no such hardware), `ENOENT` from the kernel
//! (a module it depends on did not load, for the same reason) and `EEXIST` (built in or already
//! loaded) are not errors: a driver for an absent device is normal on an appliance that runs on
//! several hypervisors. A module the list names but the image lacks is reported.
#![forbid(unsafe_code)]

use std::path::{Component, Path, PathBuf};

/// The module list in the initramfs.
pub const MODULE_LIST: &str = "/etc/coldscan/modules";
/// Longest module list read (bytes): a few hundred lines at most.
const MAX_LIST_BYTES: u64 = 256 * 1024;

/// What loading the listed modules did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModuleSummary {
    /// Modules loaded now.
    pub loaded: usize,
    /// Modules already present (built in or loaded): `EEXIST`.
    pub present: usize,
    /// Modules for hardware this machine does not have: `ENODEV`.
    pub no_device: usize,
    /// Modules that failed otherwise, with the reason.
    pub failed: Vec<(String, String)>,
}

/// Directories an absolute module path may be in.
const MODULE_ROOTS: &[&str] = &["/lib/modules/", "/usr/lib/modules/"];

/// Parses a module list, in order. A line is never allowed to leave the modules directories:
/// `..`, and absolute paths elsewhere, are refused.
pub fn parse_list(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let path = Path::new(line);
        let rest = MODULE_ROOTS
            .iter()
            .find_map(|root| line.strip_prefix(root))
            .map(Path::new)
            .unwrap_or(path);
        let inside = !rest.as_os_str().is_empty()
            && rest.components().all(|c| matches!(c, Component::Normal(_)));
        if !inside {
            return Err(format!(
                "{MODULE_LIST} line {}: {line:?} is not a path inside the modules directory",
                n + 1
            ));
        }
        out.push(path.to_path_buf());
    }
    Ok(out)
}

/// The directory the list's paths are relative to: `/lib/modules/<running kernel release>`.
pub fn modules_dir() -> PathBuf {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy().into_owned();
    Path::new("/lib/modules").join(release)
}

/// Loads every module of `list` (paths relative to `dir`) in order. A missing list file means
/// an image without modules: nothing to do.
pub fn load_listed(list: &Path, dir: &Path) -> Result<ModuleSummary, String> {
    use std::io::Read;
    let mut text = String::new();
    match std::fs::File::open(list) {
        Ok(f) => {
            f.take(MAX_LIST_BYTES)
                .read_to_string(&mut text)
                .map_err(|e| format!("reading {}: {e}", list.display()))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ModuleSummary::default()),
        Err(e) => return Err(format!("reading {}: {e}", list.display())),
    }
    let mut summary = ModuleSummary::default();
    for rel in parse_list(&text)? {
        let path = dir.join(&rel);
        let name = rel.display().to_string();
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                summary.failed.push((name, "not in the image".into()));
                continue;
            }
            Err(e) => {
                summary.failed.push((name, e.to_string()));
                continue;
            }
        };
        match rustix::system::finit_module(&file, c"", 0) {
            Ok(()) => summary.loaded += 1,
            Err(rustix::io::Errno::EXIST) => summary.present += 1,
            // ENOENT: a module it needs did not load (e.g. hv_vmbus off Hyper-V), which is the
            // absent-hardware case one step removed.
            Err(rustix::io::Errno::NODEV | rustix::io::Errno::NOENT) => summary.no_device += 1,
            Err(e) => summary.failed.push((name, e.to_string())),
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_keeps_order_and_skips_comments() {
        let l = parse_list(
            "# virtio first\nkernel/drivers/virtio/virtio.ko\n\n  kernel/drivers/block/virtio_blk.ko  \n",
        )
        .unwrap();
        assert_eq!(
            l,
            [
                PathBuf::from("kernel/drivers/virtio/virtio.ko"),
                PathBuf::from("kernel/drivers/block/virtio_blk.ko")
            ]
        );
    }

    #[test]
    fn list_takes_absolute_paths_under_the_module_roots() {
        let l = parse_list("/usr/lib/modules/6.1.0-57-amd64/kernel/drivers/virtio/virtio.ko\n")
            .unwrap();
        assert_eq!(
            l,
            [PathBuf::from(
                "/usr/lib/modules/6.1.0-57-amd64/kernel/drivers/virtio/virtio.ko"
            )]
        );
        assert!(parse_list("/usr/lib/modules/../../etc/x.ko\n").is_err());
        assert!(parse_list("/lib/modules/\n").is_err());
    }

    #[test]
    fn list_refuses_paths_leaving_the_directory() {
        assert!(parse_list("/etc/passwd\n").unwrap_err().contains("line 1"));
        assert!(parse_list("ok.ko\n../x.ko\n")
            .unwrap_err()
            .contains("line 2"));
    }

    #[test]
    fn missing_list_is_nothing_to_load_and_missing_module_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = load_listed(&dir.path().join("none"), dir.path()).unwrap();
        assert_eq!(s, ModuleSummary::default());
        let list = dir.path().join("modules");
        std::fs::write(&list, "kernel/absent.ko\n").unwrap();
        let s = load_listed(&list, dir.path()).unwrap();
        assert_eq!(
            s.failed,
            [(
                "kernel/absent.ko".to_string(),
                "not in the image".to_string()
            )]
        );
    }
}
