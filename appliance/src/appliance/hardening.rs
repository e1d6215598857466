//! Process hardening for the appliance's roles: `no_new_privs` (prctl `PR_SET_NO_NEW_PRIVS`) and
//! a seccomp-BPF filter per role (Linux `Documentation/userspace-api/seccomp_filter.rst`), built
//! with firecracker's `seccompiler`.
//!
//! This round's filters are deny lists: every role loses what it must never do (scan workers:
//! sockets and exec; nobody: listening sockets, ptrace, kexec, BPF, keyrings). A denied call
//! kills the whole process with `SIGSYS` (`SECCOMP_RET_KILL_PROCESS`), which its parent sees
//! and reports. Allow lists per role are the next tightening.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

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

/// Calls no role may make.
const DENIED_ALWAYS: &[i64] = &[
    libc_nr::LISTEN,
    libc_nr::ACCEPT,
    libc_nr::ACCEPT4,
    libc_nr::PTRACE,
    libc_nr::PROCESS_VM_READV,
    libc_nr::PROCESS_VM_WRITEV,
    libc_nr::KEXEC_LOAD,
    libc_nr::KEXEC_FILE_LOAD,
    libc_nr::BPF,
    libc_nr::ADD_KEY,
    libc_nr::KEYCTL,
    libc_nr::REQUEST_KEY,
    libc_nr::OPEN_BY_HANDLE_AT,
    libc_nr::USERFAULTFD,
    libc_nr::PERF_EVENT_OPEN,
];

/// Calls denied to the network/reporting side on top of [`DENIED_ALWAYS`].
const DENIED_NETWORK: &[i64] = &[
    libc_nr::EXECVE,
    libc_nr::EXECVEAT,
    libc_nr::MOUNT,
    libc_nr::UMOUNT2,
    libc_nr::REBOOT,
    libc_nr::INIT_MODULE,
    libc_nr::FINIT_MODULE,
    libc_nr::DELETE_MODULE,
];

/// Calls denied to scan workers on top of [`DENIED_NETWORK`].
const DENIED_WORKER: &[i64] = &[
    libc_nr::SOCKET,
    libc_nr::SOCKETPAIR,
    libc_nr::CONNECT,
    libc_nr::BIND,
    libc_nr::SENDTO,
    libc_nr::SENDMSG,
    libc_nr::SENDMMSG,
];

/// x86_64 system call numbers (`arch/x86/entry/syscalls/syscall_64.tbl`).
mod libc_nr {
    pub const SOCKET: i64 = 41;
    pub const CONNECT: i64 = 42;
    pub const ACCEPT: i64 = 43;
    pub const SENDTO: i64 = 44;
    pub const SENDMSG: i64 = 46;
    pub const BIND: i64 = 49;
    pub const LISTEN: i64 = 50;
    pub const SOCKETPAIR: i64 = 53;
    pub const EXECVE: i64 = 59;
    pub const PTRACE: i64 = 101;
    pub const MOUNT: i64 = 165;
    pub const UMOUNT2: i64 = 166;
    pub const REBOOT: i64 = 169;
    pub const INIT_MODULE: i64 = 175;
    pub const DELETE_MODULE: i64 = 176;
    pub const KEXEC_LOAD: i64 = 246;
    pub const ADD_KEY: i64 = 248;
    pub const REQUEST_KEY: i64 = 249;
    pub const KEYCTL: i64 = 250;
    pub const ACCEPT4: i64 = 288;
    pub const PERF_EVENT_OPEN: i64 = 298;
    pub const OPEN_BY_HANDLE_AT: i64 = 304;
    pub const SENDMMSG: i64 = 307;
    pub const PROCESS_VM_READV: i64 = 310;
    pub const PROCESS_VM_WRITEV: i64 = 311;
    pub const FINIT_MODULE: i64 = 313;
    pub const KEXEC_FILE_LOAD: i64 = 320;
    pub const BPF: i64 = 321;
    pub const EXECVEAT: i64 = 322;
    pub const USERFAULTFD: i64 = 323;
}

/// The system calls denied to `role`.
pub fn denied(role: Role) -> Vec<i64> {
    let mut out: Vec<i64> = DENIED_ALWAYS.to_vec();
    if matches!(role, Role::Network | Role::ScanWorker) {
        out.extend(DENIED_NETWORK);
    }
    if role == Role::ScanWorker {
        out.extend(DENIED_WORKER);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The compiled BPF program for `role`.
pub fn program(role: Role) -> Result<BpfProgram, HardeningError> {
    let build = |detail: String| HardeningError::Build { role, detail };
    let rules: BTreeMap<i64, Vec<SeccompRule>> = denied(role)
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::KillProcess,
        TargetArch::x86_64,
    )
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
        let worker = denied(Role::ScanWorker);
        let net = denied(Role::Network);
        assert!(worker.contains(&libc_nr::SOCKET) && worker.contains(&libc_nr::EXECVE));
        assert!(!net.contains(&libc_nr::SOCKET) && net.contains(&libc_nr::EXECVE));
        assert!(net.contains(&libc_nr::LISTEN));
        assert!(!denied(Role::Supervisor).contains(&libc_nr::EXECVE));
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
