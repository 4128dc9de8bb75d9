//! The test harness, one set for every suite: real `redis-server`,
//! PostgreSQL, `haproxy` and `cluster` processes started per test on free
//! ports in temporary directories, stopped in `Drop`. Nothing here talks to
//! a service that merely happens to run on the machine.
//!
//! Layout, in the order a vote travels:
//! - [`redis_server`]: a Redis per test ([`RedisServer`]), and the queue as
//!   capture leaves it (preloading votes, reading them back).
//! - [`postgres`]: a PostgreSQL per test ([`PgServer`]), with the
//!   deployments' roles.
//! - [`capture_node`], [`worker_node`], [`results_node`]: each role
//!   in-process on a thread of its own ([`spawn_capture`], [`spawn_worker`],
//!   [`spawn_results`]), from the settings a test starts from; the worker
//!   binary too ([`worker_node::WorkerProcess`]).
//! - [`edge`]: the shipped haproxy.cfg as a real haproxy, and a stub server.
//! - [`cluster_proc`]: the whole system through `cluster up`
//!   ([`spawn_cluster`]).
//! - [`process`]: the one guard for a child process ([`Proc`]), signals,
//!   and running a binary for its exit code and error line.
//! - [`http`]: the one plain HTTP client the suites poke servers with.
//! - [`small_fs`]: a small filesystem to fill and free ([`SmallFs`]), for
//!   the full-disk faults.
//! - here: [`free_port`], and polling a condition until a deadline.
#![allow(dead_code, unused_imports)]

pub mod capture_node;
pub mod cluster_proc;
pub mod edge;
pub mod http;
pub mod netns;
mod node_thread;
pub mod postgres;
pub mod process;
pub mod redis_server;
pub mod results_node;
pub mod small_fs;
pub mod worker_node;

pub use capture_node::{spawn_capture, TestCapture};
pub use cluster_proc::{spawn_cluster, TestCluster, Up};
pub use postgres::PgServer;
pub use process::{alive, require_program, require_program_opt, signal, Proc};
pub use redis_server::RedisServer;
pub use results_node::{spawn_results, TestResults};
pub use small_fs::SmallFs;
pub use worker_node::{spawn_worker, TestWorker};

use std::time::{Duration, Instant};

/// The binaries under test, as cargo built them for this test run.
pub mod bin {
    pub const CAPTURE: &str = env!("CARGO_BIN_EXE_capture");
    pub const WORKER: &str = env!("CARGO_BIN_EXE_worker");
    pub const RESULTS: &str = env!("CARGO_BIN_EXE_results");
    pub const LOADGEN: &str = env!("CARGO_BIN_EXE_loadgen");
    pub const CLUSTER: &str = env!("CARGO_BIN_EXE_cluster");
}

/// A port nobody listens on right now, outside the ephemeral range (see
/// [`voteswarm::cluster::ports`]). Another process could still take it
/// before we bind it; the servers started here retry on a new port then.
/// Also what a test wants for "a port nothing answers on".
pub fn free_port() -> u16 {
    voteswarm::cluster::ports::free_port().expect("choose a free port")
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The async twin of [`wait_until`], for tests whose own tasks must go on
/// running while they wait (requests in flight on the test's runtime).
pub async fn wait_until_async<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
