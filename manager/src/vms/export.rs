//! The point-in-time copy a VM job's appliances read: a pull-mode backup (QEMU's own NBD
//! server, [`PullBackup`]) or, for hypervisors without backup jobs, the images frozen by an
//! external disk-only snapshot served by this manager ([`FrozenExport`]). The frozen images are
//! opened read-only, with the format libvirt states for them (never probed from their content:
//! a raw guest disk may hold anything), through coldscan's own image readers, and served by a
//! read-only NBD server; the guest writes to its overlays meanwhile.

use std::path::Path;

use coldscan_scanner::disk::nbd::server::ExportServer;
use coldscan_scanner::disk::{self, ChainPolicy, DiskFormat, OpenOptions};

use crate::libvirt::{
    blocking, make_private_dir, FrozenDisk, LibvirtError, NbdServer, PullBackup, SnapshotPlan,
};

/// A running point-in-time copy of one VM's disks.
#[derive(Debug)]
pub enum Export {
    /// A pull-mode backup job.
    Backup(PullBackup),
    /// Frozen images served by this manager (the snapshot fallback).
    Frozen(FrozenExport),
}

impl Export {
    /// (disk target, URL of its export) for every exported disk.
    pub fn disks(&self) -> Vec<(String, String)> {
        match self {
            Export::Backup(b) => b.exports().iter().map(|t| (t.clone(), b.url(t))).collect(),
            Export::Frozen(f) => f
                .disks
                .iter()
                .map(|d| (d.target.clone(), f.plan.url(&d.target)))
                .collect(),
        }
    }

    /// Whether the copy can still be read (a backup aborted outside coldscan, or whose VM
    /// stopped, cannot; frozen images stay readable until this manager stops serving them).
    pub async fn alive(&self) -> bool {
        match self {
            // When libvirt cannot tell, the disk jobs will.
            Export::Backup(b) => {
                let watch = b.watch();
                blocking(move || watch.is_running()).await.unwrap_or(true)
            }
            Export::Frozen(_) => true,
        }
    }

    /// Ends the copy: the backup job is ended (libvirt removes its scratch files); frozen
    /// images are no longer served (committing the overlays back is the caller's next step).
    pub async fn end(self) -> Result<(), LibvirtError> {
        match self {
            Export::Backup(b) => blocking(move || b.end()).await,
            Export::Frozen(f) => {
                blocking(move || {
                    f.stop();
                    Ok(())
                })
                .await
            }
        }
    }
}

/// Images frozen by a disk-only snapshot, served read-only over NBD by this manager.
#[derive(Debug)]
pub struct FrozenExport {
    plan: SnapshotPlan,
    disks: Vec<FrozenDisk>,
    server: Option<ExportServer>,
}

impl FrozenExport {
    /// Opens every frozen image of `disks` and serves them where `plan` says, each under its
    /// disk's target name.
    pub fn serve(plan: SnapshotPlan, disks: Vec<FrozenDisk>) -> Result<FrozenExport, LibvirtError> {
        let mut exports = Vec::new();
        for d in &disks {
            let format = disk_format(&d.format).ok_or_else(|| {
                LibvirtError::Snapshot(format!(
                    "disk {}: {} images cannot be served by coldscan",
                    d.target, d.format
                ))
            })?;
            // The chain below the image is the one libvirt itself uses for the disk: allow
            // exactly its directories, whatever the backing names inside the images say.
            let allowed_dirs = d
                .backing
                .iter()
                .filter_map(|b| b.parent().map(Path::to_path_buf))
                .collect();
            let opts = OpenOptions {
                chain: ChainPolicy { allowed_dirs },
                ..OpenOptions::default()
            };
            let opened = disk::open_as(&d.image, format, &opts).map_err(|e| {
                LibvirtError::Snapshot(format!(
                    "disk {}: opening its frozen image {}: {e}",
                    d.target,
                    d.image.display()
                ))
            })?;
            exports.push((d.target.clone(), opened.source));
        }
        if let Some(dir) = &plan.private_dir {
            make_private_dir(dir)?;
        }
        let started = match &plan.server {
            NbdServer::Unix { socket } => ExportServer::start_unix(socket, exports),
            NbdServer::Tcp { host, port } => {
                let ip: std::net::IpAddr = host.parse().map_err(|_| {
                    LibvirtError::Snapshot(format!(
                        "the NBD address {host:?} is not an IP address of this host"
                    ))
                })?;
                ExportServer::start_tcp((ip, *port).into(), exports)
            }
        };
        let server = started.map_err(|e| {
            remove_dir(plan.private_dir.as_deref());
            LibvirtError::Snapshot(format!("serving the frozen images: {e}"))
        })?;
        Ok(FrozenExport {
            plan,
            disks,
            server: Some(server),
        })
    }

    /// Stops serving (open connections are closed) and removes the private directory.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        remove_dir(self.plan.private_dir.as_deref());
    }
}

impl Drop for FrozenExport {
    fn drop(&mut self) {
        self.shut();
    }
}

fn remove_dir(dir: Option<&Path>) {
    if let Some(dir) = dir.filter(|d| d.exists()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// coldscan's reader for a libvirt `<driver type=...>` name.
fn disk_format(libvirt: &str) -> Option<DiskFormat> {
    Some(match libvirt {
        "raw" => DiskFormat::Raw,
        "qcow2" => DiskFormat::Qcow2,
        "vmdk" => DiskFormat::Vmdk,
        "vpc" => DiskFormat::Vhd,
        "vhdx" => DiskFormat::Vhdx,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn qemu_img(args: &[&str]) {
        let out = Command::new("qemu-img").args(args).output().unwrap();
        assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
    }

    fn unix_plan(dir: &Path) -> SnapshotPlan {
        let private = dir.join("cs-vmjob-1-1-frozen");
        SnapshotPlan {
            tag: "cs-vmjob-1-1".into(),
            server: NbdServer::Unix {
                socket: private.join("nbd.sock"),
            },
            private_dir: Some(private),
        }
    }

    fn frozen(target: &str, image: &Path, format: &str) -> FrozenDisk {
        FrozenDisk {
            target: target.into(),
            image: image.to_path_buf(),
            format: format.into(),
            backing: Vec::new(),
            overlay: image.with_extension("overlay"),
        }
    }

    fn read_all(url: &str) -> Vec<u8> {
        let disk = coldscan_scanner::disk::nbd::open(url).unwrap();
        let size = usize::try_from(disk.source.size()).unwrap();
        let mut data = vec![0u8; size];
        disk.source.read_exact_at(0, &mut data).unwrap();
        data
    }

    /// The frozen images are served as the guest sees them: a qcow2 chain through its layers
    /// (compared with qemu-img's own conversion), a raw disk as raw even when the guest wrote
    /// a qcow2 header at its start; the private directory goes with the server.
    #[test]
    fn frozen_images_are_served_as_their_stated_format() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let mut content: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&base, &content).unwrap();
        let top = dir.path().join("top.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            base.to_str().unwrap(),
            top.to_str().unwrap(),
        ]);
        let io = Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 0xab 1M 64k"])
            .arg(&top)
            .output()
            .unwrap();
        assert!(io.status.success(), "{io:?}");
        content[1 << 20..(1 << 20) + (64 << 10)].fill(0xab);
        // A raw disk whose guest wrote a qcow2 magic: raw it stays.
        let tricky = dir.path().join("tricky.raw");
        let mut raw = b"QFI\xfb\0\0\0\x03".to_vec();
        raw.resize(1 << 20, 7);
        std::fs::write(&tricky, &raw).unwrap();

        let plan = unix_plan(dir.path());
        // libvirt lists the chain below the image: its directories are allowed.
        let mut vda = frozen("vda", &top, "qcow2");
        vda.backing = vec![base.clone()];
        let export =
            FrozenExport::serve(plan.clone(), vec![vda, frozen("vdb", &tricky, "raw")]).unwrap();
        let disks = Export::Frozen(export);
        let urls = disks.disks();
        assert_eq!(urls[0].0, "vda");
        assert_eq!(
            read_all(&urls[0].1),
            content,
            "the qcow2 chain as the guest sees it"
        );
        assert_eq!(read_all(&urls[1].1), raw, "the raw disk byte for byte");
        let Export::Frozen(export) = disks else {
            unreachable!()
        };
        export.stop();
        assert!(!plan.private_dir.unwrap().exists());
    }

    #[test]
    fn an_image_that_cannot_be_served_is_a_typed_error_naming_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        std::fs::write(&raw, vec![0u8; 65536]).unwrap();
        for (format, why) in [("qcow2", "opening"), ("qed", "cannot be served")] {
            let err = FrozenExport::serve(unix_plan(dir.path()), vec![frozen("vdc", &raw, format)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("vdc") && err.contains(why), "{err}");
        }
        assert!(!dir.path().join("cs-vmjob-1-1-frozen").exists());
    }

    #[test]
    fn libvirt_format_names_map_to_coldscan_readers() {
        assert_eq!(disk_format("qcow2"), Some(DiskFormat::Qcow2));
        assert_eq!(disk_format("vpc"), Some(DiskFormat::Vhd));
        assert_eq!(disk_format("qed"), None);
        assert_eq!(disk_format("luks"), None);
    }
}
