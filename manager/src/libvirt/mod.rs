//! The libvirt connector: the manager talks to a hypervisor through libvirt's official Rust
//! bindings (`virt`), never by parsing `virsh` output. It lists domains with their disks and
//! scans a running domain through a point-in-time **pull-mode backup** (libvirt "Backup XML
//! format", `virDomainBackupBegin`): QEMU exports each disk as it was when the backup began over
//! an NBD server on a private unix socket, the guest keeps running and writing (its writes go to
//! the disk, the old blocks to a scratch file), and `virDomainAbortJob` ends the export. The
//! domain's disk chain is never changed.

mod backup;
mod ffi;
mod inventory;
pub mod quarantine;
pub mod quarantine_cli;
mod scan;
mod snapshot;
mod xml;

#[cfg(test)]
mod quarantine_tests;
#[cfg(test)]
mod tests;

use virt::connect::Connect;
use virt::domain::Domain;

pub(crate) use backup::make_private_dir;
pub use backup::{end_recorded, BackupPlan, LeftOver, NbdServer, PullBackup};
pub use inventory::is_local;
pub use scan::{blocking, scan_domain, vm_target, DiskScan, ScanError, ScanSettings};
pub use snapshot::{freeze, thaw, FrozenDisk, SnapshotPlan, Thawed};
pub use xml::DiskInfo;

/// What can go wrong talking to libvirt.
#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    /// A libvirt call failed.
    #[error("libvirt: {what}: {source}")]
    Call {
        /// The call and its object.
        what: String,
        /// libvirt's error.
        source: virt::error::Error,
    },
    /// XML from libvirt that we cannot use.
    #[error("libvirt: {0}")]
    Xml(String),
    /// No such domain, or nothing to back up.
    #[error("libvirt: {0}")]
    NotFound(String),
    /// A disk-only snapshot that cannot be taken, or whose overlay cannot be committed yet.
    #[error("libvirt: {0}")]
    Snapshot(String),
    /// Preparing or cleaning the private directory of a backup.
    #[error("libvirt: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl LibvirtError {
    /// Whether libvirt said the hypervisor cannot do what was asked at all (no backup jobs in
    /// this driver or QEMU), as opposed to failing this time.
    pub fn is_unsupported(&self) -> bool {
        use virt::error::ErrorNumber;
        matches!(
            self,
            LibvirtError::Call { source, .. } if matches!(
                source.code(),
                ErrorNumber::NoSupport
                    | ErrorNumber::OperationUnsupported
                    | ErrorNumber::ArgumentUnsupported
            )
        )
    }
}

fn call<T>(what: impl Into<String>, r: Result<T, virt::error::Error>) -> Result<T, LibvirtError> {
    r.map_err(|source| LibvirtError::Call {
        what: what.into(),
        source,
    })
}

/// One domain as the connector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// Its name (unique per connection, changes on rename).
    pub name: String,
    /// Its UUID (stable across rename and migration: the key to follow a VM by).
    pub uuid: String,
    /// Whether it is running.
    pub running: bool,
    /// Its disks, from its live XML (or its persistent XML when shut off).
    pub disks: Vec<DiskInfo>,
}

/// A connection to one hypervisor (`qemu:///system`, `qemu+ssh://host/system`...).
pub struct Hypervisor {
    uri: String,
    conn: Connect,
}

impl std::fmt::Debug for Hypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hypervisor")
            .field("uri", &self.uri)
            .finish()
    }
}

impl Hypervisor {
    /// Opens a read-write connection to `uri`.
    pub fn connect(uri: &str) -> Result<Hypervisor, LibvirtError> {
        // libvirt prints every error to stderr by default; ours carry it in their values.
        virt::error::clear_error_callback();
        let conn = call(format!("connecting to {uri}"), Connect::open(Some(uri)))?;
        Ok(Hypervisor {
            uri: uri.to_string(),
            conn,
        })
    }

    /// The URI this connection was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Every domain, running or defined, with its disks.
    pub fn domains(&self) -> Result<Vec<DomainInfo>, LibvirtError> {
        let domains = call("listing domains", self.conn.list_all_domains(0))?;
        domains.iter().map(describe).collect()
    }

    /// The domain named `name` (or with UUID `name`).
    pub fn domain(&self, name: &str) -> Result<Domain, LibvirtError> {
        Domain::lookup_by_name(&self.conn, name)
            .or_else(|_| Domain::lookup_by_uuid_string(&self.conn, name))
            .map_err(|_| LibvirtError::NotFound(format!("no domain {name:?} on {}", self.uri)))
    }
}

/// Name, UUID, state and disks of `domain`.
pub fn describe(domain: &Domain) -> Result<DomainInfo, LibvirtError> {
    describe_with_xml(domain).map(|(info, _)| info)
}

/// [`describe`], with the XML it was read from (live when running, else persistent).
pub(crate) fn describe_with_xml(domain: &Domain) -> Result<(DomainInfo, String), LibvirtError> {
    let name = call("domain name", domain.get_name())?;
    let uuid = call(format!("UUID of {name}"), domain.get_uuid_string())?;
    let (state, _) = call(format!("state of {name}"), domain.get_state())?;
    let xml = call(format!("XML of {name}"), domain.get_xml_desc(0))?;
    let info = DomainInfo {
        disks: xml::domain_disks(&xml)?,
        running: state == virt::sys::VIR_DOMAIN_RUNNING,
        name,
        uuid,
    };
    Ok((info, xml))
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        let _ = self.conn.close();
    }
}
