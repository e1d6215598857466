//! Harness for booting the appliance under QEMU (TCG) in tests.
//!
//! Until the image builder's UKI is used here, the boot is a direct kernel boot: Debian's signed
//! kernel (fetched once with `apt-get download`, cached under `target/appliance-test/`), an
//! initramfs made by [`initramfs`] with `/init` = the `coldscan` binary under test, its shared
//! library closure, the virtio/evdev/button modules in load order in `/etc/coldscan/modules`,
//! and a generated test signature database. Success is judged from the serial console log,
//! never from QEMU's exit code.
//!
//! The manager is the real `coldscan-manager` ([`Manager`]) on a loopback port that the guest
//! reaches through QEMU's `guestfwd` (user networking with `restrict=on`), as `make demo` runs it.

#![allow(dead_code)]

pub mod configdisk;
pub mod guests;
mod manager;
pub mod stored;
#[allow(unused_imports)] // each test binary uses its part
pub use manager::{free_port, manager_binary, Manager, APPLIANCE};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use coldscan_tests::testdb;

/// Modules loaded by the test image, in dependency order (`modinfo -F depends`; ext4 and jbd2
/// also need a `crc32c` implementation).
pub const MODULES: &[&str] = &[
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
    "kernel/drivers/input/evdev.ko",
    "kernel/drivers/acpi/button.ko",
    // The config disk, mounted read-write for the spool: FAT (utf8 names) or ext4.
    "kernel/fs/fat/fat.ko",
    "kernel/fs/fat/vfat.ko",
    "kernel/fs/nls/nls_cp437.ko",
    "kernel/fs/nls/nls_utf8.ko",
    "kernel/lib/crc16.ko",
    "kernel/fs/mbcache.ko",
    "kernel/fs/jbd2/jbd2.ko",
    "kernel/crypto/crc32c_generic.ko",
    "kernel/fs/ext4/ext4.ko",
];
/// OVMF firmware (package `ovmf`).
pub const OVMF_DIR: &str = "/usr/share/OVMF";
/// The manager's address as the guest sees it (forwarded by QEMU to the test's port).
pub const GUEST_MANAGER: &str = "10.0.2.100:8080";

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where the harness caches its kernel and images.
pub fn cache_dir() -> PathBuf {
    let d = coldscan_tests::cache::target_dir().join("appliance-test");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A kernel: image and module tree.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// vmlinuz.
    pub image: PathBuf,
    /// `/lib/modules/<release>` of the extracted package.
    pub modules: PathBuf,
    /// The release (`6.1.0-57-amd64`).
    pub release: String,
}

/// Debian's current `linux-image-*-amd64` (the one `linux-image-amd64` depends on), downloaded
/// once; `COLDSCAN_KERNEL_DEB` names a local package instead.
pub fn kernel() -> Kernel {
    let dir = cache_dir();
    let deb = match std::env::var_os("COLDSCAN_KERNEL_DEB") {
        Some(p) => PathBuf::from(p),
        None => {
            let existing = std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("linux-image-") && n.ends_with(".deb"))
                });
            match existing {
                Some(p) => p,
                None => {
                    let deps =
                        stdout_of(Command::new("apt-cache").args(["depends", "linux-image-amd64"]));
                    let pkg = deps
                        .lines()
                        .filter_map(|l| l.trim().strip_prefix("Depends: "))
                        .find(|p| p.starts_with("linux-image-"))
                        .expect("linux-image-amd64 depends on a kernel package")
                        .to_string();
                    run(Command::new("apt-get")
                        .args(["download", &pkg])
                        .current_dir(&dir));
                    return kernel();
                }
            }
        }
    };
    let root = dir.join("kernel");
    if !root.join("boot").is_dir() {
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    }
    let image = std::fs::read_dir(root.join("boot"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .expect("vmlinuz in the kernel package");
    let release = image.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_string();
    Kernel {
        modules: root.join("lib/modules").join(&release),
        image,
        release,
    }
}

/// The shared libraries `binary` needs (`ldd`), absolute paths.
fn library_closure(binary: &Path) -> Vec<PathBuf> {
    let text = stdout_of(Command::new("ldd").arg(binary));
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn copy_into(staging: &Path, src: &Path, dest: &str) {
    let to = staging.join(dest.trim_start_matches('/'));
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(src, &to)
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", src.display(), to.display()));
}

/// Tests run in parallel threads: one prepares the kernel and initramfs, the others wait.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The kernel and the initramfs for `binary`, prepared once.
pub fn boot_files(binary: &Path) -> (Kernel, PathBuf) {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let kernel = kernel();
    let initrd = initramfs(&kernel, binary);
    (kernel, initrd)
}

/// Builds the test initramfs (zstd-compressed newc cpio) for `binary`, cached by the binary's
/// modification time.
fn initramfs(kernel: &Kernel, binary: &Path) -> PathBuf {
    let dir = cache_dir();
    let out = dir.join("initramfs.cpio.zst");
    let stamp = format!(
        "{:?} {} {MODULES:?}",
        std::fs::metadata(binary).unwrap().modified().unwrap(),
        kernel.release
    );
    let stamp_file = dir.join("initramfs.stamp");
    if out.is_file() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
        return out;
    }
    let staging = dir.join("initramfs");
    let _ = std::fs::remove_dir_all(&staging);
    for d in [
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "etc/coldscan",
        "usr/share/coldscan",
    ] {
        std::fs::create_dir_all(staging.join(d)).unwrap();
    }
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(staging.join("init")));
    for lib in library_closure(binary) {
        copy_into(&staging, &lib, &lib.display().to_string());
    }
    let mut list = String::new();
    for m in MODULES {
        copy_into(
            &staging,
            &kernel.modules.join(m),
            &format!("lib/modules/{}/{m}", kernel.release),
        );
        list.push_str(m);
        list.push('\n');
    }
    std::fs::write(staging.join("etc/coldscan/modules"), list).unwrap();
    testdb::write_test_db(&staging.join("usr/share/coldscan/db")).unwrap();
    run(Command::new("mknod")
        .arg(staging.join("dev/console"))
        .args(["c", "5", "1"]));
    let tmp = dir.join("initramfs.cpio.zst.tmp");
    let script = format!(
        "set -o pipefail; cd {} && find . -print0 | LC_ALL=C sort -z | cpio --quiet -o -0 -H newc -R 0:0 | zstd -q -3 -T0 -f -o {}",
        staging.display(),
        tmp.display()
    );
    run(Command::new("bash").arg("-c").arg(script));
    std::fs::rename(&tmp, &out).unwrap();
    std::fs::write(stamp_file, stamp).unwrap();
    let _ = std::fs::remove_dir_all(&staging);
    out
}

/// The appliance image built by `coldscan-image` (beside the `coldscan` binary under test) with
/// `binary` as PID 1, the test database baked in, and `cmdline`; cached by the binary's time.
pub fn appliance_image(binary: &Path, cmdline: &str) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let builder = binary.with_file_name("coldscan-image");
    assert!(
        builder.is_file(),
        "{} missing: build it first (make e2e does: cargo build -p coldscan-image)",
        builder.display()
    );
    let kernel_deb = {
        let _ = kernel();
        std::fs::read_dir(cache_dir())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .expect("kernel package in the cache")
    };
    let dir = cache_dir();
    let out = dir.join("image");
    let stamp = format!(
        "{:?} {:?} {cmdline}",
        std::fs::metadata(binary).unwrap().modified().unwrap(),
        std::fs::metadata(&builder).unwrap().modified().unwrap()
    );
    let stamp_file = dir.join("image.stamp");
    let raw = out.join("coldscan.raw");
    if raw.is_file() && std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(&stamp) {
        return raw;
    }
    let db = testdb::write_test_db(&dir.join("image-db")).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    run(Command::new(&builder)
        .current_dir(coldscan_tests::cache::workspace_root())
        .arg("build")
        .arg("--coldscan")
        .arg(binary)
        .arg("--db")
        .arg(&db)
        .arg("--kernel-deb")
        .arg(&kernel_deb)
        .args(["--format", "raw", "--zstd-level", "3", "--cmdline", cmdline])
        // The workspace's package cache (the builder's default is relative to the working
        // directory, which is the crate's directory under cargo test).
        .arg("--cache")
        .arg(coldscan_tests::cache::target_dir().join("image-cache"))
        .arg("--out")
        .arg(&out));
    std::fs::write(stamp_file, stamp).unwrap();
    raw
}

/// A guest disk attachment.
#[derive(Debug, Clone)]
pub struct Disk {
    /// Image file.
    pub path: PathBuf,
    /// QEMU format (`raw`, `qcow2`, `vhdx`).
    pub format: &'static str,
    /// virtio serial.
    pub serial: String,
}

/// How to boot.
#[derive(Debug, Clone, Default)]
pub struct VmOptions {
    /// Kernel command line after `console=ttyS0 panic=-1`.
    pub cmdline: String,
    /// Guest disks, in attachment order.
    pub disks: Vec<Disk>,
    /// Loopback port the guest's manager address is forwarded to (user net, `restrict=on`).
    pub manager_port: Option<u16>,
    /// Serial console on a unix socket (for the menu) instead of a plain log file.
    pub console_socket: bool,
    /// Disks attached before the guest disks (a config disk), with their QEMU format.
    pub extra_disks: Vec<Disk>,
    /// The NIC model (`virtio-net-pci` when empty; `e1000e`, `vmxnet3`...).
    pub nic: &'static str,
    /// Further guest addresses forwarded to loopback ports: (`IP:PORT` in the guest, host port).
    pub forwards: Vec<(String, u16)>,
    /// Boot this appliance image (raw, from `coldscan-image`) under OVMF instead of the direct
    /// kernel boot; `cmdline` is then ignored (the UKI carries its own).
    pub image: Option<PathBuf>,
}

/// A running VM.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    /// The serial log file.
    pub log: PathBuf,
    /// The console socket, if any.
    pub socket: Option<PathBuf>,
    /// The QEMU monitor's unix socket.
    pub monitor: PathBuf,
    _dir: tempfile::TempDir,
}

impl Vm {
    /// Boots `binary` with `opts`.
    pub fn start(binary: &Path, opts: &VmOptions) -> Vm {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-machine", "q35", "-accel", "tcg", "-m", "1024", "-smp", "2",
        ]);
        let monitor = dir.path().join("monitor.sock");
        cmd.args(["-display", "none", "-no-reboot"]);
        cmd.arg("-monitor")
            .arg(format!("unix:{},server=on,wait=off", monitor.display()));
        match &opts.image {
            Some(image) => {
                let vars = dir.path().join("vars.fd");
                std::fs::copy(format!("{OVMF_DIR}/OVMF_VARS_4M.fd"), &vars).unwrap();
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,readonly=on,file={OVMF_DIR}/OVMF_CODE_4M.fd"
                ));
                cmd.arg("-drive")
                    .arg(format!("if=pflash,format=raw,file={}", vars.display()));
                cmd.arg("-drive").arg(format!(
                    "file={},format=raw,if=virtio,snapshot=on",
                    image.display()
                ));
            }
            None => {
                let (kernel, initrd) = boot_files(binary);
                cmd.arg("-kernel")
                    .arg(&kernel.image)
                    .arg("-initrd")
                    .arg(&initrd);
                cmd.arg("-append").arg(format!(
                    // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer
                    // check can fail and panic the boot.
                    "console=ttyS0 panic=-1 loglevel=4 no_timer_check {}",
                    opts.cmdline
                ));
            }
        }
        let socket = opts.console_socket.then(|| dir.path().join("console.sock"));
        match &socket {
            Some(s) => {
                cmd.arg("-chardev").arg(format!(
                    "socket,id=con,path={},server=on,wait=off,logfile={}",
                    s.display(),
                    log.display()
                ));
                cmd.args(["-serial", "chardev:con"]);
            }
            None => {
                cmd.arg("-serial").arg(format!("file:{}", log.display()));
            }
        }
        for (i, d) in opts.extra_disks.iter().chain(&opts.disks).enumerate() {
            cmd.arg("-drive").arg(format!(
                "file={},format={},if=none,id=d{i},cache=unsafe",
                d.path.display(),
                d.format
            ));
            cmd.arg("-device")
                .arg(format!("virtio-blk-pci,drive=d{i},serial={}", d.serial));
        }
        match opts.manager_port {
            Some(port) => {
                // `cmd:` starts one socat per guest connection (a chardev target would carry a
                // single connection for the VM's lifetime).
                let mut netdev = format!(
                    "user,id=n0,restrict=on,guestfwd=tcp:{GUEST_MANAGER}-cmd:socat - TCP:127.0.0.1:{port}"
                );
                for (guest, host) in &opts.forwards {
                    netdev.push_str(&format!(
                        ",guestfwd=tcp:{guest}-cmd:socat - TCP:127.0.0.1:{host}"
                    ));
                }
                cmd.arg("-netdev").arg(netdev);
                let nic = if opts.nic.is_empty() {
                    "virtio-net-pci"
                } else {
                    opts.nic
                };
                cmd.arg("-device").arg(format!("{nic},netdev=n0,romfile="));
            }
            None => {
                cmd.args(["-nic", "none"]);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("qemu-system-x86_64 starts");
        Vm {
            child,
            log,
            socket,
            monitor,
            _dir: dir,
        }
    }

    /// The serial log so far.
    pub fn serial(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the serial log contains `needle` (panics after `limit` with the log).
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let log = self.serial();
            if log.contains(needle) {
                return log;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("QEMU ended ({status}) before {needle:?}:\n{log}");
            }
            assert!(
                start.elapsed() < limit,
                "no {needle:?} within {limit:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends a command to the QEMU monitor (`system_powerdown` presses the ACPI power button).
    pub fn monitor(&self, command: &str) {
        let mut s = std::os::unix::net::UnixStream::connect(&self.monitor).unwrap();
        writeln!(s, "{command}").unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }

    /// Kills QEMU (the machine dies at once, as on a host crash) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for QEMU to end (the guest powered off); panics after `limit` with the log.
    pub fn wait_powered_off(&mut self, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.serial();
            }
            assert!(
                start.elapsed() < limit,
                "VM still running after {limit:?}:\n{}",
                self.serial()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// sha256 of a file, for byte-identity checks.
pub fn sha256_file(path: &Path) -> String {
    stdout_of(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `qemu-nbd` serving an image read-only on a loopback port; killed on drop.
#[derive(Debug)]
pub struct NbdServer {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl NbdServer {
    /// Serves `image` (raw) as export `export`, and waits until it accepts connections.
    pub fn start(image: &Path) -> NbdServer {
        let port = free_port();
        let child = Command::new("qemu-nbd")
            .args([
                "--read-only",
                "--persistent",
                "--shared=4",
                "-f",
                "raw",
                "-x",
                "export",
            ])
            .args(["-b", "127.0.0.1", "-p", &port.to_string()])
            .arg(image)
            .stdin(Stdio::null())
            .spawn()
            .expect("qemu-nbd starts");
        let server = NbdServer { child, port };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "qemu-nbd not listening"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
