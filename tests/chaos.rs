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
//! The full-disk ones mount a small filesystem (root only); the skewed
//! clocks one starts its own capture processes under libfaketime, against
//! Redis servers, PostgreSQL and a worker of its own, and votes straight
//! to chosen nodes.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster_proc::{json_report, stored_votes, ReliabilityRow};
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

    let row = ReliabilityRow::from_loadgen(name, json.as_ref(), outcome.faults, outcome.recovery);
    row.write();
    let (acknowledged, mismatches) = (row.acknowledged, row.mismatches);
    assert_eq!(code, Some(0), "{name}: the count is not exact:\n{report}");
    assert_eq!(mismatches, 0, "{report}");
    assert!(acknowledged >= s.voters as u64, "{report}");
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

/// A vote straight to a capture node (no edge), with the voter's cookie
/// if they have one.
fn api_vote(port: u16, option: &str, cookie: Option<&str>) -> http::Reply {
    let body = format!(r#"{{"vote":"{option}"}}"#);
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: voter={c}\r\n"));
    let raw = format!(
        "POST /api/vote HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{cookie}Connection: close\r\n\r\n{body}",
        body.len()
    );
    http::exchange(port, raw.as_bytes()).unwrap_or_else(|| panic!("connect to :{port}"))
}

/// A new voter's vote straight to a capture node; its status.
fn vote_at(port: u16) -> u16 {
    api_vote(port, "a", None).status
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

/// The skewed-clock scenario's capture nodes: a name and how far its wall
/// clock runs from the host's (libfaketime), in seconds.
const CLOCKS: [(&str, i64); 3] = [("ahead", 30), ("behind", -30), ("true", 0)];

/// One voter of the skewed-clock scenario: a first vote on one node, then
/// a change on another (or the same), sent at once and then as often as
/// `Retry-After` allows until taken.
struct SkewVoter {
    from: usize,
    to: usize,
    cookie: String,
    first: serde_json::Value,
    first_acked: Instant,
    /// The change's receipt, how long after the first vote's
    /// acknowledgement it was sent, and the true time then, once taken.
    change: Option<(serde_json::Value, Duration, i64)>,
    next_try: Instant,
}

impl SkewVoter {
    /// Sends the change to the node on `port`; whether it was taken (else
    /// the next try waits for `Retry-After`).
    fn try_change(&mut self, port: u16) -> bool {
        let sent = self.first_acked.elapsed();
        let true_now = voteswarm::clock::now_micros();
        let r = api_vote(port, "b", Some(&self.cookie));
        match r.status {
            202 => {
                self.change = Some((r.json().expect("a receipt"), sent, true_now));
                true
            }
            429 => {
                let wait: u64 = r
                    .header("retry-after")
                    .and_then(|w| w.parse().ok())
                    .expect("a 429 says how long to wait");
                self.next_try = Instant::now() + Duration::from_secs(wait);
                false
            }
            other => panic!("a change answered {other}: {}", r.text),
        }
    }
}

/// The voter cookie an answer sets.
fn voter_cookie(r: &http::Reply) -> String {
    r.header("set-cookie")
        .and_then(|c| c.strip_prefix("voter="))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no voter cookie in {}", r.text))
        .to_owned()
}

#[test]
fn skewed_clocks_neither_fool_the_latest_vote_nor_shorten_the_change_interval() {
    use common::capture_node::CaptureProcess;
    use common::worker_node::{settings, StubResolver};
    use voteswarm::clock::now_micros;
    use voteswarm::config::VoteChanges;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::require_program("redis-server", "redis-server");
    let s = scale();
    let pg = common::PgServer::start();
    let redis: Vec<common::RedisServer> = CLOCKS
        .iter()
        .map(|_| common::RedisServer::start())
        .collect();
    let resolver = std::sync::Arc::new(StubResolver::default());
    resolver.set(&redis.iter().map(|r| r.worker_url()).collect::<Vec<_>>());
    let _worker = common::spawn_worker(settings(&pg, VoteChanges::Allow), resolver);
    let nodes: Vec<CaptureProcess> = CLOCKS
        .iter()
        .zip(&redis)
        .map(|((name, skew), r)| {
            let clock = (*skew != 0).then(|| format!("{skew:+}s"));
            CaptureProcess::start(r, name, clock.as_deref())
        })
        .collect();
    let min_interval = Duration::from_secs(1); // MIN_CHANGE_INTERVAL_MS's default

    // Every ordered pair of nodes, the same number of voters each.
    let per_pair = s.voters / 60;
    let mut requests = 0u64;
    let mut refused = 0u64;
    let mut voters = Vec::new();
    for from in 0..CLOCKS.len() {
        for to in 0..CLOCKS.len() {
            for _ in 0..per_pair {
                let true_now = now_micros();
                let first = api_vote(nodes[from].port, "a", None);
                requests += 1;
                assert_eq!(first.status, 202, "{}", first.text);
                let receipt = first.json().expect("a receipt");
                let ts = receipt["ts"].as_i64().unwrap();
                // libfaketime took: the node stamps by its own clock.
                let off = (ts - true_now) as f64 / 1e6;
                assert!(
                    (off - CLOCKS[from].1 as f64).abs() < 5.0,
                    "{} stamped {off:+.1} s from true time",
                    CLOCKS[from].0
                );
                let mut v = SkewVoter {
                    from,
                    to,
                    cookie: voter_cookie(&first),
                    first: receipt,
                    first_acked: Instant::now(),
                    change: None,
                    next_try: Instant::now(),
                };
                // The change, at once.
                requests += 1;
                refused += u64::from(!v.try_change(nodes[to].port));
                voters.push(v);
            }
        }
    }
    // Then as often as Retry-After allows, until each change is taken.
    let all_changed = wait_until(Duration::from_secs(180), || {
        let mut pending = false;
        for v in voters.iter_mut().filter(|v| v.change.is_none()) {
            if Instant::now() >= v.next_try {
                requests += 1;
                refused += u64::from(!v.try_change(nodes[v.to].port));
            }
            pending |= v.change.is_none();
        }
        !pending
    });
    assert!(all_changed, "some changes were never taken");

    // The count: every voter's change is what is stored.
    let url = pg.url();
    let expected: std::collections::HashMap<String, String> = voters
        .iter()
        .map(|v| {
            let (change, ..) = v.change.as_ref().unwrap();
            (
                change["voter"].as_str().unwrap().to_owned(),
                change["vote_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Settled only once every queue is empty (a worker deletes an entry
    // after its commit): a row for each voter alone can be the first vote
    // while the change waits in another node's queue, and counting then
    // would call a vote not yet drained a mismatch.
    let drained = wait_until(Duration::from_secs(60), || {
        let rows = stored_votes(&url);
        redis.iter().all(|r| r.xlen() == 0)
            && rows.len() == voters.len()
            && rows.keys().all(|voter| expected.contains_key(voter))
    });
    assert!(drained, "not every vote was drained and stored");
    let mismatches = stored_votes(&url)
        .iter()
        .filter(|(voter, (_, vote_id))| expected[*voter] != *vote_id)
        .count();

    let mut early = Vec::new();
    let mut longest_wait = Duration::ZERO;
    for v in &voters {
        let (change, sent, _) = v.change.as_ref().unwrap();
        let (t1, t2) = (
            v.first["ts"].as_i64().unwrap(),
            change["ts"].as_i64().unwrap(),
        );
        // The change is later than the first vote, whatever the clocks.
        assert!(
            t2 > t1,
            "{} -> {}: {t2} after {t1}",
            CLOCKS[v.from].0,
            CLOCKS[v.to].0
        );
        longest_wait = longest_wait.max(*sent);
        if *sent < min_interval {
            early.push((v.from, v.to));
        }
    }
    // A change inside the interval is taken only on a move to a node whose
    // clock runs ahead of the one that stamped the first vote.
    for &(from, to) in &early {
        assert!(
            CLOCKS[to].1 > CLOCKS[from].1,
            "{} -> {}: a change taken inside the interval",
            CLOCKS[from].0,
            CLOCKS[to].0
        );
    }
    // What the skew did to the stored timestamps, for the report: each
    // change's ts against the true time it was sent, by the node taking it.
    for (i, (name, skew)) in CLOCKS.iter().enumerate() {
        let offsets: Vec<f64> = voters
            .iter()
            .filter(|v| v.to == i)
            .map(|v| {
                let (c, _, true_now) = v.change.as_ref().unwrap();
                (c["ts"].as_i64().unwrap() - true_now) as f64 / 1e6
            })
            .collect();
        let carried = voters
            .iter()
            .filter(|v| v.to == i)
            .filter(|v| {
                let (c, ..) = v.change.as_ref().unwrap();
                c["ts"].as_i64() == v.first["ts"].as_i64().map(|t| t + 1)
            })
            .count();
        let (lo, hi) = offsets
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &o| (lo.min(o), hi.max(o)));
        eprintln!(
            "clock {name} ({skew:+} s): {} changes stored {lo:+.2} s to {hi:+.2} s from true time, {carried} stamped last_ts + 1",
            offsets.len()
        );
    }
    eprintln!(
        "{} of {} changes taken inside the interval (moves to a faster clock); longest wait {:.1} s",
        early.len(),
        voters.len(),
        longest_wait.as_secs_f64()
    );
    ReliabilityRow {
        fault: "capture clocks 30 s ahead and 30 s behind",
        acknowledged: 2 * voters.len() as u64,
        faults: 2,
        error_rate_pct: refused as f64 * 100.0 / requests as f64,
        recovery: longest_wait,
        mismatches,
    }
    .write();
    assert_eq!(
        mismatches, 0,
        "stored votes that are not the voter's latest"
    );
}
