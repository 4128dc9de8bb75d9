//! Choosing a port to listen on, for the local cluster and the tests.
//!
//! Asking the kernel for port 0 hands out a port from the ephemeral range
//! (`net.ipv4.ip_local_port_range`), the same range every outgoing
//! connection takes its local port from. Under load (loadgen opens
//! thousands of connections, the nodes open their own to Redis and
//! PostgreSQL) a port chosen that way and bound a second later by
//! HAProxy or redis-server is often already the local end of some
//! connection, and the server fails to start with "address in use". CI
//! saw exactly that: `haproxy exited at start` in the chaos suite.
//!
//! So the ports come from below the ephemeral range, where the kernel
//! never puts an outgoing connection, picked at random (two processes
//! choosing at once rarely pick the same one) and never handed out twice
//! by one process (the tests' threads choose at once all the time).

use std::collections::HashSet;
use std::io;
use std::net::TcpListener;
use std::sync::Mutex;

use rand::Rng;

/// Where the kernel's ephemeral range starts when it cannot be read.
const EPHEMERAL_START: u16 = 32768;
/// The lowest port handed out: clear of the well-known and registered
/// ports services on a developer's machine tend to use.
const LOWEST: u16 = 10000;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port on 127.0.0.1 nobody listens on now, outside the ephemeral range.
/// Another process could still take it before it is bound; it is only
/// unlikely, not impossible.
pub fn free_port() -> io::Result<u16> {
    let (lo, hi) = candidates();
    let mut rng = rand::rng();
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = rng.random_range(lo..=hi);
        if handed.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return Ok(port);
        }
    }
    // A machine with the whole range taken: fall back on the kernel's
    // choice rather than fail.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    handed.insert(port);
    Ok(port)
}

/// The range to choose from: below the ephemeral range if there is room
/// there, otherwise above it.
fn candidates() -> (u16, u16) {
    let (start, end) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|n| n.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((EPHEMERAL_START, 60999));
    if start > LOWEST + 1000 {
        (LOWEST, start - 1)
    } else if end < u16::MAX - 1000 {
        (end + 1, u16::MAX)
    } else {
        (1024, u16::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_outside_the_ephemeral_range_and_never_repeat() {
        let (lo, hi) = candidates();
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        assert!(ports.iter().all(|p| (lo..=hi).contains(p)), "{ports:?}");
        let unique: HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), ports.len(), "a port handed out twice");
    }
}
