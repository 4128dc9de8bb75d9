//! A worker in-process, its Redis endpoints from a stand-in for DNS that
//! the test controls; and the worker binary, as the cluster runs it.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use voteswarm::actors::supervisor::Resolve;
use voteswarm::config::{ExposeSecret, SecretString, VoteChanges};
use voteswarm::endpoints::EndpointSource;
use voteswarm::worker::Worker;
use voteswarm::worker::WorkerSettings;

use super::node_thread::NodeThread;
use super::postgres::PgServer;
use super::process::clean_command;
use super::{bin, free_port, http, Proc, RedisServer};

/// The settings a test starts from, on `pg`: the worker's own login, and
/// the migrations applied at start by the migrator (the worker's login may
/// not touch the schema).
pub fn settings(pg: &PgServer, mode: VoteChanges) -> WorkerSettings {
    WorkerSettings {
        database_url: SecretString::from(pg.url()),
        endpoints: EndpointSource::default(),
        stream_key: "votes".into(),
        worker_id: "test-worker".into(),
        batch_size: 500,
        claim_idle: Duration::from_secs(2),
        db_pool_size: 2,
        metrics_listen: "127.0.0.1:0".into(),
        migrate: true,
        migrate_url: SecretString::from(pg.migrator_url()),
        migrate_only: false,
        vote_changes: mode,
        poll: voteswarm::poll::Poll::default(),
    }
}

/// A stand-in for DNS: the test decides what it answers.
#[derive(Default)]
pub struct StubResolver(Mutex<Vec<String>>);

impl StubResolver {
    pub fn set(&self, urls: &[String]) {
        *self.0.lock().unwrap() = urls.to_vec();
    }
}

impl Resolve for StubResolver {
    fn resolve(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A running worker; dropping it stops it as [`TestWorker::stop`] does.
pub struct TestWorker {
    /// Its `/healthz`, `/readyz` and `/metrics`.
    pub port: u16,
    node: NodeThread,
}

/// Starts a worker on a thread of its own (see `node_thread`).
pub fn spawn_worker(settings: WorkerSettings, resolver: Arc<dyn Resolve>) -> TestWorker {
    let (node, port) = NodeThread::start("worker", move |stop| {
        let worker = Worker::build_with_resolver(settings, resolver).expect("worker");
        (worker.port(), worker.run_until(stop.wait()))
    });
    TestWorker { port, node }
}

impl TestWorker {
    pub fn metrics(&self) -> String {
        http::metrics(self.port)
    }

    /// Stops it as SIGTERM does (the batches in flight are committed and
    /// acknowledged first) and waits until it has.
    pub fn stop(mut self) {
        self.node.stop();
    }
}

/// The worker binary draining `redis` into `db`, as `id`; stopped with
/// SIGKILL on drop (a crash). `VOTESWARM_TEST_LOGS=1` shows its logs.
pub struct WorkerProcess {
    pub proc: Proc,
    /// Its `/metrics`.
    pub port: u16,
}

impl WorkerProcess {
    pub fn start(db: &str, redis: &[&RedisServer], id: &str, claim_idle_ms: u64) -> WorkerProcess {
        let port = free_port();
        let urls: Vec<String> = redis.iter().map(|r| r.worker_url()).collect();
        let proc = Proc::spawn(
            clean_command(bin::WORKER)
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
                // Migrated already, by the test as the migrator: the
                // worker's own login may not touch the schema.
                .stdout(Stdio::null())
                .stderr(if std::env::var_os("VOTESWARM_TEST_LOGS").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                }),
        );
        WorkerProcess { proc, port }
    }
}
