//! Network faults on real network paths (issue 16, item 2): a small
//! deployment whose tiers are hosts of their own, each a network namespace
//! the test makes (`common::netns`): two capture nodes, each one's Redis,
//! two workers, PostgreSQL, results, and the edge (the shipped
//! haproxy.cfg) with loadgen beside it as the voters. Faults are on the
//! paths between hosts, inside those namespaces: partitions are `iptables`
//! DROP rules; latency and loss are a slow path of the test's own
//! (`netns::SlowPath`), since this machine's kernel has no `netem`.
//! loadgen's ground truth checks that every acknowledged vote is counted
//! once, with each voter's latest choice, and each scenario writes its row
//! for `docs/RELIABILITY.md` (`CHAOS_REPORT_DIR`), as `tests/chaos.rs`
//! does.
//!
//! Needs root. `make test` runs it small (`NETFAULT_SCALE` unset: 3,000
//! voters, 8 s partitions, 10 s of a bad database link); `make chaos` at
//! the issue's scale (`NETFAULT_SCALE=full`: 20,000 voters, 30 s and 60 s).
//! One scenario at a time (a lock): each is a whole deployment.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::capture_node::TEST_COOKIE_KEY;
use common::cluster_proc::{json_report, ReliabilityRow};
use common::edge::Edge;
use common::netns::{require_root, Host, Network, Partition, SlowPath};
use common::process::clean_command;
use common::{bin, http, wait_until, Proc, RedisServer};
use voteswarm::cluster::postgres::{PgPasswords, PgRole};
use voteswarm::cluster::secrets::RedisRole;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The ports inside the hosts: each namespace has its own, so they are
/// the same on every host and in every run.
const CAPTURE_PORT: u16 = 8000;
const RESULTS_PORT: u16 = 8081;
const WORKER_PORT: u16 = 9100;
const PG_PORT: u16 = 5432;

/// The hosts and the last byte of each one's address.
const HOSTS: &[(&str, u8)] = &[
    ("capture01", 11),
    ("capture02", 12),
    ("redis01", 13),
    ("redis02", 14),
    ("worker01", 21),
    ("worker02", 22),
    ("postgres", 30),
    ("results", 40),
    ("edge", 50),
];
const CAPTURES: [&str; 2] = ["capture01", "capture02"];
/// Each capture node's Redis, on a host of its own.
const QUEUES: [&str; 2] = ["redis01", "redis02"];
const WORKERS: [&str; 2] = ["worker01", "worker02"];

struct Scale {
    voters: usize,
    rate: u32,
    /// How long a partition lasts.
    partition: Duration,
    /// How long the database link is bad.
    bad_link: Duration,
}

fn scale() -> Scale {
    if std::env::var("NETFAULT_SCALE").as_deref() == Ok("full") {
        Scale {
            voters: 20_000,
            rate: 400,
            partition: Duration::from_secs(30),
            bad_link: Duration::from_secs(60),
        }
    } else {
        Scale {
            voters: 3_000,
            rate: 200,
            partition: Duration::from_secs(8),
            bad_link: Duration::from_secs(10),
        }
    }
}

/// A URL of a server on another host: `url` as a role's helper makes it
/// for loopback, pointed at `host`.
fn on_host(url: &str, host: &Host) -> String {
    assert!(url.contains("@127.0.0.1:"), "{url}");
    url.replacen("@127.0.0.1:", &format!("@{}:", host.ip), 1)
}

/// Where a child's stderr goes: `<name>.log` in the run's directory (a
/// failing start shows it).
fn log(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(format!("{name}.log")))
        .expect("log file")
        .into()
}

/// The deployment. Fields drop in order: the processes before the
/// namespaces they run in, the namespaces before the directory.
struct Deployment {
    edge: Edge,
    _results: Proc,
    _captures: Vec<Proc>,
    _workers: Vec<Proc>,
    redis: Vec<RedisServer>,
    _postgres: Proc,
    pg_passwords: PgPasswords,
    net: Network,
    dir: tempfile::TempDir,
}

impl Deployment {
    /// Every tier started back to front, each ready before the next; the
    /// capture nodes with `enqueue_timeout_ms`.
    fn start(enqueue_timeout_ms: u64) -> Deployment {
        common::require_program("redis-server", "redis-server");
        common::require_program("haproxy", "haproxy");
        let dir = tempfile::Builder::new()
            .prefix("vs-netfaults-")
            .tempdir()
            .expect("temp dir");
        // PostgreSQL's user must reach its directory inside.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let net = Network::new(HOSTS);
        let d = dir.path();

        let pg_passwords = PgPasswords::ensure(&d.join("pg-secrets")).expect("passwords");
        // Password logins from the hosts' network too (the shipped
        // pg_hba.conf has only loopback).
        let hba = d.join("pg_hba.conf");
        std::fs::write(
            &hba,
            format!(
                "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all {}.0/24 scram-sha-256\n",
                common::netns::SUBNET
            ),
        )
        .unwrap();
        std::fs::set_permissions(&hba, std::fs::Permissions::from_mode(0o644)).unwrap();
        let pg_host = net.host("postgres");
        let hba_arg = format!("hba_file={}", hba.display());
        let postgres = pg_host.ns.run(|| {
            let pg = common::postgres::serve(
                &d.join("pg"),
                PG_PORT,
                &pg_passwords,
                &[
                    "-c",
                    "listen_addresses=*",
                    "-c",
                    &hba_arg,
                    "-c",
                    "fsync=off",
                ],
            );
            voteswarm::db::migrate(&pg_passwords.url(PgRole::Migrator, PG_PORT)).expect("migrate");
            pg
        });
        let db_url = |role| on_host(&pg_passwords.url(role, PG_PORT), pg_host);

        let redis: Vec<RedisServer> = QUEUES
            .iter()
            .map(|q| {
                net.host(q).ns.run(|| {
                    RedisServer::start_with(&[
                        "--bind",
                        "0.0.0.0",
                        "--protected-mode",
                        "no",
                        "--appendfsync",
                        "always",
                    ])
                })
            })
            .collect();
        let redis_urls = |role| {
            redis
                .iter()
                .zip(QUEUES)
                .map(|(r, q)| on_host(&r.url_as(role), net.host(q)))
                .collect::<Vec<_>>()
                .join(",")
        };

        let workers: Vec<Proc> = WORKERS
            .iter()
            .map(|w| {
                let host = net.host(w);
                let p = host.ns.run(|| {
                    Proc::spawn(
                        clean_command(bin::WORKER)
                            .env("DATABASE_URL", db_url(PgRole::Worker))
                            .env("REDIS_URLS", redis_urls(RedisRole::Worker))
                            .env("WORKER_ID", w)
                            .env("METRICS_LISTEN", format!("0.0.0.0:{WORKER_PORT}"))
                            .env("RUST_LOG", "warn")
                            .stdout(Stdio::null())
                            .stderr(log(d, w)),
                    )
                });
                wait_ready(host, WORKER_PORT, d, w);
                p
            })
            .collect();

        let captures: Vec<Proc> = CAPTURES
            .iter()
            .zip(&redis)
            .zip(QUEUES)
            .map(|((c, r), q)| {
                let host = net.host(c);
                let p = host.ns.run(|| {
                    Proc::spawn(
                        clean_command(bin::CAPTURE)
                            .env("LISTEN", format!("0.0.0.0:{CAPTURE_PORT}"))
                            .env("REDIS_URL", on_host(&r.capture_url(), net.host(q)))
                            .env("NODE_ID", c)
                            .env("COOKIE_KEY", TEST_COOKIE_KEY)
                            .env("HTTP_WORKERS", "1")
                            .env("ENQUEUE_TIMEOUT_MS", enqueue_timeout_ms.to_string())
                            .env("RUST_LOG", "warn")
                            .stdout(Stdio::null())
                            .stderr(log(d, c)),
                    )
                });
                wait_ready(host, CAPTURE_PORT, d, c);
                p
            })
            .collect();

        let results_host = net.host("results");
        let results = results_host.ns.run(|| {
            Proc::spawn(
                clean_command(bin::RESULTS)
                    .env("LISTEN", format!("0.0.0.0:{RESULTS_PORT}"))
                    .env("DATABASE_URL", db_url(PgRole::Results))
                    .env("REDIS_URLS", redis_urls(RedisRole::Results))
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(log(d, "results")),
            )
        });
        wait_ready(results_host, RESULTS_PORT, d, "results");

        let capture_addrs: Vec<String> = CAPTURES
            .iter()
            .map(|c| format!("{}:{CAPTURE_PORT}", net.host(c).ip))
            .collect();
        let results_addr = format!("{}:{RESULTS_PORT}", results_host.ip);
        let edge = net.host("edge").ns.run(|| {
            // Every voter comes from loadgen's one address: no per-address
            // limit on new voters, as the local cluster has none.
            let env = [("NEW_VOTER_LIMIT", "1000000000".to_owned())];
            Edge::start_many(d, "edge", &capture_addrs, &results_addr, &env)
        });
        Deployment {
            edge,
            _results: results,
            _captures: captures,
            _workers: workers,
            redis,
            _postgres: postgres,
            pg_passwords,
            net,
            dir,
        }
    }

    fn host(&self, name: &str) -> &Host {
        self.net.host(name)
    }

    /// loadgen on the edge's host, as the voters: `s.voters` voters, a
    /// fifth changing their vote, ground truth from the database.
    fn loadgen(&self, s: &Scale, report: &Path) -> Proc {
        let db = on_host(
            &self.pg_passwords.url(PgRole::Superuser, PG_PORT),
            self.host("postgres"),
        );
        let mut cmd = Command::new(bin::LOADGEN);
        cmd.arg("--target")
            .arg(format!("http://127.0.0.1:{}", self.edge.vote_port))
            .arg("--results")
            .arg(format!("http://127.0.0.1:{}", self.edge.results_port))
            .arg("--database-url")
            .arg(db)
            .args([
                "--voters",
                &s.voters.to_string(),
                "--change-fraction",
                "0.2",
            ])
            .args(["--rate", &s.rate.to_string(), "--concurrency", "32"])
            .args(["--final-timeout-secs", "300", "--max-attempts", "1000"])
            .arg("--report")
            .arg(report)
            .arg("--report-json")
            .arg(report.with_extension("json"))
            .stdout(Stdio::null())
            .stderr(log(self.dir.path(), "loadgen"));
        self.host("edge").ns.run(|| Proc::spawn(&mut cmd))
    }

    /// The results node's `/api/results`, through the edge.
    fn results(&self) -> Option<serde_json::Value> {
        let port = self.edge.results_port;
        self.host("edge")
            .ns
            .run(|| http::get(port, "/api/results")?.json())
    }

    fn results_total(&self) -> i64 {
        self.results()
            .and_then(|r| r["total"].as_i64())
            .unwrap_or(0)
    }

    /// Entries still in the queues (the results node's `backlog`).
    fn backlog(&self) -> Option<i64> {
        self.results().and_then(|r| r["backlog"].as_i64())
    }

    /// A host's `/metrics` on `port`, asked on that host.
    fn metrics(&self, host: &str, port: u16) -> String {
        self.host(host)
            .ns
            .run(|| http::get(port, "/metrics").map(|r| r.body().to_owned()))
            .unwrap_or_default()
    }

    /// The edge's `show stat` row of a capture node: (status, retries,
    /// redispatches).
    fn edge_node(&self, node: &str) -> (String, u64, u64) {
        let stat = self.edge.admin("show stat");
        let row: Vec<&str> = stat
            .lines()
            .find(|l| l.starts_with(&format!("capture,{node},")))
            .unwrap_or_else(|| panic!("no {node} in:\n{stat}"))
            .split(',')
            .collect();
        let n = |i: usize| row[i].parse().unwrap_or(0);
        (row[17].to_owned(), n(15), n(16))
    }

    fn redis_len(&self, i: usize) -> usize {
        let r = &self.redis[i];
        self.host(QUEUES[i]).ns.run(|| r.xlen())
    }
}

/// Waits until `/readyz` on `port` on `host` answers 200, or fails with
/// the child's log.
fn wait_ready(host: &Host, port: u16, dir: &Path, name: &str) {
    let ready = host.ns.run(|| {
        wait_until(Duration::from_secs(60), || {
            http::status(port, "/readyz") == Some(200)
        })
    });
    assert!(
        ready,
        "{name} not ready on {}:{port}: {}",
        host.ip,
        std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
    );
}

/// The sum of a Prometheus counter's samples whose line contains every one
/// of `labels`.
fn counter(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Outcome {
    faults: u32,
    recovery: Duration,
}

/// Runs a scenario: the deployment, `prelude` on it before any load (what
/// it stores is in loadgen's baseline, once counted), the load, `fault`
/// once a quarter of the voters are counted, then loadgen's verification,
/// the row, and every queue empty.
fn scenario(
    name: &str,
    enqueue_timeout_ms: u64,
    prelude: impl FnOnce(&Deployment),
    fault: impl FnOnce(&Deployment, &Scale) -> Outcome,
) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_root("tests/netfaults.rs");
    let s = scale();
    let d = Deployment::start(enqueue_timeout_ms);
    prelude(&d);
    let report_path: PathBuf = d.dir.path().join("report.md");
    let mut lg = d.loadgen(&s, &report_path);
    let started = wait_until(Duration::from_secs(120), || {
        d.results_total() >= (s.voters / 4) as i64
    });
    assert!(started, "{name}: the load did not get going");
    let outcome = fault(&d, &s);
    let exit = lg.wait_exit(Duration::from_secs(900));
    assert!(exit.is_some(), "{name}: loadgen did not finish");
    let code = exit.unwrap().code();
    let report = std::fs::read_to_string(&report_path).unwrap_or_default();
    let json_path = report_path.with_extension("json");
    let json = json_path.exists().then(|| json_report(&json_path));
    ReliabilityRow::from_loadgen(name, json.as_ref(), outcome.faults, outcome.recovery).write();
    assert_eq!(code, Some(0), "{name}: the count is not exact:\n{report}");
    let json = json.expect("loadgen's JSON report");
    assert!(json.mismatches.is_empty(), "{report}");
    assert!(json.acknowledged >= s.voters as u64, "{report}");
    // Every queue drained, the partitioned one too.
    for (i, q) in QUEUES.iter().enumerate() {
        assert_eq!(d.redis_len(i), 0, "{name}: {q}'s queue");
    }
}

#[test]
fn a_worker_partitioned_from_a_capture_node_drains_it_again_after_the_heal() {
    scenario(
        "netns: worker partitioned from a capture node",
        2000,
        |_| {},
        |d, s| {
            // What a worker reaches of a capture node is its queue.
            let (worker, queue) = (d.host("worker01"), d.host("redis01"));
            let endpoint = format!("{}:", queue.ip);
            let drained = || {
                counter(
                    &d.metrics("worker01", WORKER_PORT),
                    "voteswarm_drained_total",
                    &[&endpoint],
                )
            };
            let up = || {
                counter(
                    &d.metrics("worker01", WORKER_PORT),
                    "voteswarm_endpoints_up",
                    &[],
                )
            };
            let cut = Partition::new(worker, queue);
            let t = Instant::now();
            // The worker notices: that endpoint is down, the other goes on.
            assert!(
                wait_until(s.partition, || up() == 1.0),
                "worker01 still counts capture01's Redis as up"
            );
            std::thread::sleep(s.partition.saturating_sub(t.elapsed())); // the partition itself
            let before = drained();
            drop(cut);
            let healed = Instant::now();
            assert!(
                wait_until(Duration::from_secs(120), || up() == 2.0
                    && drained() > before),
                "worker01 does not drain capture01's Redis again"
            );
            Outcome {
                faults: 1,
                recovery: healed.elapsed(),
            }
        },
    );
}

/// capture01 taken out of the edge's rotation by a fault that began at
/// `t`, which lasts `s.partition`; then `heal`, and capture01 back in
/// rotation: how long that took after the heal.
fn out_of_rotation_until_healed(
    d: &Deployment,
    s: &Scale,
    t: Instant,
    heal: impl FnOnce(),
) -> Duration {
    let status = || d.edge_node("capture01").0;
    // Its health checks fail.
    assert!(
        wait_until(s.partition, || status().starts_with("DOWN")),
        "HAProxy keeps capture01 in rotation: {:?}",
        d.edge_node("capture01")
    );
    std::thread::sleep(s.partition.saturating_sub(t.elapsed())); // the fault itself
    heal();
    let healed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(120), || status() == "UP"),
        "capture01 does not come back into rotation: {:?}",
        d.edge_node("capture01")
    );
    healed.elapsed()
}

#[test]
fn the_edge_partitioned_from_a_capture_node_routes_around_it() {
    scenario(
        "netns: edge partitioned from a capture node",
        2000,
        |_| {},
        |d, s| {
            let cut = Partition::new(d.host("edge"), d.host("capture01"));
            Outcome {
                faults: 1,
                recovery: out_of_rotation_until_healed(d, s, Instant::now(), || drop(cut)),
            }
        },
    );
}

#[test]
fn latency_and_loss_between_workers_and_postgres_delay_the_count_only() {
    scenario(
        "netns: 200 ms + 5% loss, workers to PostgreSQL",
        2000,
        |_| {},
        |d, s| {
            let pg = d.host("postgres");
            let (delay, loss) = (Duration::from_millis(200), 0.05);
            let before = d.backlog().unwrap_or(0);
            // Both ways: each worker's packets to PostgreSQL, and
            // PostgreSQL's to the workers.
            let mut bad: Vec<SlowPath> = WORKERS
                .iter()
                .map(|w| SlowPath::new(d.host(w), &[&pg.ip], delay, loss))
                .collect();
            let workers: Vec<&str> = WORKERS.iter().map(|w| d.host(w).ip.as_str()).collect();
            bad.push(SlowPath::new(pg, &workers, delay, loss));
            // The bad link itself; the queues' peak meanwhile, for the
            // report.
            let mut peak = before;
            let t = Instant::now();
            while t.elapsed() < s.bad_link {
                peak = peak.max(d.backlog().unwrap_or(0));
                std::thread::sleep(Duration::from_millis(500));
            }
            eprintln!("backlog before the bad link {before}, at most {peak} during it");
            for path in &bad {
                assert!(path.packets() > 0, "no packet took the slow path");
            }
            drop(bad);
            let healed = Instant::now();
            // Recovered: the queues back to where they were before (or
            // to a second of votes).
            let normal = before.max(s.rate as i64);
            assert!(
                wait_until(Duration::from_secs(300), || d
                    .backlog()
                    .is_some_and(|b| b <= normal)),
                "the backlog does not come down: {:?}",
                d.backlog()
            );
            Outcome {
                faults: 1,
                recovery: healed.elapsed(),
            }
        },
    );
}

/// The capture nodes' `ENQUEUE_TIMEOUT_MS` in the slow-Redis scenario, and
/// the delay on the path from the capture node to its Redis, well past it.
const SLOW_ENQUEUE_TIMEOUT_MS: u64 = 500;
const SLOW_REDIS_DELAY: Duration = Duration::from_millis(1000);

/// Before the load (what it stores is then in loadgen's baseline): one
/// vote straight to capture01 (not through the edge, which would retry it
/// elsewhere) while its Redis is slow. It gets `503` with `Retry-After`,
/// and the new voter's cookie, since the vote may still reach Redis. The
/// path heals, the voter sends the vote again with the cookie, and the
/// count is one vote.
fn probe_slow_capture(d: &Deployment) {
    let capture = d.host("capture01");
    let slow = SlowPath::new(capture, &[&d.host("redis01").ip], SLOW_REDIS_DELAY, 0.0);
    let body = r#"{"vote":"a"}"#;
    let probe = format!(
        "POST /api/vote HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let asked = Instant::now();
    let answer = d
        .host("edge")
        .ns
        .run(|| http::exchange_at(&capture.ip, CAPTURE_PORT, probe.as_bytes()))
        .expect("capture01 answers");
    // Reported, not asserted (no timed assertions in tests).
    eprintln!(
        "capture01 answered {} in {:?} (ENQUEUE_TIMEOUT_MS={SLOW_ENQUEUE_TIMEOUT_MS}, Redis {SLOW_REDIS_DELAY:?} away)",
        answer.status,
        asked.elapsed()
    );
    assert_eq!(answer.status, 503, "{}", answer.text);
    assert!(answer.header("retry-after").is_some(), "{}", answer.text);
    let cookie = answer
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .filter(|c| c.starts_with("voter="))
        .unwrap_or_else(|| {
            panic!(
                "a 503 for a vote that may be stored keeps the new voter: {}",
                answer.text
            )
        })
        .to_owned();
    drop(slow);
    // The voter sends it again, through the edge, with that cookie, until
    // it is acknowledged: one voter, one vote, whether or not the first
    // one reached Redis too.
    let again = format!(
        "POST /api/vote HTTP/1.0\r\nHost: x\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let port = d.edge.vote_port;
    let stored = wait_until(Duration::from_secs(60), || {
        d.host("edge")
            .ns
            .run(|| http::exchange(port, again.as_bytes()))
            .is_some_and(|r| r.status == 202)
    });
    assert!(stored, "the voter's retry was never acknowledged");
    assert!(
        wait_until(Duration::from_secs(60), || d
            .results()
            .is_some_and(|r| r["final"] == true && r["total"] == 1)),
        "the 503 and its retry are not one vote: {:?}",
        d.results()
    );
}

#[test]
fn a_slow_redis_link_gets_503_not_2xx_and_the_edge_retries_elsewhere() {
    scenario(
        "netns: a capture node's Redis slower than ENQUEUE_TIMEOUT_MS",
        SLOW_ENQUEUE_TIMEOUT_MS,
        probe_slow_capture,
        |d, s| {
            let capture = d.host("capture01");
            let timeouts = || {
                let m = d.host("edge").ns.run(|| {
                    http::exchange_at(
                        &capture.ip,
                        CAPTURE_PORT,
                        b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n",
                    )
                    .map(|r| r.body().to_owned())
                    .unwrap_or_default()
                });
                counter(
                    &m,
                    "voteswarm_votes_rejected_total",
                    &["reason=\"timeout\""],
                )
            };
            // Retries and redispatches of votes capture01 refused or did
            // not answer in time.
            let resent = || {
                let (_, retries, redispatches) = d.edge_node("capture01");
                retries + redispatches
            };
            let resent_before = resent();
            let timeouts_before = timeouts();
            let slow = SlowPath::new(capture, &[&d.host("redis01").ip], SLOW_REDIS_DELAY, 0.0);
            let t = Instant::now();
            let recovery = out_of_rotation_until_healed(d, s, t, || {
                assert!(slow.packets() > 0, "no packet took the slow path");
                drop(slow);
            });
            // capture01 refused votes for the timeout, and the edge sent
            // them on.
            assert!(timeouts() > timeouts_before, "capture01 never timed out");
            assert!(
                resent() > resent_before,
                "the edge sent nothing on from capture01"
            );
            Outcome {
                faults: 1,
                recovery,
            }
        },
    );
}
