//! `QueueWriter`: the owner of a Redis connection on a capture node. There
//! is one per HTTP worker thread, so a vote never crosses threads on its
//! way to Redis (measured: the cross-thread wake-ups cost more than the
//! smaller batches).
//!
//! Receives [`Enqueue`] (a stamped vote plus a reply channel) from the HTTP
//! handlers and [`Ping`] from `/readyz`. Votes that arrive while a pipeline
//! is in flight wait, and go out together as the next pipeline of `XADD`s:
//! one round trip (and with `appendfsync always`, one fsync) per batch,
//! however many voters are waiting.
//!
//! Promises:
//! - a sender gets `Ok(entry_id)` only after Redis answered the `XADD` of
//!   its vote, so a `2xx` is never sent for a vote that is not stored;
//!   with `ack_replicas` > 0, only after that many replicas acknowledged
//!   its batch too (`WAIT`, one per batch, within what is left of the
//!   oldest vote's `ENQUEUE_TIMEOUT_MS`), so a `2xx` is never sent for a
//!   vote that only one host holds;
//! - a vote whose sender has already given up (its request timed out and
//!   was answered `503`) is not written;
//! - the number of waiting votes is bounded by `capacity`: past it, the
//!   sender is refused at once with [`EnqueueError::Full`];
//! - a lost connection is dropped and re-opened on the next batch, so the
//!   node recovers by itself when Redis comes back.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::capture::settings::CaptureSettings;
use crate::metrics::CaptureMetrics;
use crate::queue::{self, Append, RedisConnection};
use crate::vote::Vote;

/// Largest pipeline by default. Measured with `make bench-capture`: past a
/// few hundred, batches are rarely that full at the rates one node takes,
/// and a bigger pipeline only delays the first vote in it.
pub const DEFAULT_MAX_BATCH: usize = 256;

/// Votes that may wait for Redis by default. At ~100 bytes each this bounds
/// the writer's memory to about a megabyte, and at the node's rate it is far
/// more than one slow round trip's worth; beyond it voters get `503` and
/// HAProxy tries another node.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// How often an idle writer reads the queue's length. A node over
/// QUEUE_LIMIT is back in rotation within about this (plus HAProxy's
/// health-check interval) once the workers drain it.
const DEPTH_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Of the oldest vote's budget, what `WAIT` leaves for its answer to come
/// back through the writer: without it the handler's own timeout fires
/// first, and a vote refused for want of a replica is logged and counted
/// as a plain timeout. Redis notices a blocked client's timeout only when
/// its event loop wakes, at least every 100 ms at the default `hz 10`
/// (measured: `WAIT 1 300` answers after 420 ms), hence more than that.
const WAIT_REPLY_MARGIN: Duration = Duration::from_millis(150);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis did not answer in time")]
    Timeout,
    #[error("the queue writer is full")]
    Full,
    /// Redis stored the batch, but fewer replicas than ACK_REPLICAS have it.
    #[error("{acked} of {wanted} redis replicas acknowledged")]
    Replicas { acked: usize, wanted: usize },
}

/// The answer to one [`Enqueue`]: the stream entry id Redis assigned.
pub type EnqueueReply = Result<String, EnqueueError>;

/// Store this vote; answer on `reply` once Redis has (or has failed to).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue {
    pub vote: Vote,
    pub reply: oneshot::Sender<EnqueueReply>,
}

/// Does Redis answer this writer right now, with at least `ack_replicas`
/// replicas in sync?
#[derive(Message)]
#[rtype(result = "Result<(), EnqueueError>")]
pub struct Ping;

struct Waiting {
    vote: Vote,
    reply: oneshot::Sender<EnqueueReply>,
    since: Instant,
}

pub struct QueueWriter {
    /// Dropped after an error: the next batch reconnects.
    redis: RedisConnection,
    stream_key: String,
    max_batch: usize,
    capacity: usize,
    /// Bounds every Redis operation, so a hung Redis cannot wedge the writer.
    timeout: Duration,
    /// Replicas that must acknowledge a batch before its votes are stored
    /// (ACK_REPLICAS); 0: the primary's answer is enough.
    ack_replicas: usize,
    /// Whether the last batch lacked replicas: an outage logs once.
    short_of_replicas: bool,
    waiting: VecDeque<Waiting>,
    in_flight: bool,
    metrics: CaptureMetrics,
    /// Our share of the `writer_pending` gauge.
    reported_pending: i64,
    /// The queue's last known length, shared with the handlers.
    depth: Arc<AtomicI64>,
}

impl QueueWriter {
    /// A writer with the node's `STREAM_KEY`, `MAX_BATCH`,
    /// `WRITER_CAPACITY`, `ENQUEUE_TIMEOUT_MS` and `ACK_REPLICAS`.
    pub fn new(
        client: redis::Client,
        settings: &CaptureSettings,
        metrics: CaptureMetrics,
        depth: Arc<AtomicI64>,
    ) -> Self {
        let timeout = settings.enqueue_timeout;
        QueueWriter {
            redis: RedisConnection::new(client, timeout, timeout),
            stream_key: settings.stream_key.clone(),
            max_batch: settings.max_batch.max(1),
            capacity: settings.writer_capacity.max(1),
            timeout,
            ack_replicas: settings.ack_replicas,
            short_of_replicas: false,
            waiting: VecDeque::new(),
            in_flight: false,
            metrics,
            reported_pending: 0,
            depth,
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight {
            return;
        }
        let mut batch = Vec::with_capacity(self.max_batch.min(self.waiting.len()));
        while batch.len() < self.max_batch {
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            // Its request already answered 503: writing it now would store
            // a vote the voter was told was not taken.
            if !w.reply.is_closed() {
                batch.push(w);
            }
        }
        self.report_pending();
        if batch.is_empty() {
            return;
        }
        self.in_flight = true;
        self.metrics.batch_size.observe(batch.len() as f64);
        let sent = batch.len() as i64;
        self.metrics.writer_in_flight.add(sent);

        let mut append = Append::new(&self.stream_key, batch.iter().map(|w| &w.vote));
        let connect = self.redis.get();
        let timeout = self.timeout;
        let ack_replicas = self.ack_replicas;
        // The oldest vote's voter gives up first: the replicas must answer
        // within what is left of its budget.
        let deadline = (batch[0].since + timeout)
            .checked_sub(WAIT_REPLY_MARGIN)
            .unwrap_or(batch[0].since);
        let write = async move {
            let mut conn = connect.await.map_err(unavailable)?;
            if ack_replicas > 0 {
                append.wait_for_replicas(
                    ack_replicas,
                    deadline.saturating_duration_since(Instant::now()),
                );
            }
            let appended = tokio::time::timeout(timeout, append.send(&mut conn))
                .await
                .map_err(|_| EnqueueError::Timeout)?
                .map_err(unavailable)?;
            Ok::<_, EnqueueError>((conn, appended))
        };
        ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
            act.in_flight = false;
            act.metrics.writer_in_flight.sub(sent);
            match result {
                Ok((conn, appended)) if appended.ids.len() == batch.len() => {
                    let queue::Appended {
                        ids,
                        depth,
                        replicas,
                    } = appended;
                    if let Some(depth) = depth {
                        act.set_depth(depth);
                    }
                    if act.redis.keep(conn) {
                        log::info!("redis connection (re)established");
                    }
                    let acked = replicas.unwrap_or(0);
                    if act.ack_replicas > 0 && acked < act.ack_replicas {
                        // Stored on the primary, maybe on some replicas:
                        // a 503 it is, and the voter's retry is the same
                        // vote (docs/PROTOCOL.md), counted once.
                        if !std::mem::replace(&mut act.short_of_replicas, true) {
                            log::warn!(
                                "{acked} of {} redis replicas acknowledged a batch: refusing its votes until enough do",
                                act.ack_replicas
                            );
                        }
                        let wanted = act.ack_replicas;
                        act.fail(batch, EnqueueError::Replicas { acked, wanted });
                        act.flush(ctx);
                        return;
                    }
                    if std::mem::take(&mut act.short_of_replicas) {
                        log::info!("redis replicas acknowledge batches again");
                    }
                    for (w, id) in batch.into_iter().zip(ids) {
                        act.metrics
                            .enqueue_latency
                            .observe(w.since.elapsed().as_secs_f64());
                        let _ = w.reply.send(Ok(id));
                    }
                }
                Ok((_, queue::Appended { ids, .. })) => {
                    // Cannot happen with a well-behaved Redis; refuse them
                    // all rather than guess which were stored.
                    log::error!("redis answered {} ids for {} votes", ids.len(), batch.len());
                    act.fail(batch, EnqueueError::Unavailable("short reply".into()));
                }
                Err(e) => {
                    if act.redis.drop_connection() {
                        log::warn!("redis write failed, reconnecting: {e}");
                    }
                    act.fail(batch, e);
                }
            }
            act.flush(ctx);
        }));
    }

    fn set_depth(&self, depth: i64) {
        self.depth.store(depth, Ordering::Relaxed);
        self.metrics.queue_depth.set(depth);
    }

    /// Reads the queue's depth while no batch brings it: a node refusing
    /// votes for QUEUE_LIMIT must notice when the workers drain it.
    fn poll_depth(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight {
            return;
        }
        let Some(mut conn) = self.redis.open() else {
            return;
        };
        let key = self.stream_key.clone();
        let timeout = self.timeout;
        let query = async move {
            tokio::time::timeout(timeout, queue::depth(&mut conn, &key))
                .await
                .ok()
                .and_then(Result::ok)
        };
        ctx.spawn(query.into_actor(self).map(|depth, act, _| {
            if let Some(depth) = depth {
                act.set_depth(depth);
            }
        }));
    }

    /// Several writers (one per HTTP worker thread) share the gauge, so each
    /// adds only the change in its own count.
    fn report_pending(&mut self) {
        let now = self.waiting.len() as i64;
        self.metrics.writer_pending.add(now - self.reported_pending);
        self.reported_pending = now;
    }

    fn fail(&mut self, batch: Vec<Waiting>, e: EnqueueError) {
        for w in batch {
            let _ = w.reply.send(Err(e.clone()));
        }
        // Votes queued behind a failed batch would most likely fail too;
        // answer them now rather than make each wait for its own timeout.
        for w in self.waiting.drain(..) {
            let _ = w.reply.send(Err(e.clone()));
        }
        self.report_pending();
    }
}

fn unavailable(e: redis::RedisError) -> EnqueueError {
    EnqueueError::Unavailable(e.to_string())
}

impl Actor for QueueWriter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Bounded mailbox: handlers use `try_send`, so a full mailbox is an
        // immediate 503 rather than unbounded growth.
        ctx.set_mailbox_capacity(self.capacity);
        ctx.run_interval(DEPTH_POLL_INTERVAL, |act, ctx| act.poll_depth(ctx));
    }
}

impl Handler<Enqueue> for QueueWriter {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Self::Context) {
        if self.waiting.len() >= self.capacity {
            let _ = msg.reply.send(Err(EnqueueError::Full));
            return;
        }
        self.waiting.push_back(Waiting {
            vote: msg.vote,
            reply: msg.reply,
            since: Instant::now(),
        });
        self.report_pending();
        self.flush(ctx);
    }
}

impl Handler<Ping> for QueueWriter {
    type Result = ResponseActFuture<Self, Result<(), EnqueueError>>;

    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> Self::Result {
        let connect = self.redis.get();
        let timeout = self.timeout;
        let wanted = self.ack_replicas;
        let ping = async move {
            let mut conn = connect.await.map_err(unavailable)?;
            let check = async {
                if wanted == 0 {
                    return queue::connection::ping(&mut conn).await.map(|()| wanted);
                }
                queue::connection::replicas_online(&mut conn).await
            };
            let online = tokio::time::timeout(timeout, check)
                .await
                .map_err(|_| EnqueueError::Timeout)?
                .map_err(unavailable)?;
            if online < wanted {
                // Redis answers: keep the connection, but a vote sent here
                // now could only be answered 503.
                return Ok((
                    conn,
                    Err(EnqueueError::Replicas {
                        acked: online,
                        wanted,
                    }),
                ));
            }
            Ok((conn, Ok(())))
        };
        Box::pin(ping.into_actor(self).map(|result, act, _| match result {
            Ok((conn, ready)) => {
                if !act.redis.is_open() {
                    act.redis.keep(conn);
                }
                ready
            }
            Err(e) => {
                act.redis.drop_connection();
                Err(e)
            }
        }))
    }
}
