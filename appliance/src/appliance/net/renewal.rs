//! DHCP lease renewal (RFC 2131 section 4.4.5): a daemon-mode appliance lives longer than many
//! leases. At T1 (half the lease) the client asks the server that granted it, by unicast
//! (RENEWING); failing that, from T2 (seven eighths) anyone, by broadcast (REBINDING); between
//! attempts it waits half the time left until T2 (or the lease's end), at least
//! [`MIN_RETRY`]. Every outcome is said on the console: renewed, refused (NAK: the address may
//! be handed to another host), or expired.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::dhcp::{self, DhcpError, Lease};
use crate::appliance::console::say;

/// Shortest wait between two renewal attempts (RFC 2131 section 4.4.5: 60 seconds).
pub const MIN_RETRY: Duration = Duration::from_secs(60);
/// A lease of this many seconds never ends (RFC 2132 section 9.2).
const INFINITE: u32 = u32::MAX;

/// T1, T2 and the end of a lease of `seconds`, from when it was granted.
pub fn renewal_times(seconds: u32) -> (Duration, Duration, Duration) {
    let end = Duration::from_secs(u64::from(seconds));
    (end / 2, end * 7 / 8, end)
}

/// What to do `elapsed` after the lease was granted: `Some((wait, broadcast))`, the time to wait
/// before the next attempt and whether it is a REBINDING broadcast; `None` once it has ended.
pub fn next_attempt(seconds: u32, elapsed: Duration) -> Option<(Duration, bool)> {
    let (t1, t2, end) = renewal_times(seconds);
    if elapsed >= end {
        return None;
    }
    if elapsed < t1 {
        return Some((t1 - elapsed, false));
    }
    let (limit, broadcast) = if elapsed < t2 {
        (t2, false)
    } else {
        (end, true)
    };
    let wait = ((limit - elapsed) / 2).max(MIN_RETRY).min(end - elapsed);
    Some((wait, broadcast))
}

/// Keeps the lease of `interface` alive in a background thread for the appliance's lifetime.
pub fn spawn(interface: String, mac: [u8; 6], lease: Lease) {
    let spawned = std::thread::Builder::new()
        .name("coldscan-dhcp".into())
        .spawn(move || keep_alive(&interface, mac, lease));
    if let Err(e) = spawned {
        say(&format!("network: DHCP lease renewal not started: {e}"));
    }
}

fn keep_alive(interface: &str, mac: [u8; 6], mut lease: Lease) {
    let mut granted = Instant::now();
    loop {
        let Some(seconds) = lease.lease_seconds.filter(|s| *s != INFINITE) else {
            return;
        };
        let Some((wait, broadcast)) = next_attempt(seconds, granted.elapsed()) else {
            say(&format!(
                "network: DHCP lease of {} on {interface} EXPIRED without renewal; the address stays configured but the server may give it to another host",
                lease.address
            ));
            return;
        };
        std::thread::sleep(wait);
        let to = match (broadcast, lease.server) {
            (false, Some(server)) => SocketAddrV4::new(server, 67),
            _ => SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        };
        match dhcp::renew(interface, mac, &lease, to) {
            Ok(new) if new.address == lease.address => {
                say(&format!(
                    "network: DHCP lease of {} renewed{}",
                    new.address,
                    new.lease_seconds
                        .map(|s| format!(" for {s} s"))
                        .unwrap_or_default()
                ));
                lease = new;
                granted = Instant::now();
            }
            Ok(new) => {
                say(&format!(
                    "network: the DHCP server answered the renewal of {} with {}; keeping {}",
                    lease.address, new.address, lease.address
                ));
            }
            Err(DhcpError::Refused { .. }) => {
                say(&format!(
                    "network: the DHCP server REFUSED to renew {} (NAK); it may give the address to another host",
                    lease.address
                ));
                return;
            }
            Err(e) => say(&format!("network: DHCP renewal failed, will retry: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_follow_rfc_2131() {
        let (t1, t2, end) = renewal_times(86_400);
        assert_eq!(t1, Duration::from_secs(43_200));
        assert_eq!(t2, Duration::from_secs(75_600));
        assert_eq!(end, Duration::from_secs(86_400));
    }

    #[test]
    fn attempts_halve_the_time_left_and_rebind_after_t2() {
        let s = |n| Duration::from_secs(n);
        // Before T1: wait for T1, unicast.
        assert_eq!(next_attempt(86_400, s(0)), Some((s(43_200), false)));
        // Between T1 and T2: half of what is left until T2, unicast.
        assert_eq!(next_attempt(86_400, s(43_200)), Some((s(16_200), false)));
        // Close to T2: never less than a minute.
        assert_eq!(next_attempt(86_400, s(75_590)), Some((s(60), false)));
        // After T2: broadcast, half of what is left until the end.
        assert_eq!(next_attempt(86_400, s(75_600)), Some((s(5_400), true)));
        // Never past the end, and nothing once it has passed.
        assert_eq!(next_attempt(86_400, s(86_390)), Some((s(10), true)));
        assert_eq!(next_attempt(86_400, s(86_400)), None);
        // Tiny leases still work.
        assert_eq!(next_attempt(2, s(0)), Some((s(1), false)));
    }

    #[test]
    fn renewal_request_carries_our_address_only() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let p = dhcp::build_renewal(7, mac, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(&p[12..16], &[10, 0, 2, 15], "ciaddr");
        assert_eq!(&p[10..12], &[0, 0], "no BROADCAST flag");
        assert_eq!(&p[240..243], &[53, 1, 3], "a REQUEST");
        // Neither the requested address (50) nor the server identifier (54) follows.
        assert_eq!(p[243], 55, "the parameter list comes next");
    }
}
