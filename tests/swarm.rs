//! The shipped Swarm deployment, run for real (issue 12): a three-node
//! swarm on this machine (scripts/swarm.sh: its own dockerd, three
//! docker-in-docker nodes, offline images), the shipped swarm/stack.yml,
//! and loadgen's exact verification through the swarm's HAProxy, through
//! container kills, a whole capture node stopped and started, a rolling
//! update and workers scaled, a queue's Redis lost with its disk and its
//! replica promoted (swarm/failover.sh); then the create-services.sh path.
//! Every copy (issue 17) runs on another node than its original, in sync.
//!
//! One swarm, several phases, in order, so that the whole runs in minutes.
//! It needs root and Debian's docker.io (scripts/install-deps.sh test), and
//! the release binaries the image is built from (`make test` builds them
//! first). A run that cannot start dockerd fails with the reason.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster_proc::sql_counts;
use common::{bin, wait_until, Proc};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DOCKER: &str = "/usr/bin/docker";
/// Not the subnet `make swarm-up` uses, so both can run at once.
const SUBNET: &str = "192.168.214.0/24";
/// Long enough for a task to be rescheduled and pass its health check
/// (the image's HEALTHCHECK has a 15 s start period), with a margin for a
/// loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(120);

fn progress(start: Instant, what: &str) {
    eprintln!(
        "swarm test [{:>5.1} s] {what}",
        start.elapsed().as_secs_f64()
    );
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The swarm of this run. Dropping it runs `scripts/swarm.sh down`, which
/// removes every node container, network and volume, stops the run's
/// dockerd by its pid and unmounts what is left: also when a phase panics.
struct Swarm {
    dir: PathBuf,
    vote: String,
    results: String,
    /// The run's own CA, which signed the edge's certificate.
    ca: String,
    database: String,
    manager: String,
}

impl Swarm {
    fn script(dir: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(Path::new(ROOT).join("scripts/swarm.sh"));
        c.args(args)
            .env("SWARM_DIR", dir)
            .env("SWARM_SUBNET", SUBNET)
            .stdin(Stdio::null());
        c
    }

    /// `scripts/swarm.sh up`: everything from the engine to a converged,
    /// healthy deployment; its progress goes to the test's output.
    fn up() -> Swarm {
        for b in ["capture", "worker", "results", "loadgen", "cluster"] {
            let p = Path::new(ROOT).join("target/release").join(b);
            assert!(
                p.is_file(),
                "{} is missing: the image is built from the release binaries \
                 (cargo build --locked --release --bins; make test does it first)",
                p.display()
            );
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("swarm");
        // Leftovers of a run that was killed before its guard could run.
        let _ = Self::script(&dir, &["down"]).status();
        let mut swarm = Swarm {
            dir,
            vote: String::new(),
            results: String::new(),
            ca: String::new(),
            database: String::new(),
            manager: String::new(),
        };
        let out = Self::script(&swarm.dir, &["up"])
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/swarm.sh up");
        assert!(
            out.status.success(),
            "scripts/swarm.sh up failed ({}); its reason is in the lines above (\"swarm: error: ...\")",
            out.status
        );
        swarm.read_env(&String::from_utf8_lossy(&out.stdout));
        swarm
    }

    /// The lines `up` and `redeploy` print.
    fn read_env(&mut self, printed: &str) {
        let field = |name: &str| {
            printed
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap_or_else(|| panic!("no `{name}:` line in:\n{printed}"))
                .trim_end_matches('/')
                .to_owned()
        };
        self.vote = field("vote");
        self.results = field("results");
        self.ca = field("ca");
        self.database = field("database");
        self.manager = field("docker")
            .strip_prefix("DOCKER_HOST=")
            .expect("docker: DOCKER_HOST=...")
            .to_owned();
    }

    fn redeploy(&mut self, via: &str) {
        let out = Self::script(&self.dir, &["redeploy", "--via", via])
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/swarm.sh redeploy");
        assert!(
            out.status.success(),
            "scripts/swarm.sh redeploy --via {via} failed"
        );
        self.read_env(&String::from_utf8_lossy(&out.stdout));
    }

    /// The manager's docker CLI (`docker service ...`, `docker node ...`).
    fn docker(&self, args: &[&str]) -> String {
        stdout(run(Command::new(DOCKER)
            .env("DOCKER_HOST", &self.manager)
            .args(args)))
    }

    /// The run's own engine, which runs the node containers.
    fn outer(&self, args: &[&str]) -> String {
        let sock = format!("unix://{}/docker.sock", self.dir.display());
        stdout(run(Command::new(DOCKER)
            .env("DOCKER_HOST", sock)
            .args(args)))
    }

    /// What the manager and node N's own engine say, for a node that does
    /// not come back: `docker node ls` and the node's last log lines.
    fn why_not_ready(&self, n: u32) -> String {
        let sock = format!("unix://{}/docker.sock", self.dir.display());
        let said = |host: &str, args: &[&str]| {
            Command::new(DOCKER)
                .env("DOCKER_HOST", host)
                .args(args)
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr)
                })
                .unwrap_or_else(|e| e.to_string())
        };
        format!(
            "docker node ls:\n{}\nvs-node{n}'s last log lines:\n{}",
            said(&self.manager, &["node", "ls"]),
            said(&sock, &["logs", "--tail", "40", &format!("vs-node{n}")])
        )
    }

    /// The docker CLI of node N, inside its container.
    fn node(&self, n: u32, args: &[&str]) -> String {
        let name = format!("vs-node{n}");
        let mut all = vec!["exec", name.as_str(), "docker"];
        all.extend_from_slice(args);
        self.outer(&all)
    }

    /// The nodes of a service's running tasks, one entry per task.
    fn task_nodes(&self, service: &str) -> Vec<String> {
        let out = self.docker(&[
            "service",
            "ps",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}} {{.CurrentState}}",
            service,
        ]);
        let mut nodes: Vec<String> = out
            .lines()
            .filter(|l| l.contains(" Running"))
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect();
        nodes.sort();
        nodes
    }

    /// The id of the running container of `service` on node N.
    fn container(&self, n: u32, service: &str) -> Option<String> {
        let filter = format!("name={service}.");
        let ids = self.node(n, &["ps", "-q", "--filter", &filter]);
        ids.lines().next().map(str::to_owned)
    }

    fn healthy(&self, n: u32, id: &str) -> bool {
        self.node(n, &["inspect", "-f", "{{.State.Health.Status}}", id]) == "healthy"
    }

    /// `redis-cli` as the operators' `admin` login (swarm/README.md) in the
    /// container of `service` on node N, over its loopback port (a
    /// replica has no socket).
    fn redis_admin(&self, n: u32, service: &str, command: &str) -> String {
        let id = self
            .container(n, service)
            .unwrap_or_else(|| panic!("no {service} on node{n}"));
        self.node(
            n,
            &[
                "exec",
                &id,
                "sh",
                "-c",
                &format!(
                    "REDISCLI_AUTH=\"$(cat /run/secrets/redis_admin_password)\" \
                     exec redis-cli --user admin -h 127.0.0.1 {command}"
                ),
            ],
        )
    }

    /// The backlog of capture node N's queue (entries are deleted once
    /// committed).
    fn xlen(&self, n: u32) -> i64 {
        let out = self.redis_admin(n, queue(n), "XLEN votes");
        out.parse()
            .unwrap_or_else(|_| panic!("XLEN answered {out:?}"))
    }

    /// `INFO replication` of a queue's Redis or replica, as `field:value`.
    fn replication(&self, n: u32, service: &str) -> String {
        self.redis_admin(n, service, "INFO replication")
            .replace('\r', "")
    }

    /// Each queue's replica runs on another node than its primary and
    /// follows it; the standby runs on another node than postgres and is
    /// synchronous (issue 17).
    fn assert_copies(&self) {
        for (primary, replica) in [
            ("voteswarm_redis01", "voteswarm_redis01-replica"),
            ("voteswarm_redis02", "voteswarm_redis02-replica"),
            ("voteswarm_postgres", "voteswarm_postgres-standby"),
        ] {
            let (p, r) = (self.task_nodes(primary), self.task_nodes(replica));
            assert!(
                p.len() == 1 && r.len() == 1 && p != r,
                "{replica} on {r:?}, {primary} on {p:?}: one task each, not on one node"
            );
        }
        for (n, primary, replica) in [
            (2, "redis01", "voteswarm_redis01-replica"),
            (3, "redis02", "voteswarm_redis02-replica"),
        ] {
            let mut info = String::new();
            assert!(
                wait_until(CONVERGE, || {
                    info = self.replication(1, replica);
                    info.contains("role:slave")
                        && info.contains("master_link_status:up")
                        && info.contains(&format!("master_host:{primary}"))
                }),
                "{replica} does not follow {primary}:\n{info}"
            );
            let connected = self.replication(n, queue(n));
            assert!(
                connected.contains("role:master") && connected.contains("connected_slaves:1"),
                "{primary} on node{n} has not its one replica:\n{connected}"
            );
        }
        let pg = self
            .container(1, "voteswarm_postgres")
            .expect("postgres on node1");
        let mut standbys = String::new();
        assert!(
            wait_until(CONVERGE, || {
                standbys = self.node(
                    1,
                    &[
                        "exec",
                        &pg,
                        "psql",
                        "-U",
                        "postgres",
                        "-d",
                        "voteswarm",
                        "-tAc",
                        "SELECT application_name, state, sync_state FROM pg_stat_replication",
                    ],
                );
                standbys == "voteswarm_standby|streaming|sync"
            }),
            "postgres has not its one synchronous standby: {standbys:?}"
        );
        let setting = self.node(
            1,
            &[
                "exec",
                &pg,
                "psql",
                "-U",
                "postgres",
                "-tAc",
                "SHOW synchronous_standby_names",
            ],
        );
        assert_eq!(setting, "voteswarm_standby", "what a commit waits for");
    }

    fn node_status(&self, name: &str) -> String {
        self.docker(&["node", "inspect", "-f", "{{.Status.State}}", name])
    }

    fn stored_total(&self) -> i64 {
        let (a, b) = sql_counts(&self.database);
        a + b
    }

    /// Waits until a service's container on node N is a new one (not
    /// `old`) and healthy.
    fn wait_replaced(&self, n: u32, service: &str, old: &str) {
        assert!(
            wait_until(CONVERGE, || match self.container(n, service) {
                Some(id) => id != old && self.healthy(n, &id),
                None => false,
            }),
            "{service} on node{n} was not replaced by a healthy container"
        );
    }

    /// loadgen through the swarm's edge; killed by the guard if a phase
    /// fails before it finishes.
    fn loadgen(&self, voters: usize, rate: Option<u32>, report: &Path) -> Proc {
        let mut c = Command::new(bin::LOADGEN);
        c.args(["--target", &self.vote])
            .args(["--voters", &voters.to_string()])
            .args(["--change-fraction", "0.1"])
            .args(["--results", &self.results])
            .args(["--ca-file", &self.ca])
            .args(["--database-url", &self.database])
            .args(["--concurrency", "32"])
            .args(["--final-timeout-secs", "300"])
            .arg("--report")
            .arg(report)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(r) = rate {
            c.args(["--rate", &r.to_string()]);
        }
        Proc::spawn(&mut c)
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let ok = Self::script(&self.dir, &["down"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!(
                "swarm test: scripts/swarm.sh down failed; run it by hand with SWARM_DIR={}",
                self.dir.display()
            );
        }
    }
}

/// The queue of capture node N (scripts/swarm.sh labels node2 queue=01,
/// node3 queue=02).
fn queue(n: u32) -> &'static str {
    match n {
        2 => "voteswarm_redis01",
        3 => "voteswarm_redis02",
        _ => panic!("node{n} holds no queue"),
    }
}

/// Waits for loadgen and returns its report; the run must pass (exact).
fn exact(mut loadgen: Proc, report: &Path, what: &str) -> String {
    let status = loadgen.child().wait().expect("wait for loadgen");
    let text = std::fs::read_to_string(report).unwrap_or_default();
    assert!(
        status.success(),
        "{what}: loadgen failed ({status}):\n{text}"
    );
    assert!(text.contains("verdict: PASS"), "{what}: not exact:\n{text}");
    text
}

/// A `| name | value |` row of loadgen's report, as numbers.
fn row(report: &str, name: &str) -> Vec<i64> {
    report
        .lines()
        .find(|l| l.starts_with(&format!("| {name} |")))
        .map(|l| {
            l.split('|')
                .nth(2)
                .unwrap()
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// Requests a voter saw fail (anything but an acknowledgement or the
/// too-soon-to-change 429 that voting rules give), over all requests.
fn voter_visible_errors(report: &str) -> (i64, i64) {
    let requests = row(report, "requests")[0];
    let acknowledged = row(report, "acknowledged")[0];
    let too_soon = row(report, "rejected 429").first().copied().unwrap_or(0);
    (requests - acknowledged - too_soon, requests)
}

fn summary(report: &str) -> String {
    let (errors, requests) = voter_visible_errors(report);
    let truth = row(report, "ground truth a / b");
    format!(
        "exact: {} voters ({} / {}), {} requests, {} acknowledged, {} voter-visible errors ({:.2}%)",
        truth[0] + truth[1],
        truth[0],
        truth[1],
        requests,
        row(report, "acknowledged")[0],
        errors,
        100.0 * errors as f64 / requests.max(1) as f64
    )
}

#[test]
fn the_shipped_swarm_counts_every_acknowledged_vote_through_faults_updates_and_scaling() {
    let start = Instant::now();
    let reports = tempfile::tempdir().unwrap();
    progress(
        start,
        "scripts/swarm.sh up (engine, images, three nodes, the stack)",
    );
    let mut swarm = Swarm::up();
    progress(
        start,
        &format!("converged: vote {} results {}", swarm.vote, swarm.results),
    );

    // ---------------------------------------------------------- placement
    let both = vec!["node2".to_owned(), "node3".to_owned()];
    let store = vec!["node1".to_owned()];
    let (node2, node3) = (vec!["node2".to_owned()], vec!["node3".to_owned()]);
    for (service, want) in [
        ("voteswarm_capture", &both),
        ("voteswarm_redis01", &node2),
        ("voteswarm_redis02", &node3),
        ("voteswarm_redis01-replica", &store),
        ("voteswarm_redis02-replica", &store),
        ("voteswarm_haproxy", &store),
        ("voteswarm_postgres", &store),
        ("voteswarm_postgres-standby", &node3),
        ("voteswarm_results", &store),
    ] {
        assert_eq!(&swarm.task_nodes(service), want, "where {service} runs");
    }
    let workers = swarm.task_nodes("voteswarm_worker");
    assert_eq!(workers.len(), 2, "two workers: {workers:?}");
    assert!(
        workers.iter().all(|n| both.contains(n)),
        "workers on worker nodes: {workers:?}"
    );
    for n in 1..=3 {
        for line in swarm
            .node(n, &["ps", "--format", "{{.Names}}|{{.Status}}"])
            .lines()
        {
            let (name, status) = line.split_once('|').unwrap();
            if name.starts_with("voteswarm_haproxy") {
                // The haproxy image has no health check; the stack adds none.
                assert!(status.starts_with("Up"), "{name}: {status}");
            } else if name.starts_with("voteswarm_") {
                assert!(status.contains("(healthy)"), "node{n}: {name} is {status}");
            }
        }
    }
    progress(start, "placement: capture+redis on node2 and node3, haproxy/postgres/results on node1, workers on node2/node3; all healthy");
    swarm.assert_copies();
    progress(
        start,
        "copies: redis01/02-replica on node1 follow their primaries (link up); postgres-standby on node3 streams, sync",
    );

    // ------------------------------------- 20,000 voters through faults
    let report = reports.path().join("faults.md");
    let lg = swarm.loadgen(20_000, Some(300), &report);
    assert!(
        wait_until(CONVERGE, || swarm.stored_total() > 1_000),
        "votes reach PostgreSQL"
    );

    let worker_node: u32 = if workers[0] == "node2" { 2 } else { 3 };
    let worker = swarm
        .container(worker_node, "voteswarm_worker")
        .expect("a worker container");
    swarm.node(worker_node, &["kill", &worker]);
    progress(
        start,
        &format!("killed worker container {worker} on node{worker_node}"),
    );
    assert!(
        wait_until(CONVERGE, || swarm.task_nodes("voteswarm_worker").len() == 2
            && swarm.container(worker_node, "voteswarm_worker").as_deref()
                != Some(worker.as_str())),
        "the killed worker is replaced"
    );
    progress(start, "worker replaced");

    let capture = swarm
        .container(3, "voteswarm_capture")
        .expect("capture on node3");
    swarm.node(3, &["kill", &capture]);
    progress(
        start,
        &format!("killed capture container {capture} on node3"),
    );
    swarm.wait_replaced(3, "voteswarm_capture", &capture);
    progress(start, "capture on node3 replaced and healthy");

    // No workers for a while, so that node2's Redis holds votes when the
    // node goes down: they must be counted once it is back.
    swarm.docker(&["service", "scale", "--detach", "voteswarm_worker=0"]);
    assert!(
        wait_until(CONVERGE, || swarm.xlen(2) >= 200),
        "node2's queue fills"
    );
    let queued_node2 = swarm.xlen(2);
    swarm.outer(&["stop", "-t", "10", "vs-node2"]);
    progress(
        start,
        &format!("stopped node2 with {queued_node2} votes queued in its Redis"),
    );
    assert!(
        wait_until(CONVERGE, || swarm.node_status("node2") == "down"),
        "the manager marks node2 down"
    );
    let node3_then = swarm.xlen(3);
    assert!(
        wait_until(CONVERGE, || swarm.xlen(3) >= node3_then + 200),
        "HAProxy routes every vote to node3 while node2 is down"
    );
    progress(start, "node2 down; votes go on through node3");
    swarm.outer(&["start", "vs-node2"]);
    // Once in four runs here the node's own dockerd, killed in the middle
    // of stopping its containers, did not come back within CONVERGE (a
    // docker-in-docker recovery, not ours): say what it said, and start the
    // node once more, as an operator would, before calling it a failure.
    if !wait_until(CONVERGE, || swarm.node_status("node2") == "ready") {
        progress(
            start,
            &format!(
                "node2 did not rejoin; starting it again\n{}",
                swarm.why_not_ready(2)
            ),
        );
        swarm.outer(&["restart", "-t", "10", "vs-node2"]);
    }
    assert!(
        wait_until(CONVERGE, || swarm.node_status("node2") == "ready"),
        "node2 rejoins\n{}",
        swarm.why_not_ready(2)
    );
    assert!(
        wait_until(CONVERGE, || swarm.task_nodes("voteswarm_capture") == both
            && swarm.task_nodes("voteswarm_redis01") == node2),
        "capture and Redis run on node2 again"
    );
    let back = swarm.xlen(2);
    assert!(
        back >= queued_node2,
        "node2's Redis kept its queue: {back} < {queued_node2}"
    );
    progress(
        start,
        &format!("node2 back with {back} votes queued; workers to 2"),
    );
    swarm.docker(&["service", "scale", "--detach", "voteswarm_worker=2"]);
    let text = exact(lg, &report, "20,000 voters through kills and a node stop");
    assert_eq!(row(&text, "voters given up on")[0], 0, "{text}");
    progress(start, &format!("faults: {}", summary(&text)));

    // --------------------------------------- rolling update under load
    let report = reports.path().join("update.md");
    let before = swarm.stored_total();
    let lg = swarm.loadgen(15_000, Some(300), &report);
    assert!(
        wait_until(CONVERGE, || swarm.stored_total() > before + 500),
        "the load reaches PostgreSQL"
    );
    progress(
        start,
        "docker service update --force voteswarm_capture, under load",
    );
    swarm.docker(&[
        "service",
        "update",
        "--force",
        "--detach=false",
        "-q",
        "voteswarm_capture",
    ]);
    progress(start, "update rolled out on both capture nodes");
    let text = exact(lg, &report, "a rolling update of capture");
    let (errors, requests) = voter_visible_errors(&text);
    progress(
        start,
        &format!(
            "rolling update: {}; voter-visible error share {:.3}% ({errors} of {requests})",
            summary(&text),
            100.0 * errors as f64 / requests as f64
        ),
    );

    // ------------------------------------------ workers 2 -> 4 -> 1
    let report = reports.path().join("scale.md");
    let lg = swarm.loadgen(10_000, Some(300), &report);
    swarm.docker(&["service", "scale", "--detach=false", "voteswarm_worker=4"]);
    assert_eq!(swarm.task_nodes("voteswarm_worker").len(), 4);
    let spread: BTreeSet<String> = swarm.task_nodes("voteswarm_worker").into_iter().collect();
    progress(start, &format!("4 workers on {spread:?}"));
    swarm.docker(&["service", "scale", "--detach=false", "voteswarm_worker=1"]);
    assert_eq!(swarm.task_nodes("voteswarm_worker").len(), 1);
    progress(start, "1 worker");
    let text = exact(lg, &report, "workers scaled 2 -> 4 -> 1");
    progress(start, &format!("scaling: {}", summary(&text)));

    // ------------------- a queue lost with its disk: the replica promoted
    // Last before the redeploy: node2 takes no votes afterwards.
    let report = reports.path().join("failover.md");
    let before = swarm.stored_total();
    let lg = swarm.loadgen(10_000, Some(300), &report);
    assert!(
        wait_until(CONVERGE, || swarm.stored_total() > before + 500),
        "the load reaches PostgreSQL"
    );
    // No workers, so that node2's queue holds acknowledged votes when it
    // is lost: only its replica has them then.
    swarm.docker(&["service", "scale", "--detach", "voteswarm_worker=0"]);
    assert!(
        wait_until(CONVERGE, || swarm.xlen(2) >= 200),
        "node2's queue fills"
    );
    let redis01 = swarm
        .container(2, "voteswarm_redis01")
        .expect("redis01 on node2");
    // The disk: its directory goes, so Swarm cannot start it again, empty
    // (as when the node's volume is lost); then the process.
    swarm.outer(&["exec", "vs-node2", "rm", "-rf", "/var/lib/voteswarm/redis"]);
    swarm.node(2, &["kill", &redis01]);
    let lost = swarm
        .replication(1, "voteswarm_redis01-replica")
        .lines()
        .find_map(|l| l.strip_prefix("slave_repl_offset:").map(str::to_owned))
        .unwrap_or_default();
    progress(
        start,
        &format!("node2's Redis killed and its data deleted; its replica at offset {lost}; swarm/failover.sh queue 01"),
    );
    let out = run(Command::new(Path::new(ROOT).join("swarm/failover.sh"))
        .args(["queue", "01"])
        .env("DOCKER_HOST", &swarm.manager)
        .env("DOCKER", DOCKER)
        .stdin(Stdio::null()));
    progress(
        start,
        &format!(
            "failover: {}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; ")
        ),
    );
    assert_eq!(
        swarm.task_nodes("voteswarm_redis01"),
        Vec::<String>::new(),
        "the lost queue stays down"
    );
    let mut info = String::new();
    assert!(
        wait_until(CONVERGE, || {
            info = swarm
                .container(1, "voteswarm_redis01-replica")
                .filter(|id| swarm.healthy(1, id))
                .map(|_| swarm.replication(1, "voteswarm_redis01-replica"))
                .unwrap_or_default();
            info.contains("role:master")
        }),
        "redis01-replica is not promoted:\n{info}"
    );
    let held = swarm
        .redis_admin(1, "voteswarm_redis01-replica", "XLEN votes")
        .parse::<i64>()
        .expect("XLEN");
    assert!(held >= 200, "the promoted replica kept the queue: {held}");
    progress(
        start,
        &format!("redis01-replica promoted with {held} votes queued; workers to 2"),
    );
    swarm.docker(&["service", "scale", "--detach", "voteswarm_worker=2"]);
    let text = exact(
        lg,
        &report,
        "a queue lost with its disk, its replica promoted",
    );
    assert_eq!(
        swarm
            .redis_admin(1, "voteswarm_redis01-replica", "XLEN votes")
            .parse::<i64>()
            .expect("XLEN"),
        0,
        "the workers drained the promoted replica"
    );
    progress(start, &format!("queue failover: {}", summary(&text)));
    // The node's disk, rebuilt, for the redeploy below.
    swarm.outer(&[
        "exec",
        "vs-node2",
        "install",
        "-d",
        "-o",
        "10001",
        "-g",
        "10001",
        "-m",
        "0700",
        "/var/lib/voteswarm/redis",
    ]);

    // ------------------------------------------- create-services.sh
    progress(
        start,
        "scripts/swarm.sh redeploy --via services (data wiped)",
    );
    swarm.redeploy("services");
    for (service, want) in [
        ("voteswarm_capture", &both),
        ("voteswarm_redis01", &node2),
        ("voteswarm_redis02", &node3),
        ("voteswarm_postgres", &store),
    ] {
        assert_eq!(&swarm.task_nodes(service), want, "where {service} runs");
    }
    swarm.assert_copies();
    assert_eq!(swarm.stored_total(), 0, "a fresh database");
    let report = reports.path().join("services.md");
    let lg = swarm.loadgen(5_000, None, &report);
    let text = exact(lg, &report, "create-services.sh");
    progress(start, &format!("create-services.sh: {}", summary(&text)));
    drop(swarm);
    progress(start, "scripts/swarm.sh down: done");
    // The engine's firewall chains go with it, unless another engine on
    // the machine still uses them.
    let engines = Command::new("pgrep").args(["-x", "dockerd"]).output();
    if engines.is_ok_and(|o| o.stdout.is_empty()) {
        for table in ["filter", "nat"] {
            let rules = Command::new("iptables")
                .args(["-t", table, "-S"])
                .output()
                .expect("iptables -S");
            let rules = String::from_utf8_lossy(&rules.stdout);
            assert!(
                !rules.contains("DOCKER"),
                "dockerd's chains left in the {table} table:\n{rules}"
            );
        }
    }
}
