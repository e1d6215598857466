//! `coldscan`: the host CLI (`scan`, `ls`, `info`, `cat`) and the appliance's PID 1.
//!
//! Started as process 1 (the appliance image's `/init`), it runs the appliance instead of the CLI.
//!
//! Exit codes follow clamscan: 0 nothing found and everything read, 1 something found, 2 errors.
#![forbid(unsafe_code)]

mod appliance;
mod cli;
pub mod client;
mod inventory_cmd;
mod scan_cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if appliance::is_init_process() {
        appliance::run();
    }
    if std::env::args_os().next().is_some_and(|a| a == "/init") {
        // Mounting and powering off are for the appliance's process 1 only, never a host's.
        eprintln!(
            "coldscan: error: started as /init but not as process 1; refusing to run the appliance"
        );
        return ExitCode::from(2);
    }
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("coldscan: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
