//! The kernel step: a Debian `linux-image-*-amd64` package unpacked with `dpkg-deb -x`, its
//! module tables written with `depmod -b` (Debian ships none), and the appliance's module
//! closure resolved from them.

pub mod modules;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::util::run;
pub use modules::{ModuleFile, ModuleSet, APPLIANCE_MODULES};

/// An unpacked kernel with the modules the appliance loads.
#[derive(Debug)]
pub struct Kernel {
    /// The unpacked package's root.
    pub root: PathBuf,
    /// Kernel release (`uname -r`), e.g. `6.1.0-57-amd64`.
    pub release: String,
    /// The EFI-stub kernel image (`boot/vmlinuz-RELEASE`).
    pub vmlinuz: PathBuf,
    /// The module closure in load order.
    pub modules: Vec<ModuleFile>,
}

impl Kernel {
    /// `ROOT/lib/modules/RELEASE`.
    pub fn modules_dir(&self) -> PathBuf {
        modules_dir(&self.root, &self.release)
    }
}

fn modules_dir(root: &Path, release: &str) -> PathBuf {
    root.join("lib/modules").join(release)
}

/// The kernel image name (`vmlinuz-RELEASE`) and release of an unpacked package at `root`.
fn find_image(root: &Path) -> Result<(String, String)> {
    let boot = root.join("boot");
    let mut images: Vec<String> = std::fs::read_dir(&boot)
        .with_context(|| format!("the package has no boot/ directory ({})", boot.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("vmlinuz-"))
        .collect();
    images.sort();
    ensure!(
        images.len() == 1,
        "expected exactly one boot/vmlinuz-* in the package, found {images:?}"
    );
    let image = images.remove(0);
    let release = image["vmlinuz-".len()..].to_string();
    ensure!(
        modules_dir(root, &release).is_dir(),
        "the package has no lib/modules/{release} for its kernel"
    );
    Ok((image, release))
}

/// Kernel options the image relies on: booting as an EFI application from the UKI, unpacking a
/// zstd initramfs, a devtmpfs for PID 1 to mount.
const REQUIRED_CONFIG: &[&str] = &[
    "CONFIG_EFI_STUB",
    "CONFIG_RD_ZSTD",
    "CONFIG_DEVTMPFS",
    "CONFIG_BLK_DEV_INITRD",
];

/// Checks the kernel's `boot/config-RELEASE` for [`REQUIRED_CONFIG`]: a kernel without them would
/// build an image that cannot boot, found out only at boot time.
fn check_config(config: &Path) -> Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("the package has no kernel config {}", config.display()))?;
    let missing: Vec<&str> = REQUIRED_CONFIG
        .iter()
        .filter(|opt| !text.lines().any(|l| l == format!("{opt}=y")))
        .copied()
        .collect();
    ensure!(
        missing.is_empty(),
        "the kernel lacks {}",
        missing.join(", ")
    );
    Ok(())
}

/// Writes the module tables of the unpacked package at `root` with `depmod -b` (Debian ships
/// none). Done once, when the package is unpacked into the cache.
pub fn depmod(root: &Path) -> Result<()> {
    let (_, release) = find_image(root)?;
    run(Command::new("depmod").arg("-b").arg(root).arg(&release)).context("depmod -b")?;
    Ok(())
}

/// Finds the kernel in an unpacked package at `root` (after [`depmod`]) and resolves the closure
/// of `wanted` module names.
pub fn prepare(root: &Path, wanted: &[&str]) -> Result<Kernel> {
    let (image, release) = find_image(root)?;
    check_config(&root.join("boot").join(format!("config-{release}")))?;
    let dir = modules_dir(root, &release);
    let set = ModuleSet::load(&dir)?;
    let modules = set.closure(wanted)?;
    for m in &modules {
        ensure!(
            dir.join(&m.path).is_file(),
            "modules.dep names {} but the package has no such file",
            m.path
        );
    }
    Ok(Kernel {
        root: root.to_path_buf(),
        vmlinuz: root.join("boot").join(image),
        release,
        modules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_without_zstd_initramfs_support_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config-x");
        std::fs::write(
            &config,
            "CONFIG_EFI_STUB=y\n# CONFIG_RD_ZSTD is not set\nCONFIG_DEVTMPFS=y\nCONFIG_BLK_DEV_INITRD=y\n",
        )
        .unwrap();
        let e = check_config(&config).unwrap_err();
        assert_eq!(e.to_string(), "the kernel lacks CONFIG_RD_ZSTD");
        std::fs::write(
            &config,
            "CONFIG_EFI_STUB=y\nCONFIG_RD_ZSTD=y\nCONFIG_DEVTMPFS=y\nCONFIG_BLK_DEV_INITRD=y\n",
        )
        .unwrap();
        check_config(&config).unwrap();
    }
}
