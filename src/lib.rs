//! voteswarm: a poll that stays up when a Super Bowl ad sends millions of
//! voters at once, and counts every acknowledged vote exactly once, with
//! each voter's latest choice winning.
//!
//! # Layout
//!
//! The vote's path through the modules:
//!
//! 1. [`capture`] — the `capture` node's HTTP handlers. They parse the body
//!    ([`capture::parse_form`], [`capture::parse_json`]), read the signed
//!    voter cookie ([`cookie`]), stamp the vote with a hybrid logical clock
//!    ([`clock`]) and hand it to the
//!    [`actors::queue_writer::QueueWriter`], which batches `XADD`s to the
//!    node's own Redis Stream and answers once Redis stored the vote.
//! 2. [`vote`] — the vote and its stream encoding, the contract between
//!    capture and the workers (`docs/PROTOCOL.md`).
//!
//! Shared by every binary: [`config`] (typed settings from flags and
//! environment variables, secrets from `*_FILE`), [`metrics`] (per-node
//! Prometheus registries).
//!
//! Each binary in `src/bin/` only parses its settings and calls the role's
//! `build`/`run_until_stopped` here, so tests start the very same node
//! in-process on port 0.

pub mod actors;
pub mod capture;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod cookie;
pub mod db;
pub mod endpoints;
pub mod loadgen;
pub mod metrics;
pub mod results;
pub mod schema;
pub mod stream;
pub mod vote;
pub mod worker;

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
