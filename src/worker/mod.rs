//! The `worker` node: drains every capture node's Redis Stream into
//! PostgreSQL, counting each acknowledged vote exactly once.
//!
//! [`Worker::build`] applies the migrations when asked, starts the
//! `DbWriter`s (a `SyncArbiter`, one thread per pooled connection), the
//! `Dedup` actor and the `Supervisor` (which starts one `Drainer` per Redis
//! endpoint), and serves `/healthz`, `/readyz` and `/metrics`.
//! [`Worker::run_until`] runs until the given future completes (SIGTERM in
//! the binary), then stops reading, lets the in-flight batches commit and
//! acknowledge, and returns.

pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::actors::db_writer::{CheckDb, DbWriter};
use crate::actors::dedup::Dedup;
use crate::actors::drainer::DrainSettings;
use crate::actors::supervisor::{Resolve, StopAll, Supervisor};
use crate::config::ExposeSecret;
use crate::db;
use crate::metrics::{self, WorkerMetrics};
pub use settings::{WorkerArgs, WorkerSettings};

/// How long SIGTERM waits for in-flight batches to commit and acknowledge.
/// Past it (PostgreSQL down, say) the worker exits anyway: what it held
/// stays pending and another worker claims it.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a batch waits for a database connection before it fails (and
/// the drainer retries it with backoff).
const DB_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

struct State {
    db: Addr<DbWriter>,
    metrics: WorkerMetrics,
}

/// Applies the embedded migrations as the migrator (`--migrate`,
/// `--migrate-only`).
pub fn migrate(settings: &WorkerSettings) -> std::io::Result<()> {
    let applied =
        db::migrate(settings.migrate_url.expose_secret()).map_err(std::io::Error::other)?;
    if applied.is_empty() {
        log::info!("database schema is up to date");
    } else {
        log::info!("applied migrations: {}", applied.join(", "));
    }
    Ok(())
}

pub struct Worker {
    server: Server,
    supervisor: Addr<Supervisor>,
    port: u16,
}

impl Worker {
    /// Must run inside an actix system.
    pub fn build(settings: WorkerSettings) -> std::io::Result<Worker> {
        let resolver: Arc<dyn Resolve> = Arc::new(settings.endpoints.clone());
        Self::build_with_resolver(settings, resolver)
    }

    /// As [`Worker::build`], with the endpoints from `resolver` (tests stand
    /// in for DNS with it).
    pub fn build_with_resolver(
        settings: WorkerSettings,
        resolver: Arc<dyn Resolve>,
    ) -> std::io::Result<Worker> {
        let listener = crate::listen(&settings.metrics_listen)?;
        let port = listener.local_addr()?.port();
        if settings.migrate {
            migrate(&settings)?;
        }
        let metrics = WorkerMetrics::new();
        let pool = db::pool(
            settings.database_url.expose_secret(),
            settings.db_pool_size,
            DB_CONNECT_TIMEOUT,
        );
        let mode = settings.vote_changes;
        let writer_metrics = metrics.clone();
        let db_addr = SyncArbiter::start(settings.db_pool_size as usize, move || DbWriter {
            pool: pool.clone(),
            mode,
            metrics: writer_metrics.clone(),
        });
        let dedup = Dedup {
            mode,
            poll: Arc::new(settings.poll.clone()),
        }
        .start();
        let supervisor = Supervisor::new(
            resolver,
            DrainSettings {
                stream_key: settings.stream_key.clone(),
                consumer: settings.worker_id.clone(),
                batch_size: settings.batch_size,
                claim_idle: settings.claim_idle,
            },
            dedup,
            db_addr.clone(),
            metrics.clone(),
        )
        .start();
        let state = web::Data::new(State {
            db: db_addr,
            metrics,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/healthz", web::get().to(metrics::healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_page))
        })
        .workers(1)
        // The worker handles SIGTERM itself: drain first, then stop serving.
        .disable_signals()
        .listen(listener)?
        .run();
        Ok(Worker {
            server,
            supervisor,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until `shutdown` completes, then stops gracefully.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        let handle = self.server.handle();
        let server = actix_web::rt::spawn(self.server);
        shutdown.await;
        log::info!("stopping: finishing the batches in flight");
        match tokio::time::timeout(STOP_TIMEOUT, self.supervisor.send(StopAll)).await {
            Ok(_) => log::info!("all batches committed and acknowledged"),
            Err(_) => log::warn!(
                "batches still in flight after {STOP_TIMEOUT:?}; they stay pending for another worker"
            ),
        }
        handle.stop(true).await;
        let _ = server.await;
    }

    /// Serves until SIGTERM or SIGINT.
    pub async fn run_until_stopped(self) {
        self.run_until(shutdown_signal()).await
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we can only wait forever.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Ready while PostgreSQL answers and at least one queue answers: one
/// being drained, or a replica standing by (a worker whose every primary is
/// lost but whose replicas are about to be promoted is healthy, and is the
/// worker that will drain them).
async fn readyz(state: web::Data<State>) -> HttpResponse {
    let db = match tokio::time::timeout(Duration::from_secs(3), state.db.send(CheckDb)).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("database check timed out".into()),
    };
    let up = state.metrics.endpoints_up.get();
    let standby = state.metrics.endpoints_standby.get();
    match db {
        Ok(()) if up + standby > 0 => HttpResponse::Ok().content_type("text/plain").body(format!(
            "ready: database answers, {up} queue(s) draining, {standby} replica(s) standing by\n"
        )),
        Ok(()) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("not ready: no Redis queue reachable\n"),
        Err(e) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: {e}\n")),
    }
}

async fn metrics_page(state: web::Data<State>) -> HttpResponse {
    metrics::metrics_response(&state.metrics.registry)
}
