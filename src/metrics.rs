//! Prometheus metrics. Each node owns its own `Registry` (not the global
//! one), so that several nodes can run inside one test process and each
//! `/metrics` shows only its own figures.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Batch sizes from one vote to the largest pipelines we allow.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Enqueue latency from 50 µs (a local Redis, batch of one) to the 2 s
/// default enqueue timeout and beyond.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding into a Vec only fails on a metric family that cannot be
    // encoded, which our fixed set never produces; show an empty page then.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// `GET /healthz` of every node: the process answers.
pub async fn healthz() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("text/plain")
        .body("ok\n")
}

/// `GET /metrics` of every node: its own registry in the text format.
pub fn metrics_response(registry: &Registry) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(render(registry))
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique within a registry");
    c
}

pub fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
            .expect("valid histogram"),
    )
}

pub fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
    )
}

pub fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help).expect("valid gauge"))
}

/// What a capture node counts.
#[derive(Clone)]
pub struct CaptureMetrics {
    pub registry: Registry,
    /// Votes stored in Redis and acknowledged, by option.
    pub accepted: IntCounterVec,
    /// Votes refused, by reason (`bad_option`, `malformed`, `too_large`,
    /// `content_type`, `changes_denied`, `too_soon`, `unavailable`,
    /// `timeout`, `full`, `cross_site`, `bad_idempotency_key`,
    /// `idempotency_key_reused`, `pow_refused`, `poll_not_open`,
    /// `poll_closed`).
    pub rejected: IntCounterVec,
    /// Votes per Redis pipeline.
    pub batch_size: Histogram,
    /// From handing a vote to the writer to Redis' answer.
    pub enqueue_latency: Histogram,
    /// `accepted`'s child per option of the poll, in letter order.
    accepted_children: Vec<prometheus::IntCounter>,
    /// New voters' votes accepted with a proof of work (`solved`) and
    /// without one (`none`, the no-JavaScript fallback), when one is asked.
    pub pow_votes: IntCounterVec,
    pow_children: [prometheus::IntCounter; 2],
    /// Votes waiting in the writers for Redis.
    pub writer_pending: IntGauge,
    /// Votes in pipelines sent to Redis and not yet answered.
    pub writer_in_flight: IntGauge,
    /// Entries in this node's Redis Stream (not yet drained), last known.
    pub queue_depth: IntGauge,
}

impl CaptureMetrics {
    /// With a zero for each of `options` from the start, so a dashboard
    /// shows every option before its first vote.
    pub fn new(options: &[crate::vote::VoteOption]) -> Self {
        let registry = Registry::new();
        let accepted = counter_vec(
            &registry,
            "voteswarm_votes_accepted_total",
            "Votes stored in Redis and acknowledged to the voter",
            &["option"],
        );
        let pow_votes = counter_vec(
            &registry,
            "voteswarm_pow_votes_total",
            "New voters' votes accepted with a proof of work or without one (POW_BITS > 0)",
            &["proof"],
        );
        CaptureMetrics {
            accepted_children: options
                .iter()
                .map(|o| accepted.with_label_values(&[o.as_str()]))
                .collect(),
            accepted,
            pow_children: ["solved", "none"].map(|p| pow_votes.with_label_values(&[p])),
            pow_votes,
            rejected: counter_vec(
                &registry,
                "voteswarm_votes_rejected_total",
                "Votes refused, by reason",
                &["reason"],
            ),
            batch_size: histogram(
                &registry,
                "voteswarm_enqueue_batch_size",
                "Votes written to Redis per pipeline",
                BATCH_BUCKETS,
            ),
            enqueue_latency: histogram(
                &registry,
                "voteswarm_enqueue_latency_seconds",
                "Time from handing a vote to the queue writer until Redis stored it",
                LATENCY_BUCKETS,
            ),
            writer_pending: gauge(
                &registry,
                "voteswarm_writer_pending",
                "Votes waiting in the queue writers for Redis",
            ),
            writer_in_flight: gauge(
                &registry,
                "voteswarm_writer_in_flight",
                "Votes in pipelines sent to Redis and not yet answered",
            ),
            queue_depth: gauge(
                &registry,
                "voteswarm_queue_depth",
                "Entries in this node's Redis Stream not yet drained, as last read",
            ),
            registry,
        }
    }
}

impl CaptureMetrics {
    /// Counts an accepted vote for `option`. `with_label_values` looks the
    /// child up under a lock; the vote path takes a cached handle (capture
    /// takes only the poll's options, so the lookup is the fallback).
    pub fn count_accepted(&self, option: crate::vote::VoteOption) {
        match self.accepted_children.get(option.index()) {
            Some(c) => c.inc(),
            None => self.accepted.with_label_values(&[option.as_str()]).inc(),
        }
    }

    /// A new voter's vote accepted while a proof of work is asked.
    pub fn pow_vote(&self, solved: bool) -> &prometheus::IntCounter {
        &self.pow_children[usize::from(!solved)]
    }
}

impl Default for CaptureMetrics {
    fn default() -> Self {
        Self::new(crate::poll::Poll::default().vote_options())
    }
}

/// What a results node counts.
#[derive(Clone)]
pub struct ResultsMetrics {
    pub registry: Registry,
    /// How long one tally (backlog + count) took.
    pub tally_seconds: Histogram,
    pub tally_errors: prometheus::IntCounter,
    /// Votes still queued in Redis, as of the last tally.
    pub backlog: IntGauge,
    /// Open server-sent-event streams.
    pub viewers: IntGauge,
    /// Streams ended to admit newer ones beyond MAX_STREAMS.
    pub streams_shed: prometheus::IntCounter,
}

impl ResultsMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        ResultsMetrics {
            tally_seconds: histogram(
                &registry,
                "voteswarm_tally_seconds",
                "Time to read the backlog and count the votes",
                LATENCY_BUCKETS,
            ),
            tally_errors: register(
                &registry,
                prometheus::IntCounter::new("voteswarm_tally_errors_total", "Tallies that failed")
                    .expect("valid counter"),
            ),
            backlog: gauge(
                &registry,
                "voteswarm_backlog",
                "Votes still queued in Redis",
            ),
            viewers: gauge(
                &registry,
                "voteswarm_results_viewers",
                "Open live-update streams",
            ),
            streams_shed: register(
                &registry,
                prometheus::IntCounter::new(
                    "voteswarm_results_streams_shed_total",
                    "Live-update streams ended to admit newer ones beyond MAX_STREAMS",
                )
                .expect("valid counter"),
            ),
            registry,
        }
    }
}

impl Default for ResultsMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What a worker counts.
#[derive(Clone)]
pub struct WorkerMetrics {
    pub registry: Registry,
    /// Stream entries drained (committed and acknowledged), by endpoint.
    pub drained: IntCounterVec,
    /// Entries moved to the dead-letter stream, by endpoint.
    pub dead_letters: IntCounterVec,
    /// Entries taken over from other consumers (XAUTOCLAIM), by endpoint.
    pub claimed: IntCounterVec,
    /// Entries per batch read from Redis.
    pub batch_size: Histogram,
    /// Votes per committed upsert, after dedup.
    pub committed_votes: Histogram,
    /// Time of one upsert statement.
    pub commit_seconds: Histogram,
    pub commit_errors: prometheus::IntCounter,
    /// Entries in each stream (not yet drained): the lag, by endpoint.
    pub backlog: prometheus::IntGaugeVec,
    /// Entries delivered to some worker and not yet acknowledged, by endpoint.
    pub pending: prometheus::IntGaugeVec,
    /// Endpoints whose Redis answers right now, as a primary (drained).
    pub endpoints_up: IntGauge,
    /// Endpoints that answer as replicas: standing by, not drained, until
    /// promoted (a queue's failover copy).
    pub endpoints_standby: IntGauge,
    /// Endpoints known (from REDIS_URLS and REDIS_DNS).
    pub endpoints: IntGauge,
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge_vec = |name: &str, help: &str| {
            register(
                &registry,
                prometheus::IntGaugeVec::new(Opts::new(name, help), &["endpoint"])
                    .expect("valid gauge"),
            )
        };
        WorkerMetrics {
            drained: counter_vec(
                &registry,
                "voteswarm_drained_total",
                "Stream entries committed and acknowledged",
                &["endpoint"],
            ),
            dead_letters: counter_vec(
                &registry,
                "voteswarm_dead_letters_total",
                "Entries that were not votes, moved to the dead-letter stream",
                &["endpoint"],
            ),
            claimed: counter_vec(
                &registry,
                "voteswarm_claimed_total",
                "Entries claimed from consumers idle longer than CLAIM_IDLE_MS",
                &["endpoint"],
            ),
            batch_size: histogram(
                &registry,
                "voteswarm_drain_batch_size",
                "Entries per batch read",
                &[1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0],
            ),
            committed_votes: histogram(
                &registry,
                "voteswarm_commit_batch_votes",
                "Votes per upsert after dedup",
                &[1.0, 10.0, 100.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0],
            ),
            commit_seconds: histogram(
                &registry,
                "voteswarm_commit_seconds",
                "Time of one batch upsert",
                LATENCY_BUCKETS,
            ),
            commit_errors: register(
                &registry,
                prometheus::IntCounter::new(
                    "voteswarm_commit_errors_total",
                    "Batch upserts that failed",
                )
                .expect("valid counter"),
            ),
            backlog: gauge_vec(
                "voteswarm_stream_backlog",
                "Entries in the stream, not yet drained",
            ),
            pending: gauge_vec(
                "voteswarm_stream_pending",
                "Entries delivered and not yet acknowledged",
            ),
            endpoints_up: gauge(
                &registry,
                "voteswarm_endpoints_up",
                "Redis endpoints answering as primaries (drained)",
            ),
            endpoints_standby: gauge(
                &registry,
                "voteswarm_endpoints_standby",
                "Redis endpoints answering as replicas (standing by until promoted)",
            ),
            endpoints: gauge(&registry, "voteswarm_endpoints", "Redis endpoints known"),
            registry,
        }
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
