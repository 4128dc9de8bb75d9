//! The `results` node: the count, the backlog, and whether it is final.
//!
//! One [`Tally`] actor computes a snapshot about once a second and
//! publishes it, with the last hour's series, on a watch channel; `GET /`
//! renders it, `GET /api/results` serves it as JSON,
//! `GET /api/results/series` the series, `GET /api/results.csv` and
//! `.json` the export ([`export`]), and `GET /events` streams every new
//! one as server-sent events. Viewers never cause a query of their own.
//!
//! While `RESULTS_VISIBLE=after_close` hides the count, everyone gets the
//! public snapshot, which holds none; a request with the operator's
//! `Authorization: Bearer RESULTS_TOKEN` gets the API's full answers.

pub mod export;
pub mod page;
pub mod settings;
pub mod streams;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::header;
use actix_web::{middleware, web, App, HttpRequest, HttpResponse, HttpServer};
use tokio::sync::watch;

use crate::actors::tally::{Published, Snapshot, Tally, TALLY_INTERVAL};
use crate::config::{ExposeSecret, SecretString};
use crate::metrics::{self, ResultsMetrics};
use crate::poll::Poll;
pub use settings::{ExportArgs, ResultsArgs, ResultsSettings};
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
    poll: Poll,
    /// The operator's token, as its SHA-256 (see [`operator`]).
    token: Option<[u8; 32]>,
    snapshots: watch::Receiver<Arc<Published>>,
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
        let (tx, rx) = watch::channel(Arc::new(Published::new(
            Snapshot::empty(&settings.poll),
            &settings.poll,
            Vec::new(),
        )));
        let (good_tx, good_rx) = watch::channel(None);
        // Remember when the last successful tally was, for /readyz.
        let mut watcher = rx.clone();
        actix_web::rt::spawn(async move {
            while watcher.changed().await.is_ok() {
                let ok = watcher.borrow().full.error.is_none();
                if ok {
                    let _ = good_tx.send(Some(std::time::Instant::now()));
                }
            }
        });
        Tally::new(
            pool,
            settings.endpoints.clone(),
            settings.stream_key.clone(),
            settings.poll.clone(),
            tx,
            metrics.clone(),
        )
        .start();
        let streams = Streams::new(settings.max_streams, metrics.streams_shed.clone());
        let state = web::Data::new(State {
            policy: page::policy(),
            poll: settings.poll.clone(),
            token: settings.results_token.as_ref().map(token_digest),
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
                .route("/api/results/series", web::get().to(api_series))
                .route("/api/results.csv", web::get().to(export_csv))
                .route("/api/results.json", web::get().to(export_json))
                .route("/results.js", web::get().to(script))
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
    let published = state.snapshots.borrow().clone();
    let mut resp = HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page::render(
            &state.poll,
            &published.public,
            &public_series(&published),
        ));
    crate::headers::apply(resp.headers_mut(), &state.policy);
    resp
}

async fn script() -> HttpResponse {
    crate::assets::script(page::SCRIPT)
}

fn token_digest(token: &SecretString) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.expose_secret().as_bytes()).into()
}

/// Why a request gets no count: a token that is not the operator's
/// (`401`), or a hidden count asked for as an export (`403`).
#[derive(Debug, thiserror::Error)]
enum Denied {
    #[error("Authorization: {0}")]
    Token(&'static str),
    #[error("the count is hidden until voting closes")]
    Hidden,
}

impl actix_web::ResponseError for Denied {
    fn status_code(&self) -> actix_web::http::StatusCode {
        match self {
            Denied::Token(_) => actix_web::http::StatusCode::UNAUTHORIZED,
            Denied::Hidden => actix_web::http::StatusCode::FORBIDDEN,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        r.insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            Denied::Token(_) => {
                r.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
                r.json(serde_json::json!({ "error": self.to_string() }))
            }
            Denied::Hidden => r.json(serde_json::json!({
                "error": self.to_string(),
                "reason": "results_hidden",
            })),
        }
    }
}

/// The snapshot this request may see, and whether it is the operator's:
/// `Authorization: Bearer` with the node's token. No `Authorization` is
/// the public; any other is refused rather than quietly answered as the
/// public, so an operator with a wrong token knows. The digests are
/// compared, not the tokens: how long a comparison takes then says
/// nothing about the token.
fn snapshot_for(req: &HttpRequest, state: &State) -> Result<(Arc<Published>, bool), Denied> {
    let operator = match req.headers().get(header::AUTHORIZATION) {
        None => false,
        Some(given) => {
            let expected = state.token.as_ref().ok_or(Denied::Token(
                "this results node has no operator token (RESULTS_TOKEN)",
            ))?;
            let token = given
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or(Denied::Token("not a Bearer token"))?;
            if token_digest(&SecretString::from(token.to_owned())) != *expected {
                return Err(Denied::Token("not the operator's token"));
            }
            true
        }
    };
    Ok((state.snapshots.borrow().clone(), operator))
}

async fn api_results(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, Denied> {
    let (published, operator) = snapshot_for(&req, &state)?;
    let snap = if operator {
        &published.full
    } else {
        &published.public
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(snap.to_json()))
}

/// The series as the public may see it: without the counts while they are
/// hidden.
fn public_series(published: &Published) -> Vec<crate::actors::tally::Point> {
    let mut series = published.series.clone();
    if published.public.hidden {
        for p in &mut series {
            p.counted = None;
        }
    }
    series
}

async fn api_series(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, Denied> {
    let (published, operator) = snapshot_for(&req, &state)?;
    let (snap, points) = if operator {
        (&published.full, published.series.clone())
    } else {
        (&published.public, public_series(&published))
    };
    let nodes = if snap.hidden {
        serde_json::Value::Null
    } else {
        serde_json::to_value(&snap.nodes).unwrap_or_default()
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "interval_seconds": TALLY_INTERVAL.as_secs(),
            "hidden": snap.hidden,
            "points": points,
            "nodes": nodes,
            "as_of": snap.as_of,
        })))
}

/// The export as this request may have it: a hidden count is a 403 for the
/// public, as there is nothing to export yet.
fn export_for(req: &HttpRequest, state: &State) -> Result<export::Export, Denied> {
    let (published, operator) = snapshot_for(req, state)?;
    let snap = if operator {
        &published.full
    } else {
        &published.public
    };
    if snap.hidden {
        return Err(Denied::Hidden);
    }
    Ok(export::Export::from_snapshot(snap))
}

async fn export_csv(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, Denied> {
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"results.csv\"",
        ))
        .body(export_for(&req, &state)?.csv()))
}

async fn export_json(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, Denied> {
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(export_for(&req, &state)?.json()))
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
                    web::Bytes::from(format!(": shed, too many viewers\nretry: {SHED_RETRY_MS}\n\n"))
                }
                changed = rx.changed() => {
                    changed.ok()?;
                    rx.borrow_and_update().public_event.clone()
                }
                _ = tokio::time::sleep(SSE_KEEPALIVE) => web::Bytes::from_static(b": keep-alive\n\n"),
            };
            Some((Ok::<_, std::convert::Infallible>(line), (rx, guard, ticket)))
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
            .full
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
