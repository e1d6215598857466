//! A throw-away QEMU guest whose kernel writes a device-mapper snapshot: the host here has no
//! device-mapper, so the kernel's own `dm-snapshot` runs in a tiny guest instead (Debian's cloud
//! kernel and busybox-static fetched with `apt-get download`, the host's `dmsetup` with its
//! libraries, an initramfs made here). The guest takes a persistent snapshot of its first disk
//! (`snapshot` table: origin `/dev/vda`, COW `/dev/vdb`, `P`, 8-sector chunks, as lvm2 loads
//! it; the `snapshot-origin` table is loaded after it, so that the origin splits writes at the
//! snapshot's chunk size), mounts the origin, runs a shell script on it, unmounts, removes both
//! tables (committing the exception store) and powers off. Success is judged by a line on the
//! serial console, never by QEMU's exit code. TCG only (no KVM): about 20 s.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};

use crate::tools::{check, command, run_with};

/// The line the guest prints when the snapshot is committed and removed.
const DONE: &str = "coldscan-dm-guest done";
/// How long a guest run may take under TCG.
const GUEST_LIMIT: Duration = Duration::from_secs(240);
/// Kernel modules loaded in order (the cloud kernel builds them as modules).
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "dm-mod",
    "dm-bufio",
    "dm-snapshot",
];

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || echo "guest: insmod $m failed"; done
i=0
while { [ ! -b /dev/vda ] || [ ! -b /dev/vdb ]; } && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
SZ=$(blockdev --getsz /dev/vda)
fail() { echo "guest: $1 failed"; poweroff -f; }
dmsetup create --noudevsync snap --table "0 $SZ snapshot /dev/vda /dev/vdb P 8" || fail "dmsetup snapshot"
dmsetup create --noudevsync origin --table "0 $SZ snapshot-origin /dev/vda" || fail "dmsetup snapshot-origin"
dmsetup mknodes
mount -t ext4 /dev/mapper/origin /mnt || fail "mount origin"
(cd /mnt && sh /changes.sh) || fail "changes"
sync
umount /mnt || fail "umount"
dmsetup status snap
dmsetup remove --noudevsync origin || fail "remove origin"
dmsetup remove --noudevsync snap || fail "remove snapshot"
sync
echo "coldscan-dm-guest done"
poweroff -f
"#;

fn copy_module(kdir: &Path, name: &str, to: &Path) -> anyhow::Result<()> {
    let found = walk(kdir)?
        .into_iter()
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == format!("{name}.ko"))
        })
        .with_context(|| format!("module {name} not in {}", kdir.display()))?;
    fs::copy(found, to.join(format!("{name}.ko")))?;
    Ok(())
}

fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// Builds the guest's kernel and initramfs under `work` (`files`: extra files put into the
/// initramfs root, such as `/changes.sh`). Returns (kernel, initramfs).
fn build(work: &Path, files: &[(&str, &[u8])]) -> anyhow::Result<(PathBuf, PathBuf)> {
    let deps = check(command("apt-cache").args(["depends", "linux-image-cloud-amd64"]))
        .context("the dm-snapshot guest needs apt (apt-get update?)")?;
    let kpkg = deps
        .stdout_text()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .map(str::to_string)
        .context("no linux-image-cloud-amd64 in apt (apt-get update?)")?;
    let dl = work.join("debs");
    fs::create_dir_all(&dl)?;
    check(
        command("apt-get")
            .current_dir(&dl)
            .args(["download", "-q", &kpkg, "busybox-static"]),
    )
    .context("downloading the guest's kernel and busybox")?;
    let (k, bb) = (work.join("k"), work.join("bb"));
    for e in fs::read_dir(&dl)? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let to = if name.starts_with("busybox") { &bb } else { &k };
        check(command("dpkg-deb").arg("-x").arg(&p).arg(to))?;
    }
    let root = work.join("root");
    for d in ["bin", "sbin", "dev", "proc", "sys", "mnt", "lib/modules"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy(bb.join("bin/busybox"), root.join("bin/busybox"))?;
    let kdir = walk(&k.join("lib/modules"))?
        .into_iter()
        .find_map(|p| {
            p.ancestors()
                .find(|a| a.parent().is_some_and(|q| q.ends_with("lib/modules")))
                .map(Path::to_path_buf)
        })
        .context("no kernel modules in the package")?;
    for m in MODULES {
        copy_module(&kdir, m, &root.join("lib/modules"))?;
    }
    fs::write(root.join("lib/modules/order"), MODULES.join("\n") + "\n")?;
    let dmsetup = PathBuf::from("/sbin/dmsetup");
    fs::copy(&dmsetup, root.join("sbin/dmsetup"))
        .context("the host's dmsetup (package dmsetup)")?;
    let ldd = check(command("ldd").arg(&dmsetup))?;
    for lib in ldd
        .stdout_text()
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(to.parent().context("library path")?)?;
        fs::copy(lib, &to).with_context(|| format!("copying {lib}"))?;
    }
    fs::write(root.join("init"), INIT)?;
    for (name, data) in files {
        fs::write(root.join(name.trim_start_matches('/')), data)?;
    }
    check(command("chmod").args(["-R", "u+rwX,go+rX"]).arg(&root))?;
    check(command("chmod").arg("755").arg(root.join("init")))?;
    let initrd = work.join("initrd.img");
    let sh = format!(
        "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        root.display(),
        initrd.display()
    );
    check(command("sh").args(["-c", &sh]))?;
    let kernel = walk(&k.join("boot"))?
        .into_iter()
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .context("no vmlinuz in the kernel package")?;
    Ok((kernel, initrd))
}

/// Snapshots `origin` (a raw ext4 image) in a guest, with the COW store on `cow` (a raw image
/// of zeros), runs `changes` (a shell script, run in the mounted origin's root, with `files`
/// beside it in `/`) and returns the guest's console output. `work` holds the guest's pieces.
pub fn snapshot_and_change(
    work: &Path,
    origin: &Path,
    cow: &Path,
    changes: &str,
    files: &[(&str, &[u8])],
) -> anyhow::Result<String> {
    let mut all: Vec<(&str, &[u8])> = vec![("/changes.sh", changes.as_bytes())];
    all.extend_from_slice(files);
    let (kernel, initrd) = build(work, &all)?;
    let drive = |p: &Path| format!("file={},format=raw,if=virtio", p.display());
    let out = run_with(
        command("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 panic=-1 quiet"])
            .args(["-drive", &drive(origin), "-drive", &drive(cow)]),
        b"",
        GUEST_LIMIT,
    )
    .context("running the dm-snapshot guest (qemu-system-x86_64)")?;
    let console = out.stdout_text();
    if !console.contains(DONE) || console.contains("guest: ") {
        bail!(
            "the dm-snapshot guest did not finish: {}\nstderr: {}",
            console,
            out.stderr
        );
    }
    ensure!(
        console.contains("snapshot"),
        "the guest printed no snapshot status: {console}"
    );
    Ok(console)
}
