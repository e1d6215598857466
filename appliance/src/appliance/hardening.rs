//! Process hardening for the appliance's roles: `no_new_privs` (prctl `PR_SET_NO_NEW_PRIVS`) and
//! a seccomp-BPF filter per role (Linux `Documentation/userspace-api/seccomp_filter.rst`), built
//! with firecracker's `seccompiler`.
//!
//! The scan workers' filters are **allow lists** ([`WORKER_ALLOWED`], firecracker's approach):
//! only the calls a worker makes once hardened (file reads, libclamav's temporary files under
//! `/tmp`, memory, threads, clocks; measured with `strace -f` over scans of every fixture kind:
//! partition tables, LVM, MD, LUKS, every filesystem and disk format, archives), `ioctl` only
//! with the requests the readers use, and for an `nbd://` worker ([`Role::Network`]) the
//! client-socket calls on top. No socket for disk workers, no exec, no mount, no module, no
//! `ptrace` for any worker. PID 1 keeps a deny list (it mounts, loads modules, spawns workers,
//! powers off): no listening sockets, ptrace, kexec, BPF, keyrings. A call outside its filter
//! kills the whole process with `SIGSYS` (`SECCOMP_RET_KILL_PROCESS`), which its parent sees
//! and reports.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// A role in the appliance, each with its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// PID 1: mounts, module loading, power off, spawning workers.
    Supervisor,
    /// The network and reporting side: sockets to the manager, no listening, no exec.
    Network,
    /// A scan worker: reads guest disks, no socket, no exec, no privileged calls.
    ScanWorker,
}

/// Hardening failed: the appliance refuses to parse guest data then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HardeningError {
    /// `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
    /// The filter could not be built.
    #[error("seccomp filter for {role:?}: {detail}")]
    Build {
        /// The role.
        role: Role,
        /// seccompiler's message.
        detail: String,
    },
    /// landlock could not be set up.
    #[error("landlock: {0}")]
    Landlock(String),
    /// The kernel refused the filter.
    #[error("installing the seccomp filter for {role:?}: {detail}")]
    Install {
        /// The role.
        role: Role,
        /// seccompiler's message.
        detail: String,
    },
}

/// Calls PID 1 may never make (its deny list; the workers' allow lists hold none of them).
const DENIED_ALWAYS: &[i64] = &[
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_add_key,
    libc::SYS_keyctl,
    libc::SYS_request_key,
    libc::SYS_open_by_handle_at,
    libc::SYS_userfaultfd,
    libc::SYS_perf_event_open,
];

/// System calls a scan worker may make after hardening (x86_64).
pub const WORKER_ALLOWED: &[i64] = &[
    // files: the disk, the databases, libclamav's temporary files, the report on stdout
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_readv,
    libc::SYS_preadv,
    libc::SYS_write,
    libc::SYS_pwrite64,
    libc::SYS_writev,
    libc::SYS_lseek,
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fcntl,
    libc::SYS_ftruncate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fadvise64,
    libc::SYS_getdents64,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_access,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_utimensat,
    libc::SYS_umask,
    libc::SYS_getcwd,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_memfd_create,
    // memory
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_msync,
    // threads (rayon, libclamav), signals, exit
    libc::SYS_clone3,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_prctl,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // time, randomness, limits
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_prlimit64,
    libc::SYS_getrlimit,
    libc::SYS_sysinfo,
    libc::SYS_uname,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_poll,
    libc::SYS_ppoll,
];

/// Client-socket calls an `nbd://` worker may make on top of [`WORKER_ALLOWED`] (connect with a
/// timeout, name resolution, reads and writes; never `bind`, `listen` or `accept`).
pub const NBD_CLIENT_ALLOWED: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_shutdown,
];

/// `ioctl` requests a worker may make: the sector size of a block device (the disk readers),
/// its size, and the terminal queries of the standard library and the CLI (on pipes they fail
/// with `ENOTTY`); `FIONBIO`/`FIONREAD` for the NBD client's sockets.
pub const WORKER_IOCTLS: &[u64] = &[
    0x1268,      // BLKSSZGET
    0x127b,      // BLKPBSZGET
    0x1260,      // BLKGETSIZE
    0x8008_1272, // BLKGETSIZE64
    0x5401,      // TCGETS
    0x5413,      // TIOCGWINSZ
    0x541b,      // FIONREAD
    0x5421,      // FIONBIO
];

/// The system calls of PID 1's deny list (the same for every role: the workers' allow lists
/// hold none of them).
pub fn denied(_role: Role) -> Vec<i64> {
    let mut out: Vec<i64> = DENIED_ALWAYS.to_vec();
    out.sort_unstable();
    out
}

/// The system calls `role` may make (its allow list), or `None` for the supervisor, whose filter
/// is the deny list [`denied`]. `ioctl` is allowed only with [`WORKER_IOCTLS`].
pub fn allowed(role: Role) -> Option<Vec<i64>> {
    let mut out: Vec<i64> = match role {
        Role::Supervisor => return None,
        Role::ScanWorker => WORKER_ALLOWED.to_vec(),
        Role::Network => [WORKER_ALLOWED, NBD_CLIENT_ALLOWED].concat(),
    };
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// The compiled BPF program for `role`.
pub fn program(role: Role) -> Result<BpfProgram, HardeningError> {
    let build = |detail: String| HardeningError::Build { role, detail };
    let filter = match allowed(role) {
        Some(calls) => {
            let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
                calls.into_iter().map(|nr| (nr, Vec::new())).collect();
            let ioctl_rules = WORKER_IOCTLS
                .iter()
                .map(|&request| {
                    SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
                        .and_then(|c| SeccompRule::new(vec![c]))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| build(e.to_string()))?;
            rules.insert(libc::SYS_ioctl, ioctl_rules);
            SeccompFilter::new(
                rules,
                SeccompAction::KillProcess,
                SeccompAction::Allow,
                TargetArch::x86_64,
            )
        }
        None => SeccompFilter::new(
            denied(role)
                .into_iter()
                .map(|nr| (nr, Vec::new()))
                .collect(),
            SeccompAction::Allow,
            SeccompAction::KillProcess,
            TargetArch::x86_64,
        ),
    }
    .map_err(|e| build(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| build(e.to_string()))
}

/// Sets `no_new_privs` and installs `role`'s filter on every thread of this process (TSYNC).
/// Call it before any guest data is parsed, and before threads are started when possible.
pub fn apply(role: Role) -> Result<(), HardeningError> {
    rustix::thread::set_no_new_privs(true)
        .map_err(|e| HardeningError::NoNewPrivs(std::io::Error::from(e)))?;
    let prog = program(role)?;
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| HardeningError::Install {
        role,
        detail: e.to_string(),
    })
}

/// Restricts this process's filesystem access with landlock (best effort: the kernel's ABI
/// decides how much is enforced; Debian 12's 6.1 kernel has ABI v2): `read` paths (and what is
/// beneath them) readable, `write` paths readable and writable, everything else refused.
/// Paths that do not exist are skipped. Returns what the kernel enforced, for the log.
pub fn restrict_filesystem(
    read: &[std::path::PathBuf],
    write: &[std::path::PathBuf],
) -> Result<String, HardeningError> {
    use landlock::{
        path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, ABI,
    };
    let abi = ABI::V2;
    let fail = |e: landlock::RulesetError| HardeningError::Landlock(e.to_string());
    let existing = |paths: &[std::path::PathBuf]| -> Vec<std::path::PathBuf> {
        paths.iter().filter(|p| p.exists()).cloned().collect()
    };
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(fail)?
        .create()
        .map_err(fail)?
        .add_rules(path_beneath_rules(existing(read), AccessFs::from_read(abi)))
        .map_err(fail)?
        .add_rules(path_beneath_rules(existing(write), AccessFs::from_all(abi)))
        .map_err(fail)?
        .restrict_self()
        .map_err(fail)?;
    Ok(format!("{:?}", status.ruleset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    /// In the child: which forbidden call to try after applying the worker filter.
    const CHILD_ENV: &str = "COLDSCAN_SECCOMP_CHILD";
    const SIGSYS: i32 = 31;

    #[test]
    fn roles_differ() {
        let worker = allowed(Role::ScanWorker).unwrap();
        let net = allowed(Role::Network).unwrap();
        for never in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_clone,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_reboot,
            libc::SYS_init_module,
            libc::SYS_finit_module,
            libc::SYS_bind,
            libc::SYS_listen,
            libc::SYS_accept,
            libc::SYS_accept4,
            libc::SYS_ioctl,
            libc::SYS_bpf,
            libc::SYS_kexec_load,
            libc::SYS_seccomp,
            libc::SYS_setuid,
        ] {
            assert!(!worker.contains(&never) && !net.contains(&never), "{never}");
        }
        assert!(!worker.contains(&libc::SYS_socket) && !worker.contains(&libc::SYS_connect));
        assert!(net.contains(&libc::SYS_socket) && net.contains(&libc::SYS_connect));
        assert!(worker.contains(&libc::SYS_openat) && worker.contains(&libc::SYS_clone3));
        assert!(allowed(Role::Supervisor).is_none());
        assert!(denied(Role::Supervisor).contains(&libc::SYS_listen));
        assert!(!denied(Role::Supervisor).contains(&libc::SYS_execve));
        for call in denied(Role::Supervisor) {
            assert!(!worker.contains(&call) && !net.contains(&call), "{call}");
        }
        for role in [Role::Supervisor, Role::Network, Role::ScanWorker] {
            program(role).unwrap();
        }
    }

    /// The body run in a child process (re-executed test binary): apply the worker filter,
    /// then do what a compromised scan worker would.
    #[test]
    fn seccomp_child_body() {
        let Ok(what) = std::env::var(CHILD_ENV) else {
            return;
        };
        apply(Role::ScanWorker).unwrap();
        // Allowed: reading files still works.
        let _ = std::fs::read("/proc/self/status").unwrap();
        match what.as_str() {
            "socket" => {
                let _ = std::net::UdpSocket::bind("127.0.0.1:0");
            }
            "execve" => {
                // execve in this very process (a spawned child would be the one killed).
                use std::os::unix::process::CommandExt;
                let _ = Command::new("/bin/true").exec();
            }
            _ => {}
        }
        // Not reached when the filter works: exit with a code the parent recognises.
        std::process::exit(42);
    }

    fn run_child(what: &str) -> std::process::ExitStatus {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "appliance::hardening::tests::seccomp_child_body",
                "--nocapture",
            ])
            .env(CHILD_ENV, what)
            .output()
            .unwrap()
            .status
    }

    #[test]
    fn worker_is_killed_for_socket_and_execve() {
        for what in ["socket", "execve"] {
            let status = run_child(what);
            assert_eq!(status.signal(), Some(SIGSYS), "{what}: {status:?}");
        }
        // And a worker that behaves exits normally.
        assert_eq!(run_child("nothing").code(), Some(42));
    }
}
