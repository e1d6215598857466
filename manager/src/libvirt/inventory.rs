//! One inventory pass over a connection: every domain (running or only defined) with its UUID,
//! state (libvirt's `virDomainState`) and disks, each disk with the storage pool that holds it
//! when libvirt manages that storage (`virStorageVolLookupByPath`, `virStoragePoolLookupByVolume`),
//! so that backups can be limited per pool.

use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;

use super::{call, describe, Hypervisor, LibvirtError};
use crate::store::vms::{VmDisk, VmSeen};

/// The name of a `virDomainState`.
pub fn state_name(state: virt::sys::virDomainState) -> &'static str {
    match state {
        virt::sys::VIR_DOMAIN_RUNNING => "running",
        virt::sys::VIR_DOMAIN_BLOCKED => "blocked",
        virt::sys::VIR_DOMAIN_PAUSED => "paused",
        virt::sys::VIR_DOMAIN_SHUTDOWN => "shutting-down",
        virt::sys::VIR_DOMAIN_SHUTOFF => "shutoff",
        virt::sys::VIR_DOMAIN_CRASHED => "crashed",
        virt::sys::VIR_DOMAIN_PMSUSPENDED => "suspended",
        _ => "unknown",
    }
}

/// Whether a libvirt URI names this host (no host part: `qemu:///system`, `test:///default`).
pub fn is_local(uri: &str) -> bool {
    match uri.split_once("://") {
        Some((_, rest)) => {
            let host = rest.split('/').next().unwrap_or("");
            let host = host.rsplit('@').next().unwrap_or(host);
            host.is_empty() || host == "localhost" || host.starts_with("localhost:")
        }
        None => true,
    }
}

impl Hypervisor {
    /// Every domain as the inventory keeps it.
    pub fn inventory(&self) -> Result<Vec<VmSeen>, LibvirtError> {
        let domains = call("listing domains", self.conn.list_all_domains(0))?;
        let mut seen = Vec::with_capacity(domains.len());
        for domain in &domains {
            // A domain that vanished between the listing and this call is simply not seen.
            let Ok(info) = describe(domain) else { continue };
            let state = domain
                .get_state()
                .map(|(s, _)| state_name(s))
                .unwrap_or("unknown");
            let disks = info
                .disks
                .iter()
                .map(|d| VmDisk {
                    backupable: d.backupable(),
                    pool: self.pool_of(d),
                    target: d.target.clone(),
                    device: d.device.clone(),
                    source: d.source.clone(),
                    format: d.format.clone(),
                })
                .collect();
            seen.push(VmSeen {
                uuid: info.uuid,
                name: info.name,
                state: state.to_string(),
                disks,
            });
        }
        Ok(seen)
    }

    /// The storage pool holding a disk, when libvirt manages it.
    fn pool_of(&self, disk: &super::DiskInfo) -> Option<String> {
        let source = disk.source.as_deref()?;
        match disk.kind.as_str() {
            "volume" => source.split_once('/').map(|(pool, _)| pool.to_string()),
            "file" | "block" => {
                let vol = StorageVol::lookup_by_path(&self.conn, source).ok()?;
                StoragePool::lookup_by_volume(&vol).ok()?.get_name().ok()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_uris() {
        for uri in [
            "qemu:///system",
            "qemu+unix:///system",
            "test:///default",
            "qemu://localhost/system",
        ] {
            assert!(is_local(uri), "{uri}");
        }
        for uri in [
            "qemu+ssh://root@kvm1/system",
            "qemu+tls://kvm2.example/system",
        ] {
            assert!(!is_local(uri), "{uri}");
        }
    }

    /// libvirt's built-in test driver (no daemon): its default domain with its disk.
    #[test]
    fn the_test_driver_domain_is_inventoried() {
        let hv = Hypervisor::connect("test:///default").unwrap();
        let seen = hv.inventory().unwrap();
        let test = seen.iter().find(|v| v.name == "test").unwrap();
        assert_eq!(test.uuid, "6695eb01-f6a4-8304-79aa-97f2502e193f");
        assert_eq!(test.state, "running");
        assert_eq!(test.disks[0].target, "vda");
        assert_eq!(test.disks[0].source.as_deref(), Some("/guest/diskimage1"));
        assert!(test.disks[0].backupable);
    }
}
