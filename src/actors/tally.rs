//! `Tally`: the results node's one counter. Every [`TALLY_INTERVAL`] it
//! reads the backlog (the depth, `XLEN`, of every Redis queue, summed),
//! then the count (the
//! running totals in `vote_counts`, which the workers' transactions keep),
//! and publishes a
//! [`Snapshot`] on a watch channel that every page view, API call and
//! server-sent-event stream reads. However many viewers are connected,
//! PostgreSQL sees one tally query per interval.
//!
//! Promises: `final` is true only when every queue answered and held
//! nothing *before* the count was read. Workers delete an entry only after
//! its vote committed, so an empty backlog read first means the count read
//! after holds every vote acknowledged until then.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::watch;

use crate::db::{self, DbPool};
use crate::endpoints::{redact, EndpointSource};
use crate::metrics::ResultsMetrics;
use crate::queue::{self, RedisConnection};
use crate::vote::VoteOption;

/// About once a second, as the design asks: fresh enough to watch, cheap
/// enough for PostgreSQL on the big night.
pub const TALLY_INTERVAL: Duration = Duration::from_secs(1);
/// A queue that does not answer `XLEN` in this long counts as unreachable.
const DEPTH_TIMEOUT: Duration = Duration::from_millis(800);

#[derive(Clone, Debug, Serialize)]
pub struct OptionTally {
    pub option: &'static str,
    pub label: String,
    pub count: i64,
    pub percent: f64,
}

/// What the results page shows; also the `/api/results` JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub options: Vec<OptionTally>,
    pub total: i64,
    /// Votes still queued in Redis (in the queues that answered).
    pub backlog: i64,
    /// Queues that did not answer: the backlog may be larger.
    pub unreachable_queues: usize,
    /// Nothing is queued anywhere: the count is complete.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// When this tally began, i.e. before the backlog was read (RFC 3339,
    /// milliseconds): every vote acknowledged before `as_of` is either in
    /// `backlog` or in the counts.
    pub as_of: String,
    /// That the last tally failed, if it did: public, so only
    /// [`COUNT_UNAVAILABLE`]; the cause (a database address, an error text)
    /// goes to the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Snapshot {
    pub fn empty(labels: &[String; 2]) -> Snapshot {
        Snapshot {
            options: VoteOption::ALL
                .iter()
                .zip(labels)
                .map(|(o, label)| OptionTally {
                    option: o.as_str(),
                    label: label.clone(),
                    count: 0,
                    percent: 0.0,
                })
                .collect(),
            total: 0,
            backlog: 0,
            unreachable_queues: 0,
            is_final: false,
            as_of: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            error: Some("no tally yet".into()),
        }
    }
}

/// What the public sees of a failed tally.
pub const COUNT_UNAVAILABLE: &str = "the count is unavailable; retrying";

pub struct Tally {
    pool: DbPool,
    endpoints: EndpointSource,
    stream_key: String,
    labels: [String; 2],
    publish: watch::Sender<Arc<Snapshot>>,
    /// A connection per queue URL, kept so they are reused across ticks;
    /// lent to the tick in flight.
    queues: Vec<(String, RedisConnection)>,
    running: bool,
    metrics: ResultsMetrics,
}

impl Tally {
    pub fn new(
        pool: DbPool,
        endpoints: EndpointSource,
        stream_key: String,
        labels: [String; 2],
        publish: watch::Sender<Arc<Snapshot>>,
        metrics: ResultsMetrics,
    ) -> Tally {
        Tally {
            pool,
            endpoints,
            stream_key,
            labels,
            publish,
            queues: Vec::new(),
            running: false,
            metrics,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        // A slow tick is not stacked under the next one.
        if self.running {
            return;
        }
        self.running = true;
        let started = Instant::now();
        let as_of = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let endpoints = self.endpoints.clone();
        // No two ticks overlap (`running`), so the tick may hold them.
        let mut known = std::mem::take(&mut self.queues);
        let key = self.stream_key.clone();
        let pool = self.pool.clone();
        let labels = self.labels.clone();
        let work = async move {
            let urls = actix_web::rt::task::spawn_blocking(move || endpoints.resolve())
                .await
                .unwrap_or_default();
            let mut kept = Vec::with_capacity(urls.len());
            let mut backlog = 0i64;
            let mut unreachable = 0usize;
            for url in &urls {
                let redis = match known.iter().position(|(u, _)| u == url) {
                    Some(i) => Some(known.swap_remove(i).1),
                    None => redis::Client::open(url.as_str())
                        .ok()
                        .map(|c| RedisConnection::new(c, DEPTH_TIMEOUT, DEPTH_TIMEOUT)),
                };
                let Some(mut redis) = redis else {
                    unreachable += 1;
                    continue;
                };
                match queue_depth(&redis, &key).await {
                    Some((conn, depth)) => {
                        backlog += depth;
                        redis.keep(conn);
                    }
                    None => {
                        log::debug!("backlog: {} did not answer", redact(url));
                        unreachable += 1;
                        redis.drop_connection();
                    }
                }
                kept.push((url.clone(), redis));
            }
            // The count is read after the backlog: see the module doc.
            let counts = actix_web::rt::task::spawn_blocking(move || count_votes(&pool))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            let mut snap = build_snapshot(&labels, counts, backlog, unreachable, urls.is_empty());
            snap.as_of = as_of;
            (snap, kept)
        };
        ctx.spawn(work.into_actor(self).map(move |(snap, kept), act, _| {
            act.running = false;
            act.queues = kept;
            act.metrics
                .tally_seconds
                .observe(started.elapsed().as_secs_f64());
            if snap.error.is_some() {
                act.metrics.tally_errors.inc();
            }
            act.metrics.backlog.set(snap.backlog);
            act.publish.send_replace(Arc::new(snap));
        }));
    }
}

/// One queue's depth, and the connection that answered; `None` if it did
/// not answer in [`DEPTH_TIMEOUT`].
async fn queue_depth(
    redis: &RedisConnection,
    key: &str,
) -> Option<(redis::aio::MultiplexedConnection, i64)> {
    let mut conn = redis.get().await.ok()?;
    let depth = tokio::time::timeout(DEPTH_TIMEOUT, queue::depth(&mut conn, key))
        .await
        .ok()?
        .ok()?;
    Some((conn, depth))
}

fn count_votes(pool: &DbPool) -> Result<Vec<(String, i64)>, String> {
    let mut conn = pool.get().map_err(|e| format!("database: {e}"))?;
    db::vote_totals(&mut conn).map_err(|e| format!("tally query: {e}"))
}

fn build_snapshot(
    labels: &[String; 2],
    counts: Result<Vec<(String, i64)>, String>,
    backlog: i64,
    unreachable: usize,
    no_endpoints: bool,
) -> Snapshot {
    let mut snap = Snapshot::empty(labels);
    snap.backlog = backlog;
    snap.unreachable_queues = unreachable;
    snap.error = None;
    match counts {
        Ok(rows) => {
            for (opt, n) in rows {
                if let Some(t) = snap.options.iter_mut().find(|t| t.option == opt.trim()) {
                    t.count = n;
                }
            }
            snap.total = snap.options.iter().map(|t| t.count).sum();
            for t in &mut snap.options {
                t.percent = if snap.total > 0 {
                    (t.count as f64 * 1000.0 / snap.total as f64).round() / 10.0
                } else {
                    0.0
                };
            }
            snap.is_final = backlog == 0 && unreachable == 0 && !no_endpoints;
        }
        Err(e) => {
            log::warn!("tally failed: {e}");
            snap.error = Some(COUNT_UNAVAILABLE.into());
        }
    }
    snap
}

impl Actor for Tally {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.tick(ctx);
        ctx.run_interval(TALLY_INTERVAL, |act, ctx| act.tick(ctx));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_needs_an_empty_backlog_every_queue_and_a_count() {
        let labels = ["Cats".to_string(), "Dogs".to_string()];
        let ok = || Ok(vec![("a".to_string(), 3), ("b".to_string(), 1)]);
        let s = build_snapshot(&labels, ok(), 0, 0, false);
        assert!(s.is_final);
        assert_eq!(
            (s.total, s.options[0].percent, s.options[1].percent),
            (4, 75.0, 25.0)
        );
        assert!(!build_snapshot(&labels, ok(), 1, 0, false).is_final);
        assert!(!build_snapshot(&labels, ok(), 0, 1, false).is_final);
        assert!(!build_snapshot(&labels, ok(), 0, 0, true).is_final);
        let failed = build_snapshot(&labels, Err("down".into()), 0, 0, false);
        assert!(!failed.is_final);
        assert_eq!(failed.error.as_deref(), Some(COUNT_UNAVAILABLE));
    }
}
