//! `coldscan`: the host CLI (`scan`, `ls`, `info`, `cat`) and, later, the appliance's PID 1.
//!
//! Exit codes follow clamscan: 0 nothing found and everything read, 1 something found, 2 errors.
#![forbid(unsafe_code)]

mod cli;
pub mod client;
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
