//! `cluster`: the whole topology on one machine, from real processes.
//!
//! `cluster up` starts, in order: a PostgreSQL of its own (`initdb` once in
//! the data directory, with the deployments' roles, the schema applied as
//! the migrator; or the one `DATABASE_URL` names), N `redis-server`s with
//! append-only files in the data directory and the deployments' ACL users,
//! the workers, N capture nodes, `results`, and HAProxy in front. Each
//! tier logs in as its own role with its own password, generated once into
//! `<data dir>/secrets/` ([`secrets`]). Redis and HAProxy run with the
//! very settings the Swarm deployment ships (`swarm/redis.conf`,
//! `swarm/haproxy.cfg`, compiled in); only the addresses differ. Children
//! that die are restarted with backoff, as a Docker restart policy would.
//! SIGTERM or Ctrl-C stops everything in order: the load balancer, capture
//! (answering votes in flight), workers (committing what they hold),
//! results, Redis, PostgreSQL. A second `cluster up` on the same data
//! directory resumes with the votes there.
//!
//! `cluster backup` and `cluster restore` keep the count for the day after
//! ([`backup`]).
//!
//! `cluster rehearse` is `up`, then `loadgen` with `--results` and
//! `--database-url`, the report, and down; its exit status is loadgen's.

pub mod backup;
pub mod failover;
pub mod haproxy;
pub mod poll_flags;
pub mod ports;
pub mod postgres;
pub mod procs;
pub mod secrets;
pub mod standby;
mod start;
pub mod tls;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use procs::{Proc, Spec};

/// The Redis settings every deployment uses; only addresses are added.
pub const REDIS_CONF: &str = include_str!("../../swarm/redis.conf");
/// The HAProxy settings every deployment uses; `haproxy::render` swaps the
/// Swarm addresses for loopback ones.
pub const HAPROXY_CFG: &str = include_str!("../../swarm/haproxy.cfg");

/// HAProxy's per-client rate limit locally, unless `VOTE_RATE_LIMIT` is
/// set: every simulated voter of `loadgen` comes from 127.0.0.1, so the
/// shipped per-address limit would throttle a rehearsal to a trickle.
const LOCAL_RATE_LIMIT: u64 = 1_000_000_000;
/// Likewise for the new-voter limit (`NEW_VOTER_LIMIT`): every simulated
/// voter's first vote is a cookieless POST from 127.0.0.1.
const LOCAL_NEW_VOTER_LIMIT: u64 = 1_000_000_000;

/// How long each tier may take to become ready at start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the supervisor looks at its children.
const TEND_INTERVAL: Duration = Duration::from_millis(200);

/// Why the cluster could not start or stop: one line for its operator.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A program the cluster runs is not installed.
    #[error("`{program}` not found: install it with `apt-get install {package}` (or run `make demo`, which does)")]
    Missing { program: String, package: String },
    /// A file or directory of the data dir could not be made.
    #[error("cannot {doing} {}: {source}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Anything else, said in full.
    #[error("{0}")]
    Other(String),
}

impl ClusterError {
    pub fn new(s: impl Into<String>) -> Self {
        ClusterError::Other(s.into())
    }

    /// For `map_err`: `doing` ("write", "create") `path` failed.
    pub fn io(doing: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError {
        let path = path.to_path_buf();
        move |source| ClusterError::Io {
            doing,
            path,
            source,
        }
    }
}

/// Runs a PostgreSQL tool (initdb, pg_dump, pg_restore) to its end: its
/// output, or an error naming it: "cannot run NAME" when it did not start,
/// "FAILED: its stderr" when it exited non-zero.
pub fn run_tool(
    cmd: &mut std::process::Command,
    name: &str,
    failed: impl FnOnce() -> String,
) -> Result<std::process::Output, ClusterError> {
    let out = cmd
        .output()
        .map_err(|e| ClusterError::new(format!("cannot run {name}: {e}")))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(ClusterError::new(format!(
            "{}: {}",
            failed(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

pub fn missing(program: &str, package: &str) -> ClusterError {
    ClusterError::Missing {
        program: program.to_owned(),
        package: package.to_owned(),
    }
}

/// `name` as the shell would find it on `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    which::which(name).ok()
}

fn require(program: &str, package: &str) -> Result<PathBuf, ClusterError> {
    on_path(program).ok_or_else(|| missing(program, package))
}

/// Our own binaries (`capture`, `worker`, ...) live beside `cluster`.
fn sibling(name: &str) -> Result<PathBuf, ClusterError> {
    let dir = std::env::var_os("VOTESWARM_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::current_exe()
                .ok()?
                .parent()
                .map(Path::to_path_buf)
        })
        .ok_or_else(|| ClusterError::new("cannot find the directory of the voteswarm binaries"))?;
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(ClusterError::new(format!(
            "`{name}` not found beside cluster in {}: build it with `cargo build --release --bins`",
            dir.display()
        )))
    }
}

fn free_port() -> Result<u16, ClusterError> {
    ports::free_port().map_err(|e| ClusterError::new(format!("no free port: {e}")))
}

fn mkdir(p: &Path) -> Result<(), ClusterError> {
    std::fs::create_dir_all(p).map_err(ClusterError::io("create", p))
}

/// `REDIS_URLS` for the tiers that read every queue.
fn queue_urls(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(clap::Args, Debug, Clone)]
pub struct TopologyArgs {
    /// Capture nodes, each with its own Redis.
    #[arg(long, default_value_t = 3)]
    pub capture: usize,
    /// Workers draining every Redis into PostgreSQL.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Where voters vote (HAProxy).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Where the results page is served (HAProxy).
    #[arg(long, default_value_t = 8081)]
    pub results_port: u16,
    /// Where voters vote over HTTPS (HAProxy), with the certificate of the
    /// cluster's own CA (DIR/tls/ca.pem).
    #[arg(long, default_value_t = 8443)]
    pub tls_port: u16,
    /// Where the results page is served over HTTPS (HAProxy).
    #[arg(long, default_value_t = 8444)]
    pub results_tls_port: u16,
    /// Address HAProxy binds; 0.0.0.0 lets phones on the LAN vote.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Data directory: Redis append-only files, PostgreSQL, logs, the
    /// cookie key. Reusing one resumes with its votes.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Use this PostgreSQL instead of starting one.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Redis appendfsync policy: `always` as shipped, or `everysec`
    /// (faster; a killed Redis can lose up to 2 s of acknowledged votes).
    #[arg(long, default_value = "always")]
    pub appendfsync: String,
    /// Replicas of each capture node's Redis (`--replicaof`); capture then
    /// answers a vote only once that many have it (ACK_REPLICAS).
    #[arg(long, default_value_t = 0)]
    pub queue_replicas: usize,
    /// A synchronous standby of the cluster's PostgreSQL (pg_basebackup,
    /// streaming): a commit returns once the standby has it, and the
    /// cluster promotes it when the primary is lost with its data.
    #[arg(long)]
    pub pg_standby: bool,
    #[command(flatten)]
    pub poll: poll_flags::PollFlags,
}

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Start everything and wait for Ctrl-C or SIGTERM.
    Up {
        #[command(flatten)]
        topology: TopologyArgs,
    },
    /// Up, loadgen with verification, report, down. Exit status 0 only
    /// when the count is exact.
    Rehearse {
        #[command(flatten)]
        topology: TopologyArgs,
        /// Simulated voters.
        #[arg(long, default_value_t = 20_000)]
        voters: usize,
        /// Fraction of voters who change their vote once.
        #[arg(long, default_value_t = 0.1)]
        change_fraction: f64,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Most requests per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Write the report here too.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Seconds to wait for the count to become final.
        #[arg(long, default_value_t = 300)]
        final_timeout_secs: u64,
        /// Vote and read results over HTTPS (the TLS ports, trusting the
        /// cluster's CA) instead of plain HTTP.
        #[arg(long)]
        https: bool,
        /// One new connection per voter, as phones do (with --https, a TLS
        /// handshake each).
        #[arg(long)]
        new_connection_per_voter: bool,
        /// With --https: no session resumption, every handshake full.
        #[arg(long)]
        no_tls_resumption: bool,
        /// Keep voting past the poll's close (--closes): each late vote
        /// must be refused (403 poll_closed), every earlier one counted.
        #[arg(long)]
        past_close: bool,
    },
    /// A consistent pg_dump (custom format) of the running cluster's
    /// database; prints the file, its size and the voters in it.
    Backup {
        /// The running cluster's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Where to write it (default DIR/backups/voteswarm-<UTC time>.dump).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Promotes the standby of `cluster up --pg-standby` by hand (refused
    /// while the primary answers); the running cluster never starts the
    /// old primary again.
    PromoteStandby {
        /// The cluster's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Restores a backup into a stopped (or new) cluster's data directory;
    /// `cluster up` then serves the restored count.
    Restore {
        /// The stopped cluster's data directory; made when new.
        #[arg(long)]
        data_dir: PathBuf,
        /// Replace a database that holds votes.
        #[arg(long)]
        force: bool,
        /// The file `cluster backup` wrote.
        file: PathBuf,
    },
}

/// A running cluster.
pub struct Cluster {
    pub data_dir: PathBuf,
    /// Keeps a temporary data directory alive for `rehearse`.
    _temp: Option<tempfile::TempDir>,
    pub database_url: String,
    /// For the table: connects as printed (`psql URL`), no password shown.
    pub psql_url: String,
    pub vote_url: String,
    pub results_url: String,
    /// The same over HTTPS.
    pub vote_https_url: String,
    pub results_https_url: String,
    /// The certificates HAProxy serves and the CA to trust.
    pub tls: tls::Files,
    /// The poll every tier runs.
    pub poll: crate::poll::Poll,
    /// In start order; stopped in the order of `STOP_ORDER`.
    pub procs: Vec<Proc>,
    /// Each capture node's queue servers, for the failover
    /// ([`failover`]).
    pub queues: Vec<failover::Queue>,
    queue_conf: failover::QueueConf,
    /// The store's standby, watched and promoted by the supervisor.
    pub store: Option<standby::Store>,
}

/// Front to back, so nothing is asked to work after what it needs stopped.
/// The standby last: a primary's clean shutdown sends it the last WAL.
const STOP_ORDER: [&str; 8] = [
    "haproxy", "capture", "worker", "results", "redis", "replica", "postgres", "standby",
];

impl Cluster {
    /// The table of what runs where.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<9} {:<10} {:<36} {:>8}\n",
            "ROLE", "NAME", "ADDRESS", "PID"
        );
        for p in &self.procs {
            s.push_str(&format!(
                "{:<9} {:<10} {:<36} {:>8}\n",
                p.role,
                p.name,
                p.addr,
                p.pid().map(|p| p.to_string()).unwrap_or_else(|| "-".into())
            ));
        }
        s
    }

    /// Restarts what died, until `stop` is set.
    pub fn supervise(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::SeqCst) {
            self.tend();
            std::thread::sleep(TEND_INTERVAL);
        }
    }

    /// One look at the children: the store's failover and the queues'
    /// ([`standby`], [`failover`]: a lost server must be retired before
    /// it would be restarted), then a restart of what else exited, after
    /// its backoff.
    pub fn tend(&mut self) {
        if let Some(store) = &mut self.store {
            store.tend(&mut self.procs);
        }
        self.tend_queues();
        for p in &mut self.procs {
            if let Some(line) = p.restart_if_exited() {
                log::warn!("{line}");
            }
        }
    }

    /// Stops everything, front to back; each tier finishes its work first.
    pub fn stop(&mut self) {
        for role in STOP_ORDER {
            let group: Vec<usize> = (0..self.procs.len())
                .filter(|&i| self.procs[i].role == role)
                .collect();
            for &i in &group {
                self.procs[i].signal_stop();
            }
            for &i in &group {
                let status = self.procs[i].wait_stopped();
                log::info!("{} stopped ({status})", self.procs[i].name);
            }
        }
        let _ = std::fs::remove_file(self.data_dir.join("run").join("cluster.pid"));
    }
}

/// How long `cluster up` waits for an earlier run's exited children to be
/// reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(30);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The name the cluster's certificate is for, where `bind` is any address.
fn tls_host(bind: &str) -> &str {
    match bind {
        "0.0.0.0" | "127.0.0.1" | "localhost" => "localhost",
        other => other,
    }
}

fn display_host(bind: &str) -> &str {
    if bind == "0.0.0.0" {
        "localhost"
    } else {
        bind
    }
}

/// A minimal HTTP/1.0 GET on loopback: the status code, if any answer.
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Registers SIGTERM and SIGINT to set the returned flag.
pub fn stop_flag() -> Result<Arc<AtomicBool>, ClusterError> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, flag.clone())
            .map_err(|e| ClusterError::new(format!("cannot handle signals: {e}")))?;
    }
    Ok(flag)
}

/// `cluster up`: start, print the table, supervise until a signal, stop.
pub fn up(t: &TopologyArgs) -> Result<(), ClusterError> {
    let stop = stop_flag()?;
    let mut cluster = Cluster::start(t).inspect_err(|_| {})?;
    print!("{}", cluster.table());
    println!();
    println!("vote:    {}/", cluster.vote_url);
    println!("results: {}/", cluster.results_url);
    println!(
        "https:   {}/ and {}/",
        cluster.vote_https_url, cluster.results_https_url
    );
    println!(
        "tls ca:  {} (curl --cacert, loadgen --ca-file, or trust it in a browser)",
        cluster.tls.ca.display()
    );
    println!("poll:    {}", poll_flags::describe(&cluster.poll));
    println!("database: {}", cluster.psql_url);
    println!("data:    {} (logs in logs/)", cluster.data_dir.display());
    println!(
        "secrets: {}/secrets (passwords: pg_postgres_password is PostgreSQL's superuser `postgres`, redis_admin_password Redis's user `admin`)",
        cluster.data_dir.display()
    );
    println!("Ctrl-C to stop.");
    cluster.supervise(&stop);
    log::info!("stopping the cluster");
    cluster.stop();
    Ok(())
}

/// `cluster rehearse`: up, loadgen, report, down. Returns loadgen's exit
/// status.
#[allow(clippy::too_many_arguments)]
pub fn rehearse(
    t: &TopologyArgs,
    voters: usize,
    change_fraction: f64,
    concurrency: usize,
    rate: Option<f64>,
    report: Option<&Path>,
    final_timeout_secs: u64,
    https: bool,
    new_connection_per_voter: bool,
    no_tls_resumption: bool,
    past_close: bool,
) -> Result<i32, ClusterError> {
    let stop = stop_flag()?;
    let loadgen = sibling("loadgen")?;
    let mut cluster = Cluster::start(t)?;
    eprint!("{}", cluster.table());
    let mut cmd = std::process::Command::new(loadgen);
    let (vote_url, results_url) = if https {
        cmd.arg("--ca-file").arg(&cluster.tls.ca);
        (&cluster.vote_https_url, &cluster.results_https_url)
    } else {
        (&cluster.vote_url, &cluster.results_url)
    };
    if new_connection_per_voter {
        cmd.arg("--new-connection-per-voter");
    }
    if no_tls_resumption {
        cmd.arg("--no-tls-resumption");
    }
    if past_close {
        cmd.arg("--past-close");
    }
    cmd.arg("--target")
        .arg(vote_url)
        .arg("--results")
        .arg(results_url)
        .arg("--database-url")
        .arg(&cluster.database_url)
        .arg("--voters")
        .arg(voters.to_string())
        .arg("--change-fraction")
        .arg(change_fraction.to_string())
        .arg("--concurrency")
        .arg(concurrency.to_string())
        .arg("--final-timeout-secs")
        .arg(final_timeout_secs.to_string())
        // The poll as the cluster runs it: loadgen votes for every option.
        .arg("--options")
        .arg(cluster.poll.options.join(","));
    if let Some(r) = rate {
        cmd.arg("--rate").arg(r.to_string());
    }
    if let Some(r) = report {
        cmd.arg("--report").arg(r);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| ClusterError::new(format!("cannot start loadgen: {e}")))?;
    // Supervise while loadgen runs, so a crashed tier is restarted as in
    // `up`; a signal stops the rehearsal.
    let code = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| ClusterError::new(format!("loadgen: {e}")))?
        {
            break status.code().unwrap_or(1);
        }
        if stop.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            break 130;
        }
        cluster.tend();
        std::thread::sleep(TEND_INTERVAL);
    };
    cluster.stop();
    Ok(code)
}
