//! The worker tier against real PostgreSQL and real Redis: ordering across
//! queues, idempotent replays, exact counts under load, crashes and outages.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::cluster_proc::stored_votes;
use common::process::{clean_command, exit_and_stderr};
use common::redis_server::xadd;
use common::worker_node::{settings, StubResolver, WorkerProcess};
use common::{bin, http, spawn_worker, wait_until, PgServer, RedisServer};
use rand::{Rng, SeedableRng};
use voteswarm::config::VoteChanges;
use voteswarm::vote::{Id128, Vote, VoteOption};

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

fn row_count(url: &str) -> usize {
    stored_votes(url).len()
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
    let got = stored_votes(url);
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

/// Polls `cond` until [`DRAIN_TIMEOUT`].
fn until(cond: impl FnMut() -> bool) -> bool {
    wait_until(DRAIN_TIMEOUT, cond)
}

fn later_vote_drained_first(mode: VoteChanges) -> HashMap<String, (String, String)> {
    let pg = PgServer::start();
    let url = pg.url();
    let (r1, r2) = (RedisServer::start(), RedisServer::start());
    let voter = 0xfeed_u128;
    // The first vote was taken by capture01, the change by capture02.
    let first = vote(voter, VoteOption::A, 1_000, 1, "capture01");
    let later = vote(voter, VoteOption::B, 2_000, 2, "capture02");
    r1.preload(std::slice::from_ref(&first));
    r2.preload(std::slice::from_ref(&later));

    // The worker sees only capture02's queue at first: the later vote is
    // committed before the earlier one is even read.
    let resolver = Arc::new(StubResolver::default());
    resolver.set(&[r2.worker_url()]);
    let worker = spawn_worker(settings(&pg, mode), resolver.clone());
    assert!(until(|| drained(&[&r2]) && row_count(&url) == 1));
    assert_eq!(stored_votes(&url)[&Id128(voter).to_string()].0, "b");
    assert_eq!(
        stream_state(&r1).0,
        1,
        "capture01's queue is not drained yet"
    );

    // capture01 appears in the DNS answer: picked up without a restart.
    resolver.set(&[r1.worker_url(), r2.worker_url()]);
    assert!(
        until(|| drained(&[&r1, &r2])),
        "the new endpoint is drained"
    );
    let metrics = worker.metrics();
    assert!(metrics.contains("voteswarm_endpoints 2"), "{metrics}");
    worker.stop();
    stored_votes(&url)
}

#[test]
fn a_voters_later_vote_wins_even_when_drained_first_from_another_queue() {
    let t = later_vote_drained_first(VoteChanges::Allow);
    assert_eq!(t.len(), 1);
    let (option, vote_id) = t.values().next().unwrap();
    assert_eq!(option, "b");
    assert_eq!(vote_id, &Id128(2).to_string());
}

#[test]
fn in_deny_mode_the_first_vote_stays_whatever_the_drain_order() {
    let t = later_vote_drained_first(VoteChanges::Deny);
    assert_eq!(t.values().next().unwrap().0, "a");
}

#[test]
fn replaying_the_same_entries_changes_nothing() {
    let pg = PgServer::start();
    let url = pg.url();
    let (redis, votes) = one_queue(7, 300, 1000);
    let resolver = Arc::new(StubResolver::default());
    resolver.set(&[redis.worker_url()]);
    let worker = spawn_worker(settings(&pg, VoteChanges::Allow), resolver);
    assert!(until(|| drained(&[&redis]) && row_count(&url) == 300));
    let snapshot = committed_at(&url);

    // A redelivery: the same entries, in reverse order this time.
    let mut replay = votes.clone();
    replay.reverse();
    redis.preload(&replay);
    assert!(until(|| drained(&[&redis])));
    worker.stop();
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

#[test]
fn a_batch_holding_one_voter_many_times_commits() {
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
    redis.preload(&votes);
    let resolver = Arc::new(StubResolver::default());
    resolver.set(&[redis.worker_url()]);
    // One batch holds all 50.
    let worker = spawn_worker(settings(&pg, VoteChanges::Allow), resolver);
    assert!(until(|| drained(&[&redis]) && row_count(&url) == 1));
    let metrics = worker.metrics();
    worker.stop();
    assert_exact(&url, &votes);
    assert!(
        metrics.contains("voteswarm_commit_errors_total 0"),
        "{metrics}"
    );
}

/// The worker reads on a connection of its own (`src/queue/reader.rs`), not
/// redis-rs's: it must log in and choose the database as the URL says.
#[test]
fn a_queue_behind_a_login_in_another_database_is_drained() {
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
        xadd(v).query::<String>(&mut conn).expect("XADD");
    }
    let unauthenticated: redis::RedisResult<i64> =
        redis::cmd("XLEN").arg("votes").query(&mut redis.conn());
    assert!(unauthenticated.is_err(), "the default user cannot read");

    let resolver = Arc::new(StubResolver::default());
    resolver.set(std::slice::from_ref(&queue));
    let worker = spawn_worker(settings(&pg, VoteChanges::Allow), resolver);
    let conn = std::cell::RefCell::new(conn);
    let left = || -> i64 {
        let mut c = conn.borrow_mut();
        redis::cmd("XLEN").arg("votes").query(&mut *c).unwrap_or(-1)
    };
    assert!(until(|| left() == 0 && row_count(&url) == 400));
    let mut conn = conn.into_inner();
    worker.stop();
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

#[test]
fn an_entry_stamped_at_or_after_the_close_or_past_the_polls_letters_is_dead_lettered_not_counted() {
    let pg = PgServer::start();
    let url = pg.url();
    let redis = RedisServer::start();
    let closes = chrono::Utc::now() - chrono::Duration::hours(1);
    let close_us = closes.timestamp_micros();
    // Written to the stream by hand, as if a capture node's clock (or a
    // forged write) had let them through.
    let counted = vec![
        vote(1, VoteOption::A, close_us - 2, 101, "n1"),
        vote(2, VoteOption::C, close_us - 1, 102, "n1"),
    ];
    let late = [
        vote(3, VoteOption::B, close_us, 103, "n1"),
        vote(4, VoteOption::A, close_us + 1, 104, "n2"),
        // A counted voter's change after the close: the earlier vote stands.
        vote(1, VoteOption::B, close_us + 5, 105, "n2"),
    ];
    let unknown = vote(5, VoteOption::D, close_us - 1, 106, "n1");
    redis.preload(&[
        counted[0].clone(),
        late[0].clone(),
        unknown.clone(),
        counted[1].clone(),
        late[1].clone(),
        late[2].clone(),
    ]);
    let mut s = settings(&pg, VoteChanges::Allow);
    s.poll.options = ["Tea", "Coffee", "Water"].map(String::from).to_vec();
    s.poll.closes = Some(closes);
    let resolver = Arc::new(StubResolver::default());
    resolver.set(&[redis.worker_url()]);
    let worker = spawn_worker(s, resolver);
    assert!(until(|| drained(&[&redis]) && row_count(&url) == 2));
    worker.stop();
    assert_exact(&url, &counted);
    assert_eq!(
        running_totals(&url),
        HashMap::from([("a".to_string(), 1), ("c".to_string(), 1)])
    );
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("votes:dead")
        .arg("-")
        .arg("+")
        .query(&mut redis.conn())
        .unwrap();
    let mut reasons: Vec<(String, String)> = dead
        .ids
        .iter()
        .map(|e| {
            let id: String = e.get("f:id").expect("the entry's id");
            let reason: String = e.get("reason").expect("a reason");
            (id, reason)
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for (id, reason) in &reasons {
        let want = if *id == Id128(106).to_string() {
            "bad_option: option `d`"
        } else {
            "poll_closed: "
        };
        assert!(reason.starts_with(want), "{id}: {reason}");
    }
}

#[test]
fn a_malformed_entry_goes_to_the_dead_letter_stream_and_the_worker_goes_on() {
    let pg = PgServer::start();
    let url = pg.url();
    let redis = RedisServer::start();
    let good = generate(3, 20, 20, 1).remove(0);
    redis.preload(&good[..10]);
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
    redis.preload(&good[10..]);
    let resolver = Arc::new(StubResolver::default());
    resolver.set(&[redis.worker_url()]);
    let worker = spawn_worker(settings(&pg, VoteChanges::Allow), resolver);
    assert!(until(|| drained(&[&redis]) && row_count(&url) == 20));
    worker.stop();
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

/// `queues` queues holding `generate`'s votes, preloaded.
fn preloaded(
    seed: u64,
    voters: usize,
    total: usize,
    queues: usize,
) -> Vec<(RedisServer, Vec<Vote>)> {
    let streams = generate(seed, voters, total, queues);
    streams
        .into_iter()
        .map(|votes| {
            let redis = RedisServer::start();
            redis.preload(&votes);
            (redis, votes)
        })
        .collect()
}

/// Three queues holding 100,000 votes of 60,000 voters.
fn three_queues(seed: u64) -> (Vec<RedisServer>, Vec<Vec<Vote>>) {
    preloaded(seed, 60_000, 100_000, 3).into_iter().unzip()
}

/// One queue holding `total` votes of `voters` voters.
fn one_queue(seed: u64, voters: usize, total: usize) -> (RedisServer, Vec<Vote>) {
    preloaded(seed, voters, total, 1).remove(0)
}

#[test]
fn two_worker_processes_drain_100000_votes_from_60000_voters_across_3_queues_exactly() {
    let pg = PgServer::start();
    let url = pg.migrated_url();
    let (redis, streams) = three_queues(11);
    let refs: Vec<&RedisServer> = redis.iter().collect();
    let _a = WorkerProcess::start(&url, &refs, "worker-a", 30_000);
    let _b = WorkerProcess::start(&url, &refs, "worker-b", 30_000);
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
    let (redis, streams) = three_queues(13);
    let refs: Vec<&RedisServer> = redis.iter().collect();
    let mut a = WorkerProcess::start(&url, &refs, "worker-a", 2_000);
    // Kill A while it holds entries it has not acknowledged.
    let holding = wait_until(DRAIN_TIMEOUT, || pending_of(&redis[0], "worker-a") > 0);
    assert!(holding, "worker-a never held a batch");
    a.proc.kill();
    assert!(pending_of(&redis[0], "worker-a") > 0 || drained(&refs));
    let b = WorkerProcess::start(&url, &refs, "worker-b", 2_000);
    assert!(
        wait_until(DRAIN_TIMEOUT, || drained(&refs)),
        "not drained in time"
    );
    assert!(wait_until(Duration::from_secs(10), || row_count(&url) == 60_000));
    assert_exact(&url, &streams.concat());
    let metrics = http::metrics(b.port);
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
    let (redis, votes) = one_queue(17, 40_000, 60_000);
    let w = WorkerProcess::start(&url, &[&redis], "worker-pg", 30_000);
    assert!(
        wait_until(DRAIN_TIMEOUT, || row_count(&url) > 1_000),
        "no progress"
    );
    pg.stop();
    // Wait until commits fail and the drainer holds its batches.
    let failing = wait_until(Duration::from_secs(30), || {
        http::metric(&http::metrics(w.port), "voteswarm_commit_errors_total") >= 3
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
    up.preload(&streams[0]);
    down.preload(&streams[1]);
    down.stop();
    let _w = WorkerProcess::start(&url, &[&up, &down], "worker-x", 30_000);
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

/// `XINFO GROUPS` names the workers' group: the group state reached the
/// replica with the entries.
fn has_group(redis: &RedisServer) -> bool {
    let groups: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("votes")
        .query(&mut redis.conn());
    format!("{groups:?}").contains("workers")
}

#[test]
fn a_replica_in_the_list_stands_by_quietly_and_is_drained_once_promoted() {
    let pg = PgServer::start();
    let url = pg.url();
    let mut primary = RedisServer::start_with(&["--appendfsync", "always"]);
    let replica = RedisServer::start_replica_of(&primary);
    let streams = generate(29, 1_000, 3_000, 2);
    primary.preload(&streams[0]);
    let resolver = Arc::new(StubResolver::default());
    resolver.set(&[primary.worker_url(), replica.worker_url()]);
    let worker = spawn_worker(settings(&pg, VoteChanges::Allow), resolver);

    // The primary is drained; the replica follows it (the group, the
    // acknowledgements and deletions replicate) and is never drained
    // itself: no drained or dead-lettered entry, no claim, no error.
    assert!(until(
        || drained(&[&primary]) && row_count(&url) == expected(&streams[0]).len()
    ));
    assert!(until(|| drained(&[&replica])), "the replica follows");
    assert!(has_group(&replica));
    let standby = format!(":{}", replica.port);
    let metrics = worker.metrics();
    assert_endpoints(&metrics, 1, 1);
    let about_replica: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(&standby))
        .collect();
    assert!(
        about_replica.is_empty(),
        "nothing drained, claimed or dead-lettered from the replica: {about_replica:?}"
    );
    assert_eq!(http::metric(&metrics, "voteswarm_commit_errors_total"), 0);
    assert_eq!(http::status(worker.port, "/readyz"), Some(200));

    // The primary's host is lost; the replica is promoted and takes the
    // votes from then on: the same worker drains it, without a restart.
    primary.stop();
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query::<()>(&mut replica.conn())
        .expect("REPLICAOF NO ONE");
    replica.preload(&streams[1]);
    let all = streams.concat();
    assert!(
        until(|| drained(&[&replica]) && row_count(&url) == expected(&all).len()),
        "the promoted replica was not drained: {:?}",
        stream_state(&replica)
    );
    let metrics = worker.metrics();
    assert_endpoints(&metrics, 1, 0);
    assert_eq!(http::status(worker.port, "/readyz"), Some(200));
    worker.stop();
    assert_exact(&url, &all);
}

/// The drainers' link gauges: queues drained, replicas standing by.
fn assert_endpoints(metrics: &str, up: i64, standby: i64) {
    let got = (
        http::metric(metrics, "voteswarm_endpoints_up"),
        http::metric(metrics, "voteswarm_endpoints_standby"),
    );
    assert_eq!(got, (up, standby), "(up, standby):\n{metrics}");
}

#[test]
fn on_sigterm_a_worker_finishes_its_batches_and_exits_0() {
    let pg = PgServer::start();
    let url = pg.migrated_url();
    let (redis, votes) = one_queue(23, 30_000, 50_000);
    let mut w = WorkerProcess::start(&url, &[&redis], "worker-t", 30_000);
    assert!(
        wait_until(DRAIN_TIMEOUT, || row_count(&url) > 1_000),
        "no progress"
    );
    w.proc.signal(libc::SIGTERM);
    let exit = w.proc.wait_exit(Duration::from_secs(40));
    assert!(exit.is_some());
    assert_eq!(exit.unwrap().code(), Some(0));
    // Every acknowledged entry is committed: a second worker finishing the
    // rest ends exact, and nothing the first one held is lost.
    let _w2 = WorkerProcess::start(&url, &[&redis], "worker-t", 30_000);
    assert!(wait_until(DRAIN_TIMEOUT, || drained(&[&redis])));
    assert!(wait_until(Duration::from_secs(10), || row_count(&url) == 30_000));
    assert_exact(&url, &votes);
}

/// The first schema's version (`migrations/2026-11-26-000001_create_votes`).
const FIRST_SCHEMA: &str = "20261126000001";

/// Reverts the migrations after `version`, however many there are by now,
/// so that a test of one step does not break when a later one is added.
fn revert_to(conn: &mut diesel::PgConnection, version: &str) {
    use diesel_migrations::MigrationHarness;
    loop {
        let applied = conn.applied_migrations().expect("applied migrations");
        let last = applied.iter().map(|v| v.to_string()).max();
        assert!(last.is_some(), "{version} is not applied");
        if last.as_deref() == Some(version) {
            return;
        }
        conn.revert_last_migration(voteswarm::db::MIGRATIONS)
            .unwrap_or_else(|e| panic!("down from {last:?} toward {version}: {e}"));
    }
}

/// Each row `query` returns, as its one text column `r`.
fn text_rows(conn: &mut diesel::PgConnection, query: &str) -> Vec<String> {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        r: String,
    }
    diesel::sql_query(query)
        .load::<Row>(conn)
        .expect(query)
        .into_iter()
        .map(|row| row.r)
        .collect()
}

#[test]
fn widening_the_options_to_twelve_keeps_a_two_option_polls_votes_and_totals_exactly() {
    use diesel::{Connection, RunQueryDsl};
    use diesel_migrations::MigrationHarness;
    let pg = PgServer::start();
    let url = pg.migrated_url();
    let mut owner = diesel::PgConnection::establish(&pg.migrator_url()).unwrap();
    // Just before the widening (`2026-12-02-000001_poll_options`).
    revert_to(&mut owner, "20261201000001");
    // A live two-option poll, written the way workers write it: new voters
    // through two sessions (so the totals have rows per backend) and
    // changed votes, one each way.
    let mut worker = diesel::PgConnection::establish(&url).unwrap();
    let mut other = diesel::PgConnection::establish(&url).unwrap();
    let first: Vec<Vote> = (1..=40)
        .map(|v| {
            let option = if v % 3 == 0 {
                VoteOption::B
            } else {
                VoteOption::A
            };
            vote(v, option, 10, 1_000 + v, "n1")
        })
        .collect();
    voteswarm::db::commit_votes(&mut worker, &first, VoteChanges::Allow).unwrap();
    let changes = vec![
        vote(1, VoteOption::B, 20, 2_001, "n2"),
        vote(3, VoteOption::A, 20, 2_003, "n2"),
        vote(41, VoteOption::B, 20, 2_041, "n2"),
    ];
    voteswarm::db::commit_votes(&mut other, &changes, VoteChanges::Allow).unwrap();
    // Refused today: the narrow check is what this migration widens.
    assert!(diesel::sql_query(format!(
        "INSERT INTO votes (voter_id, option, ts, vote_id, node) VALUES ('{}', 'c', 1, '{}', 'n1')",
        Id128(99),
        Id128(1_099)
    ))
    .execute(&mut owner)
    .is_err());
    let rows = "SELECT concat_ws(' ', voter_id, option, ts, vote_id, node, committed_at) AS r \
                FROM votes ORDER BY voter_id";
    let totals = "SELECT concat_ws(' ', option, backend, n) AS r FROM vote_counts ORDER BY 1";
    let votes_before = text_rows(&mut owner, rows);
    let totals_before = text_rows(&mut owner, totals);
    assert_eq!(votes_before.len(), 41);
    let by_option = [("a".to_string(), 27), ("b".to_string(), 14)];
    assert_eq!(running_totals(&url), HashMap::from(by_option.clone()));

    voteswarm::db::migrate(&pg.migrator_url()).expect("up");
    assert_eq!(
        text_rows(&mut owner, rows),
        votes_before,
        "every vote, unchanged"
    );
    assert_eq!(
        text_rows(&mut owner, totals),
        totals_before,
        "every total row"
    );

    // Now the twelve letters are votes and counted like the two; a
    // thirteenth is not.
    let more = vec![
        vote(2, VoteOption::C, 30, 3_002, "n1"),
        vote(50, VoteOption::L, 30, 3_050, "n1"),
    ];
    voteswarm::db::commit_votes(&mut worker, &more, VoteChanges::Allow).unwrap();
    assert_eq!(
        running_totals(&url),
        HashMap::from([
            ("a".to_string(), 26),
            ("b".to_string(), 14),
            ("c".to_string(), 1),
            ("l".to_string(), 1),
        ])
    );
    assert!(diesel::sql_query(format!(
        "INSERT INTO votes (voter_id, option, ts, vote_id, node) VALUES ('{}', 'm', 1, '{}', 'n1')",
        Id128(99),
        Id128(1_099)
    ))
    .execute(&mut owner)
    .is_err());

    // Down refuses while a vote past `b` is stored, rather than lose it...
    revert_to(&mut owner, "20261202000001");
    assert!(owner
        .revert_last_migration(voteswarm::db::MIGRATIONS)
        .is_err());
    assert_eq!(text_rows(&mut owner, rows).len(), 42);
    // ...and, once they are gone, leaves the two-option poll as it was.
    diesel::sql_query(format!(
        "DELETE FROM votes WHERE voter_id IN ('{}', '{}')",
        Id128(2),
        Id128(50)
    ))
    .execute(&mut owner)
    .unwrap();
    revert_to(&mut owner, "20261201000001");
    let kept: Vec<String> = votes_before
        .iter()
        .filter(|r| !r.starts_with(&Id128(2).to_string()))
        .cloned()
        .collect();
    assert_eq!(text_rows(&mut owner, rows), kept);
    assert_eq!(
        running_totals(&url),
        HashMap::from([("a".to_string(), 26), ("b".to_string(), 14)])
    );
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
    // Down to the first schema: the totals go and its index is back.
    revert_to(&mut conn, FIRST_SCHEMA);
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
    let pg = PgServer::start();
    // The worker's login reads and commits; the migrator (the owner)
    // changes the schema and deletes.
    let url = pg.migrated_url();
    let mut conn = diesel::PgConnection::establish(&pg.migrator_url()).unwrap();
    // A database from before the totals: votes already in it.
    revert_to(&mut conn, FIRST_SCHEMA);
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

/// Polls /readyz until it answers `status`.
fn readyz_becomes(port: u16, status: u16) -> bool {
    until(|| http::status(port, "/readyz") == Some(status))
}

#[test]
fn readyz_holds_only_while_postgresql_answers_and_a_queue_is_drained() {
    let mut pg = PgServer::start();
    let redis = RedisServer::start();
    let resolver = Arc::new(StubResolver::default());
    // No queue known yet: not ready.
    let worker = spawn_worker(settings(&pg, VoteChanges::Allow), resolver.clone());
    assert_eq!(http::status(worker.port, "/readyz"), Some(503));
    resolver.set(&[redis.worker_url()]);
    assert!(
        readyz_becomes(worker.port, 200),
        "ready once a queue is drained and PostgreSQL answers"
    );
    pg.stop();
    assert!(
        readyz_becomes(worker.port, 503),
        "not ready while PostgreSQL is down"
    );
    pg.restart();
    assert!(
        readyz_becomes(worker.port, 200),
        "ready again once PostgreSQL is back"
    );
    worker.stop();
}

/// Runs the worker binary with only `env`; (exit code, stderr).
fn worker_fails_with(env: &[(&str, &str)]) -> (i32, String) {
    exit_and_stderr(clean_command(bin::WORKER).envs(env.iter().copied()))
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
