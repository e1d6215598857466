//! The kernel step: a Debian `linux-image-*-amd64` package unpacked with `dpkg-deb -x`, its
//! module tables regenerated with `depmod -b` (Debian ships none), and the appliance's module
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

/// Finds the kernel in an unpacked package at `root`, runs `depmod -b` and resolves the closure
/// of `wanted` module names.
pub fn prepare(root: &Path, wanted: &[&str]) -> Result<Kernel> {
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
    let dir = modules_dir(root, &release);
    ensure!(
        dir.is_dir(),
        "the package has no lib/modules/{release} for its kernel"
    );
    run(Command::new("depmod").arg("-b").arg(root).arg(&release)).context("depmod -b")?;
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
        vmlinuz: boot.join(image),
        release,
        modules,
    })
}
