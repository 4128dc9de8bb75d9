//! Supervised child processes: started with their output in a log file,
//! restarted with backoff when they die (as a Docker restart policy would),
//! stopped in order with SIGTERM and a deadline. Every child dies with
//! the supervisor, however the supervisor dies (a parent-death signal), so
//! a killed `cluster up` leaves nothing holding its ports.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::retry::{Backoff, RetryPolicy};

/// Restart delays: from half a second, doubling per crash up to 30 s.
const RESTART: RetryPolicy =
    RetryPolicy::doubling(Duration::from_millis(500), Duration::from_secs(30));
/// A child that stayed up this long has its backoff reset.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// How to start one process.
#[derive(Clone, Debug)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Run as this user (via `setpriv`), for PostgreSQL when we are root.
    pub run_as: Option<String>,
}

impl Spec {
    pub fn new(program: impl Into<PathBuf>) -> Spec {
        Spec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            run_as: None,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Spec {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Spec {
        self.env.push((k.to_owned(), v.into()));
        self
    }

    /// Replaces `k`'s value (or adds it), for a child started again with
    /// another address.
    pub fn set_env(&mut self, k: &str, v: impl Into<String>) {
        self.env.retain(|(name, _)| name != k);
        self.env.push((k.to_owned(), v.into()));
    }

    /// The command, with the parent-death signal set in the child (and the
    /// user switched there first when `run_as`: a change of user clears
    /// the signal, so it has to come after).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let creds = self.run_as.as_deref().map(credentials);
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the closure only makes system calls
        // (async-signal-safe) on data prepared before the fork; it
        // allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(c) = &creds {
                    let (uid, gid, groups) = c.as_ref().map_err(|e| {
                        std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EINVAL))
                    })?;
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(*gid) != 0
                        || libc::setuid(*uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                set_parent_death_signal(parent)
            });
        }
        cmd
    }
}

/// uid, gid and supplementary groups of `user` (as `setpriv --init-groups`
/// would set them), looked up before the fork.
fn credentials(user: &str) -> std::io::Result<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)> {
    let name = std::ffi::CString::new(user)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: getpwnam with a valid C string; the record is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no user {user}"),
        ));
    }
    // SAFETY: pw is non-null.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    let mut groups: Vec<libc::gid_t> = vec![0; 256];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: groups has room for n entries; n is updated to the count.
    if unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) } < 0 {
        groups = vec![gid];
    } else {
        groups.truncate(n.max(0) as usize);
    }
    Ok((uid, gid, groups))
}

/// In the child, before exec: SIGKILL when the supervisor dies. PostgreSQL's
/// backends and Redis's save children then follow their own parent's death
/// (PostgreSQL watches the postmaster; a Redis save child only finishes its
/// file). If the supervisor died before the signal was set, there is no
/// one left to deliver it, so the child refuses to start. The kernel ties
/// the signal to the spawning *thread*: spawn from one that lives as long
/// as the supervisor (`cluster` spawns from its main thread).
fn set_parent_death_signal(parent: libc::pid_t) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl and getppid are async-signal-safe system calls.
        unsafe {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
    }
    let _ = parent;
    Ok(())
}

/// Processes an earlier run of this data dir left: `(name, pid, exited)`
/// of each `run/<name>.pid` whose pid is one of our programs; `exited` for
/// a zombie not yet reaped (PostgreSQL still takes its pid for a running
/// postmaster).
pub fn left_by_earlier_run(run: &Path) -> Vec<(String, u32, bool)> {
    const OURS: [&str; 7] = [
        "cluster",
        "redis-server",
        "postgres",
        "haproxy",
        "capture",
        "worker",
        "results",
    ];
    let Ok(entries) = std::fs::read_dir(run) else {
        return Vec::new();
    };
    let mut live: Vec<(String, u32, bool)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".pid")?.to_owned();
            let pid: u32 = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            // A pid reused by something else is not ours to name.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let zombie = stat.rsplit(')').next()?.split_whitespace().next() == Some("Z");
            (OURS.contains(&comm.trim()) && pid != std::process::id())
                .then_some((name, pid, zombie))
        })
        .collect();
    live.sort();
    live
}

/// One supervised process.
pub struct Proc {
    pub role: &'static str,
    pub name: String,
    /// Where it serves, for the table.
    pub addr: String,
    pub spec: Spec,
    pub log: PathBuf,
    /// Signal that stops it cleanly (PostgreSQL: SIGINT = fast shutdown).
    pub stop_signal: i32,
    /// How long a clean stop may take before SIGKILL.
    pub stop_timeout: Duration,
    child: Option<Child>,
    started: Option<Instant>,
    restart_at: Option<Instant>,
    restart_backoff: Backoff,
    pub restarts: u32,
    /// Never restarted again (a queue primary whose host was lost: started
    /// again empty it would be an empty master; `failover.rs`).
    retired: bool,
}

impl Proc {
    pub fn new(role: &'static str, name: String, addr: String, spec: Spec, log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        Proc {
            role,
            name,
            addr,
            spec,
            log,
            stop_signal: libc::SIGTERM,
            stop_timeout: Duration::from_secs(40),
            child: None,
            started: None,
            restart_at: None,
            restart_backoff: RESTART.backoff(),
            restarts: 0,
            retired: false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn start(&mut self) -> std::io::Result<()> {
        let log = open_log(&self.log)?;
        let mut cmd = self.spec.command();
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Our children must not get the terminal's Ctrl-C directly: the
        // cluster stops them itself, in order.
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot start {} ({}): {e}",
                    self.name,
                    self.spec.program.display()
                ),
            )
        })?;
        // Where operators and the fault tests find the current pid. Written
        // aside and renamed into place: a reader polling the file while a
        // child restarts would otherwise see it truncated and empty.
        if let Some(run) = self.run_dir() {
            let _ = std::fs::create_dir_all(&run);
            let aside = run.join(format!("{}.pid.new", self.name));
            let _ = std::fs::write(&aside, child.id().to_string())
                .and_then(|()| std::fs::rename(&aside, run.join(format!("{}.pid", self.name))));
        }
        self.child = Some(child);
        self.started = Some(Instant::now());
        self.restart_at = None;
        self.retired = false;
        Ok(())
    }

    /// Not to be restarted, whatever happens, until [`Self::start`] is
    /// called again (with a new spec, say). Its pid file goes: it names no
    /// live process.
    pub fn retire(&mut self) {
        self.retired = true;
        self.restart_at = None;
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.child = None;
        self.remove_pid_file();
    }

    pub fn is_retired(&self) -> bool {
        self.retired
    }

    /// `<data dir>/run`: pid files, and hold files (`<name>.hold`: while it
    /// exists, a dead child is not restarted, for maintenance or an outage
    /// test).
    fn run_dir(&self) -> Option<PathBuf> {
        self.log.parent()?.parent().map(|d| d.join("run"))
    }

    /// A clean stop leaves no pid file to be mistaken for a live process.
    fn remove_pid_file(&self) {
        if let Some(run) = self.run_dir() {
            let _ = std::fs::remove_file(run.join(format!("{}.pid", self.name)));
        }
    }

    fn held(&self) -> bool {
        self.run_dir()
            .is_some_and(|r| r.join(format!("{}.hold", self.name)).exists())
    }

    /// Notices a death and restarts after the backoff. Returns a line to
    /// log when something happened.
    pub fn restart_if_exited(&mut self) -> Option<String> {
        if self.retired {
            return None;
        }
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(None) => {
                    if self.started.is_some_and(|s| s.elapsed() > STABLE_AFTER) {
                        self.restart_backoff.reset();
                    }
                    return None;
                }
                Ok(Some(status)) => {
                    self.child = None;
                    let wait = self.restart_backoff.next_wait();
                    self.restart_at = Some(Instant::now() + wait);
                    return Some(format!(
                        "{} exited ({status}); restarting in {:.1} s (log: {})",
                        self.name,
                        wait.as_secs_f64(),
                        self.log.display()
                    ));
                }
                Err(e) => return Some(format!("{}: cannot check: {e}", self.name)),
            }
        }
        match self.restart_at {
            Some(at) if Instant::now() >= at && self.held() => {
                // Look again shortly, without counting a restart.
                self.restart_at = Some(Instant::now() + RESTART.first);
                None
            }
            Some(at) if Instant::now() >= at => {
                self.restarts += 1;
                Some(match self.start() {
                    Ok(()) => format!(
                        "{} restarted (restart #{}, pid {})",
                        self.name,
                        self.restarts,
                        self.pid().unwrap_or(0)
                    ),
                    Err(e) => {
                        self.restart_at = Some(Instant::now() + self.restart_backoff.current());
                        format!("{e}; retrying")
                    }
                })
            }
            _ => None,
        }
    }

    /// Sends the stop signal without waiting.
    pub fn signal_stop(&mut self) {
        self.restart_at = None;
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, self.stop_signal);
            }
        }
    }

    /// Waits for the stop, SIGKILL after `stop_timeout`. Returns the exit
    /// status text.
    pub fn wait_stopped(&mut self) -> String {
        let Some(child) = &mut self.child else {
            return "not running".into();
        };
        let deadline = Instant::now() + self.stop_timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    self.remove_pid_file();
                    return status.to_string();
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.child = None;
                    self.remove_pid_file();
                    return format!("killed after {} s", self.stop_timeout.as_secs());
                }
            }
        }
    }

    pub fn stop(&mut self) -> String {
        self.signal_stop();
        self.wait_stopped()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot open log {}: {e}", path.display()))
        })
}
