//! The store's host lost: a real `cluster up --pg-standby` (3 capture
//! nodes, 2 workers, a PostgreSQL primary with a synchronous standby made
//! by `pg_basebackup`) under `loadgen`, then the primary's data directory
//! deleted and every process of it SIGKILLed at once. The cluster promotes
//! the standby, the workers and results find it through their multi-host
//! `DATABASE_URL`, and loadgen's ground truth finds every acknowledged
//! vote counted once. Before that, the synchronous setting is shown to be
//! real: the primary reports the standby `sync`, and with the standby gone
//! a commit waits, the worker's `/readyz` says so and the vote stays in
//! its queue, unacknowledged, until the standby streams again. After it,
//! `cluster backup` dumps the promoted server, and the next `cluster up`
//! takes it as its primary, with the same count and a new standby.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster_proc::{json_report, sql_counts, ReliabilityRow};
use common::{alive, bin, http, signal, wait_until, Proc, TestCluster, Up};
use diesel::{Connection, PgConnection, RunQueryDsl};
use voteswarm::cluster::secrets::{RedisPasswords, RedisRole};

const VOTERS: usize = 3_000;
const RATE: u32 = 250;

/// The superuser's URL to the servers on `ports` (libpq's multi-host form,
/// to whichever takes writes, when there are several).
fn superuser_url(up: &Up, ports: &[u16]) -> String {
    let password = std::fs::read_to_string(up.data.join("secrets/pg_postgres_password"))
        .expect("the cluster's superuser password");
    voteswarm::config::with_credentials(
        "DATABASE_URL",
        &voteswarm::cluster::postgres::hosts_url("postgres", ports),
        None,
        password.trim_end(),
    )
    .expect("a URL")
}

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    v: String,
}

/// One text value from `query` (its column named `v`), on the server of
/// `url`.
fn text(url: &str, query: &str) -> Result<String, String> {
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    diesel::sql_query(query)
        .get_result::<Text>(&mut conn)
        .map(|t| t.v)
        .map_err(|e| e.to_string())
}

/// Entries left in every capture node's queue (the stream; an entry is
/// deleted only once its batch committed).
fn queued(up: &Up, capture: usize) -> usize {
    let passwords = RedisPasswords::ensure(&up.data.join("secrets")).expect("redis passwords");
    (1..=capture)
        .map(|i| {
            let url = passwords.url(RedisRole::Admin, up.port(&format!("redis{i:02}")));
            let mut conn = redis::Client::open(url)
                .and_then(|c| c.get_connection())
                .expect("connect to a queue");
            redis::cmd("XLEN")
                .arg(voteswarm::queue::DEFAULT_STREAM_KEY)
                .query::<usize>(&mut conn)
                .expect("XLEN")
        })
        .sum()
}

/// Whether `cluster up`'s own log (beside its data dir) says `what`.
fn cluster_log_says(up: &Up, what: &str) -> bool {
    let log = up.data.with_file_name("data.cluster.log");
    std::fs::read_to_string(log).is_ok_and(|l| l.contains(what))
}

/// The host gone in an instant: the postmaster and every backend frozen
/// (PostgreSQL puts each backend in a process group of its own, so the
/// postmaster's group is not all of it), the data directory deleted, then
/// all of them SIGKILLed. Nothing gets to answer, flush or clean up.
fn lose_host(postmaster: u32, data_dir: &Path) -> Vec<u32> {
    signal(postmaster, libc::SIGSTOP);
    let mut all = common::process::children(postmaster);
    for &c in &all {
        signal(c, libc::SIGSTOP);
    }
    all.push(postmaster);
    std::fs::remove_dir_all(data_dir).expect("delete the primary's data directory");
    for &p in &all {
        signal(p, libc::SIGKILL);
    }
    all
}

#[test]
fn losing_the_store_host_promotes_the_synchronous_standby_and_loses_no_acknowledged_vote() {
    common::require_program("redis-server", "redis-server");
    common::require_program("haproxy", "haproxy");
    let dir = tempfile::Builder::new()
        .prefix("vs-storeloss-")
        .tempdir()
        .expect("temp dir");
    let data = dir.path().join("data");
    let run = TestCluster {
        up: Up::start_with_args(&data, 3, 2, &[], &["--pg-standby"]),
        dir,
    };
    let up = &run.up;
    let (primary, standby) = (up.port("postgres"), up.port("pg-standby"));
    let primary_url = superuser_url(up, &[primary]);
    let both = up.database_url();

    // Synchronous for real: the primary waits for this standby.
    assert_eq!(
        text(
            &primary_url,
            "SELECT sync_state AS v FROM pg_stat_replication WHERE application_name = 'voteswarm_standby'"
        )
        .as_deref(),
        Ok("sync")
    );
    assert_eq!(
        text(
            &primary_url,
            "SELECT current_setting('synchronous_commit') AS v"
        )
        .as_deref(),
        Ok("on")
    );
    assert_eq!(
        text(&both, "SELECT inet_server_port()::text AS v"),
        Ok(primary.to_string()),
        "the multi-host URL leads to the primary, not the read-only standby"
    );

    // By hand, promoting is refused while the primary answers: two
    // read-write servers would split the count.
    let out = Command::new(bin::CLUSTER)
        .args(["promote-standby", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run cluster promote-standby");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("the primary still answers"),
        "{err}"
    );
    assert_eq!(
        text(
            &superuser_url(up, &[standby]),
            "SELECT pg_is_in_recovery()::text AS v"
        )
        .as_deref(),
        Ok("true"),
        "a refused promotion promoted the standby"
    );

    // The standby gone: a vote's commit waits for it and nothing of it is
    // acknowledged; the worker says why; the supervisor logs it.
    let hold = up.data.join("run").join("pg-standby.hold");
    std::fs::write(&hold, "").unwrap();
    signal(up.pid("pg-standby"), libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(20), || cluster_log_says(
            up,
            "the standby is not streaming"
        )),
        "the cluster did not say the standby stopped streaming"
    );
    let vote = http::request(
        up.port("capture01"),
        "POST /api/vote HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"vote\":\"a\"}",
    );
    assert_eq!(vote.0, 202, "{}", vote.1);
    let workers = [up.port("worker01"), up.port("worker02")];
    let says_waiting = || {
        workers.iter().any(|&w| {
            http::get(w, "/readyz").is_some_and(|r| {
                r.status == 503 && r.body().contains("waiting") && r.body().contains("standby")
            })
        })
    };
    assert!(
        wait_until(Duration::from_secs(30), says_waiting),
        "no worker's /readyz said its commit waits for the standby"
    );
    assert_eq!(queued(up, 3), 1, "the waiting vote was acknowledged");
    std::fs::remove_file(&hold).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || queued(up, 3) == 0),
        "the vote was not acknowledged once the standby streamed again"
    );
    assert!(wait_until(Duration::from_secs(20), || cluster_log_says(
        up,
        "the standby streams again"
    )));

    // The store's host lost under load.
    let report_path = run.dir.path().join("report.md");
    let mut lg = Proc::spawn(
        up.loadgen(VOTERS, &report_path)
            .args(["--rate", &RATE.to_string(), "--concurrency", "32"])
            .args(["--final-timeout-secs", "180", "--max-attempts", "1000"])
            .stderr(Stdio::null()),
    );
    assert!(
        wait_until(Duration::from_secs(120), || up.results_total().unwrap_or(0)
            >= (VOTERS / 4) as i64),
        "the load did not get going"
    );
    let postmaster = up.pid("postgres");
    let killed = lose_host(postmaster, &up.data.join("postgres"));
    let lost_at = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || text(
            &superuser_url(up, &[standby]),
            "SELECT pg_is_in_recovery()::text AS v"
        )
        .as_deref()
            == Ok("false")),
        "the standby was not promoted"
    );
    let ready = |port: u16| http::status(port, "/readyz") == Some(200);
    assert!(
        wait_until(Duration::from_secs(60), || workers
            .iter()
            .all(|&w| ready(w))),
        "the workers did not find the promoted standby"
    );
    let recovery = lost_at.elapsed();
    assert!(cluster_log_says(up, "promoting the standby"));

    let exit = lg.wait_exit(Duration::from_secs(600));
    assert!(exit.is_some(), "loadgen did not finish");
    let code = exit.unwrap().code();
    let report = std::fs::read_to_string(&report_path).unwrap_or_default();
    let json_path = report_path.with_extension("json");
    let json = json_path.exists().then(|| json_report(&json_path));
    let row = ReliabilityRow::from_loadgen(
        "PostgreSQL host lost (standby promoted)",
        json.as_ref(),
        1,
        recovery,
    );
    row.write();
    assert_eq!(code, Some(0), "the count is not exact:\n{report}");
    assert_eq!(row.mismatches, 0, "{report}");
    assert!(row.acknowledged >= VOTERS as u64, "{report}");
    assert!(
        wait_until(Duration::from_secs(60), || queued(&run.up, 3) == 0),
        "votes left in the queues"
    );
    // The lost primary stayed lost: no process of it, none started again
    // (its pid file gone with it), nothing on its port.
    assert!(killed.iter().all(|&p| !alive(p)));
    assert!(!data.join("run").join("postgres.pid").exists());
    assert!(!data.join("postgres").exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", primary)).is_err());

    // `cluster backup` dumps whichever server takes writes: the promoted one.
    let (a, b) = sql_counts(&run.up.database_url());
    let out = Command::new(bin::CLUSTER)
        .arg("backup")
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("run cluster backup");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains(&format!(" bytes, {} voters)", a + b)),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The next `cluster up` takes the promoted standby as its primary (never
    // a fresh, empty one) and makes a new synchronous standby from it.
    let mut run = run;
    assert_eq!(run.up.restart(), 0, "the cluster did not stop cleanly");
    assert_eq!(sql_counts(&run.up.database_url()), (a, b));
    assert_eq!(
        text(
            &superuser_url(&run.up, &[run.up.port("postgres")]),
            "SELECT sync_state AS v FROM pg_stat_replication WHERE application_name = 'voteswarm_standby'"
        )
        .as_deref(),
        Ok("sync"),
        "no new synchronous standby after the re-up"
    );
    assert_eq!(run.up.stop(), 0, "the cluster did not stop cleanly");
}
