//! voteswarm: a poll that stays up when a Super Bowl ad sends millions of
//! voters at once, and counts every acknowledged vote exactly once, with
//! each voter's latest choice winning.
//!
//! # Layout
//!
//! The vote's path through the modules:
//!
//! 1. [`capture`] — the `capture` node's HTTP handlers: one `post_vote`
//!    for the form and the API. Its extractors parse the body
//!    ([`capture::parse_form`], [`capture::parse_json`]) and read the
//!    sealed voter cookie ([`cookie`]); `take_vote` then replays an
//!    `Idempotency-Key`'s answer ([`capture::recent`]), checks a new
//!    voter's proof of work ([`capture::pow`]), stamps the vote with a
//!    hybrid logical clock ([`clock`]) and hands it to the
//!    [`actors::queue_writer::QueueWriter`], which batches `XADD`s to the
//!    node's own Redis Stream and answers once Redis stored the vote. A
//!    refusal is a [`capture::error::CaptureError`], answered as the form
//!    or the API expects by [`capture::error::VoteRefused`].
//! 2. [`vote`] — the vote; [`queue`] — the Redis stream it waits on: every
//!    command on it, the entry format (the contract between capture and
//!    the workers, `docs/PROTOCOL.md`, in [`queue::entry`]), the one
//!    reconnecting connection ([`queue::connection`]) and the worker's own
//!    `XREADGROUP` connection and reply decoder ([`queue::reader`],
//!    [`queue::reply`]).
//! 3. The worker ([`worker`], its actors in [`actors`]) reads each queue's
//!    entries through [`queue`], decodes them into votes, and commits them
//!    with [`db`] (diesel over [`schema`]; the results node reads its
//!    totals there too), retrying as [`retry`] paces every retry in the
//!    tree.
//! 4. [`results`] — the count as viewers see it: one
//!    [`actors::tally::Tally`] reads the queues' depth, then the totals,
//!    once a second, for the page, the JSON and the event stream.
//!
//! Capture and results each run as a [`Node`] (its server and port).
//! Each role's settings (flags, environment variables, validation) are in
//! its own `settings` module: [`capture::settings`], [`worker::settings`],
//! [`results::settings`]. Shared by every binary: [`config`] (what those
//! share: secrets from `*_FILE`, the Redis and PostgreSQL logins),
//! [`endpoints`] (where the queues are), [`metrics`] (per-node Prometheus
//! registries), [`headers`] (the pages' security headers), [`assets`]
//! (the icon both pages use).
//!
//! The tools, behind the default-on `tools` feature so the nodes link none
//! of their crates: `loadgen` (simulated voters and the count's check) and
//! `cluster` (the whole topology on one machine).
//!
//! Each binary in `src/bin/` only parses its settings and calls the role's
//! `build`/`run_until_stopped` here, so tests start the very same node
//! in-process on port 0.

/// Makes mimalloc the global allocator of the binary that invokes it (each
/// of `src/bin/*`): glibc's malloc and free were about a fifth of loadgen's
/// CPU and a seventh of capture's under load (perf), much of it in
/// `malloc_consolidate` and arena locking between threads. A library that
/// sets the allocator takes the choice away from everything linking it.
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::mimalloc::MiMalloc = $crate::mimalloc::MiMalloc;
    };
}
#[doc(hidden)]
pub use mimalloc;

pub mod actors;
pub mod assets;
pub mod capture;
pub mod clock;
#[cfg(feature = "tools")]
pub mod cluster;
pub mod config;
pub mod cookie;
pub mod db;
pub mod endpoints;
pub mod headers;
#[cfg(feature = "tools")]
pub mod loadgen;
pub mod metrics;
pub mod poll;
pub mod queue;
pub mod results;
pub mod retry;
pub mod schema;
pub mod vote;
pub mod worker;

/// Connections the kernel may hold for a listener before `accept`, as
/// actix-web's own `bind` asks. `std::net::TcpListener::bind` asks for 128,
/// which a burst of new voters overflows: each refused SYN then waits a
/// second for its retransmission (seen as a 1 s p99.9 under 256 new
/// connections). Linux caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: i32 = 2048;

/// Binds `addr` ("host:port") for an HTTP server, with [`LISTEN_BACKLOG`];
/// an error names the address.
pub fn listen(addr: &str) -> std::io::Result<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"));
    let mut last = None;
    for sa in addr.to_socket_addrs().map_err(named)? {
        let bound = (|| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(sa),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            // As std does: a restarted node rebinds at once, past TIME_WAIT.
            socket.set_reuse_address(true)?;
            socket.bind(&sa.into())?;
            socket.listen(LISTEN_BACKLOG)?;
            Ok::<_, std::io::Error>(socket.into())
        })();
        match bound {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(named(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    })))
}

/// A node's running HTTP server and the port it listens on. Capture and
/// results are each one (`capture::Capture`, `results::Results`); the role
/// marker only keeps their `build`s apart.
pub struct Node<Role> {
    server: actix_web::dev::Server,
    port: u16,
    role: std::marker::PhantomData<Role>,
}

impl<Role> Node<Role> {
    fn new(server: actix_web::dev::Server, port: u16) -> Self {
        Node {
            server,
            port,
            role: std::marker::PhantomData,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from outside (tests); `graceful` as on SIGTERM.
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Logs to stderr through `env_logger`, `info` unless `RUST_LOG` says
/// otherwise.
pub fn init_logging() {
    init_logging_with("info")
}

/// Logs to stderr with `default` as the filter unless `RUST_LOG` is set.
pub fn init_logging_with(default: &str) {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp_millis()
        .try_init();
}

/// For the binaries' mains: the value, or one line `role: error` on stderr
/// and exit status `code` (2 for bad configuration, 1 for a failed start).
pub fn or_exit<T, E: std::fmt::Display>(role: &str, code: i32, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("{role}: {e}");
        std::process::exit(code)
    })
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;
    use std::time::Duration;

    #[test]
    fn a_listener_holds_a_burst_of_connections_beyond_std_s_128_before_accepting() {
        let listener = super::listen("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Nothing accepts: every connection waits in the kernel's queue.
        // Past a full queue Linux drops the SYN, and the connect would wait
        // for its retransmission a second later.
        let mut held = Vec::new();
        for i in 0..400 {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
                Ok(c) => held.push(c),
                Err(e) => panic!("connection {i} was not queued: {e}"),
            }
        }
        assert_eq!(held.len(), 400);
    }

    #[test]
    fn a_listen_error_names_the_address() {
        let taken = super::listen("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = super::listen(&addr).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot listen on {addr}: ")),
            "{err}"
        );
        let err = super::listen("nonsense").unwrap_err().to_string();
        assert!(err.starts_with("cannot listen on nonsense: "), "{err}");
    }
}
