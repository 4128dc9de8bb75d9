//! What every benchmark shares: its name on stderr, a private work
//! directory, the children it started (stopped when it ends, however it
//! ends), the release build, and the servers it runs: Redis, capture,
//! PostgreSQL, and a whole `cluster up`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use voteswarm::cluster::postgres::{self, PgPasswords, PgRole};
use voteswarm::cluster::procs::Spec;

use crate::sys;
use crate::Res;

/// Progress on stderr, prefixed with the task's name.
#[macro_export]
macro_rules! say {
    ($b:expr, $($t:tt)*) => { eprintln!("{}: {}", $b.name, format!($($t)*)) };
}

pub struct Bench {
    pub name: &'static str,
    pub work: tempfile::TempDir,
}

impl Bench {
    /// The repository root is the working directory, as for the scripts.
    pub fn start(name: &'static str) -> Res<Bench> {
        std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))?;
        let work = tempfile::Builder::new().prefix("vs-bench-").tempdir()?;
        // PostgreSQL runs as `postgres` when we are root: it must reach
        // its directory inside ours.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755))?;
        Ok(Bench { name, work })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `cargo build --locked --release -q` of these targets (`--bin X`,
    /// `--example Y`).
    pub fn build(&self, targets: &[&str]) -> Res<()> {
        say!(self, "building release binaries");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "--locked", "--release", "-q"])
            .args(targets);
        // What `cargo run` set for us (our package's name, manifest, ...):
        // build scripts track some of them (ring: CARGO_MANIFEST_DIR), so
        // with them the build would differ from the shell's and rebuild
        // the whole tree, every time, one way and back.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "OUT_DIR",
                ]
                .contains(&k.as_ref())
            {
                cmd.env_remove(k.as_ref());
            }
        }
        let status = cmd.status()?;
        if !status.success() {
            return Err("cargo build failed".into());
        }
        Ok(())
    }

    /// A private redis-server as capture's (append-only, fsync as told)
    /// in the work directory.
    pub fn redis(&self, name: &str, appendfsync: &str) -> Res<Redis> {
        self.redis_with(name, appendfsync, &[])
    }

    /// A replica of `primary` (`--replicaof`, the same fsync policy, as the
    /// cluster's replicas share their primary's configuration), once its
    /// link to the primary is up: a capture node with ACK_REPLICAS would
    /// otherwise answer its first votes 503.
    pub fn replica_of(&self, name: &str, appendfsync: &str, primary: &Redis) -> Res<Redis> {
        let port = primary
            .url
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut replica =
            self.redis_with(name, appendfsync, &["--replicaof", "127.0.0.1", &port])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut replica.conn)?;
            if info.contains("master_link_status:up") {
                return Ok(replica);
            }
            if Instant::now() > deadline || !replica.child.alive() {
                return Err(format!(
                    "the replica {name} did not sync with {} (log: {})",
                    primary.url,
                    self.path(&format!("redis-{name}")).join("log").display()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn redis_with(&self, name: &str, appendfsync: &str, extra: &[&str]) -> Res<Redis> {
        let dir = self.path(&format!("redis-{name}"));
        std::fs::create_dir_all(&dir)?;
        let port = sys::free_port();
        let spec = Spec::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--dir"])
            .arg(dir.display().to_string())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                appendfsync,
                "--save",
                "",
            ])
            .arg("--logfile")
            .arg(dir.join("log").display().to_string())
            .args(extra.iter().copied());
        let mut child = Child::spawn(&spec, None)?;
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let conn = loop {
            let up = client.get_connection().and_then(|mut c| {
                redis::cmd("PING").query::<String>(&mut c)?;
                Ok(c)
            });
            match up {
                Ok(c) => break c,
                Err(_) if Instant::now() > deadline || !child.alive() => {
                    return Err(format!(
                        "redis-server on port {port} did not come up (log: {})",
                        dir.join("log").display()
                    )
                    .into())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        Ok(Redis { url, child, conn })
    }

    /// A release capture node on `redis`, `extra` added to its environment.
    pub fn capture(&self, redis: &Redis, extra: &[(&str, &str)]) -> Res<(u16, Child)> {
        let port = sys::free_port();
        let mut spec = Spec::new("target/release/capture")
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("REDIS_URL", redis.url.clone())
            .env("NODE_ID", "bench")
            .env("COOKIE_KEY", "bench-cookie-key-bench-cookie-key-0123456789")
            .env("RUST_LOG", "warn");
        for (k, v) in extra {
            spec = spec.env(k, *v);
        }
        let mut child = Child::spawn(&spec, None)?;
        sys::wait_port(port, Duration::from_secs(10), || child.alive())?;
        Ok((port, child))
    }

    /// A private PostgreSQL with default settings (fsync and
    /// synchronous_commit on), made by `cluster`'s own set-up.
    pub fn postgres(&self) -> Res<Postgres> {
        let dir = self.path("pg");
        let port = sys::free_port();
        let passwords = PgPasswords::ensure(&self.path("pg-secrets"))?;
        let spec = postgres::prepare(&dir, port, &passwords)?;
        let log = std::fs::File::create(self.path("postgres.log"))?;
        let child = Child::spawn(&spec, Some(log))?;
        postgres::wait_ready_and_create(port, &passwords)?;
        let bin = postgres::pg_program("postgres").ok_or("no postgres program")?;
        Ok(Postgres {
            url: passwords.url(PgRole::Superuser, port),
            bin,
            child,
        })
    }

    /// `cluster up --capture C --workers W` (release) on free ports, its
    /// data in the work directory's `name/`, its table in `name.out`, its
    /// log in `name.log`; returns once it serves.
    pub fn cluster_up(&self, name: &str, capture: usize, workers: usize) -> Res<ClusterUp> {
        let dir = self.path(name);
        let out = self.path(&format!("{name}.out"));
        let log = self.path(&format!("{name}.log"));
        let [port, results_port, tls_port, results_tls_port] = [(); 4].map(|_| sys::free_port());
        let mut cmd = Spec::new("target/release/cluster").command();
        cmd.args(["up", "--capture", &capture.to_string()])
            .args(["--workers", &workers.to_string()])
            .args(["--port", &port.to_string()])
            .args(["--results-port", &results_port.to_string()])
            .args(["--tls-port", &tls_port.to_string()])
            .args(["--results-tls-port", &results_tls_port.to_string()])
            .arg("--data-dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&log)?);
        let mut child = Child::from_command(cmd, "cluster".as_ref())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let table = loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.contains("Ctrl-C to stop") {
                break text;
            }
            if Instant::now() > deadline || !child.alive() {
                return Err(format!("{name}: cluster did not start:\n{}", tail(&log, 5)).into());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Ok(ClusterUp {
            child,
            dir,
            log,
            table,
            port,
            results_port,
            tls_port,
        })
    }
}

/// Each of `n` variants once per round, `(round, variant)`, the order
/// reversed every other round (A B C, C B A, ...): a machine that gets
/// busier or quieter during the invocation then weighs on every variant
/// alike, and the ratios between them stay fair.
pub fn interleaved(rounds: u64, n: usize) -> Vec<(u64, usize)> {
    (0..rounds)
        .flat_map(|r| (0..n).map(move |i| (r, if r % 2 == 0 { i } else { n - 1 - i })))
        .collect()
}

/// The last `n` lines of a log, for an error message.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running `cluster up` ([`Bench::cluster_up`]); SIGTERM when dropped.
pub struct ClusterUp {
    pub child: Child,
    /// Its data directory (`run/` holds the children's pid files).
    pub dir: PathBuf,
    pub log: PathBuf,
    /// What it printed: the table of roles, names, addresses and pids,
    /// then the URLs.
    pub table: String,
    /// HAProxy's vote, results and HTTPS vote ports.
    pub port: u16,
    pub results_port: u16,
    pub tls_port: u16,
}

impl ClusterUp {
    /// The current pid of the child `name` (`haproxy`, `redis02`, ...): it
    /// changes when the cluster restarts it.
    pub fn pid(&self, name: &str) -> Res<u32> {
        sys::pid_files(&self.dir.join("run"))
            .into_iter()
            .find_map(|(n, pid)| (n == name).then_some(pid))
            .ok_or_else(|| format!("no pid file for {name} in {}", self.dir.display()).into())
    }

    /// The port of a child's address in the table (`capture02` -> PORT).
    pub fn port_of(&self, name: &str) -> Res<u16> {
        self.table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .and_then(|l| {
                l.split_whitespace()
                    .nth(2)?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .ok_or_else(|| format!("no address for {name} in:\n{}", self.table).into())
    }

    /// The `database:` line: the superuser's URL, with its password file.
    pub fn database_url(&self) -> Res<String> {
        self.table
            .lines()
            .find_map(|l| l.strip_prefix("database:"))
            .map(|u| u.trim().to_owned())
            .ok_or_else(|| format!("no database URL in:\n{}", self.table).into())
    }

    /// SIGTERM, then its exit code (0: every tier stopped cleanly).
    pub fn stop(&mut self) -> Res<i32> {
        // SAFETY: kill with our own child's pid, not yet reaped.
        unsafe { libc::kill(self.child.pid() as i32, libc::SIGTERM) };
        self.child.wait()
    }
}

/// A child process, stopped (SIGTERM, or `stop_signal`) and waited for
/// when dropped; it also dies with us (the parent-death signal of
/// [`Spec::command`]).
pub struct Child {
    pub child: std::process::Child,
    pub stop_signal: i32,
    done: bool,
}

impl Child {
    /// Output to `log` if given, else to nowhere.
    pub fn spawn(spec: &Spec, log: Option<std::fs::File>) -> Res<Child> {
        let mut cmd = spec.command();
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        match log {
            Some(f) => cmd.stderr(f.try_clone()?).stdout(f),
            None => cmd.stderr(Stdio::null()),
        };
        Child::from_command(cmd, &spec.program)
    }

    pub fn from_command(mut cmd: Command, what: &Path) -> Res<Child> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", what.display()))?;
        Ok(Child {
            child,
            stop_signal: libc::SIGTERM,
            done: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        !self.done && matches!(self.child.try_wait(), Ok(None))
    }

    /// Signal and wait.
    pub fn stop(&mut self) {
        if self.done {
            return;
        }
        if self.alive() {
            // SAFETY: kill with our own child's pid, not yet reaped.
            unsafe { libc::kill(self.child.id() as i32, self.stop_signal) };
        }
        let _ = self.child.wait();
        self.done = true;
    }

    /// Wait for it to exit by itself; its exit code.
    pub fn wait(&mut self) -> Res<i32> {
        let s = self.child.wait()?;
        self.done = true;
        Ok(s.code().unwrap_or(1))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Redis {
    pub url: String,
    pub child: Child,
    pub conn: redis::Connection,
}

impl Redis {
    pub fn xlen(&mut self) -> Res<u64> {
        Ok(redis::cmd("XLEN").arg("votes").query(&mut self.conn)?)
    }

    pub fn version() -> String {
        sys::nth_word_of(Command::new("redis-server").arg("--version"), 2)
            .map(|v| v.trim_start_matches("v=").to_owned())
            .unwrap_or_default()
    }
}

pub struct Postgres {
    /// The superuser's URL to the voteswarm database.
    pub url: String,
    pub bin: PathBuf,
    pub child: Child,
}

impl Postgres {
    /// psql -qAt: the rows, unaligned.
    pub fn sql(&self, statement: &str) -> Res<String> {
        let out = Command::new("psql")
            .args(["-qAt", "-v", "ON_ERROR_STOP=1"])
            .arg(&self.url)
            .arg("-c")
            .arg(statement)
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "psql: {}: {}",
                statement,
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub fn version(&self) -> String {
        sys::nth_word_of(Command::new(&self.bin).arg("--version"), 2).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        self.child.stop_signal = libc::SIGINT;
    }
}

#[cfg(test)]
mod tests {
    use super::interleaved;

    #[test]
    fn every_other_round_runs_the_variants_in_reverse() {
        assert_eq!(
            interleaved(3, 3),
            [
                (0, 0),
                (0, 1),
                (0, 2),
                (1, 2),
                (1, 1),
                (1, 0),
                (2, 0),
                (2, 1),
                (2, 2)
            ]
        );
        assert!(interleaved(0, 3).is_empty());
    }
}
