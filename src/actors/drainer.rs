//! `Drainer`: drains one Redis Stream (one capture node's queue) into
//! PostgreSQL, at least once, acknowledging only what committed.
//!
//! Started by the `Supervisor`, one per endpoint. It joins the consumer
//! group (creating it if missing), first re-reads its own pending entries
//! (ID `0`: a restarted worker with the same name finishes what it held),
//! then reads new ones (`XREADGROUP ... >`) in batches of `BATCH_SIZE`
//! (waiting `READ_LINGER` after a short one, so batches stay big while
//! votes trickle in), and
//! every `CLAIM_IDLE_MS / 2` claims entries another consumer has held idle
//! for longer than `CLAIM_IDLE_MS` (`XAUTOCLAIM`: a dead worker's batch).
//!
//! Each batch goes to `Dedup` ([`DedupBatch`]), then to `DbWriter`
//! ([`CommitBatch`]), retried with backoff until it commits; only then are
//! its entries acknowledged and deleted (`XACK` + `XDEL` in one `MULTI`),
//! with poison entries copied to the dead-letter stream in the same
//! transaction. At most `MAX_IN_FLIGHT` batches are in flight, so when
//! PostgreSQL is down the drainer stops reading instead of piling up.
//!
//! Promises: nothing is acknowledged before its batch committed; an
//! unreachable Redis only delays this drainer (it backs off and reconnects;
//! the others go on); [`StopDraining`] stops reading, lets the in-flight
//! batches commit and acknowledge, then answers.

use std::time::Duration;

use actix::prelude::*;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::oneshot;

use crate::actors::db_writer::{CommitBatch, DbWriter};
use crate::actors::dedup::{Dedup, DedupBatch, Deduped};
use crate::endpoints::redact;
use crate::metrics::WorkerMetrics;
use crate::stream::{self, Entry, GROUP};
use crate::xread;

/// Batches in flight per endpoint: one committing while the next is read
/// and deduplicated keeps PostgreSQL busy; more only queue up. (A claim
/// that completes while a read is out can make it one more, briefly: reads
/// and claims each check the bound before they start.)
pub const MAX_IN_FLIGHT: usize = 2;
/// How long one XREADGROUP waits for new entries.
const READ_BLOCK: Duration = Duration::from_millis(1000);
/// After a read that found fewer entries than a batch (the drain has
/// caught up with the capture nodes), wait this long before the next one,
/// so that it finds a batch's worth instead of the one or two entries that
/// arrived meanwhile. A commit costs PostgreSQL about the same for 10 rows
/// as for 200 (a transaction, a WAL flush), so while votes stream in, tiny
/// batches would spend the database's CPU on overhead; behind, reads come
/// back full and never wait. The count on the results page is at most
/// this much later, and it refreshes once a second.
const READ_LINGER: Duration = Duration::from_millis(50);
/// Longer than READ_BLOCK: a blocked read is not a timeout.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Backoff for Redis and PostgreSQL errors: doubles up to the max.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the backlog and pending gauges are read.
const STATS_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct DrainSettings {
    pub stream_key: String,
    /// This worker's consumer name in the group.
    pub consumer: String,
    pub batch_size: usize,
    pub claim_idle: Duration,
}

fn timed_out(what: &'static str) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out"),
    ))
}

/// Stop reading, finish what is in flight, then answer and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopDraining {
    pub done: oneshot::Sender<()>,
}

pub struct Drainer {
    url: String,
    /// The URL without its password, for logs and metric labels.
    label: String,
    client: redis::Client,
    /// Blocking reads hold their connection, so reads and acks use two.
    /// Reads have one of their own that decodes the large XREADGROUP
    /// replies itself (`src/xread.rs`: redis-rs's decoder was most of the
    /// worker's CPU); taken by the read in flight, put back when it is done.
    read_conn: Option<xread::Reader>,
    cmd_conn: Option<MultiplexedConnection>,
    settings: DrainSettings,
    dedup: Addr<Dedup>,
    db: Addr<DbWriter>,
    metrics: WorkerMetrics,
    in_flight: usize,
    reading: bool,
    /// Waiting out READ_LINGER before the next read.
    lingering: bool,
    claiming: bool,
    group_ready: bool,
    /// Our own pending entries were re-read since the last (re)connect.
    own_pending_done: bool,
    /// Where the re-read of our own pending entries goes on from: the last
    /// id it returned, so that entries still in flight are not read twice.
    own_cursor: String,
    claim_cursor: String,
    backoff: Duration,
    up: bool,
    stopping: Option<Vec<oneshot::Sender<()>>>,
}

impl Drainer {
    pub fn new(
        url: String,
        settings: DrainSettings,
        dedup: Addr<Dedup>,
        db: Addr<DbWriter>,
        metrics: WorkerMetrics,
    ) -> Result<Drainer, redis::RedisError> {
        let client = redis::Client::open(url.as_str())?;
        Ok(Drainer {
            label: redact(&url),
            url,
            client,
            read_conn: None,
            cmd_conn: None,
            settings,
            dedup,
            db,
            metrics,
            in_flight: 0,
            reading: false,
            lingering: false,
            claiming: false,
            group_ready: false,
            own_pending_done: false,
            own_cursor: "0".into(),
            claim_cursor: "0-0".into(),
            backoff: FIRST_BACKOFF,
            up: false,
            stopping: None,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn connect(
        &self,
    ) -> impl std::future::Future<Output = redis::RedisResult<MultiplexedConnection>> {
        let client = self.client.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        async move {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        }
    }

    fn set_up(&mut self, up: bool) {
        if up != self.up {
            self.up = up;
            self.metrics.endpoints_up.add(if up { 1 } else { -1 });
            if up {
                log::info!("draining {}", self.label);
            }
        }
    }

    fn lost(&mut self, what: &str, e: &redis::RedisError, ctx: &mut Context<Self>) {
        if self.up {
            log::warn!(
                "{}: {what} failed, reconnecting with backoff: {e}",
                self.label
            );
        }
        self.set_up(false);
        self.read_conn = None;
        self.cmd_conn = None;
        // After a reconnect, re-read what we hold (it may be unacknowledged).
        self.reread_own_pending();
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        ctx.run_later(wait, |act, ctx| act.pump(ctx));
    }

    /// Reads our own pending entries again from the start, before new ones.
    fn reread_own_pending(&mut self) {
        self.own_pending_done = false;
        self.own_cursor = "0".into();
    }

    /// Reads the next batch unless stopping, already reading, or full.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.stopping.is_some()
            || self.reading
            || self.lingering
            || self.in_flight >= MAX_IN_FLIGHT
        {
            return;
        }
        self.reading = true;
        let read_conn = self.read_conn.take();
        let cmd_conn = self.cmd_conn.clone();
        let info = self.client.get_connection_info().clone();
        let connect_cmd = self.connect();
        let key = self.settings.stream_key.clone();
        let consumer = self.settings.consumer.clone();
        let count = self.settings.batch_size;
        let group_ready = self.group_ready;
        let own = !self.own_pending_done;
        let own_cursor = self.own_cursor.clone();
        let read = async move {
            let mut rconn = match read_conn {
                Some(c) => c,
                None => tokio::time::timeout(CONNECT_TIMEOUT, xread::Reader::connect(&info))
                    .await
                    .map_err(|_| timed_out("connect"))??,
            };
            let mut cconn = match cmd_conn {
                Some(c) => c,
                None => connect_cmd.await?,
            };
            if !group_ready {
                let created: redis::RedisResult<()> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&key)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut cconn)
                    .await;
                if let Err(e) = created {
                    if !e.to_string().contains("BUSYGROUP") {
                        return Err(e);
                    }
                }
            }
            let read = xread::Read {
                group: GROUP,
                consumer: &consumer,
                count,
                block: (!own).then_some(READ_BLOCK),
                key: &key,
                id: if own { own_cursor.as_str() } else { ">" },
            };
            let entries = tokio::time::timeout(RESPONSE_TIMEOUT, rconn.read(&read))
                .await
                .map_err(|_| timed_out("XREADGROUP"))??;
            Ok::<_, redis::RedisError>((rconn, cconn, entries))
        };
        ctx.spawn(read.into_actor(self).map(move |result, act, ctx| {
            act.reading = false;
            match result {
                Ok((rconn, cconn, entries)) => {
                    act.read_conn = Some(rconn);
                    act.cmd_conn = Some(cconn);
                    act.group_ready = true;
                    act.backoff = FIRST_BACKOFF;
                    act.set_up(true);
                    if own {
                        match entries.last() {
                            Some(last) => act.own_cursor = last.id.clone(),
                            None => act.own_pending_done = true,
                        }
                    }
                    let caught_up = !own && !entries.is_empty() && entries.len() < count;
                    if !entries.is_empty() {
                        act.process(entries, ctx);
                    }
                    if caught_up {
                        act.lingering = true;
                        ctx.run_later(READ_LINGER, |act, ctx| {
                            act.lingering = false;
                            act.pump(ctx);
                        });
                    } else {
                        act.pump(ctx);
                    }
                }
                Err(e) => {
                    // A NOGROUP error means the stream or group was deleted
                    // under us: create it again on the next read.
                    act.group_ready = false;
                    act.lost("read", &e, ctx);
                }
            }
        }));
    }

    /// Claims entries idle too long in another consumer's hands.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        if self.stopping.is_some()
            || self.claiming
            || self.in_flight >= MAX_IN_FLIGHT
            || !self.group_ready
        {
            return;
        }
        let Some(mut conn) = self.cmd_conn.clone() else {
            return;
        };
        self.claiming = true;
        let key = self.settings.stream_key.clone();
        let consumer = self.settings.consumer.clone();
        let idle = self.settings.claim_idle.as_millis() as u64;
        let cursor = self.claim_cursor.clone();
        let count = self.settings.batch_size;
        let claim = async move {
            let reply: redis::Value = redis::cmd("XAUTOCLAIM")
                .arg(&key)
                .arg(GROUP)
                .arg(&consumer)
                .arg(idle)
                .arg(&cursor)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>(stream::parse_autoclaim(reply))
        };
        ctx.spawn(claim.into_actor(self).map(|result, act, ctx| {
            act.claiming = false;
            match result {
                Ok((cursor, entries, deleted)) => {
                    act.claim_cursor = cursor;
                    if !entries.is_empty() {
                        log::info!(
                            "{}: claimed {} entries idle longer than {:?}",
                            act.label,
                            entries.len(),
                            act.settings.claim_idle
                        );
                        act.metrics
                            .claimed
                            .with_label_values(&[&act.label])
                            .inc_by(entries.len() as u64);
                        act.process(entries, ctx);
                    }
                    // Redis already dropped deleted ids from the pending
                    // list; nothing to acknowledge for them.
                    let _ = deleted;
                }
                Err(e) => log::debug!("{}: XAUTOCLAIM failed: {e}", act.label),
            }
        }));
    }

    /// Dedup, commit (with retries), then acknowledge one batch.
    fn process(&mut self, entries: Vec<Entry>, ctx: &mut Context<Self>) {
        self.in_flight += 1;
        self.metrics.batch_size.observe(entries.len() as f64);
        let dedup = self.dedup.clone();
        let work = async move { dedup.send(DedupBatch { entries }).await };
        ctx.spawn(
            work.into_actor(self)
                .map(|deduped, act, ctx| match deduped {
                    Ok(d) => act.commit(d, FIRST_BACKOFF, ctx),
                    Err(e) => {
                        // The Dedup actor is gone: the worker is shutting down. The
                        // entries stay pending and will be delivered again.
                        log::error!("{}: dedup unavailable: {e}", act.label);
                        act.batch_done(ctx);
                    }
                }),
        );
    }

    fn commit(&mut self, d: Deduped, backoff: Duration, ctx: &mut Context<Self>) {
        let db = self.db.clone();
        let votes = d.votes.clone();
        self.metrics.committed_votes.observe(votes.len() as f64);
        let send = async move { db.send(CommitBatch { votes }).await };
        ctx.spawn(
            send.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(Ok(_)) => act.acknowledge(d, FIRST_BACKOFF, ctx),
                    Ok(Err(e)) => {
                        if e.retriable {
                            log::warn!(
                                "{}: commit failed, retrying in {backoff:?}: {e}",
                                act.label
                            );
                        } else {
                            // The decoder refuses what the table would; if this
                            // happens anyway, keep the votes and say so loudly.
                            log::error!(
                                "{}: commit refused, retrying in {backoff:?}: {e}",
                                act.label
                            );
                        }
                        let next = (backoff * 2).min(MAX_BACKOFF);
                        ctx.run_later(backoff, move |act, ctx| act.commit(d, next, ctx));
                    }
                    Err(e) => {
                        log::error!("{}: database writer unavailable: {e}", act.label);
                        act.batch_done(ctx);
                    }
                }),
        );
    }

    fn acknowledge(&mut self, d: Deduped, backoff: Duration, ctx: &mut Context<Self>) {
        let key = self.settings.stream_key.clone();
        let dead_key = stream::dead_letter_key(&key);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for dl in &d.dead {
            let cmd = pipe.cmd("XADD").arg(&dead_key).arg("*");
            cmd.arg("source_id")
                .arg(&dl.id)
                .arg("reason")
                .arg(&dl.reason);
            for (k, v) in &dl.fields {
                let mut name = b"f:".to_vec();
                name.extend_from_slice(&k[..k.len().min(stream::DEAD_LETTER_VALUE_MAX)]);
                cmd.arg(name)
                    .arg(&v[..v.len().min(stream::DEAD_LETTER_VALUE_MAX)]);
            }
            cmd.ignore();
        }
        pipe.cmd("XACK").arg(&key).arg(GROUP).arg(&d.ids).ignore();
        pipe.cmd("XDEL").arg(&key).arg(&d.ids).ignore();
        let conn = self.cmd_conn.clone();
        let connect = self.connect();
        let ack = async move {
            let mut conn = match conn {
                Some(c) => c,
                None => connect.await?,
            };
            pipe.query_async::<()>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        ctx.spawn(
            ack.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(conn) => {
                        act.cmd_conn = Some(conn);
                        act.metrics
                            .drained
                            .with_label_values(&[&act.label])
                            .inc_by(d.ids.len() as u64);
                        if !d.dead.is_empty() {
                            log::warn!(
                                "{}: {} entries moved to {dead_key}",
                                act.label,
                                d.dead.len()
                            );
                            act.metrics
                                .dead_letters
                                .with_label_values(&[&act.label])
                                .inc_by(d.dead.len() as u64);
                        }
                        act.batch_done(ctx);
                    }
                    Err(e) if backoff < MAX_BACKOFF => {
                        // Committed but not acknowledged: retrying is harmless (a
                        // replayed commit changes nothing).
                        log::warn!("{}: acknowledge failed, retrying: {e}", act.label);
                        act.cmd_conn = None;
                        let next = (backoff * 2).min(MAX_BACKOFF);
                        ctx.run_later(backoff, move |act, ctx| act.acknowledge(d, next, ctx));
                    }
                    Err(e) => {
                        // Give up on this batch: its entries stay pending and are
                        // re-read or claimed, and re-committing them changes nothing.
                        log::warn!(
                            "{}: acknowledge failed, leaving the batch pending: {e}",
                            act.label
                        );
                        act.reread_own_pending();
                        act.batch_done(ctx);
                    }
                }),
        );
    }

    fn batch_done(&mut self, ctx: &mut Context<Self>) {
        self.in_flight -= 1;
        if self.in_flight == 0 {
            if let Some(waiters) = self.stopping.take() {
                for w in waiters {
                    let _ = w.send(());
                }
                ctx.stop();
                return;
            }
        }
        self.pump(ctx);
    }

    fn read_stats(&mut self, ctx: &mut Context<Self>) {
        let Some(mut conn) = self.cmd_conn.clone() else {
            return;
        };
        let key = self.settings.stream_key.clone();
        let stats = async move {
            let (len, pending): (i64, redis::Value) = redis::pipe()
                .cmd("XLEN")
                .arg(&key)
                .cmd("XPENDING")
                .arg(&key)
                .arg(GROUP)
                .query_async(&mut conn)
                .await?;
            let pending = match pending {
                redis::Value::Array(v) => match v.first() {
                    Some(redis::Value::Int(n)) => *n,
                    _ => 0,
                },
                _ => 0,
            };
            Ok::<_, redis::RedisError>((len, pending))
        };
        ctx.spawn(stats.into_actor(self).map(|r, act, _| {
            if let Ok((len, pending)) = r {
                act.metrics
                    .backlog
                    .with_label_values(&[&act.label])
                    .set(len);
                act.metrics
                    .pending
                    .with_label_values(&[&act.label])
                    .set(pending);
            }
        }));
    }
}

impl Actor for Drainer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.pump(ctx);
        let every = (self.settings.claim_idle / 2).max(Duration::from_millis(250));
        ctx.run_interval(every, |act, ctx| act.claim(ctx));
        ctx.run_interval(STATS_INTERVAL, |act, ctx| act.read_stats(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.set_up(false);
        self.metrics
            .backlog
            .remove_label_values(&[&self.label])
            .ok();
        self.metrics
            .pending
            .remove_label_values(&[&self.label])
            .ok();
    }
}

impl Handler<StopDraining> for Drainer {
    type Result = ();

    fn handle(&mut self, msg: StopDraining, ctx: &mut Self::Context) {
        if self.in_flight == 0 {
            let _ = msg.done.send(());
            ctx.stop();
            return;
        }
        self.stopping.get_or_insert_with(Vec::new).push(msg.done);
    }
}
