//! The libvirt XML this connector reads and writes: the `<disk>` elements of a domain's XML
//! (libvirt "Domain XML format", section "Hard drives, floppy disks, CDROMs", with their
//! `<backingStore>` chains), the `<domainbackup mode='pull'>` document of a pull-mode backup
//! (libvirt "Backup XML format") and the `<domainsnapshot>` document of an external disk-only
//! snapshot (libvirt "Snapshot XML format"). Read with a real XML parser; everything written is
//! escaped.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::backup::{BackupPlan, NbdServer};
use super::LibvirtError;

/// Most `<disk>` elements one domain may list before we call its XML unreasonable.
pub const MAX_DISKS: usize = 1024;
/// Deepest `<backingStore>` nesting followed (as the scanner's own chain limit).
pub const MAX_BACKING_DEPTH: usize = 32;

/// One disk of a domain, as its XML describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// The guest-side name (`<target dev=...>`, e.g. `vda`): the backup's export name.
    pub target: String,
    /// `disk`, `cdrom`, `floppy` or `lun` (`<disk device=...>`, `disk` when absent).
    pub device: String,
    /// The source's kind (`<disk type=...>`): `file`, `block`, `network`, `volume`...
    pub kind: String,
    /// Where the data lives: the file or device path, `PROTOCOL:NAME` for a network disk,
    /// `POOL/VOLUME` for a volume; `None` for an empty drive.
    pub source: Option<String>,
    /// The image format (`<driver type=...>`: `qcow2`, `raw`...), when given.
    pub format: Option<String>,
    /// `<readonly/>` present.
    pub readonly: bool,
}

impl DiskInfo {
    /// Whether a backup job can export this disk: a writable hard disk with a source.
    pub fn backupable(&self) -> bool {
        self.device == "disk" && !self.readonly && self.source.is_some()
    }
}

/// The disks listed in a domain's XML (`/domain/devices/disk`), in order.
pub fn domain_disks(domain_xml: &str) -> Result<Vec<DiskInfo>, LibvirtError> {
    let doc = roxmltree::Document::parse(domain_xml)
        .map_err(|e| LibvirtError::Xml(format!("domain XML: {e}")))?;
    let root = doc.root_element();
    if !root.has_tag_name("domain") {
        return Err(LibvirtError::Xml(format!(
            "domain XML: root element is <{}>, not <domain>",
            root.tag_name().name()
        )));
    }
    let mut disks = Vec::new();
    let devices = root.children().filter(|n| n.has_tag_name("devices"));
    for disk in devices.flat_map(|d| d.children().filter(|n| n.has_tag_name("disk"))) {
        if disks.len() >= MAX_DISKS {
            return Err(LibvirtError::Xml(format!(
                "domain XML: more than {MAX_DISKS} disks"
            )));
        }
        let child = |name: &str| disk.children().find(|n| n.has_tag_name(name));
        let Some(target) = child("target").and_then(|t| t.attribute("dev")) else {
            return Err(LibvirtError::Xml(
                "domain XML: a <disk> without <target dev=...>".into(),
            ));
        };
        let kind = disk.attribute("type").unwrap_or("file").to_string();
        let source = child("source").and_then(|s| {
            if let Some(p) = s.attribute("file").or(s.attribute("dev")) {
                return Some(p.to_string());
            }
            if let (Some(pool), Some(vol)) = (s.attribute("pool"), s.attribute("volume")) {
                return Some(format!("{pool}/{vol}"));
            }
            s.attribute("name")
                .map(|n| format!("{}:{n}", s.attribute("protocol").unwrap_or("network")))
        });
        disks.push(DiskInfo {
            target: target.to_string(),
            device: disk.attribute("device").unwrap_or("disk").to_string(),
            kind,
            source,
            format: child("driver")
                .and_then(|d| d.attribute("type"))
                .map(str::to_string),
            readonly: child("readonly").is_some(),
        });
    }
    Ok(disks)
}

/// The files of disk `target`'s backing chain below its source, top first, as the domain's
/// live XML lists them (`<backingStore>` elements; libvirt fills them in for running domains).
pub fn backing_files(domain_xml: &str, target: &str) -> Result<Vec<String>, LibvirtError> {
    let doc = roxmltree::Document::parse(domain_xml)
        .map_err(|e| LibvirtError::Xml(format!("domain XML: {e}")))?;
    let disk = doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("devices"))
        .flat_map(|d| d.children().filter(|n| n.has_tag_name("disk")))
        .find(|d| {
            d.children()
                .any(|t| t.has_tag_name("target") && t.attribute("dev") == Some(target))
        })
        .ok_or_else(|| LibvirtError::NotFound(format!("domain XML: no disk {target:?}")))?;
    let mut files = Vec::new();
    let mut node = disk;
    while let Some(store) = node.children().find(|n| n.has_tag_name("backingStore")) {
        if files.len() >= MAX_BACKING_DEPTH {
            return Err(LibvirtError::Xml(format!(
                "domain XML: disk {target}: backing chain deeper than {MAX_BACKING_DEPTH}"
            )));
        }
        let file = store
            .children()
            .find(|n| n.has_tag_name("source"))
            .and_then(|s| s.attribute("file").or(s.attribute("dev")));
        let Some(file) = file else { break };
        files.push(file.to_string());
        node = store;
    }
    Ok(files)
}

/// The `<domainsnapshot>` document of an external disk-only snapshot named `name` that moves
/// each disk of `overlays` (target, overlay path) onto a new qcow2 overlay; every other disk of
/// `all` is listed with `snapshot='no'` so that nothing else changes.
pub fn disk_only_snapshot(all: &[DiskInfo], name: &str, overlays: &[(String, PathBuf)]) -> String {
    let mut xml = String::from("<domainsnapshot>\n");
    let _ = writeln!(xml, "  <name>{}</name>", attr(name));
    xml.push_str(
        "  <description>coldscan: frozen for a scan, committed back when it ends</description>\n",
    );
    xml.push_str("  <disks>\n");
    for disk in all {
        match overlays.iter().find(|(t, _)| *t == disk.target) {
            Some((_, overlay)) => {
                let _ = writeln!(
                    xml,
                    "    <disk name='{}' snapshot='external' type='file'><driver type='qcow2'/>\
                     <source file='{}'/></disk>",
                    attr(&disk.target),
                    attr(&overlay.to_string_lossy())
                );
            }
            None => {
                let _ = writeln!(
                    xml,
                    "    <disk name='{}' snapshot='no'/>",
                    attr(&disk.target)
                );
            }
        }
    }
    xml.push_str("  </disks>\n</domainsnapshot>\n");
    xml
}

/// Escapes text for an XML attribute value in single or double quotes.
fn attr(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The `<domainbackup mode='pull'>` document exporting `selected` disks over the NBD server of
/// `plan`, each with a qcow2 scratch file ([`BackupPlan::scratch`]); every other disk of `all`
/// is listed with `backup='no'` so that nothing else is exported.
pub fn pull_backup(all: &[DiskInfo], selected: &[String], plan: &BackupPlan) -> String {
    let mut xml = String::from("<domainbackup mode='pull'>\n");
    match &plan.server {
        NbdServer::Unix { socket } => {
            let _ = writeln!(
                xml,
                "  <server transport='unix' socket='{}'/>",
                attr(&socket.to_string_lossy())
            );
        }
        NbdServer::Tcp { host, port } => {
            let _ = writeln!(
                xml,
                "  <server transport='tcp' name='{}' port='{port}'/>",
                attr(host)
            );
        }
    }
    xml.push_str("  <disks>\n");
    for disk in all {
        if selected.contains(&disk.target) {
            let _ = writeln!(
                xml,
                "    <disk name='{}' backup='yes' type='file'><scratch file='{}'/></disk>",
                attr(&disk.target),
                attr(&plan.scratch(&disk.target).to_string_lossy())
            );
        } else {
            let _ = writeln!(xml, "    <disk name='{}' backup='no'/>", attr(&disk.target));
        }
    }
    xml.push_str("  </disks>\n</domainbackup>\n");
    xml
}

/// The NBD server of a running backup's `<domainbackup>` XML, if it has a usable one.
pub fn backup_server(backup_xml: &str) -> Option<NbdServer> {
    let doc = roxmltree::Document::parse(backup_xml).ok()?;
    let server = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("server"))?;
    match server.attribute("transport").unwrap_or("tcp") {
        "unix" => Some(NbdServer::Unix {
            socket: PathBuf::from(server.attribute("socket")?),
        }),
        "tcp" => Some(NbdServer::Tcp {
            host: server.attribute("name")?.to_string(),
            port: server.attribute("port")?.parse().ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const DOMAIN: &str = r#"<domain type='qemu'><name>web-1</name><devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
        <source file='/var/lib/libvirt/images/web&amp;1.qcow2'/><target dev='vda' bus='virtio'/></disk>
      <disk type='block' device='disk'><driver name='qemu' type='raw'/>
        <source dev='/dev/vg/data'/><target dev='vdb' bus='virtio'/></disk>
      <disk type='network' device='disk'><source protocol='rbd' name='pool/img'/>
        <target dev='vdc' bus='virtio'/></disk>
      <disk type='volume' device='disk'><source pool='default' volume='v1'/>
        <target dev='sda' bus='scsi'/></disk>
      <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>
    </devices></domain>"#;

    #[test]
    fn reads_every_kind_of_disk_source() {
        let disks = domain_disks(DOMAIN).unwrap();
        let got: Vec<_> = disks
            .iter()
            .map(|d| (d.target.as_str(), d.source.as_deref(), d.format.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "vda",
                    Some("/var/lib/libvirt/images/web&1.qcow2"),
                    Some("qcow2")
                ),
                ("vdb", Some("/dev/vg/data"), Some("raw")),
                ("vdc", Some("rbd:pool/img"), None),
                ("sda", Some("default/v1"), None),
                ("hdc", None, None),
            ]
        );
        assert!(disks[..4].iter().all(DiskInfo::backupable));
        assert!(
            !disks[4].backupable(),
            "an empty read-only CD-ROM is not backed up"
        );
    }

    #[test]
    fn backing_chains_are_read_top_first_and_bounded() {
        let xml = "<domain><devices><disk type='file' device='disk'>\
            <source file='/i/top.qcow2'/><target dev='vda'/>\
            <backingStore type='file'><format type='qcow2'/><source file='/i/mid.qcow2'/>\
            <backingStore type='file'><format type='raw'/><source file='/b/base.raw'/>\
            <backingStore/></backingStore></backingStore></disk></devices></domain>";
        assert_eq!(
            backing_files(xml, "vda").unwrap(),
            ["/i/mid.qcow2", "/b/base.raw"]
        );
        assert!(matches!(
            backing_files(xml, "vdz"),
            Err(LibvirtError::NotFound(_))
        ));
        let mut deep = String::from("<domain><devices><disk><target dev='vda'/>");
        for i in 0..=MAX_BACKING_DEPTH {
            deep.push_str(&format!("<backingStore><source file='/l{i}'/>"));
        }
        deep.push_str(&"</backingStore>".repeat(MAX_BACKING_DEPTH + 1));
        deep.push_str("</disk></devices></domain>");
        assert!(matches!(
            backing_files(&deep, "vda"),
            Err(LibvirtError::Xml(_))
        ));
    }

    #[test]
    fn snapshot_xml_moves_only_the_chosen_disks_and_escapes_paths() {
        let disks = domain_disks(DOMAIN).unwrap();
        let xml = disk_only_snapshot(
            &disks,
            "cs-1",
            &[("vda".into(), PathBuf::from("/i/a'b.cs-1.overlay"))],
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let moved: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("disk") && n.attribute("snapshot") == Some("external"))
            .map(|n| {
                let source = n.children().find(|c| c.has_tag_name("source")).unwrap();
                (
                    n.attribute("name").unwrap(),
                    source.attribute("file").unwrap(),
                )
            })
            .collect();
        assert_eq!(moved, [("vda", "/i/a'b.cs-1.overlay")]);
        let kept = doc
            .descendants()
            .filter(|n| n.attribute("snapshot") == Some("no"))
            .count();
        assert_eq!(kept, disks.len() - 1);
    }

    #[test]
    fn bad_domain_xml_is_a_typed_error() {
        for bad in [
            "<domain><devices><disk type='file'/></devices></domain>",
            "<network/>",
            "<domain",
        ] {
            assert!(
                matches!(domain_disks(bad), Err(LibvirtError::Xml(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn backup_xml_exports_only_the_selected_disks_and_escapes_paths() {
        let disks = domain_disks(DOMAIN).unwrap();
        let plan = BackupPlan::local(Path::new("/run/x'y"), "bk", None);
        let xml = pull_backup(&disks, &["vda".to_string()], &plan);
        assert!(plan.matches(&xml), "the plan recognizes its own backup");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let server = doc
            .descendants()
            .find(|n| n.has_tag_name("server"))
            .unwrap();
        assert_eq!(server.attribute("socket"), Some("/run/x'y/bk/nbd.sock"));
        let backed: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("disk") && n.attribute("backup") == Some("yes"))
            .map(|n| n.attribute("name").unwrap())
            .collect();
        assert_eq!(backed, ["vda"]);
        let scratch = doc
            .descendants()
            .find(|n| n.has_tag_name("scratch"))
            .unwrap();
        assert_eq!(
            scratch.attribute("file"),
            Some("/run/x'y/bk/bk-vda.scratch")
        );
    }

    #[test]
    fn a_tcp_backup_is_recognized_by_its_address_and_port_only() {
        let disks = domain_disks(DOMAIN).unwrap();
        let plan = BackupPlan::remote("cs-7", "192.0.2.10".into(), 10809);
        let xml = pull_backup(&disks, &["vda".to_string(), "vdb".to_string()], &plan);
        assert!(xml.contains("<server transport='tcp' name='192.0.2.10' port='10809'/>"));
        assert!(plan.matches(&xml));
        assert_eq!(plan.url("vdb"), "nbd://192.0.2.10:10809/vdb");
        assert!(!BackupPlan::remote("cs-7", "192.0.2.10".into(), 10810).matches(&xml));
        assert!(!BackupPlan::local(Path::new("/run"), "cs-7", None).matches(&xml));
        assert_eq!(
            BackupPlan::remote("x", "fd00::1".into(), 10809).url("vda"),
            "nbd://[fd00::1]:10809/vda"
        );
        assert!(backup_server("<domainbackup/>").is_none());
        assert!(
            backup_server("<domainbackup><server transport='tcp' name='h'/></domainbackup>")
                .is_none()
        );
    }
}
