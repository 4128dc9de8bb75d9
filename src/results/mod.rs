//! The `results` node: the count, the backlog, and whether it is final.
//!
//! One [`Tally`] actor computes a snapshot about once a second and
//! publishes it on a watch channel; `GET /` renders it, `GET /api/results`
//! serves it as JSON, and `GET /events` streams every new one as
//! server-sent events. Viewers never cause a query of their own.

pub mod page;
pub mod settings;
pub mod streams;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header;
use actix_web::{middleware, web, App, HttpResponse, HttpServer};
use tokio::sync::watch;

use crate::actors::tally::{Snapshot, Tally, TALLY_INTERVAL};
use crate::config::ExposeSecret;
use crate::metrics::{self, ResultsMetrics};
pub use settings::{ResultsArgs, ResultsSettings};
use streams::{Streams, Ticket, SHED_RETRY_MS};

/// Database connections: the tally needs one; a spare covers a slow one.
const DB_POOL_SIZE: u32 = 2;
/// How long a tally waits for a database connection before it reports the
/// database unreachable.
const DB_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A comment line on idle event streams, so proxies keep them open.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);
/// Open `/events` streams one node keeps by default before it sheds the
/// oldest. Below the edge's `RESULTS_MAXCONN` (10,000 connections per
/// results server in `swarm/haproxy.cfg`), so that a full node sheds old
/// viewers rather than HAProxy queueing and refusing new ones, with room
/// left for page loads and `/api/results`.
pub const DEFAULT_MAX_STREAMS: usize = 9_000;
/// `/readyz` fails when the last good tally is older than this.
const STALE_AFTER: Duration = Duration::from_secs(10);

struct State {
    /// The page's Content-Security-Policy.
    policy: header::HeaderValue,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    last_good: watch::Receiver<Option<std::time::Instant>>,
    metrics: ResultsMetrics,
    streams: Arc<Streams>,
}

/// A results node, bound and ready to serve.
pub type Results = crate::Node<ResultsRole>;
/// What marks a [`crate::Node`] as a results node.
pub enum ResultsRole {}

impl Results {
    /// Binds and starts the tally; must run inside an actix system.
    pub fn build(settings: ResultsSettings) -> std::io::Result<Results> {
        let listener = crate::listen(&settings.listen)?;
        let port = listener.local_addr()?.port();
        // Starts even while PostgreSQL is down; /readyz says so until it
        // answers.
        let pool = crate::db::pool(
            settings.database_url.expose_secret(),
            DB_POOL_SIZE,
            DB_CONNECT_TIMEOUT,
        );
        let metrics = ResultsMetrics::new();
        let (tx, rx) = watch::channel(Arc::new(Snapshot::empty(&settings.option_labels)));
        let (good_tx, good_rx) = watch::channel(None);
        // Remember when the last successful tally was, for /readyz.
        let mut watcher = rx.clone();
        actix_web::rt::spawn(async move {
            while watcher.changed().await.is_ok() {
                let ok = watcher.borrow().error.is_none();
                if ok {
                    let _ = good_tx.send(Some(std::time::Instant::now()));
                }
            }
        });
        Tally::new(
            pool,
            settings.endpoints.clone(),
            settings.stream_key.clone(),
            settings.option_labels.clone(),
            tx,
            metrics.clone(),
        )
        .start();
        let streams = Streams::new(settings.max_streams, metrics.streams_shed.clone());
        let state = web::Data::new(State {
            policy: page::policy(),
            snapshots: rx,
            last_good: good_rx,
            metrics,
            streams,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                // The page and the JSON shrink to about a third with gzip;
                // the event stream opts out (see `events`).
                .wrap(middleware::Compress::default())
                .route("/", web::get().to(results_page))
                .route("/api/results", web::get().to(api_results))
                .route("/events", web::get().to(events))
                .route("/healthz", web::get().to(metrics::healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_page))
                .route("/favicon.svg", web::get().to(crate::assets::favicon))
                .route("/favicon.ico", web::get().to(crate::assets::favicon))
        })
        .client_request_timeout(Duration::from_secs(5))
        // Event streams never end by themselves: do not wait for them.
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        Ok(Results::new(server, port))
    }
}

async fn results_page(state: web::Data<State>) -> HttpResponse {
    let snap = state.snapshots.borrow().clone();
    let mut resp = HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page::render(&snap));
    crate::headers::apply(resp.headers_mut(), &state.policy);
    resp
}

async fn api_results(state: web::Data<State>) -> HttpResponse {
    let snap = state.snapshots.borrow().clone();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(&*snap)
}

/// Decrements the viewer gauge when the stream is dropped (the viewer left).
struct ViewerGuard(prometheus::IntGauge);

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn events(state: web::Data<State>) -> HttpResponse {
    let mut rx = state.snapshots.clone();
    rx.mark_changed(); // the current snapshot goes out first
    state.metrics.viewers.inc();
    let guard = ViewerGuard(state.metrics.viewers.clone());
    let ticket = state.streams.admit();
    let stream = futures_util::stream::unfold(
        (rx, guard, ticket),
        |(mut rx, guard, mut ticket): (_, _, Ticket)| async move {
            // Shed: the last line said when to come back; now end.
            let shed = ticket.shed.as_mut()?;
            let line = tokio::select! {
                _ = shed => {
                    ticket.shed = None;
                    format!(": shed, too many viewers\nretry: {SHED_RETRY_MS}\n\n")
                }
                changed = rx.changed() => {
                    changed.ok()?;
                    let snap = rx.borrow_and_update().clone();
                    format!("data: {}\n\n", serde_json::to_string(&*snap).ok()?)
                }
                _ = tokio::time::sleep(SSE_KEEPALIVE) => ": keep-alive\n\n".to_owned(),
            };
            Some((
                Ok::<_, std::convert::Infallible>(web::Bytes::from(line)),
                (rx, guard, ticket),
            ))
        },
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // nginx and similar proxies must not buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        // Nor may our own compression: a gzip stream holds each small event
        // until its buffer fills, so a viewer would see updates late, in
        // bursts. An event is a few hundred bytes a second.
        .insert_header((header::CONTENT_ENCODING, "identity"))
        .streaming(stream)
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    let fresh = state
        .last_good
        .borrow()
        .is_some_and(|t| t.elapsed() < STALE_AFTER.max(TALLY_INTERVAL * 3));
    if fresh {
        HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n")
    } else {
        let why = state
            .snapshots
            .borrow()
            .error
            .clone()
            .unwrap_or_else(|| "no recent tally".into());
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: {why}\n"))
    }
}

async fn metrics_page(state: web::Data<State>) -> HttpResponse {
    metrics::metrics_response(&state.metrics.registry)
}
