//! Child processes: the one guard that stops what a test started, even when
//! the test panics, signals, and running a binary the way an operator
//! would to read its exit code and error line.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::wait_until;

/// A child process stopped on drop, if it still runs: with `stop_signal`,
/// then, if it has not exited within `grace`, SIGKILL. Reaped either way.
pub struct Proc {
    child: Child,
    stop_signal: i32,
    grace: Duration,
}

impl Proc {
    /// Spawns `cmd`; dropping the guard kills it (SIGKILL).
    pub fn spawn(cmd: &mut Command) -> Proc {
        Proc::new(cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")))
    }

    pub fn new(child: Child) -> Proc {
        Proc {
            child,
            stop_signal: libc::SIGKILL,
            grace: Duration::ZERO,
        }
    }

    /// Stopped with `signal` on drop (SIGINT for PostgreSQL's fast
    /// shutdown, SIGTERM for a clean one), given `grace` to exit.
    pub fn stopped_with(mut self, signal: i32, grace: Duration) -> Proc {
        self.stop_signal = signal;
        self.grace = grace;
        self
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    pub fn signal(&self, sig: i32) {
        signal(self.id(), sig);
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for it to exit; its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let exited = wait_until(timeout, || !self.running());
        exited.then(|| self.child.wait().expect("reap"))
    }

    /// SIGKILL, and reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            if self.stop_signal != libc::SIGKILL {
                // SAFETY: kill(2) on our own child, a valid signal number.
                unsafe { libc::kill(self.child.id() as libc::pid_t, self.stop_signal) };
                let _ = wait_until(self.grace, || !self.running());
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Sends a signal to a process we started.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we own and a valid signal number.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Every running process with its parent, from /proc.
fn parents() -> Vec<(u32, u32)> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid = stat.rsplit(')').next()?.split_whitespace().nth(1)?;
            Some((pid, ppid.parse().ok()?))
        })
        .collect()
}

/// The children of `pid` now.
pub fn children(pid: u32) -> Vec<u32> {
    parents()
        .into_iter()
        .filter(|&(_, pp)| pp == pid)
        .map(|(c, _)| c)
        .collect()
}

/// Every process below `pid` now: its children and theirs.
pub fn descendants(pid: u32) -> Vec<u32> {
    let parents = parents();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
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

/// `bin` with nothing of the test's environment and no stdin: only what
/// the test sets reaches it.
pub fn clean_command(bin: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear().stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to its end: (exit code, stderr without its last newline).
pub fn exit_and_stderr(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    (out.status.code().unwrap_or(-1), stderr)
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
    assert!(
        require_program_opt(name).is_some(),
        "`{name}` not found on PATH: run `make test` (it installs it) or `apt-get install {package}`"
    );
}
