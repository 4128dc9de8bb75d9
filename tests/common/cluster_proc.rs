//! The whole system through `cluster up` for tests ([`spawn_cluster`]),
//! `cluster rehearse`, loadgen against a cluster, and direct SQL on its
//! database.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{bin, free_port, http, wait_until, Proc};

/// How long `cluster up` may take to stop its children on SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// A `cluster up` in a temporary directory of its own (prefix `prefix`,
/// the cluster's data in `data/`), with `env` over the defaults; free ports.
pub fn spawn_cluster(
    prefix: &str,
    capture: usize,
    workers: usize,
    env: &[(&str, &str)],
) -> TestCluster {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    let up = Up::start_with(&dir.path().join("data"), capture, workers, env);
    TestCluster { up, dir }
}

/// loadgen's JSON report (`--report-json`), which it must have written.
pub fn json_report(path: &Path) -> voteswarm::loadgen::report::JsonReport {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no JSON report at {}: {e}", path.display()));
    serde_json::from_str(&text).expect("loadgen's JSON report")
}

/// A cluster and the directory it lives in. The fields drop in this order:
/// the cluster stops before its directory goes.
pub struct TestCluster {
    pub up: Up,
    /// Also where a test puts its reports.
    pub dir: tempfile::TempDir,
}

/// `cluster rehearse` with `args`, on free ports, its data and report in a
/// temporary directory (prefix `prefix`): the directory and the report. The
/// rehearsal must pass.
pub fn rehearse(prefix: &str, args: &[&str]) -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir");
    let report_path = dir.path().join("report.md");
    let status = Command::new(bin::CLUSTER)
        // loadgen's figures as JSON too, beside the Markdown: report.json.
        .env("LOADGEN_REPORT_JSON", dir.path().join("report.json"))
        .arg("rehearse")
        .args(args)
        .args(["--port", &free_port().to_string()])
        .args(["--results-port", &free_port().to_string()])
        .args(["--tls-port", &free_port().to_string()])
        .args(["--results-tls-port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--report")
        .arg(&report_path)
        .stdout(Stdio::null())
        .status()
        .expect("run cluster rehearse");
    let report = std::fs::read_to_string(&report_path).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "rehearsal failed:\n{report}");
    assert!(report.contains("verdict: PASS"), "{report}");
    (dir, report)
}

/// Each stored option letter's count, straight from PostgreSQL.
pub fn sql_counts_by_option(url: &str) -> std::collections::BTreeMap<String, i64> {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        option: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = diesel::PgConnection::establish(url).expect("connect");
    diesel::sql_query("SELECT option, count(*) AS n FROM votes GROUP BY option")
        .load::<Row>(&mut conn)
        .expect("count")
        .into_iter()
        .map(|r| (r.option, r.n))
        .collect()
}

/// The two-option poll's counts, `a` and `b`, straight from PostgreSQL.
pub fn sql_counts(url: &str) -> (i64, i64) {
    let counts = sql_counts_by_option(url);
    let n = |o: &str| counts.get(o).copied().unwrap_or(0);
    (n("a"), n("b"))
}

/// voter -> (option, vote_id) as stored.
pub fn stored_votes(url: &str) -> std::collections::HashMap<String, (String, String)> {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        voter_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        option: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        vote_id: String,
    }
    let Ok(mut conn) = diesel::PgConnection::establish(url) else {
        return Default::default();
    };
    diesel::sql_query("SELECT voter_id, option, vote_id FROM votes")
        .load::<Row>(&mut conn)
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.voter_id, (r.option, r.vote_id)))
        .collect()
}

pub fn sql(url: &str, statement: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut conn = diesel::PgConnection::establish(url).expect("connect");
    conn.batch_execute(statement).expect(statement);
}

/// Where `cluster up`'s own log goes: beside the data dir, which may not
/// exist yet.
fn cluster_log_path(data: &Path) -> std::path::PathBuf {
    let mut name = data.file_name().unwrap_or_default().to_owned();
    name.push(".cluster.log");
    data.with_file_name(name)
}

fn cluster_log(data: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cluster_log_path(data))
        .expect("cluster up's log")
}

/// A running `cluster up`, stopped with SIGTERM on drop.
pub struct Up {
    child: Proc,
    pub table: String,
    pub vote: String,
    pub results: String,
    pub data: std::path::PathBuf,
    pub ports: (u16, u16),
    /// The HTTPS ports (vote, results) and the CA that signed their
    /// certificate.
    pub tls_ports: (u16, u16),
    pub ca: std::path::PathBuf,
    size: (usize, usize),
    /// `cluster up`'s extra arguments, given again by `start_again`.
    args: Vec<String>,
}

impl Up {
    /// On `data` (a cluster's data dir, new or left by an earlier run),
    /// on free ports.
    pub fn start(data: &Path, capture: usize, workers: usize) -> Up {
        Self::start_with(data, capture, workers, &[])
    }

    /// As [`Up::start`], with extra environment.
    pub fn start_with(data: &Path, capture: usize, workers: usize, env: &[(&str, &str)]) -> Up {
        Self::start_with_args(data, capture, workers, env, &[])
    }

    /// As [`Up::start_with`], with extra `cluster up` flags
    /// (`--queue-replicas 1`, `--pg-standby`), given again by
    /// [`Up::start_again`].
    pub fn start_with_args(
        data: &Path,
        capture: usize,
        workers: usize,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Up {
        Self::start_on(
            data,
            capture,
            workers,
            (free_port(), free_port()),
            (free_port(), free_port()),
            env,
            args.iter().map(|a| a.to_string()).collect(),
        )
    }

    /// On given vote and results ports, plain and HTTPS.
    fn start_on(
        data: &Path,
        capture: usize,
        workers: usize,
        (port, rport): (u16, u16),
        (tport, trport): (u16, u16),
        env: &[(&str, &str)],
        args: Vec<String>,
    ) -> Up {
        let mut child = Command::new(bin::CLUSTER)
            .envs(env.iter().copied())
            .args([
                "up",
                "--capture",
                &capture.to_string(),
                "--workers",
                &workers.to_string(),
            ])
            .args([
                "--port",
                &port.to_string(),
                "--results-port",
                &rport.to_string(),
                "--tls-port",
                &tport.to_string(),
                "--results-tls-port",
                &trport.to_string(),
            ])
            .args(&args)
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(cluster_log(data))
            .spawn()
            .expect("start cluster up");
        let out = child.stdout.take().unwrap();
        let child = Proc::new(child).stopped_with(libc::SIGTERM, STOP_TIMEOUT);
        let mut table = String::new();
        for line in BufReader::new(out).lines() {
            let line = line.expect("cluster output");
            table.push_str(&line);
            table.push('\n');
            if line.starts_with("Ctrl-C to stop") {
                break;
            }
        }
        assert!(
            table.contains("Ctrl-C to stop"),
            "cluster up did not start:\n{table}\n{}",
            std::fs::read_to_string(cluster_log_path(data)).unwrap_or_default()
        );
        Up {
            child,
            table,
            vote: format!("http://127.0.0.1:{port}"),
            results: format!("http://127.0.0.1:{rport}"),
            data: data.to_path_buf(),
            ports: (port, rport),
            tls_ports: (tport, trport),
            ca: data.join("tls").join("ca.pem"),
            size: (capture, workers),
            args,
        }
    }

    /// A child's address from the table (`capture02` -> `127.0.0.1:PORT`).
    pub fn addr(&self, name: &str) -> String {
        self.table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or_else(|| panic!("no {name} in:\n{}", self.table))
            .to_owned()
    }

    /// The port of a child's address (`capture02` -> PORT).
    pub fn port(&self, name: &str) -> u16 {
        let addr = self.addr(name);
        addr.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {name}'s address {addr}"))
    }

    /// A child's current pid (it changes when the cluster restarts it).
    pub fn pid(&self, name: &str) -> u32 {
        std::fs::read_to_string(self.data.join("run").join(format!("{name}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid file for {name}"))
    }

    /// `total` from the results node's `/api/results`, if it answers.
    pub fn results_total(&self) -> Option<i64> {
        http::get(self.ports.1, "/api/results")?.json()?["total"].as_i64()
    }

    /// loadgen against this cluster, with its ground truth from the
    /// database: `voters` voters, a fifth of them changing their vote, the
    /// report to `report`. The caller adds the pace and limits.
    pub fn loadgen(&self, voters: usize, report: &Path) -> Command {
        let mut cmd = Command::new(bin::LOADGEN);
        cmd.arg("--target")
            .arg(&self.vote)
            .arg("--results")
            .arg(&self.results)
            .arg("--database-url")
            .arg(self.database_url())
            .args(["--voters", &voters.to_string(), "--change-fraction", "0.2"])
            .arg("--report")
            .arg(report)
            // Beside the Markdown, the figures the tests read.
            .arg("--report-json")
            .arg(report.with_extension("json"))
            .stdout(Stdio::null());
        cmd
    }

    /// What `cluster up` itself logged so far (its supervisor's lines).
    pub fn cluster_log(&self) -> String {
        std::fs::read_to_string(cluster_log_path(&self.data)).unwrap_or_default()
    }

    pub fn cluster_pid(&self) -> u32 {
        self.child.id()
    }

    /// The `database:` URL from the table, as an operator would paste it.
    pub fn psql_url(&self) -> String {
        self.table
            .lines()
            .find_map(|l| l.strip_prefix("database: "))
            .unwrap_or_else(|| panic!("no database URL in:\n{}", self.table))
            .trim()
            .to_owned()
    }

    /// Every process below `cluster up` now: its children and theirs
    /// (PostgreSQL's backends, a Redis save child).
    pub fn descendants(&self) -> Vec<u32> {
        super::process::descendants(self.child.id())
    }

    /// SIGKILL to `cluster up` alone: nothing of it gets to stop its
    /// children. Reaps it.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// `cluster up` again on the same data dir and ports.
    pub fn start_again(&mut self) {
        let (capture, workers) = self.size;
        *self = Up::start_on(
            &self.data.clone(),
            capture,
            workers,
            self.ports,
            self.tls_ports,
            &[],
            self.args.clone(),
        );
    }

    /// The superuser's URL; with a standby (`--pg-standby`), to both
    /// servers, reaching whichever takes writes.
    pub fn database_url(&self) -> String {
        let mut ports = vec![self.port("postgres")];
        if self.table.contains(" pg-standby ") {
            ports.push(self.port("pg-standby"));
        }
        let password = std::fs::read_to_string(self.data.join("secrets/pg_postgres_password"))
            .expect("the cluster's superuser password");
        voteswarm::config::with_credentials(
            "DATABASE_URL",
            &voteswarm::cluster::postgres::hosts_url("postgres", &ports),
            None,
            password.trim_end(),
        )
        .expect("a URL")
    }

    /// SIGTERM to the cluster, then `cluster up` again on the same data
    /// dir and ports. Returns the first one's exit status.
    pub fn restart(&mut self) -> i32 {
        let code = self.stop_in_place();
        self.start_again();
        code
    }

    pub fn stop(mut self) -> i32 {
        self.stop_in_place()
    }

    fn stop_in_place(&mut self) -> i32 {
        self.child.signal(libc::SIGTERM);
        let status = self.child.wait_exit(STOP_TIMEOUT);
        status.expect("cluster did not stop").code().unwrap_or(-1)
    }
}

/// A fault scenario's row of `docs/RELIABILITY.md`'s table, as `cargo
/// xtask reliability-table` reads it.
pub struct ReliabilityRow<'a> {
    pub fault: &'a str,
    pub acknowledged: u64,
    pub faults: u32,
    pub error_rate_pct: f64,
    pub recovery: Duration,
    pub mismatches: usize,
}

impl<'a> ReliabilityRow<'a> {
    /// From loadgen's report (`None` when loadgen died: the row then shows
    /// nothing acknowledged); its error rate counts refusals and
    /// connection errors against every request sent.
    pub fn from_loadgen(
        fault: &'a str,
        json: Option<&voteswarm::loadgen::report::JsonReport>,
        faults: u32,
        recovery: Duration,
    ) -> Self {
        let requests = json.map_or(0, |j| j.requests).max(1);
        let refused: u64 = json.map_or(0, |j| {
            j.rejected.values().sum::<u64>() + j.connection_errors
        });
        ReliabilityRow {
            fault,
            acknowledged: json.map_or(0, |j| j.acknowledged),
            faults,
            error_rate_pct: refused as f64 * 100.0 / requests as f64,
            recovery,
            mismatches: json.map_or(0, |j| j.mismatches.len()),
        }
    }

    /// Printed, and written to `CHAOS_REPORT_DIR/<fault>.json` when that
    /// is set.
    pub fn write(&self) {
        let row = serde_json::json!({
            "fault": self.fault,
            "acknowledged": self.acknowledged,
            "faults": self.faults,
            "error_rate_pct": self.error_rate_pct,
            "recovery_s": self.recovery.as_secs_f64(),
            "mismatches": self.mismatches,
        });
        eprintln!("{row}");
        if let Some(dir) = std::env::var_os("CHAOS_REPORT_DIR") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                Path::new(&dir).join(format!("{}.json", self.fault)),
                row.to_string(),
            )
            .unwrap();
        }
    }
}
