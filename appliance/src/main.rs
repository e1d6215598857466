//! `coldscan`: the host CLI (`scan`, `ls`, `info`, `cat`) and, later, the appliance's PID 1.
//!
//! Exit codes follow clamscan: 0 nothing found and everything read, 1 something found, 2 errors.
// `deny`, not `forbid`: the appliance's few PID-1 syscalls without a safe wrapper (BLKROSET) opt out
// with `#[allow(unsafe_code)]` and a `// SAFETY:` comment.
#![deny(unsafe_code)]

#[allow(dead_code)] // wired into PID 1 as the runtime grows
mod appliance;
mod cli;
mod inventory_cmd;
mod scan_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("coldscan: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
