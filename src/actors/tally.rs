//! `Tally`: the results node's one counter. Every [`TALLY_INTERVAL`] it
//! reads the backlog (the depth, `XLEN`, of every Redis queue, summed),
//! then the count (the running totals per option and per capture node in
//! `vote_counts` and `node_counts`, which the workers' transactions keep),
//! appends a point to the last hour's [`Series`], and publishes a
//! [`Published`] (the operator's [`Snapshot`], the public one, the series)
//! on a watch channel that every page view, API call and server-sent-event
//! stream reads. However many viewers are connected, PostgreSQL sees one
//! tally transaction per interval, and each event is serialised once.
//!
//! Promises: `final` is true only when the poll had closed (or has no
//! close) [`SETTLE_AFTER_CLOSE`] before the tally began, every queue
//! answered and held nothing *before* the count was read. Workers delete an
//! entry only after its vote committed, so an empty backlog read first
//! means the count read after holds every vote acknowledged until then; and
//! after the close no vote can join a queue any more. The public snapshot
//! of a poll whose count is hidden (`RESULTS_VISIBLE=after_close`) holds no
//! count at all, not even zeroes a viewer could take for one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;
use tokio::sync::watch;

use crate::db::{self, DbPool};
use crate::endpoints::{redact, EndpointSource};
use crate::metrics::ResultsMetrics;
use crate::poll::{Phase, Poll, ResultsVisible};
use crate::queue::{self, RedisConnection};

/// About once a second, as the design asks: fresh enough to watch, cheap
/// enough for PostgreSQL on the big night.
pub const TALLY_INTERVAL: Duration = Duration::from_secs(1);
/// A queue that does not answer `XLEN` in this long counts as unreachable.
const DEPTH_TIMEOUT: Duration = Duration::from_millis(800);
/// The series keeps the last hour, a point a second.
pub const SERIES_POINTS: usize = 3600;
/// A vote stamped just before the close may still be on its way into its
/// queue for up to capture's `ENQUEUE_TIMEOUT_MS` (2 s by default), and
/// the capture nodes' clocks, which judged the close, are only close to
/// this node's: an empty backlog means "all in" only this long after the
/// close.
pub const SETTLE_AFTER_CLOSE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OptionTally {
    /// The option's letter, `a` to `l`.
    pub option: String,
    pub label: String,
    pub count: i64,
    pub percent: f64,
}

/// A capture node's part of the count: the voters whose counted vote it
/// took.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NodeTally {
    pub node: String,
    pub count: i64,
    pub percent: f64,
}

/// The poll's window, as the snapshot was taken.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Window {
    /// RFC 3339, or `null`: open from the start.
    pub opens: Option<String>,
    /// RFC 3339, or `null`: never closes.
    pub closes: Option<String>,
    /// `not_open`, `open` or `closed` at `as_of`.
    pub phase: &'static str,
}

/// One second of the night: the votes counted since the point before,
/// and the backlog then.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Point {
    /// Seconds since the epoch (the tally's `as_of`, whole seconds).
    pub t: i64,
    /// Votes counted since the previous point (the total's growth: a
    /// changed vote moves a count, it adds none). Absent in a hidden count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counted: Option<i64>,
    pub backlog: i64,
}

/// What the results page shows; also the `/api/results` JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    pub question: String,
    pub options: Vec<OptionTally>,
    pub total: i64,
    /// Per capture node, by name.
    pub nodes: Vec<NodeTally>,
    /// Votes still queued in Redis (in the queues that answered).
    pub backlog: i64,
    /// Queues that did not answer: the backlog may be larger.
    pub unreachable_queues: usize,
    pub window: Window,
    /// The poll is closed (or never closes) and nothing is queued
    /// anywhere: the count is complete.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The `as_of` of the first tally that found the count final, while
    /// it stays final.
    pub final_at: Option<String>,
    /// When this tally began, i.e. before the backlog was read (RFC 3339,
    /// milliseconds): every vote acknowledged before `as_of` is either in
    /// `backlog` or in the counts.
    pub as_of: String,
    /// The count is hidden from this viewer until the close
    /// (`RESULTS_VISIBLE=after_close`): no `count`, `percent`, `total` or
    /// `nodes` is sent.
    pub hidden: bool,
    /// This tally's point of the series, for the live charts.
    pub point: Option<Point>,
    /// That the last tally failed, if it did: public, so only
    /// [`COUNT_UNAVAILABLE`]; the cause (a database address, an error text)
    /// goes to the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the public sees of a failed tally.
pub const COUNT_UNAVAILABLE: &str = "the count is unavailable; retrying";

fn rfc3339_millis(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::NotOpen => "not_open",
        Phase::Open => "open",
        Phase::Closed => "closed",
    }
}

fn percent(n: i64, total: i64) -> f64 {
    if total > 0 {
        (n as f64 * 1000.0 / total as f64).round() / 10.0
    } else {
        0.0
    }
}

impl Snapshot {
    pub fn empty(poll: &Poll) -> Snapshot {
        let now = chrono::Utc::now();
        Snapshot {
            question: poll.question.clone(),
            options: poll
                .letters()
                .map(|(l, label)| OptionTally {
                    option: l.to_string(),
                    label: label.to_owned(),
                    count: 0,
                    percent: 0.0,
                })
                .collect(),
            total: 0,
            nodes: Vec::new(),
            backlog: 0,
            unreachable_queues: 0,
            window: Window {
                opens: poll.opens.map(Poll::format_time),
                closes: poll.closes.map(Poll::format_time),
                phase: phase_name(poll.phase_at(now.timestamp_micros())),
            },
            is_final: false,
            final_at: None,
            as_of: rfc3339_millis(now),
            hidden: false,
            point: None,
            error: Some("no tally yet".into()),
        }
    }

    /// This snapshot as the public may see it under `poll`'s visibility at
    /// the snapshot's own time: itself, or with every count taken out.
    pub fn public(&self, poll: &Poll) -> Snapshot {
        let hidden =
            poll.results_visible == ResultsVisible::AfterClose && self.window.phase != "closed";
        let mut s = self.clone();
        if hidden {
            s.hidden = true;
            s.total = 0;
            s.nodes.clear();
            for o in &mut s.options {
                o.count = 0;
                o.percent = 0.0;
            }
            if let Some(p) = &mut s.point {
                p.counted = None;
            }
        }
        s
    }

    /// The JSON of `/api/results` and of each event: a hidden count has
    /// no count fields at all.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a snapshot serialises");
        if self.hidden {
            if let Some(m) = v.as_object_mut() {
                m.remove("total");
                m.remove("nodes");
                if let Some(opts) = m.get_mut("options").and_then(|o| o.as_array_mut()) {
                    for o in opts.iter_mut().filter_map(|o| o.as_object_mut()) {
                        o.remove("count");
                        o.remove("percent");
                    }
                }
            }
        }
        v
    }
}

/// The last hour, a point per second, oldest first.
#[derive(Clone, Debug, Default)]
pub struct Series {
    points: VecDeque<Point>,
    /// The total of the last good tally, for the next point's `counted`.
    last_total: Option<i64>,
}

impl Series {
    /// Adds the point of a good tally at second `t` and returns it. Two
    /// tallies in one second (a slow one, then a prompt one) make one
    /// point; the first tally after the node started counts nothing, as
    /// it has nothing to compare with.
    pub fn record(&mut self, t: i64, total: i64, backlog: i64) -> Point {
        let counted = total - self.last_total.unwrap_or(total);
        self.last_total = Some(total);
        match self.points.back_mut() {
            Some(last) if last.t >= t => {
                last.counted = Some(last.counted.unwrap_or(0) + counted);
                last.backlog = backlog;
            }
            _ => self.points.push_back(Point {
                t,
                counted: Some(counted),
                backlog,
            }),
        }
        while self.points.len() > SERIES_POINTS
            || self
                .points
                .front()
                .is_some_and(|p| p.t <= t - SERIES_POINTS as i64)
        {
            self.points.pop_front();
        }
        *self.points.back().expect("just pushed")
    }

    pub fn points(&self) -> impl ExactSizeIterator<Item = &Point> {
        self.points.iter()
    }
}

/// What the Tally publishes each interval.
#[derive(Debug)]
pub struct Published {
    /// The operator's view: always the count.
    pub full: Snapshot,
    /// What everyone else sees.
    pub public: Snapshot,
    /// `data: <public JSON>\n\n`, serialised once for every open stream
    /// (shared, not copied, by each).
    pub public_event: actix_web::web::Bytes,
    /// The last hour, oldest first.
    pub series: Vec<Point>,
}

impl Published {
    pub fn new(full: Snapshot, poll: &Poll, series: Vec<Point>) -> Published {
        let public = full.public(poll);
        let public_event = format!("data: {}\n\n", public.to_json()).into();
        Published {
            full,
            public,
            public_event,
            series,
        }
    }
}

/// One reading of the backlog and the count (the Tally's tick, and
/// `results export`): `known` are connections kept from the last reading,
/// reused by URL; returned are those worth keeping.
pub async fn tally_once(
    pool: DbPool,
    endpoints: EndpointSource,
    key: String,
    poll: Poll,
    mut known: Vec<(String, RedisConnection)>,
) -> (Snapshot, Vec<(String, RedisConnection)>) {
    let as_of = chrono::Utc::now();
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
    let snap = build_snapshot(&poll, as_of, counts, backlog, unreachable, urls.is_empty());
    (snap, kept)
}

pub struct Tally {
    pool: DbPool,
    endpoints: EndpointSource,
    stream_key: String,
    poll: Poll,
    publish: watch::Sender<Arc<Published>>,
    /// A connection per queue URL, kept so they are reused across ticks;
    /// lent to the tick in flight.
    queues: Vec<(String, RedisConnection)>,
    series: Series,
    final_at: Option<String>,
    running: bool,
    metrics: ResultsMetrics,
}

impl Tally {
    pub fn new(
        pool: DbPool,
        endpoints: EndpointSource,
        stream_key: String,
        poll: Poll,
        publish: watch::Sender<Arc<Published>>,
        metrics: ResultsMetrics,
    ) -> Tally {
        Tally {
            pool,
            endpoints,
            stream_key,
            poll,
            publish,
            queues: Vec::new(),
            series: Series::default(),
            final_at: None,
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
        // No two ticks overlap (`running`), so the tick may hold them.
        let known = std::mem::take(&mut self.queues);
        let work = tally_once(
            self.pool.clone(),
            self.endpoints.clone(),
            self.stream_key.clone(),
            self.poll.clone(),
            known,
        );
        ctx.spawn(work.into_actor(self).map(move |(mut snap, kept), act, _| {
            act.running = false;
            act.queues = kept;
            act.metrics
                .tally_seconds
                .observe(started.elapsed().as_secs_f64());
            if snap.error.is_some() {
                act.metrics.tally_errors.inc();
            } else {
                let t = chrono::DateTime::parse_from_rfc3339(&snap.as_of)
                    .map(|t| t.timestamp())
                    .unwrap_or_else(|_| chrono::Utc::now().timestamp());
                snap.point = Some(act.series.record(t, snap.total, snap.backlog));
            }
            // A failed tally says nothing about finality either way: the
            // last good one's word stands until the next.
            if snap.error.is_none() {
                act.final_at = if snap.is_final {
                    act.final_at.take().or_else(|| Some(snap.as_of.clone()))
                } else {
                    None
                };
            }
            snap.final_at = act.final_at.clone().filter(|_| snap.is_final);
            act.metrics.backlog.set(snap.backlog);
            let series = act.series.points().copied().collect();
            act.publish
                .send_replace(Arc::new(Published::new(snap, &act.poll, series)));
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

/// Per option, per node.
type Counts = (Vec<(String, i64)>, Vec<(String, i64)>);

/// Both totals in one read-only snapshot of the database, so the nodes'
/// counts add up to the options' whatever commits in between.
fn count_votes(pool: &DbPool) -> Result<Counts, String> {
    let mut conn = pool.get().map_err(|e| format!("database: {e}"))?;
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(|c| Ok((db::vote_totals(c)?, db::node_totals(c)?)))
        .map_err(|e: diesel::result::Error| format!("tally query: {e}"))
}

fn build_snapshot(
    poll: &Poll,
    as_of: chrono::DateTime<chrono::Utc>,
    counts: Result<Counts, String>,
    backlog: i64,
    unreachable: usize,
    no_endpoints: bool,
) -> Snapshot {
    let mut snap = Snapshot::empty(poll);
    let at = as_of.timestamp_micros();
    snap.as_of = rfc3339_millis(as_of);
    snap.window.phase = phase_name(poll.phase_at(at));
    snap.backlog = backlog;
    snap.unreachable_queues = unreachable;
    snap.error = None;
    match counts {
        Ok((options, nodes)) => {
            for (opt, n) in options {
                match snap.options.iter_mut().find(|t| t.option == opt.trim()) {
                    Some(t) => t.count = n,
                    // Workers dead-letter an option the poll lacks; a row
                    // of one is from an earlier poll on this database.
                    None => log::warn!(
                        "the count has {n} votes for {opt:?}, not an option of this poll"
                    ),
                }
            }
            snap.total = snap.options.iter().map(|t| t.count).sum();
            for t in &mut snap.options {
                t.percent = percent(t.count, snap.total);
            }
            let nodes_total: i64 = nodes.iter().map(|(_, n)| n).sum();
            snap.nodes = nodes
                .into_iter()
                .map(|(node, count)| NodeTally {
                    percent: percent(count, nodes_total),
                    node,
                    count,
                })
                .collect();
            let settled = poll
                .closes
                .is_none_or(|c| at >= c.timestamp_micros() + SETTLE_AFTER_CLOSE.as_micros() as i64);
            snap.is_final = settled && backlog == 0 && unreachable == 0 && !no_endpoints;
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

    fn counts() -> Result<Counts, String> {
        Ok((
            vec![("a".to_string(), 3), ("b".to_string(), 1)],
            vec![("capture01".to_string(), 1), ("capture02".to_string(), 3)],
        ))
    }

    #[test]
    fn final_needs_an_empty_backlog_every_queue_and_a_count() {
        let poll = Poll::default();
        let now = chrono::Utc::now();
        let s = build_snapshot(&poll, now, counts(), 0, 0, false);
        assert!(s.is_final);
        assert_eq!(
            (s.total, s.options[0].percent, s.options[1].percent),
            (4, 75.0, 25.0)
        );
        assert_eq!(
            s.nodes.iter().map(|n| n.percent).collect::<Vec<_>>(),
            [25.0, 75.0]
        );
        assert!(!build_snapshot(&poll, now, counts(), 1, 0, false).is_final);
        assert!(!build_snapshot(&poll, now, counts(), 0, 1, false).is_final);
        assert!(!build_snapshot(&poll, now, counts(), 0, 0, true).is_final);
        let failed = build_snapshot(&poll, now, Err("down".into()), 0, 0, false);
        assert!(!failed.is_final);
        assert_eq!(failed.error.as_deref(), Some(COUNT_UNAVAILABLE));
    }

    #[test]
    fn a_poll_with_a_close_is_final_only_once_settled_after_it() {
        let closes = chrono::Utc::now();
        let poll = Poll {
            closes: Some(closes),
            ..Poll::default()
        };
        let before = closes - chrono::Duration::seconds(1);
        let s = build_snapshot(&poll, before, counts(), 0, 0, false);
        assert!(!s.is_final);
        assert_eq!(s.window.phase, "open");
        let just_after = closes + chrono::Duration::seconds(1);
        let s = build_snapshot(&poll, just_after, counts(), 0, 0, false);
        assert_eq!(s.window.phase, "closed");
        assert!(
            !s.is_final,
            "votes stamped before the close may be on their way"
        );
        let settled = closes + chrono::Duration::from_std(SETTLE_AFTER_CLOSE).unwrap();
        assert!(build_snapshot(&poll, settled, counts(), 0, 0, false).is_final);
        assert!(!build_snapshot(&poll, settled, counts(), 2, 0, false).is_final);
    }

    #[test]
    fn a_hidden_count_sends_no_count_at_all() {
        let closes = chrono::Utc::now();
        let poll = Poll {
            closes: Some(closes),
            results_visible: ResultsVisible::AfterClose,
            ..Poll::default()
        };
        let mut s = build_snapshot(
            &poll,
            closes - chrono::Duration::seconds(1),
            counts(),
            7,
            0,
            false,
        );
        s.point = Some(Point {
            t: 1,
            counted: Some(4),
            backlog: 7,
        });
        let public = s.public(&poll);
        let json = public.to_json();
        assert_eq!(json["hidden"], true);
        assert!(
            json.get("total").is_none() && json.get("nodes").is_none(),
            "{json}"
        );
        assert!(json["options"][0].get("count").is_none(), "{json}");
        assert_eq!(json["options"][0]["label"], "Cats");
        assert!(json["point"].get("counted").is_none(), "{json}");
        assert_eq!(json["backlog"], 7);
        assert!(!json.to_string().contains("capture0"), "{json}");
        // The operator's copy keeps it, and so does everyone after the close.
        assert_eq!(s.to_json()["total"], 4);
        let after = build_snapshot(&poll, closes, counts(), 0, 0, false);
        assert_eq!(after.public(&poll).to_json()["total"], 4);
    }

    #[test]
    fn the_series_keeps_a_point_a_second_for_an_hour() {
        let mut s = Series::default();
        assert_eq!(s.record(100, 10, 5).counted, Some(0), "no baseline yet");
        assert_eq!(s.record(101, 13, 2).counted, Some(3));
        // A second tally in the same second adds to that second.
        let p = s.record(101, 14, 1);
        assert_eq!((p.t, p.counted, p.backlog), (101, Some(4), 1));
        assert_eq!(s.points().len(), 2);
        for t in 102..102 + SERIES_POINTS as i64 {
            s.record(t, 14, 0);
        }
        assert_eq!(s.points().len(), SERIES_POINTS);
        assert_eq!(s.points().next().unwrap().t, 102);
    }
}
