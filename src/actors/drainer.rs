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
//! ([`CommitBatch`]), retried with backoff until it commits (unless the
//! error says retrying cannot help: then it stays pending for a claim);
//! only then are its entries acknowledged and deleted (`XACK` + `XDEL` in
//! one `MULTI`), with poison entries copied to the dead-letter stream in
//! the same transaction. Every Redis command is in [`crate::queue`]. At most `MAX_IN_FLIGHT` batches are in flight, so when
//! PostgreSQL is down the drainer stops reading instead of piling up.
//!
//! An endpoint that refuses the group or the read with `READONLY` is a
//! replica: a queue's standby copy (`REDIS_URLS` lists each queue's
//! replicas beside its primary). The drainer stands by: it counts the
//! endpoint in `voteswarm_endpoints_standby`, logs once at info and then
//! only at debug, and asks again every [`STANDBY_RECHECK`]. Once the
//! replica is promoted (`REPLICAOF NO ONE`) the next ask succeeds and it is
//! drained like any primary: the consumer group and its pending entries
//! were replicated, so this worker re-reads its own pending entries and
//! claims the others'. A vote the lost primary had drained but whose
//! `XACK` had not reached the replica is committed again, which changes
//! nothing.
//!
//! Promises: nothing is acknowledged before its batch committed; an
//! unreachable Redis only delays this drainer (it backs off and reconnects;
//! the others go on); a replica is never read from, written to or
//! dead-lettered into, and never reported as a failure; [`StopDraining`]
//! stops reading, lets the in-flight batches commit and acknowledge, then
//! answers.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::actors::db_writer::{CommitBatch, DbWriter};
use crate::actors::dedup::{Dedup, DedupBatch, Deduped};
use crate::endpoints::redact;
use crate::metrics::WorkerMetrics;
use crate::queue::{self, Entry, RedisConnection, GROUP};
use crate::retry::{Backoff, RetryPolicy};

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
/// For Redis and PostgreSQL errors: quick enough to ride out a blip, slow
/// enough not to hammer a server that is down.
const RETRY: RetryPolicy =
    RetryPolicy::doubling(Duration::from_millis(100), Duration::from_secs(5));
/// How often a standby (a replica) is asked again whether it was promoted:
/// a promoted queue is drained within about this, and a replica sees one
/// failed `XGROUP CREATE` per worker per interval, which costs it nothing.
pub const STANDBY_RECHECK: Duration = Duration::from_secs(1);
/// How often the depth and pending gauges are read.
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

/// What the read side is doing; one read at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// Free to read (if not stopping and not full).
    Idle,
    /// A read is out: connecting if need be, the group, `XREADGROUP`.
    Reading,
    /// Caught up: waiting out [`READ_LINGER`] before the next read.
    Lingering,
    /// Redis failed: waiting out the backoff before connecting again.
    Reconnecting,
    /// The endpoint is a replica: waiting [`STANDBY_RECHECK`] to ask again.
    StandingBy,
}

/// Which entries the next read asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ReadFrom {
    /// Our own pending entries after this id: from `0` when the drainer
    /// starts and after a reconnect (they may be unacknowledged), then
    /// from the last id returned, so that a batch still in flight is not
    /// read twice.
    OwnPending { after: String },
    /// New entries (`>`), once our pending ones are all re-read.
    New,
}

impl ReadFrom {
    fn start() -> ReadFrom {
        ReadFrom::OwnPending { after: "0".into() }
    }
}

/// Whether the consumer group is known to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    /// Not yet, or a read failed (a `NOGROUP`: the stream or the group was
    /// deleted under us): the next read creates it.
    Unchecked,
    Exists,
}

/// What the endpoint answered last, and so which gauge counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Not answering (or not yet asked).
    Down,
    /// A primary, drained: `endpoints_up`.
    Up,
    /// A replica, not drained: `endpoints_standby`.
    Standby,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClaimState {
    Idle,
    Claiming,
}

enum Lifecycle {
    Draining,
    /// Reading nothing more; these hear once the last batch is done.
    Stopping {
        waiters: Vec<oneshot::Sender<()>>,
    },
}

/// One batch after dedup, on its way to the database and back to Redis.
struct Batch {
    deduped: Deduped,
    /// Paces this batch's retries (of the commit, then of the
    /// acknowledgement), from the first wait.
    retry: Backoff,
}

pub struct Drainer {
    url: String,
    /// The URL without its password, for logs and metric labels.
    label: String,
    /// Blocking reads hold their connection, so reads and everything else
    /// use two. Reads have one of their own that decodes the large
    /// XREADGROUP replies itself ([`queue::reader`]: redis-rs's decoder was
    /// most of the worker's CPU); taken by the read in flight, put back
    /// when it is done.
    reader: Option<queue::Reader>,
    /// The group, claims, acknowledgements and gauges.
    redis: RedisConnection,
    settings: DrainSettings,
    dedup: Addr<Dedup>,
    db: Addr<DbWriter>,
    metrics: WorkerMetrics,
    in_flight: usize,
    reads: ReadState,
    read_from: ReadFrom,
    group: Group,
    claims: ClaimState,
    claim_cursor: String,
    /// Paces reconnects; reset by a read that worked.
    reconnect: Backoff,
    link: Link,
    lifecycle: Lifecycle,
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
            reader: None,
            redis: RedisConnection::new(client, CONNECT_TIMEOUT, RESPONSE_TIMEOUT),
            settings,
            dedup,
            db,
            metrics,
            in_flight: 0,
            reads: ReadState::Idle,
            read_from: ReadFrom::start(),
            group: Group::Unchecked,
            claims: ClaimState::Idle,
            claim_cursor: "0-0".into(),
            reconnect: RETRY.backoff(),
            link: Link::Down,
            lifecycle: Lifecycle::Draining,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn stopping(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Stopping { .. })
    }

    /// May a new batch be started (by a read or a claim)?
    fn may_take_a_batch(&self) -> bool {
        !self.stopping() && self.in_flight < MAX_IN_FLIGHT
    }

    fn gauge(&self, link: Link) -> Option<&prometheus::IntGauge> {
        match link {
            Link::Down => None,
            Link::Up => Some(&self.metrics.endpoints_up),
            Link::Standby => Some(&self.metrics.endpoints_standby),
        }
    }

    fn set_link(&mut self, link: Link) {
        if link == self.link {
            return;
        }
        let was = std::mem::replace(&mut self.link, link);
        if let Some(g) = self.gauge(was) {
            g.dec();
        }
        if let Some(g) = self.gauge(link) {
            g.inc();
        }
        match (was, link) {
            (Link::Standby, Link::Up) => {
                log::info!(
                    "{} was a replica and is a primary now: draining",
                    self.label
                )
            }
            (_, Link::Up) => log::info!("draining {}", self.label),
            (_, Link::Standby) => log::info!(
                "{} is a replica: standing by, asking again every {STANDBY_RECHECK:?}",
                self.label
            ),
            (_, Link::Down) => {}
        }
    }

    /// The endpoint answered as a replica: nothing to drain there until it
    /// is promoted. Not an error: both connections are let go (a replica
    /// holds no state of ours) and the next read, after
    /// [`STANDBY_RECHECK`], asks again from the start.
    fn stand_by(&mut self, e: &redis::RedisError, ctx: &mut Context<Self>) {
        log::debug!("{}: standing by ({e})", self.label);
        if self.link != Link::Standby {
            // The lag of a queue this worker does not drain is not its to
            // report; the primary's drainers report it.
            self.forget_gauges();
        }
        self.set_link(Link::Standby);
        self.reconnect.reset();
        self.reader = None;
        self.redis.drop_connection();
        self.read_from = ReadFrom::start();
        self.group = Group::Unchecked;
        self.reads = ReadState::StandingBy;
        ctx.run_later(STANDBY_RECHECK, |act, ctx| {
            act.reads = ReadState::Idle;
            act.read_next(ctx);
        });
    }

    fn forget_gauges(&self) {
        for gauge in [&self.metrics.backlog, &self.metrics.pending] {
            gauge.remove_label_values(&[&self.label]).ok();
        }
    }

    /// After a Redis error: drop both connections and connect again after
    /// the backoff, re-reading our own pending entries first.
    fn reconnect_later(&mut self, what: &str, e: &redis::RedisError, ctx: &mut Context<Self>) {
        if self.link == Link::Up {
            log::warn!(
                "{}: {what} failed, reconnecting with backoff: {e}",
                self.label
            );
        }
        self.set_link(Link::Down);
        self.reader = None;
        self.redis.drop_connection();
        self.read_from = ReadFrom::start();
        self.reads = ReadState::Reconnecting;
        ctx.run_later(self.reconnect.next_wait(), |act, ctx| {
            act.reads = ReadState::Idle;
            act.read_next(ctx);
        });
    }

    /// Starts the next read unless one is out, lingering or backing off,
    /// or no batch may be started.
    fn read_next(&mut self, ctx: &mut Context<Self>) {
        if self.reads != ReadState::Idle || !self.may_take_a_batch() {
            return;
        }
        self.reads = ReadState::Reading;
        let read = read_batch(
            self.reader.take(),
            self.redis.client().get_connection_info().clone(),
            self.redis.get(),
            self.group,
            self.settings.clone(),
            self.read_from.clone(),
        );
        ctx.spawn(
            read.into_actor(self)
                .map(|result, act, ctx| act.batch_read(result, ctx)),
        );
    }

    fn batch_read(&mut self, result: redis::RedisResult<ReadDone>, ctx: &mut Context<Self>) {
        self.reads = ReadState::Idle;
        let done = match result {
            Ok(done) => done,
            Err(e) if queue::is_replica(&e) => return self.stand_by(&e, ctx),
            Err(e) => {
                self.group = Group::Unchecked;
                return self.reconnect_later("read", &e, ctx);
            }
        };
        self.reader = Some(done.reader);
        self.redis.keep(done.conn);
        self.group = Group::Exists;
        self.reconnect.reset();
        self.set_link(Link::Up);
        let entries = done.entries;
        let caught_up = match done.from {
            ReadFrom::OwnPending { .. } => {
                // Unless a failed acknowledgement sent the re-read back to
                // the start meanwhile.
                if self.read_from == done.from {
                    self.read_from = match entries.last() {
                        Some(last) => ReadFrom::OwnPending {
                            after: last.id.clone(),
                        },
                        None => ReadFrom::New,
                    };
                }
                false
            }
            ReadFrom::New => !entries.is_empty() && entries.len() < self.settings.batch_size,
        };
        if !entries.is_empty() {
            self.take_batch(entries, ctx);
        }
        if caught_up {
            self.reads = ReadState::Lingering;
            ctx.run_later(READ_LINGER, |act, ctx| {
                act.reads = ReadState::Idle;
                act.read_next(ctx);
            });
        } else {
            self.read_next(ctx);
        }
    }

    /// Claims entries idle too long in another consumer's hands.
    fn claim(&mut self, ctx: &mut Context<Self>) {
        if self.claims == ClaimState::Claiming
            || !self.may_take_a_batch()
            || self.group != Group::Exists
        {
            return;
        }
        let Some(mut conn) = self.redis.open() else {
            return;
        };
        self.claims = ClaimState::Claiming;
        let key = self.settings.stream_key.clone();
        let consumer = self.settings.consumer.clone();
        let idle = self.settings.claim_idle;
        let cursor = self.claim_cursor.clone();
        let count = self.settings.batch_size;
        let claim = async move {
            queue::claim_idle(&mut conn, &key, &consumer, idle, &cursor, count).await
        };
        ctx.spawn(claim.into_actor(self).map(|result, act, ctx| {
            act.claims = ClaimState::Idle;
            match result {
                Ok(claimed) => {
                    act.claim_cursor = claimed.cursor;
                    let entries = claimed.entries;
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
                        act.take_batch(entries, ctx);
                    }
                }
                Err(e) => log::debug!("{}: XAUTOCLAIM failed: {e}", act.label),
            }
        }));
    }

    /// A batch's way: dedup, commit (with retries), acknowledge, done.
    fn take_batch(&mut self, entries: Vec<Entry>, ctx: &mut Context<Self>) {
        self.in_flight += 1;
        self.metrics.batch_size.observe(entries.len() as f64);
        let dedup = self.dedup.clone();
        let work = async move { dedup.send(DedupBatch { entries }).await };
        ctx.spawn(
            work.into_actor(self)
                .map(|deduped, act, ctx| match deduped {
                    Ok(deduped) => act.commit(
                        Batch {
                            deduped,
                            retry: RETRY.backoff(),
                        },
                        ctx,
                    ),
                    Err(e) => {
                        // The Dedup actor is gone: the worker is shutting down. The
                        // entries stay pending and will be delivered again.
                        log::error!("{}: dedup unavailable: {e}", act.label);
                        act.batch_done(ctx);
                    }
                }),
        );
    }

    fn commit(&mut self, batch: Batch, ctx: &mut Context<Self>) {
        let db = self.db.clone();
        let votes = batch.deduped.votes.clone();
        let send = async move { db.send(CommitBatch { votes }).await };
        ctx.spawn(
            send.into_actor(self)
                .map(move |result, act, ctx| act.committed(batch, result, ctx)),
        );
    }

    fn committed(
        &mut self,
        mut batch: Batch,
        result: Result<Result<usize, crate::db::DbError>, MailboxError>,
        ctx: &mut Context<Self>,
    ) {
        match result {
            Ok(Ok(_)) => {
                self.metrics
                    .committed_votes
                    .observe(batch.deduped.votes.len() as f64);
                batch.retry.reset();
                self.acknowledge(batch, ctx);
            }
            Ok(Err(e)) => match batch.retry.retry(&e) {
                Some(wait) => {
                    log::warn!("{}: commit failed, retrying in {wait:?}: {e}", self.label);
                    ctx.run_later(wait, move |act, ctx| act.commit(batch, ctx));
                }
                None => {
                    // The decoder refuses what the table would, so this
                    // should not happen; if it does, retrying cannot help.
                    // The entries stay pending, unacknowledged: nothing is
                    // lost, and a claim delivers them again after
                    // CLAIM_IDLE_MS (for whoever fixes the cause).
                    log::error!(
                        "{}: commit refused, leaving {} entries pending: {e}",
                        self.label,
                        batch.deduped.ids.len()
                    );
                    self.batch_done(ctx);
                }
            },
            Err(e) => {
                log::error!("{}: database writer unavailable: {e}", self.label);
                self.batch_done(ctx);
            }
        }
    }

    fn acknowledge(&mut self, batch: Batch, ctx: &mut Context<Self>) {
        let pipe = queue::acknowledgement(
            &self.settings.stream_key,
            &batch.deduped.ids,
            &batch.deduped.dead,
        );
        let connect = self.redis.get();
        let ack = async move {
            let mut conn = connect.await?;
            pipe.query_async::<()>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        ctx.spawn(
            ack.into_actor(self)
                .map(move |result, act, ctx| act.acknowledged(batch, result, ctx)),
        );
    }

    fn acknowledged(
        &mut self,
        mut batch: Batch,
        result: redis::RedisResult<redis::aio::MultiplexedConnection>,
        ctx: &mut Context<Self>,
    ) {
        let e = match result {
            Ok(conn) => {
                self.redis.keep(conn);
                let d = &batch.deduped;
                self.metrics
                    .drained
                    .with_label_values(&[&self.label])
                    .inc_by(d.ids.len() as u64);
                if !d.dead.is_empty() {
                    log::warn!(
                        "{}: {} entries moved to {}",
                        self.label,
                        d.dead.len(),
                        queue::dead_letter_key(&self.settings.stream_key)
                    );
                    self.metrics
                        .dead_letters
                        .with_label_values(&[&self.label])
                        .inc_by(d.dead.len() as u64);
                }
                return self.batch_done(ctx);
            }
            Err(e) => e,
        };
        self.redis.drop_connection();
        match batch.retry.next_wait_below_max() {
            Some(wait) => {
                // Committed but not acknowledged: retrying is harmless (a
                // replayed commit changes nothing).
                log::warn!("{}: acknowledge failed, retrying: {e}", self.label);
                ctx.run_later(wait, move |act, ctx| act.acknowledge(batch, ctx));
            }
            None => {
                // Give up on this batch: its entries stay pending and are
                // re-read or claimed, and re-committing them changes nothing.
                log::warn!(
                    "{}: acknowledge failed, leaving the batch pending: {e}",
                    self.label
                );
                self.read_from = ReadFrom::start();
                self.batch_done(ctx);
            }
        }
    }

    fn batch_done(&mut self, ctx: &mut Context<Self>) {
        self.in_flight -= 1;
        if self.in_flight == 0 {
            if let Lifecycle::Stopping { waiters } =
                std::mem::replace(&mut self.lifecycle, Lifecycle::Draining)
            {
                for w in waiters {
                    let _ = w.send(());
                }
                ctx.stop();
                return;
            }
        }
        self.read_next(ctx);
    }

    fn read_stats(&mut self, ctx: &mut Context<Self>) {
        let Some(mut conn) = self.redis.open() else {
            return;
        };
        let key = self.settings.stream_key.clone();
        let stats = async move { queue::depth_and_pending(&mut conn, &key).await };
        ctx.spawn(stats.into_actor(self).map(|r, act, _| {
            if let Ok((depth, pending)) = r {
                act.metrics
                    .backlog
                    .with_label_values(&[&act.label])
                    .set(depth);
                act.metrics
                    .pending
                    .with_label_values(&[&act.label])
                    .set(pending);
            }
        }));
    }
}

/// What a read that worked hands back: both connections, what it asked
/// for, and the entries.
struct ReadDone {
    reader: queue::Reader,
    conn: redis::aio::MultiplexedConnection,
    from: ReadFrom,
    entries: Vec<Entry>,
}

/// One read: connect what is not connected, create the group if it is not
/// known to exist, then `XREADGROUP` (blocking only for new entries).
async fn read_batch(
    reader: Option<queue::Reader>,
    info: redis::ConnectionInfo,
    connect: impl std::future::Future<Output = redis::RedisResult<redis::aio::MultiplexedConnection>>,
    group: Group,
    settings: DrainSettings,
    from: ReadFrom,
) -> redis::RedisResult<ReadDone> {
    let mut reader = match reader {
        Some(r) => r,
        None => tokio::time::timeout(CONNECT_TIMEOUT, queue::Reader::connect(&info))
            .await
            .map_err(|_| timed_out("connect"))??,
    };
    let mut conn = connect.await?;
    if group == Group::Unchecked {
        queue::create_group(&mut conn, &settings.stream_key).await?;
    }
    let (id, block) = match &from {
        ReadFrom::OwnPending { after } => (after.as_str(), None),
        ReadFrom::New => (">", Some(READ_BLOCK)),
    };
    let read = queue::Read {
        group: GROUP,
        consumer: &settings.consumer,
        count: settings.batch_size,
        block,
        key: &settings.stream_key,
        id,
    };
    let entries = tokio::time::timeout(RESPONSE_TIMEOUT, reader.read(&read))
        .await
        .map_err(|_| timed_out("XREADGROUP"))??;
    Ok(ReadDone {
        reader,
        conn,
        from,
        entries,
    })
}

impl Actor for Drainer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.read_next(ctx);
        let every = (self.settings.claim_idle / 2).max(Duration::from_millis(250));
        ctx.run_interval(every, |act, ctx| act.claim(ctx));
        ctx.run_interval(STATS_INTERVAL, |act, ctx| act.read_stats(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.set_link(Link::Down);
        self.forget_gauges();
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
        match &mut self.lifecycle {
            Lifecycle::Stopping { waiters } => waiters.push(msg.done),
            Lifecycle::Draining => {
                self.lifecycle = Lifecycle::Stopping {
                    waiters: vec![msg.done],
                }
            }
        }
    }
}
