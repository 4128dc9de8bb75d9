//! A capture host lost with its disk, under load: a real `cluster` (3
//! capture nodes, 2 workers) under `loadgen` with vote changes; in the
//! middle of the run the workers are held (SIGSTOP) until capture02's
//! queue holds acknowledged votes not yet drained, then that queue's data
//! directory is deleted and its `redis-server` SIGKILLed, and the workers
//! go on.
//!
//! With `--queue-replicas 1` (capture answers only once a replica has the
//! vote: `ACK_REPLICAS=1`) the cluster promotes the replica, the workers
//! drain it, and loadgen's verification is exact. Without a replica the
//! same fault loses what only that disk held; the test reports how many
//! acknowledged votes (and asserts that there were some: the workers were
//! held, so the queue had a backlog when its disk went). The contrast is
//! the point of the suite.
//!
//! Each writes its row for `docs/RELIABILITY.md` (`CHAOS_REPORT_DIR`), as
//! `tests/chaos.rs` does; `CHAOS_SCALE=full` runs the long version.

mod common;

use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster_proc::{json_report, ReliabilityRow};
use common::{http, signal, wait_until, Proc, TestCluster, Up};
use voteswarm::cluster::secrets::{RedisPasswords, RedisRole};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Votes capture02's queue must hold, undrained, when its disk is lost.
const BACKLOG: usize = 100;

struct Scale {
    voters: usize,
    rate: u32,
}

fn scale() -> Scale {
    if std::env::var("CHAOS_SCALE").as_deref() == Ok("full") {
        Scale {
            voters: 20_000,
            rate: 800,
        }
    } else {
        Scale {
            voters: 3_000,
            rate: 250,
        }
    }
}

/// The operator's connection to the cluster's child `name` (a Redis).
fn admin(up: &Up, name: &str) -> redis::RedisResult<redis::Connection> {
    let passwords = RedisPasswords::ensure(&up.data.join("secrets")).expect("the passwords");
    let client = redis::Client::open(passwords.url(RedisRole::Admin, up.port(name)))?;
    let conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(conn)
}

/// Entries in `name`'s vote stream, if it answers.
fn depth(up: &Up, name: &str) -> Option<usize> {
    redis::cmd("XLEN")
        .arg("votes")
        .query(&mut admin(up, name).ok()?)
        .ok()
}

/// `INFO replication`'s `role:` of `name`.
fn role(up: &Up, name: &str) -> Option<String> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut admin(up, name).ok()?)
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .map(|r| r.trim().to_owned())
}

struct HostLost {
    json: Option<voteswarm::loadgen::report::JsonReport>,
    report: String,
    loadgen_code: Option<i32>,
    /// Votes capture02's queue held, undrained, when its disk was lost.
    backlog: usize,
    /// From the fault until capture02 was ready again.
    recovery: Duration,
    cluster_log: String,
    stop_code: i32,
}

impl HostLost {
    /// Voters whose last acknowledged vote is not what is stored.
    fn lost(&self) -> usize {
        self.json
            .as_ref()
            .and_then(|j| j.database.as_ref())
            .map_or(0, |d| d.mismatches)
    }
}

/// Runs the scenario with `replicas` per queue; `after` looks at the
/// cluster once loadgen is done and before it stops.
fn lose_capture02s_host(replicas: usize, final_timeout: u64, after: impl FnOnce(&Up)) -> HostLost {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    common::require_program("redis-server", "redis-server");
    common::require_program("haproxy", "haproxy");
    let s = scale();
    let dir = tempfile::Builder::new()
        .prefix("vs-hostloss-")
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data");
    let replicas_arg = replicas.to_string();
    let run = TestCluster {
        up: Up::start_with_args(&data, 3, 2, &[], &["--queue-replicas", &replicas_arg]),
        dir,
    };
    let up = &run.up;
    let report_path = run.dir.path().join("report.md");
    let mut lg = Proc::spawn(
        up.loadgen(s.voters, &report_path)
            .args(["--rate", &s.rate.to_string(), "--concurrency", "32"])
            .args(["--final-timeout-secs", &final_timeout.to_string()])
            .args(["--max-attempts", "1000"])
            .stderr(Stdio::null()),
    );
    assert!(
        wait_until(Duration::from_secs(120), || up.results_total().unwrap_or(0)
            >= (s.voters / 4) as i64),
        "the load did not get going"
    );

    // The workers held, so that the queue has acknowledged votes in it
    // (and entries delivered to a worker, pending) when its disk goes.
    let workers = [up.pid("worker01"), up.pid("worker02")];
    for &w in &workers {
        signal(w, libc::SIGSTOP);
    }
    let held = wait_until(Duration::from_secs(60), || {
        depth(up, "redis02").unwrap_or(0) >= BACKLOG
    });
    let backlog = depth(up, "redis02").unwrap_or(0);
    let redis02 = up.pid("redis02");
    std::fs::remove_dir_all(up.data.join("redis02")).expect("delete redis02's data dir");
    signal(redis02, libc::SIGKILL);
    let t = Instant::now();
    for &w in &workers {
        signal(w, libc::SIGCONT);
    }
    assert!(held, "capture02's queue never held {BACKLOG} votes");
    let capture = up.port("capture02");
    let back = wait_until(Duration::from_secs(120), || {
        http::status(capture, "/readyz") == Some(200)
    });
    let recovery = t.elapsed();
    assert!(back, "capture02 was not ready again:\n{}", up.cluster_log());

    let exit = lg.wait_exit(Duration::from_secs(600));
    assert!(exit.is_some(), "loadgen did not finish");
    let loadgen_code = exit.unwrap().code();
    let report = std::fs::read_to_string(&report_path).unwrap_or_default();
    let json_path = report_path.with_extension("json");
    let json = json_path.exists().then(|| json_report(&json_path));
    after(up);
    let cluster_log = up.cluster_log();
    let TestCluster { up, dir } = run;
    let stop_code = up.stop();
    drop(dir);
    HostLost {
        json,
        report,
        loadgen_code,
        backlog,
        recovery,
        cluster_log,
        stop_code,
    }
}

#[test]
fn a_capture_host_lost_with_its_disk_loses_no_acknowledged_vote_with_a_replica() {
    let out = lose_capture02s_host(1, 180, |up| {
        // The replica took over and the lost host's place holds a fresh
        // replica of it; capture02 takes votes again, on the promoted one.
        assert_eq!(role(up, "redis02-r1").as_deref(), Some("master"));
        assert_eq!(role(up, "redis02").as_deref(), Some("slave"));
        assert_eq!(
            depth(up, "redis02-r1"),
            Some(0),
            "the promoted queue is drained"
        );
    });
    let name = "capture host lost with its disk (ACK_REPLICAS=1)";
    let row = ReliabilityRow::from_loadgen(name, out.json.as_ref(), 1, out.recovery);
    row.write();
    eprintln!(
        "{name}: {} votes queued undrained on the lost disk; {} acknowledged votes lost; capture02 ready again after {:.1} s",
        out.backlog,
        out.lost(),
        out.recovery.as_secs_f64()
    );
    // What the supervisor said, for the record.
    for line in out.cluster_log.lines().filter(|l| l.contains("redis02")) {
        eprintln!("cluster: {line}");
    }
    assert!(
        out.cluster_log.contains("promoting its replica redis02-r1"),
        "{}",
        out.cluster_log
    );
    assert_eq!(
        out.loadgen_code,
        Some(0),
        "the count is not exact:\n{}",
        out.report
    );
    assert_eq!(out.lost(), 0, "{}", out.report);
    assert_eq!(row.mismatches, 0, "{}", out.report);
    assert_eq!(out.stop_code, 0, "the cluster did not stop cleanly");
}

#[test]
fn without_a_replica_the_same_loss_loses_the_votes_only_that_disk_held() {
    // The count cannot come out right: loadgen's check of every voter
    // gives up after this, and reports what it found.
    let out = lose_capture02s_host(0, 20, |_| ());
    let name = "capture host lost with its disk (no replica)";
    let lost = out.lost();
    let mut row = ReliabilityRow::from_loadgen(name, out.json.as_ref(), 1, out.recovery);
    row.mismatches = lost;
    row.write();
    eprintln!(
        "{name}: {} votes queued undrained on the lost disk; {lost} acknowledged votes lost",
        out.backlog
    );
    assert!(
        out.cluster_log.contains("the votes only it held are lost"),
        "{}",
        out.cluster_log
    );
    assert_ne!(out.loadgen_code, Some(0), "{}", out.report);
    assert!(
        lost > 0,
        "{lost} lost of {} queued:\n{}",
        out.backlog,
        out.report
    );
    assert_eq!(out.stop_code, 0, "the cluster did not stop cleanly");
}
