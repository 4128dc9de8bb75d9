//! The test harness: real `redis-server` processes (and, for the worker
//! tests, real PostgreSQL clusters) started per test on free ports in
//! temporary directories, stopped in `Drop`. Nothing here talks to a service
//! that merely happens to run on the machine.
#![allow(dead_code)]

pub mod capture_node;
pub mod cluster_proc;
pub mod edge;
pub mod postgres;
pub mod redis_server;
pub mod results_node;

#[allow(unused_imports)]
pub use redis_server::RedisServer;

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A port nobody listens on right now. Another process could take it
/// before we bind it; the servers started here retry on a new port then.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
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

/// The async twin of [`wait_until`], for tests that run inside actix.
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

/// Sends a signal to a process we started.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Where a program is on PATH, if it is.
pub fn require_program_opt(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Panics with an install hint when a program the tests need is missing.
pub fn require_program(name: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` not found on PATH: run `make test` (it installs it) or `apt-get install {package}`"
    );
}

/// A plain HTTP/1.0 `GET path` to a port on loopback: the whole answer,
/// status line and headers included.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
