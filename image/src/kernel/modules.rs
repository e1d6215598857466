//! The appliance's kernel module closure, resolved from the kernel's own `modules.dep`,
//! `modules.alias`, `modules.softdep` and `modules.builtin` (written by `depmod -b`; formats as in
//! kmod's depmod(8) and modules.dep(5)).
//!
//! The appliance needs drivers by *name* ([`APPLIANCE_MODULES`]); names map to files only through
//! the kernel's own tables, never through a hand-kept file list. A name that is neither a module,
//! an alias nor built in is an error: a renamed driver must not vanish from the image unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Drivers the appliance loads at boot, by module name, in load order of intent (dependencies
/// are added before each by [`ModuleSet::closure`]).
pub const APPLIANCE_MODULES: &[&str] = &[
    // virtio (QEMU/KVM, most clouds)
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    // NVMe (clouds, modern hypervisors)
    "nvme",
    // AHCI / legacy IDE (ATA) and SCSI disks
    "ahci",
    "ata_piix",
    "sd_mod",
    // VMware
    "vmw_pvscsi",
    "vmxnet3",
    // Intel NICs (VirtualBox, VMware e1000 models, QEMU defaults)
    "e1000",
    "e1000e",
    // Hyper-V / Azure
    "hv_vmbus",
    "hv_storvsc",
    "hv_netvsc",
    // vsock (host <-> appliance channel)
    "vsock",
    "vmw_vsock_virtio_transport",
    // ACPI power button (QEMU system_powerdown, virsh shutdown): reported as an input event
    "button",
    "evdev",
    // config disk: FAT (with its code pages) or ext4
    "vfat",
    "nls_cp437",
    "nls_utf8",
    "ext4",
];

/// Upper bound of dependency depth while ordering (modules.dep is flat, so real depth is small;
/// the bound only guards against a cycle in a corrupt file).
const MAX_DEPTH: usize = 64;

/// The kernel's module tables for one kernel release.
#[derive(Debug, Default)]
pub struct ModuleSet {
    /// Module name -> (file relative to `/lib/modules/RELEASE`, dependency names).
    modules: BTreeMap<String, (String, Vec<String>)>,
    /// Alias pattern -> module names.
    aliases: BTreeMap<String, Vec<String>>,
    /// Module name -> soft dependencies to load first (`pre:`).
    softdeps: BTreeMap<String, Vec<String>>,
    /// Modules built into the kernel image.
    builtin: BTreeSet<String>,
}

/// One module of the closure, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Module name (`virtio_blk`).
    pub name: String,
    /// File relative to `/lib/modules/RELEASE` (`kernel/drivers/block/virtio_blk.ko`).
    pub path: String,
}

/// The canonical module name of a file or name: base name without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn module_name(path_or_name: &str) -> String {
    let base = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

impl ModuleSet {
    /// Reads the tables from `dir` (`ROOT/lib/modules/RELEASE`).
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .with_context(|| format!("cannot read {}", dir.join(name).display()))
        };
        let mut set = Self::parse_dep(&read("modules.dep")?)?;
        set.parse_alias(&read("modules.alias")?);
        if let Ok(s) = read("modules.softdep") {
            set.parse_softdep(&s);
        }
        if let Ok(s) = read("modules.builtin") {
            set.builtin = s.lines().map(module_name).collect();
        }
        Ok(set)
    }

    /// Parses `modules.dep`: `FILE: DEP-FILE DEP-FILE ...` per line.
    pub fn parse_dep(text: &str) -> Result<Self> {
        let mut set = Self::default();
        for (no, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((file, deps)) = line.split_once(':') else {
                bail!("modules.dep line {}: no `:`", no + 1);
            };
            let deps = deps.split_whitespace().map(module_name).collect();
            set.modules
                .insert(module_name(file), (file.trim().to_string(), deps));
        }
        Ok(set)
    }

    /// Parses `modules.alias`: `alias PATTERN MODULE` per line.
    pub fn parse_alias(&mut self, text: &str) {
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(pattern), Some(module)) = (w.next(), w.next(), w.next()) {
                self.aliases
                    .entry(pattern.to_string())
                    .or_default()
                    .push(module_name(module));
            }
        }
    }

    /// Parses `modules.softdep`: `softdep MODULE pre: A B post: C` per line (only `pre:` matters
    /// for load order; `post:` modules are loaded after, which the closure also covers).
    pub fn parse_softdep(&mut self, text: &str) {
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(module) = w.next() else { continue };
            let mut pre = false;
            for word in w {
                match word {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    name if pre => self
                        .softdeps
                        .entry(module_name(module))
                        .or_default()
                        .push(name.to_string()),
                    _ => {}
                }
            }
        }
    }

    /// Resolves a name or alias to module names; `Ok(vec![])` when it is built in.
    fn resolve(&self, name: &str) -> Option<Vec<String>> {
        let canonical = module_name(name);
        if self.modules.contains_key(&canonical) {
            return Some(vec![canonical]);
        }
        if self.builtin.contains(&canonical) {
            return Some(Vec::new());
        }
        self.aliases.get(name).cloned()
    }

    /// The modules to load for `wanted`, dependencies first, each once. An unknown name is an
    /// error; soft dependencies that do not resolve are skipped (they are optional by nature).
    pub fn closure(&self, wanted: &[&str]) -> Result<Vec<ModuleFile>> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for name in wanted {
            let resolved = self.resolve(name).with_context(|| {
                format!("unknown kernel module {name:?}: not in modules.dep, modules.alias or modules.builtin of this kernel")
            })?;
            for m in resolved {
                self.visit(&m, 0, &mut seen, &mut order)?;
            }
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        depth: usize,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<ModuleFile>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            bail!("module dependencies of {name} nest deeper than {MAX_DEPTH} (a cycle?)");
        }
        if seen.contains(name) {
            return Ok(());
        }
        let Some((file, deps)) = self.modules.get(name) else {
            if self.builtin.contains(name) {
                return Ok(());
            }
            bail!("modules.dep names dependency {name:?}, which has no entry of its own");
        };
        seen.insert(name.to_string());
        for soft in self.softdeps.get(name).into_iter().flatten() {
            for m in self.resolve(soft).unwrap_or_default() {
                self.visit(&m, depth + 1, seen, order)?;
            }
        }
        // modules.dep lists every (transitive) dependency; the last ones are the deepest, so
        // visiting in reverse puts the deepest first.
        for dep in deps.iter().rev() {
            self.visit(dep, depth + 1, seen, order)?;
        }
        order.push(ModuleFile {
            name: name.to_string(),
            path: file.clone(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko
kernel/fs/fat/fat.ko:
kernel/crypto/crc32c_generic.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko
kernel/fs/mbcache.ko:
";

    fn set() -> ModuleSet {
        let mut s = ModuleSet::parse_dep(DEP).unwrap();
        s.parse_alias("alias fs-vfat vfat\nalias crypto-crc32c crc32c_generic\n");
        s.parse_softdep("softdep ext4 pre: crypto-crc32c\n");
        s.builtin.insert("sd_mod".into());
        s
    }

    #[test]
    fn dependencies_come_first_each_once() {
        let order = set().closure(&["virtio_blk", "vfat", "fs-vfat"]).unwrap();
        let names: Vec<_> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["virtio", "virtio_ring", "virtio_blk", "fat", "vfat"]
        );
        assert_eq!(order[2].path, "kernel/drivers/block/virtio_blk.ko");
    }

    #[test]
    fn softdeps_and_builtins() {
        let order = set().closure(&["ext4", "sd_mod"]).unwrap();
        let names: Vec<_> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["crc32c_generic", "mbcache", "ext4"]);
    }

    #[test]
    fn unknown_module_is_an_error() {
        let e = set()
            .closure(&["virtio_blk", "no_such_driver"])
            .unwrap_err();
        assert!(e.to_string().contains("no_such_driver"), "{e}");
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(module_name("kernel/x/hv-vmbus.ko.zst"), "hv_vmbus");
        assert_eq!(module_name("nls_cp437"), "nls_cp437");
    }
}
