//! Faults under load: each scenario runs a real `cluster` (3 capture nodes,
//! 2 workers) under `loadgen` with vote changes, injects a fault in the
//! middle of the run, lets the system recover, and checks with loadgen's
//! ground truth that every acknowledged vote is counted once, with each
//! voter's latest choice.
//!
//! `make test` runs the short version; `make chaos` the long one
//! (`CHAOS_SCALE=full`), which also writes each scenario's row for
//! `docs/RELIABILITY.md` (`CHAOS_REPORT_DIR`).
//! The scenarios run one at a time (a lock): each is a whole cluster.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster_proc::json_report;
use common::{alive, http, signal, wait_until, Proc, SmallFs, TestCluster, Up};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Scale {
    voters: usize,
    rate: u32,
    /// Worker kills in the kill-a-worker scenario.
    worker_kills: u32,
    /// How long a hang, outage or cut lasts.
    outage: Duration,
}

fn scale() -> Scale {
    if std::env::var("CHAOS_SCALE").as_deref() == Ok("full") {
        Scale {
            voters: 20_000,
            rate: 800,
            worker_kills: 6,
            outage: Duration::from_secs(10),
        }
    } else {
        Scale {
            voters: 3_000,
            rate: 250,
            worker_kills: 3,
            outage: Duration::from_secs(5),
        }
    }
}

/// Waits until the cluster's child `name` answers `path` with 200;
/// returns how long it took.
fn until_ready(up: &Up, name: &str, path: &str) -> Duration {
    let t = Instant::now();
    let port = up.port(name);
    assert!(
        wait_until(Duration::from_secs(120), || http::status(port, path)
            == Some(200)),
        "{name} (:{port}){path} did not recover"
    );
    t.elapsed()
}

/// loadgen under the scenario, killed by the guard if the scenario fails
/// before it finishes (it would go on retrying against a cluster that is
/// gone).
fn start_loadgen(up: &Up, s: &Scale, report: &Path) -> Proc {
    Proc::spawn(
        up.loadgen(s.voters, report)
            .args(["--rate", &s.rate.to_string(), "--concurrency", "32"])
            .args(["--final-timeout-secs", "180", "--max-attempts", "1000"])
            .stderr(Stdio::null()),
    )
}

struct Outcome {
    faults: u32,
    recovery: Duration,
}

/// Runs a scenario: cluster, load, `fault` in the middle, verification.
fn scenario(name: &str, fault: impl FnOnce(&mut Up, &Scale) -> Outcome) {
    scenario_on(name, |_| (), |up, s, ()| fault(up, s), |_, ()| ());
}

/// [`scenario`] with `prepare` run on the cluster's data dir before it
/// starts (what it returns lives until the cluster has stopped, and the
/// fault and `after` get it), and `after` run once the count is verified.
fn scenario_on<P>(
    name: &str,
    prepare: impl FnOnce(&Path) -> P,
    fault: impl FnOnce(&mut Up, &Scale, &P) -> Outcome,
    after: impl FnOnce(&Up, &P),
) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::require_program("redis-server", "redis-server");
    common::require_program("haproxy", "haproxy");
    let s = scale();
    let dir = tempfile::Builder::new()
        .prefix("vs-chaos-")
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data");
    // Declared between the directory and the cluster, so that it is dropped
    // after the cluster stops and before the directory goes, even when the
    // scenario fails.
    let prepared = prepare(&data);
    let mut run = TestCluster {
        up: Up::start_with(&data, 3, 2, &[]),
        dir,
    };
    let report_path = run.dir.path().join("report.md");
    let mut lg = start_loadgen(&run.up, &s, &report_path);
    // The middle of the run: a quarter of the voters counted.
    let started = wait_until(Duration::from_secs(120), || {
        run.up.results_total().unwrap_or(0) >= (s.voters / 4) as i64
    });
    assert!(started, "{name}: the load did not get going");
    let outcome = fault(&mut run.up, &s, &prepared);
    let exit = lg.wait_exit(Duration::from_secs(600));
    assert!(exit.is_some(), "{name}: loadgen did not finish");
    let code = exit.unwrap().code();
    let report = std::fs::read_to_string(&report_path).unwrap_or_default();
    // Absent when loadgen died: the assertions below then say what is missing.
    let json_path = report_path.with_extension("json");
    let json = json_path.exists().then(|| json_report(&json_path));
    if code == Some(0) && json.as_ref().is_some_and(|j| j.mismatches.is_empty()) {
        after(&run.up, &prepared);
    }
    let stop_code = run.up.stop();
    drop(prepared);

    let requests = json.as_ref().map_or(0, |j| j.requests).max(1);
    let acknowledged = json.as_ref().map_or(0, |j| j.acknowledged) as i64;
    let refused: u64 = json.as_ref().map_or(0, |j| {
        j.rejected.values().sum::<u64>() + j.connection_errors
    });
    let mismatches = json.as_ref().map_or(0, |j| j.mismatches.len());
    // The row of docs/RELIABILITY.md's table, as `cargo xtask
    // reliability-table` reads it.
    let row = serde_json::json!({
        "fault": name,
        "acknowledged": acknowledged,
        "faults": outcome.faults,
        "error_rate_pct": refused as f64 * 100.0 / requests as f64,
        "recovery_s": outcome.recovery.as_secs_f64(),
        "mismatches": mismatches,
    });
    eprintln!("{row}");
    if let Some(dir) = std::env::var_os("CHAOS_REPORT_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            Path::new(&dir).join(format!("{name}.json")),
            row.to_string(),
        )
        .unwrap();
    }
    assert_eq!(code, Some(0), "{name}: the count is not exact:\n{report}");
    assert_eq!(mismatches, 0, "{report}");
    assert!(acknowledged >= s.voters as i64, "{report}");
    assert_eq!(stop_code, 0, "{name}: the cluster did not stop cleanly");
}

#[test]
fn killing_a_worker_every_few_seconds_loses_and_doubles_nothing() {
    scenario("SIGKILL a worker every 2 s", |up, s| {
        let mut recovery = Duration::ZERO;
        for i in 0..s.worker_kills {
            let name = if i % 2 == 0 { "worker01" } else { "worker02" };
            let pid = up.pid(name);
            signal(pid, libc::SIGKILL);
            let t = Instant::now();
            // The cluster restarts it (a new pid) and it drains again.
            assert!(wait_until(Duration::from_secs(60), || up.pid(name) != pid));
            until_ready(up, name, "/readyz");
            recovery = recovery.max(t.elapsed());
            std::thread::sleep(Duration::from_secs(2)); // the fault's own pace
        }
        Outcome {
            faults: s.worker_kills,
            recovery,
        }
    });
}

/// SIGKILL to the cluster's child `name`, recovered once capture02 (that
/// child, or the node in front of it) is ready again.
fn kill_until_capture02_ready(up: &Up, name: &str) -> Outcome {
    signal(up.pid(name), libc::SIGKILL);
    let t = Instant::now();
    until_ready(up, "capture02", "/readyz");
    Outcome {
        faults: 1,
        recovery: t.elapsed(),
    }
}

#[test]
fn a_killed_capture_node_is_routed_around_and_its_queue_still_counted() {
    scenario("SIGKILL a capture node", |up, _| {
        kill_until_capture02_ready(up, "capture02")
    });
}

#[test]
fn a_killed_redis_restarts_from_its_append_only_file() {
    scenario("SIGKILL a capture node's Redis", |up, _| {
        kill_until_capture02_ready(up, "redis02")
    });
}

#[test]
fn a_hung_redis_costs_retries_not_votes() {
    scenario("SIGSTOP a Redis (hang)", |up, s| {
        let pid = up.pid("redis02");
        signal(pid, libc::SIGSTOP);
        std::thread::sleep(s.outage); // the hang itself
        signal(pid, libc::SIGCONT);
        Outcome {
            faults: 1,
            recovery: until_ready(up, "capture02", "/readyz"),
        }
    });
}

#[test]
fn a_postgres_outage_delays_the_count_and_loses_nothing() {
    scenario("PostgreSQL stopped", |up, s| {
        let hold = up.data.join("run").join("postgres.hold");
        std::fs::write(&hold, "").unwrap();
        signal(up.pid("postgres"), libc::SIGINT);
        std::thread::sleep(s.outage); // the outage itself
        std::fs::remove_file(&hold).unwrap();
        Outcome {
            faults: 1,
            recovery: until_ready(up, "worker01", "/readyz"),
        }
    });
}

/// `iptables` drops packets to one Redis port (a root-only, test-made
/// rule, removed on drop).
struct Cut(u16);

impl Cut {
    fn new(port: u16) -> Option<Cut> {
        Cut::rule("-I", port).then_some(Cut(port))
    }

    /// `iptables OP` (insert, delete) of the rule; whether it took.
    fn rule(op: &str, port: u16) -> bool {
        Command::new("iptables")
            .args([op, "INPUT", "-i", "lo", "-p", "tcp", "--dport"])
            .args([&port.to_string(), "-j", "DROP"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        Cut::rule("-D", self.0);
    }
}

#[test]
fn a_cut_path_to_a_redis_costs_retries_not_votes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || common::require_program_opt("iptables").is_none() {
        eprintln!(
            "skipped: cutting a network path needs root and iptables (make test installs it)"
        );
        return;
    }
    scenario("network cut to a Redis", |up, s| {
        let cut = Cut::new(up.port("redis02")).expect("iptables rule");
        std::thread::sleep(s.outage); // the cut itself
        drop(cut);
        Outcome {
            faults: 1,
            recovery: until_ready(up, "capture02", "/readyz"),
        }
    });
}

#[test]
fn sigterm_to_the_whole_cluster_then_up_again_resumes_the_count() {
    scenario("SIGTERM everything, cluster up again", |up, _| {
        let t = Instant::now();
        assert_eq!(up.restart(), 0, "the cluster stops cleanly on SIGTERM");
        Outcome {
            faults: 1,
            recovery: t.elapsed(),
        }
    });
}

#[test]
fn sigkill_to_cluster_up_leaves_no_child_and_up_again_resumes_the_count() {
    scenario("SIGKILL cluster up, cluster up again", |up, _| {
        // Every process of the run, recorded before the kill: the
        // supervised children (their pid files) and theirs (PostgreSQL's
        // backends for the workers and the results node).
        let mut pids = up.descendants();
        for name in [
            "postgres",
            "redis01",
            "capture01",
            "worker01",
            "results",
            "haproxy",
        ] {
            assert!(
                pids.contains(&up.pid(name)),
                "{name} is a child of cluster up"
            );
        }
        pids.sort();
        assert!(
            pids.len() > 11,
            "the 11 supervised children and PostgreSQL's backends: {pids:?}"
        );
        let t = Instant::now();
        up.kill();
        let gone = wait_until(Duration::from_secs(5), || !pids.iter().any(|&p| alive(p)));
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        assert!(gone, "alive 5 s after cluster up was killed: {left:?}");
        up.start_again();
        Outcome {
            faults: 1,
            recovery: t.elapsed(),
        }
    });
}

/// The tmpfs under a full-disk scenario's node: far more than the run
/// writes before the fault, and all of it filled then.
const SMALL_FS_MB: u32 = 256;

/// A vote straight to a capture node (no edge, no cookie: a new voter);
/// its status.
fn vote_at(port: u16) -> u16 {
    let body = r#"{"vote":"a"}"#;
    let raw = format!(
        "POST /api/vote HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http::request(port, &raw).0
}

/// Whether `name`'s log in the cluster's data dir says `what`.
fn log_says(up: &Up, name: &str, what: &str) -> bool {
    std::fs::read_to_string(up.data.join("logs").join(format!("{name}.log")))
        .is_ok_and(|log| log.contains(what))
}

#[test]
fn a_full_disk_under_a_redis_costs_retries_not_votes() {
    scenario_on(
        "a capture node's Redis disk full",
        |data| SmallFs::mount(&data.join("redis02"), SMALL_FS_MB),
        |up, s, disk| {
            let capture = up.port("capture02");
            let capture_pid = up.pid("capture02");
            let unavailable = r#"voteswarm_votes_rejected_total{reason="unavailable"}"#;
            let refused = || http::metric(&http::metrics(capture), unavailable);
            let refused_before = refused();
            disk.fill();
            // Under `appendfsync always` Redis cannot take back a reply it
            // has queued, so a failed AOF write makes it exit (and the
            // cluster restart it, to exit again at the next write).
            assert!(
                wait_until(Duration::from_secs(60), || log_says(
                    up,
                    "redis02",
                    "Can't recover from AOF write error"
                )),
                "redis02 went on writing to a full disk"
            );
            assert!(
                wait_until(Duration::from_secs(60), || http::status(capture, "/readyz")
                    != Some(200)),
                "capture02 stayed ready with its Redis's disk full"
            );
            std::thread::sleep(s.outage); // the full disk itself
            assert!(
                refused() > refused_before,
                "capture02 refused no vote with its Redis's disk full"
            );
            disk.free();
            let recovery = until_ready(up, "capture02", "/readyz");
            assert_eq!(up.pid("capture02"), capture_pid, "capture02 was restarted");
            Outcome {
                faults: 1,
                recovery,
            }
        },
        |up, _| {
            // Counted exactly; the same capture process takes votes again.
            assert_eq!(vote_at(up.port("capture02")), 202);
        },
    );
}

#[test]
fn a_full_disk_under_postgres_delays_the_count_and_loses_nothing() {
    scenario_on(
        "PostgreSQL's disk full",
        |data| SmallFs::mount(&data.join("postgres"), SMALL_FS_MB),
        |up, s, disk| {
            let worker = up.port("worker01");
            let errors = || http::metric(&http::metrics(worker), "voteswarm_commit_errors_total");
            let errors_before = errors();
            disk.fill();
            // New rows need new pages (refused with an ERROR); a new WAL
            // segment cannot be made either: PostgreSQL PANICs when the
            // current one runs out, and switching segments makes it now.
            let _ = superuser_sql(up, "SELECT pg_switch_wal()");
            assert!(
                wait_until(Duration::from_secs(60), || log_says(
                    up,
                    "postgres",
                    "No space left on device"
                )),
                "PostgreSQL went on writing to a full disk"
            );
            assert!(
                wait_until(Duration::from_secs(60), || errors() > errors_before),
                "worker01's commits did not fail with PostgreSQL's disk full"
            );
            std::thread::sleep(s.outage); // the full disk itself
            disk.free();
            Outcome {
                faults: 1,
                recovery: until_ready(up, "worker01", "/readyz"),
            }
        },
        |_, _| (),
    );
}

/// A statement as the superuser; its error, if any (PostgreSQL may be
/// going down for it).
fn superuser_sql(up: &Up, statement: &str) -> Result<(), String> {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let mut conn =
        diesel::PgConnection::establish(&up.database_url()).map_err(|e| e.to_string())?;
    conn.batch_execute(statement).map_err(|e| e.to_string())
}
