//! The appliance runtime: `coldscan` as PID 1 of the scan appliance (configuration, guest disk
//! discovery, network, hardening, scan jobs, serial console).

pub mod config;
pub mod discovery;
pub mod hardening;
