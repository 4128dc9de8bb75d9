//! The worker tier against real PostgreSQL and real Redis: ordering across
//! queues, idempotent replays, exact counts under load, crashes and outages.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::postgres::PgServer;
use common::{free_port, http_get, signal, wait_until, wait_until_async, RedisServer};
use rand::{Rng, SeedableRng};
use voteswarm::actors::supervisor::Resolve;
use voteswarm::config::{Secret, VoteChanges};
use voteswarm::endpoints::EndpointSource;
use voteswarm::vote::{Id128, Vote, VoteOption};
use voteswarm::worker::Worker;
use voteswarm::worker::WorkerSettings;

const WORKER: &str = env!("CARGO_BIN_EXE_worker");
const DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

fn vote(voter: u128, option: VoteOption, ts: i64, vote_id: u128, node: &str) -> Vote {
    Vote {
        vote_id: Id128(vote_id),
        voter: Id128(voter),
        option,
        ts,
        node: node.into(),
    }
}

/// Appends votes to a stream as capture would (pipelined XADDs).
fn preload(redis: &RedisServer, votes: &[Vote]) {
    let mut conn = redis.conn();
    for chunk in votes.chunks(1000) {
        let mut pipe = redis::pipe();
        for v in chunk {
            let cmd = pipe.cmd("XADD").arg("votes").arg("*");
            for (k, val) in v.to_fields() {
                cmd.arg(k).arg(val);
            }
            cmd.ignore();
        }
        pipe.query::<()>(&mut conn).expect("preload");
    }
}

/// (entries in the stream, entries pending in the group).
fn stream_state(redis: &RedisServer) -> (i64, i64) {
    let mut conn = redis.conn();
    let len: i64 = redis::cmd("XLEN")
        .arg("votes")
        .query(&mut conn)
        .unwrap_or(-1);
    let pending: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
        .arg("votes")
        .arg("workers")
        .query(&mut conn);
    let pending = match pending {
        Ok(redis::Value::Array(v)) => match v.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        },
        _ => 0,
    };
    (len, pending)
}

fn drained(redis: &[&RedisServer]) -> bool {
    redis.iter().all(|r| stream_state(r) == (0, 0))
}

/// voter -> (option, vote_id) as stored.
fn table(url: &str) -> HashMap<String, (String, String)> {
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
        return HashMap::new();
    };
    diesel::sql_query("SELECT voter_id, option, vote_id FROM votes")
        .load::<Row>(&mut conn)
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.voter_id, (r.option, r.vote_id)))
        .collect()
}

fn row_count(url: &str) -> usize {
    table(url).len()
}

/// What the table must hold: each voter's greatest (ts, vote_id).
fn expected(votes: &[Vote]) -> HashMap<String, (String, String)> {
    let mut best: HashMap<Id128, &Vote> = HashMap::new();
    for v in votes {
        let e = best.entry(v.voter).or_insert(v);
        if v.order_key() > e.order_key() {
            *e = v;
        }
    }
    best.into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                (v.option.as_str().to_owned(), v.vote_id.to_string()),
            )
        })
        .collect()
}

fn assert_exact(url: &str, votes: &[Vote]) {
    let want = expected(votes);
    let got = table(url);
    assert_eq!(got.len(), want.len(), "one row per voter");
    let wrong = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).count();
    assert_eq!(wrong, 0, "{wrong} voters have the wrong stored vote");
    let mut per_option: HashMap<String, i64> = HashMap::new();
    for (option, _) in want.values() {
        *per_option.entry(option.clone()).or_default() += 1;
    }
    per_option.retain(|_, n| *n != 0);
    assert_eq!(
        running_totals(url),
        per_option,
        "the running totals results reads equal the rows"
    );
}

/// What the results node reads: `vote_counts`, kept by triggers.
fn running_totals(url: &str) -> HashMap<String, i64> {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Total {
        #[diesel(sql_type = diesel::sql_types::Text)]
        option: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = diesel::PgConnection::establish(url).unwrap();
    diesel::sql_query(
        "SELECT option, sum(n)::bigint AS n FROM vote_counts GROUP BY option HAVING sum(n) <> 0",
    )
    .load::<Total>(&mut conn)
    .unwrap()
    .into_iter()
    .map(|t| (t.option, t.n))
    .collect()
}

/// `voters` voters, `total` votes, spread over `streams` queues, random
/// order and timestamps (a voter's votes have distinct timestamps).
fn generate(seed: u64, voters: usize, total: usize, streams: usize) -> Vec<Vec<Vote>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ids: Vec<u128> = (0..voters).map(|_| rng.random()).collect();
    let mut out = vec![Vec::new(); streams];
    for i in 0..total {
        let voter = if i < voters {
            ids[i]
        } else {
            ids[rng.random_range(0..voters)]
        };
        let option = if rng.random_bool(0.5) {
            VoteOption::A
        } else {
            VoteOption::B
        };
        let ts = 1_790_000_000_000_000 + rng.random_range(0..1_000_000_000i64);
        let s = rng.random_range(0..streams);
        out[s].push(vote(
            voter,
            option,
            ts,
            rng.random(),
            &format!("capture{s:02}"),
        ));
    }
    out
}

/// A stand-in for DNS: the test decides what it answers.
#[derive(Default)]
struct StubResolver(Mutex<Vec<String>>);

impl StubResolver {
    fn set(&self, urls: &[String]) {
        *self.0.lock().unwrap() = urls.to_vec();
    }
}

impl Resolve for StubResolver {
    fn resolve(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn settings(pg: &PgServer, mode: VoteChanges) -> WorkerSettings {
    WorkerSettings {
        database_url: Secret::new(pg.url()),
        endpoints: EndpointSource::default(),
        stream_key: "votes".into(),
        worker_id: "test-worker".into(),
        batch_size: 500,
        claim_idle: Duration::from_secs(2),
        db_pool_size: 2,
        metrics_listen: "127.0.0.1:0".into(),
        migrate: true,
        // The worker's own login may not touch the schema: migrating is
        // the migrator's.
        migrate_url: Secret::new(pg.migrator_url()),
        migrate_only: false,
        vote_changes: mode,
    }
}

/// An in-process worker whose endpoints come from a stub resolver.
struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: actix_web::rt::task::JoinHandle<()>,
    port: u16,
}

impl InProcess {
    fn start(settings: WorkerSettings, resolver: Arc<dyn Resolve>) -> InProcess {
        let worker = Worker::build_with_resolver(settings, resolver).expect("worker");
        let port = worker.port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = actix_web::rt::spawn(worker.run_until(async move {
            let _ = rx.await;
        }));
        InProcess {
            stop: Some(tx),
            done,
            port,
        }
    }

    async fn metrics(&self) -> String {
        let mut r = awc::Client::new()
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
            .send()
            .await
            .expect("metrics");
        String::from_utf8_lossy(&r.body().await.unwrap()).into_owned()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.await.unwrap();
    }
}

async fn until(cond: impl Fn() -> bool) -> bool {
    wait_until_async(DRAIN_TIMEOUT, || {
        let ok = cond();
        async move { ok }
    })
    .await
}

async fn later_vote_drained_first(mode: VoteChanges) -> HashMap<String, (String, String)> {
    let pg = PgServer::start();
    let url = pg.url();
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let voter = 0xfeed_u128;
    // The first vote was taken by capture01, the change by capture02.
    let first = vote(voter, VoteOption::A, 1_000, 1, "capture01");
    let later = vote(voter, VoteOption::B, 2_000, 2, "capture02");
    preload(&r1, std::slice::from_ref(&first));
    preload(&r2, std::slice::from_ref(&later));

    // The worker sees only capture02's queue at first: the later vote is
    // committed before the earlier one is even read.
    let resolver = Arc::new(StubResolver::default());
    resolver.set(&[r2.worker_url()]);
    let worker = InProcess::start(settings(&pg, mode), resolver.clone());
    assert!(until(|| drained(&[&r2]) && row_count(&url) == 1).await);
    assert_eq!(table(&url)[&Id128(voter).to_string()].0, "b");
    assert_eq!(
        stream_state(&r1).0,
        1,
        "capture01's queue is not drained yet"
    );

    // capture01 appears in the DNS answer: picked up without a restart.
    resolver.set(&[r1.worker_url(), r2.worker_url()]);
    assert!(
        until(|| drained(&[&r1, &r2])).await,
        "the new endpoint is drained"
    );
    let metrics = worker.metrics().await;
    assert!(metrics.contains("voteswarm_endpoints 2"), "{metrics}");
    worker.stop().await;
    table(&url)
}

#[actix_web::test]
async fn a_voters_later_vote_wins_even_when_drained_first_from_another_queue() {
    let t = later_vote_drained_first(VoteChanges::Allow).await;
    assert_eq!(t.len(), 1);
    let (option, vote_id) = t.values().next().unwrap();
    assert_eq!(option, "b");
    assert_eq!(vote_id, &Id128(2).to_string());
}

#[actix_web::test]
async fn in_deny_mode_the_first_vote_stays_whatever_the_drain_order() {
    let t = later_vote_drained_first(VoteChanges::Deny).await;
    assert_eq!(t.values().next().unwrap().0, "a");
}

#[actix_web::test]
async fn replaying_the_same_entries_changes_nothing() {
    let pg = PgServer::start();
    let url = pg.url();
    let redis = RedisServer::start();
    let votes = generate(7, 300, 1000, 1).remove(0);
    preload(&redis, &votes);
    let resolver = Arc::new(StubResolver::default());
    resolver.set(&[redis.worker_url()]);
    let worker = InProcess::start(settings(&pg, VoteChanges::Allow), resolver);
    assert!(until(|| drained(&[&redis]) && row_count(&url) == 300).await);
    let snapshot = committed_at(&url);

    // A redelivery: the same entries, in reverse order this time.
    let mut replay = votes.clone();
    replay.reverse();
    preload(&redis, &replay);
    assert!(until(|| drained(&[&redis])).await);
    worker.stop().await;
    assert_exact(&url, &votes);
    assert_eq!(committed_at(&url), snapshot, "no row was even rewritten");
}

fn committed_at(url: &str) -> Vec<(String, String)> {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        voter_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        at: String,
    }
    let mut conn = diesel::PgConnection::establish(url).unwrap();
    diesel::sql_query("SELECT voter_id, committed_at::text AS at FROM votes ORDER BY voter_id")
        .load::<Row>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|r| (r.voter_id, r.at))
        .collect()
}

#[actix_web::test]
async fn a_batch_holding_one_voter_many_times_commits() {
    let pg = PgServer::start();
    let url = pg.url();
    let redis = RedisServer::start();
    let mut votes: Vec<Vote> = (0..50)
        .map(|i| {
            let o = if i % 2 == 0 {
                VoteOption::A
            } else {
                VoteOption::B
            };
            vote(42, o, 1_000 + i, 100 + i as u128, "capture01")
        })
        .collect();
    votes.reverse();
    votes.swap(3, 17);
    preload(&redis, &votes);
    let resolver = Arc::new(StubResolver::default());
    resolver.set(&[redis.worker_url()]);
    // One batch holds all 50.
    let worker = InProcess::start(settings(&pg, VoteChanges::Allow), resolver);
    assert!(until(|| drained(&[&redis]) && row_count(&url) == 1).await);
    let metrics = worker.metrics().await;
    worker.stop().await;
    assert_exact(&url, &votes);
    assert!(
        metrics.contains("voteswarm_commit_errors_total 0"),
        "{metrics}"
    );
}

/// The worker reads on a connection of its own (`src/xread.rs`), not
/// redis-rs's: it must log in and choose the database as the URL says.
#[actix_web::test]
async fn a_queue_behind_a_login_in_another_database_is_drained() {
    let pg = PgServer::start();
    let url = pg.url();
    // Without logging in, a client may only PING (which the harness uses to
    // see the server up): every command of the worker's needs the login.
    let redis = RedisServer::start_with(&[
        "--user", "default", "on", "nopass", "~*", "&*", "-@all", "+ping", "--user", "drainer",
        "on", ">s3cret", "~*", "&*", "+@all",
    ]);
    let queue = redis
        .anonymous_url()
        .replace("redis://", "redis://drainer:s3cret@")
        .trim_end_matches('/')
        .to_owned()
        + "/3";
    let mut conn = redis::Client::open(queue.as_str())
        .unwrap()
        .get_connection()
        .expect("log in as drainer");
    let votes = generate(11, 400, 1000, 1).remove(0);
    for v in &votes {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("votes").arg("*");
        for (k, val) in v.to_fields() {
            cmd.arg(k).arg(val);
        }
        cmd.query::<String>(&mut conn).expect("XADD");
    }
    let unauthenticated: redis::RedisResult<i64> =
        redis::cmd("XLEN").arg("votes").query(&mut redis.conn());
    assert!(unauthenticated.is_err(), "the default user cannot read");

    let resolver = Arc::new(StubResolver::default());
    resolver.set(std::slice::from_ref(&queue));
    let worker = InProcess::start(settings(&pg, VoteChanges::Allow), resolver);
    let conn = std::cell::RefCell::new(conn);
    let left = || -> i64 {
        let mut c = conn.borrow_mut();
        redis::cmd("XLEN").arg("votes").query(&mut *c).unwrap_or(-1)
    };
    assert!(until(|| left() == 0 && row_count(&url) == 400).await);
    let mut conn = conn.into_inner();
    worker.stop().await;
    assert_exact(&url, &votes);
    // Database 0 never held the queue: SELECT took effect.
    redis::cmd("SELECT").arg(0).query::<()>(&mut conn).unwrap();
    assert_eq!(
        redis::cmd("EXISTS")
            .arg("votes")
            .query::<i64>(&mut conn)
            .unwrap(),
        0
    );
}

#[actix_web::test]
async fn a_malformed_entry_goes_to_the_dead_letter_stream_and_the_worker_goes_on() {
    let pg = PgServer::start();
    let url = pg.url();
    let redis = RedisServer::start();
    let good = generate(3, 20, 20, 1).remove(0);
    preload(&redis, &good[..10]);
    let mut conn = redis.conn();
    let huge = "x".repeat(100_000);
    let poison: Vec<Vec<(&str, &str)>> = vec![
        vec![("hello", "world")],
        vec![
            ("id", "1"),
            ("voter", "2"),
            ("option", "a"),
            ("ts", "3"),
            ("node", "n"),
        ],
        vec![
            ("id", "0000000000000000000000000000000a"),
            ("voter", "0000000000000000000000000000000b"),
            ("option", "c"),
            ("ts", "5"),
            ("node", "n"),
        ],
        vec![
            ("id", "0000000000000000000000000000000a"),
            ("voter", "0000000000000000000000000000000b"),
            ("option", "a"),
            ("ts", "5"),
            ("node", &huge),
        ],
        vec![
            ("id", "0000000000000000000000000000000a"),
            ("voter", "0000000000000000000000000000000b"),
            ("option", "a"),
            ("ts", "5"),
            ("node", "nul\0byte"),
        ],
    ];
    for fields in &poison {
        let mut cmd = redis::cmd("XADD");
        cmd.arg("votes").arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        let _: String = cmd.query(&mut conn).unwrap();
    }
    preload(&redis, &good[10..]);
    let resolver = Arc::new(StubResolver::default());
    resolver.set(&[redis.worker_url()]);
    let worker = InProcess::start(settings(&pg, VoteChanges::Allow), resolver);
    assert!(until(|| drained(&[&redis]) && row_count(&url) == 20).await);
    worker.stop().await;
    assert_exact(&url, &good);
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("votes:dead")
        .arg("-")
        .arg("+")
        .query(&mut conn)
        .unwrap();
    assert_eq!(dead.ids.len(), poison.len());
    for e in &dead.ids {
        let reason: String = e.get("reason").expect("a reason");
        assert!(!reason.is_empty());
        let source: String = e.get("source_id").expect("the source id");
        assert!(source.contains('-'));
        for (k, v) in &e.map {
            let v: Vec<u8> = redis::from_redis_value_ref(v).unwrap();
            assert!(v.len() <= 1024, "{k} is cut to 1 KiB");
        }
    }
}

/// A worker process.
struct Proc(Child);

impl Proc {
    fn start(db: &str, redis: &[&RedisServer], id: &str, claim_idle_ms: u64) -> (Proc, u16) {
        let port = free_port();
        let urls: Vec<String> = redis.iter().map(|r| r.worker_url()).collect();
        let child = Command::new(WORKER)
            .env_clear()
            .env("DATABASE_URL", db)
            .env("REDIS_URLS", urls.join(","))
            .env("WORKER_ID", id)
            .env("CLAIM_IDLE_MS", claim_idle_ms.to_string())
            .env("BATCH_SIZE", "1000")
            .env("METRICS_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // Migrated already, by the test as the migrator: the worker's
            // own login may not touch the schema.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // VOTESWARM_TEST_LOGS=1 shows the workers' logs.
            .stderr(if std::env::var_os("VOTESWARM_TEST_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start worker");
        (Proc(child), port)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Entries pending for one consumer, in one stream.
fn pending_of(redis: &RedisServer, consumer: &str) -> i64 {
    let mut conn = redis.conn();
    let reply: redis::RedisResult<Vec<(String, String)>> = redis::cmd("XPENDING")
        .arg("votes")
        .arg("workers")
        .query(&mut conn)
        .map(|v: redis::Value| match v {
            redis::Value::Array(parts) => match parts.get(3) {
                Some(redis::Value::Array(cs)) => cs
                    .iter()
                    .filter_map(|c| redis::from_redis_value_ref::<(String, String)>(c).ok())
                    .collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        });
    reply
        .unwrap_or_default()
        .into_iter()
        .find(|(c, _)| c == consumer)
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn two_worker_processes_drain_100000_votes_from_60000_voters_across_3_queues_exactly() {
    let pg = PgServer::start();
    let url = pg.migrated_url();
    let redis: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let streams = generate(11, 60_000, 100_000, 3);
    for (r, votes) in redis.iter().zip(&streams) {
        preload(r, votes);
    }
    let refs: Vec<&RedisServer> = redis.iter().collect();
    let _a = Proc::start(&url, &refs, "worker-a", 30_000);
    let _b = Proc::start(&url, &refs, "worker-b", 30_000);
    let done = wait_until(DRAIN_TIMEOUT, || drained(&refs));
    let states: Vec<_> = refs.iter().map(|r| stream_state(r)).collect();
    assert!(
        done,
        "not drained in time: (length, pending) {states:?}, {} rows",
        row_count(&url)
    );
    let all: Vec<Vote> = streams.concat();
    assert!(wait_until(Duration::from_secs(10), || row_count(&url) == 60_000));
    assert_exact(&url, &all);
}

#[test]
fn a_worker_killed_mid_drain_has_its_entries_claimed_and_the_count_stays_exact() {
    let pg = PgServer::start();
    let url = pg.migrated_url();
    let redis: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let streams = generate(13, 60_000, 100_000, 3);
    for (r, votes) in redis.iter().zip(&streams) {
        preload(r, votes);
    }
    let refs: Vec<&RedisServer> = redis.iter().collect();
    let (mut a, _) = Proc::start(&url, &refs, "worker-a", 2_000);
    // Kill A while it holds entries it has not acknowledged.
    let holding = wait_until(DRAIN_TIMEOUT, || pending_of(&redis[0], "worker-a") > 0);
    assert!(holding, "worker-a never held a batch");
    signal(a.0.id(), libc::SIGKILL);
    let _ = a.0.wait();
    assert!(pending_of(&redis[0], "worker-a") > 0 || drained(&refs));
    let (_b, b_port) = Proc::start(&url, &refs, "worker-b", 2_000);
    assert!(
        wait_until(DRAIN_TIMEOUT, || drained(&refs)),
        "not drained in time"
    );
    assert!(wait_until(Duration::from_secs(10), || row_count(&url) == 60_000));
    assert_exact(&url, &streams.concat());
    let metrics = http_get(b_port, "/metrics");
    let claimed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("voteswarm_claimed_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        claimed > 0.0,
        "worker-b claimed worker-a's entries:\n{metrics}"
    );
}

#[test]
fn with_postgres_stopped_nothing_is_acknowledged_and_the_count_ends_exact() {
    let mut pg = PgServer::start();
    let url = pg.migrated_url();
    let redis = RedisServer::start();
    let votes = generate(17, 40_000, 60_000, 1).remove(0);
    preload(&redis, &votes);
    let (_w, port) = Proc::start(&url, &[&redis], "worker-pg", 30_000);
    assert!(
        wait_until(DRAIN_TIMEOUT, || row_count(&url) > 1_000),
        "no progress"
    );
    pg.stop();
    // Wait until commits fail and the drainer holds its batches.
    let failing = wait_until(Duration::from_secs(30), || {
        metric(&http_get(port, "/metrics"), "voteswarm_commit_errors_total") >= 3
    });
    assert!(failing, "commits did not fail while PostgreSQL was down");
    let held = stream_state(&redis).0;
    assert!(held > 0, "the stream was drained before the outage");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        assert_eq!(
            stream_state(&redis).0,
            held,
            "an entry was acknowledged while PostgreSQL was down"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pg.restart();
    assert!(
        wait_until(DRAIN_TIMEOUT, || drained(&[&redis])),
        "not drained after the outage"
    );
    assert!(wait_until(Duration::from_secs(10), || row_count(&url) == 40_000));
    assert_exact(&url, &votes);
}

fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).filter(|r| r.starts_with(' ')))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as i64
}

#[test]
fn an_unreachable_queue_does_not_stall_the_others_and_is_drained_when_back() {
    let pg = PgServer::start();
    let url = pg.migrated_url();
    let up = RedisServer::start();
    // `always`: this queue is SIGKILLed right after the preload. Under
    // `everysec` Redis may hold acknowledged writes in memory for up to 2 s
    // while an earlier fsync is still running (a busy disk: the other tests'
    // servers), and the kill then loses the tail of the preload, which this
    // test, about reachability, would report as wrongly stored votes (seen
    // in a clean-clone `make test`: 160 of 2,000 voters).
    let mut down = RedisServer::start_with(&["--appendfsync", "always"]);
    let streams = generate(19, 2_000, 4_000, 2);
    preload(&up, &streams[0]);
    preload(&down, &streams[1]);
    down.stop();
    let (_w, _) = Proc::start(&url, &[&up, &down], "worker-x", 30_000);
    assert!(
        wait_until(DRAIN_TIMEOUT, || drained(&[&up])),
        "the healthy queue was not drained"
    );
    assert!(row_count(&url) > 0);
    down.restart();
    assert!(
        wait_until(DRAIN_TIMEOUT, || drained(&[&up, &down])),
        "the returning queue was not drained"
    );
    assert!(wait_until(Duration::from_secs(10), || row_count(&url)
        == expected(&streams.concat()).len()));
    assert_exact(&url, &streams.concat());
}

#[test]
fn on_sigterm_a_worker_finishes_its_batches_and_exits_0() {
    let pg = PgServer::start();
    let url = pg.migrated_url();
    let redis = RedisServer::start();
    let votes = generate(23, 30_000, 50_000, 1).remove(0);
    preload(&redis, &votes);
    let (mut w, _) = Proc::start(&url, &[&redis], "worker-t", 30_000);
    assert!(
        wait_until(DRAIN_TIMEOUT, || row_count(&url) > 1_000),
        "no progress"
    );
    signal(w.0.id(), libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(40), || matches!(
        w.0.try_wait(),
        Ok(Some(_))
    )));
    assert_eq!(w.0.wait().unwrap().code(), Some(0));
    // Every acknowledged entry is committed: a second worker finishing the
    // rest ends exact, and nothing the first one held is lost.
    let (_w2, _) = Proc::start(&url, &[&redis], "worker-t", 30_000);
    assert!(wait_until(DRAIN_TIMEOUT, || drained(&[&redis])));
    assert!(wait_until(Duration::from_secs(10), || row_count(&url) == 30_000));
    assert_exact(&url, &votes);
}

#[test]
fn the_down_migration_really_undoes_the_up_one() {
    use diesel::{Connection, RunQueryDsl};
    use diesel_migrations::MigrationHarness;
    #[derive(diesel::QueryableByName)]
    struct Present {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        present: bool,
    }
    let present = |conn: &mut diesel::PgConnection, name: &str| {
        diesel::sql_query(format!(
            "SELECT to_regclass('{name}') IS NOT NULL AS present"
        ))
        .get_result::<Present>(conn)
        .unwrap()
        .present
    };
    let pg = PgServer::start();
    pg.migrated_url();
    // The schema is the migrator's: only it may take it down.
    let url = pg.migrator_url();
    let mut conn = diesel::PgConnection::establish(&url).unwrap();
    let up = |conn: &mut diesel::PgConnection| {
        present(conn, "votes") && present(conn, "vote_counts") && !present(conn, "votes_option_idx")
    };
    assert!(up(&mut conn));
    // Down two (the roles' grants, then the running totals): the totals
    // go and the first schema's index is back.
    conn.revert_last_migration(voteswarm::db::MIGRATIONS)
        .expect("down the grants");
    conn.revert_last_migration(voteswarm::db::MIGRATIONS)
        .expect("down one");
    assert!(
        !present(&mut conn, "vote_counts"),
        "the totals table is dropped"
    );
    assert!(present(&mut conn, "votes_option_idx"), "the index is back");
    conn.revert_all_migrations(voteswarm::db::MIGRATIONS)
        .expect("down");
    assert!(!present(&mut conn, "votes"), "the table is dropped");
    assert!(
        !present(&mut conn, "votes_option_idx"),
        "the index is dropped"
    );
    // And up again, as `diesel migration redo` does.
    voteswarm::db::migrate(&url).expect("up again");
    assert!(up(&mut conn));
}

#[test]
fn the_running_totals_start_from_the_votes_a_live_poll_already_holds_and_follow_every_change() {
    use diesel::{Connection, RunQueryDsl};
    use diesel_migrations::MigrationHarness;
    let pg = PgServer::start();
    // The worker's login reads and commits; the migrator (the owner)
    // changes the schema and deletes.
    let url = pg.migrated_url();
    let mut conn = diesel::PgConnection::establish(&pg.migrator_url()).unwrap();
    // A database from before the totals: votes already in it.
    conn.revert_last_migration(voteswarm::db::MIGRATIONS)
        .expect("down the grants");
    conn.revert_last_migration(voteswarm::db::MIGRATIONS)
        .expect("down one");
    let row = |voter: u128, option: &str, ts: i64| {
        format!(
            "('{}', '{option}', {ts}, '{}', 'n1')",
            Id128(voter),
            Id128(voter + 1_000)
        )
    };
    let rows = [row(1, "a", 1), row(2, "a", 1), row(3, "b", 1)].join(",");
    diesel::sql_query(format!(
        "INSERT INTO votes (voter_id, option, ts, vote_id, node) VALUES {rows}"
    ))
    .execute(&mut conn)
    .unwrap();
    voteswarm::db::migrate(&pg.migrator_url()).expect("up");
    let want = |pairs: &[(&str, i64)]| {
        pairs
            .iter()
            .map(|(o, n)| (o.to_string(), *n))
            .collect::<HashMap<_, _>>()
    };
    assert_eq!(running_totals(&url), want(&[("a", 2), ("b", 1)]));

    // The workers' upsert: a new voter, a changed vote, a stale one ignored.
    let batch = vec![
        vote(4, VoteOption::B, 5, 40, "n1"),
        vote(1, VoteOption::B, 5, 41, "n1"),
        vote(2, VoteOption::B, 1, 42, "n1"),
    ];
    let mut pg_conn = diesel::PgConnection::establish(&url).unwrap();
    voteswarm::db::commit_votes(&mut pg_conn, &batch, VoteChanges::Allow).unwrap();
    assert_eq!(running_totals(&url), want(&[("a", 1), ("b", 3)]));

    diesel::sql_query(format!("DELETE FROM votes WHERE voter_id = '{}'", Id128(3)))
        .execute(&mut conn)
        .unwrap();
    assert_eq!(running_totals(&url), want(&[("a", 1), ("b", 2)]));
    diesel::sql_query("TRUNCATE votes")
        .execute(&mut conn)
        .unwrap();
    assert_eq!(running_totals(&url), HashMap::new());
}

async fn readyz_status(port: u16) -> u16 {
    match awc::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Polls /readyz until it answers `status`.
async fn readyz_becomes(port: u16, status: u16) -> bool {
    wait_until_async(DRAIN_TIMEOUT, || async move {
        readyz_status(port).await == status
    })
    .await
}

#[actix_web::test]
async fn readyz_holds_only_while_postgresql_answers_and_a_queue_is_drained() {
    let mut pg = PgServer::start();
    let redis = RedisServer::start();
    let resolver = Arc::new(StubResolver::default());
    // No queue known yet: not ready.
    let worker = InProcess::start(settings(&pg, VoteChanges::Allow), resolver.clone());
    assert_eq!(readyz_status(worker.port).await, 503);
    resolver.set(&[redis.worker_url()]);
    assert!(
        readyz_becomes(worker.port, 200).await,
        "ready once a queue is drained and PostgreSQL answers"
    );
    pg.stop();
    assert!(
        readyz_becomes(worker.port, 503).await,
        "not ready while PostgreSQL is down"
    );
    pg.restart();
    assert!(
        readyz_becomes(worker.port, 200).await,
        "ready again once PostgreSQL is back"
    );
    worker.stop().await;
}

/// Runs the worker binary with only `env`; (exit code, stderr).
fn worker_fails_with(env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(WORKER)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run worker");
    let stderr = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

#[test]
fn bad_configuration_stops_the_worker_with_one_line_naming_the_variable() {
    let db = ("DATABASE_URL", "postgres://u:s3cret@127.0.0.1:1/db");
    let redis = ("REDIS_URLS", "redis://127.0.0.1:1");
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![redis], "DATABASE_URL"),
        (
            vec![("DATABASE_URL", "mysql://s3cret@x/db"), redis],
            "DATABASE_URL",
        ),
        (
            vec![("DATABASE_URL_FILE", "/nonexistent/secret"), redis],
            "DATABASE_URL_FILE",
        ),
        (vec![db], "REDIS_URLS or REDIS_DNS"),
        (vec![db, ("REDIS_DNS", "no-port")], "REDIS_DNS"),
        (vec![db, redis, ("BATCH_SIZE", "0")], "BATCH_SIZE"),
        (vec![db, redis, ("CLAIM_IDLE_MS", "5")], "CLAIM_IDLE_MS"),
        (vec![db, redis, ("DB_POOL_SIZE", "0")], "DB_POOL_SIZE"),
    ];
    for (env, names) in cases {
        let (code, err) = worker_fails_with(&env);
        assert_eq!(code, 2, "{env:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{env:?}: {err}");
        assert!(err.contains(names), "{env:?}: {err}");
        assert!(!err.contains("s3cret"), "the secret is not printed: {err}");
    }
}
