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
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::oneshot;

use crate::metrics::CaptureMetrics;
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis did not answer in time")]
    Timeout,
    #[error("the queue writer is full")]
    Full,
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

/// Does Redis answer this writer right now?
#[derive(Message)]
#[rtype(result = "Result<(), EnqueueError>")]
pub struct Ping;

struct Waiting {
    vote: Vote,
    reply: oneshot::Sender<EnqueueReply>,
    since: Instant,
}

pub struct QueueWriter {
    client: redis::Client,
    /// `None` until connected, and again after an error: the next batch
    /// reconnects.
    conn: Option<MultiplexedConnection>,
    stream_key: String,
    max_batch: usize,
    capacity: usize,
    /// Bounds every Redis operation, so a hung Redis cannot wedge the writer.
    timeout: Duration,
    waiting: VecDeque<Waiting>,
    in_flight: bool,
    metrics: CaptureMetrics,
    /// Our share of the `writer_pending` gauge.
    reported_pending: i64,
    /// The queue's last known length, shared with the handlers.
    depth: Arc<AtomicI64>,
}

impl QueueWriter {
    pub fn new(
        client: redis::Client,
        stream_key: String,
        max_batch: usize,
        capacity: usize,
        timeout: Duration,
        metrics: CaptureMetrics,
        depth: Arc<AtomicI64>,
    ) -> Self {
        QueueWriter {
            client,
            conn: None,
            stream_key,
            max_batch: max_batch.max(1),
            capacity: capacity.max(1),
            timeout,
            waiting: VecDeque::new(),
            in_flight: false,
            metrics,
            reported_pending: 0,
            depth,
        }
    }

    fn connect(
        &self,
    ) -> impl std::future::Future<Output = Result<MultiplexedConnection, EnqueueError>> {
        let client = self.client.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        async move {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| EnqueueError::Unavailable(e.to_string()))
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

        // Sized up front: the batch's commands, plus XLEN.
        let mut pipe = redis::Pipeline::with_capacity(batch.len() + 1);
        for w in &batch {
            pipe.add_command(w.vote.to_xadd(&self.stream_key));
        }
        // The queue's length rides along for free, for QUEUE_LIMIT.
        let mut xlen = redis::Cmd::with_capacity(2, "XLEN".len() + self.stream_key.len());
        xlen.arg("XLEN").arg(&self.stream_key);
        pipe.add_command(xlen);
        let conn = self.conn.clone();
        let connect = self.connect();
        let timeout = self.timeout;
        let write = async move {
            let mut conn = match conn {
                Some(c) => c,
                None => connect.await?,
            };
            let mut replies: Vec<redis::Value> =
                tokio::time::timeout(timeout, pipe.query_async(&mut conn))
                    .await
                    .map_err(|_| EnqueueError::Timeout)?
                    .map_err(|e| EnqueueError::Unavailable(e.to_string()))?;
            let len = replies
                .pop()
                .and_then(|v| redis::from_redis_value::<i64>(v).ok());
            let ids: Vec<String> = replies
                .into_iter()
                .filter_map(|v| redis::from_redis_value::<String>(v).ok())
                .collect();
            Ok::<_, EnqueueError>((conn, ids, len))
        };
        ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
            act.in_flight = false;
            act.metrics.writer_in_flight.sub(sent);
            match result {
                Ok((conn, ids, len)) if ids.len() == batch.len() => {
                    if let Some(len) = len {
                        act.set_depth(len);
                    }
                    if act.conn.is_none() {
                        log::info!("redis connection (re)established");
                    }
                    act.conn = Some(conn);
                    for (w, id) in batch.into_iter().zip(ids) {
                        act.metrics
                            .enqueue_latency
                            .observe(w.since.elapsed().as_secs_f64());
                        let _ = w.reply.send(Ok(id));
                    }
                }
                Ok((_, ids, _)) => {
                    // Cannot happen with a well-behaved Redis; refuse them
                    // all rather than guess which were stored.
                    log::error!("redis answered {} ids for {} votes", ids.len(), batch.len());
                    act.fail(batch, EnqueueError::Unavailable("short reply".into()));
                }
                Err(e) => {
                    if act.conn.take().is_some() {
                        log::warn!("redis write failed, reconnecting: {e}");
                    }
                    act.fail(batch, e);
                }
            }
            act.flush(ctx);
        }));
    }

    fn set_depth(&self, len: i64) {
        self.depth.store(len, Ordering::Relaxed);
        self.metrics.queue_depth.set(len);
    }

    /// Reads the queue's length while no batch brings it: a node refusing
    /// votes for QUEUE_LIMIT must notice when the workers drain it.
    fn poll_depth(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight {
            return;
        }
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        let key = self.stream_key.clone();
        let timeout = self.timeout;
        let query = async move {
            tokio::time::timeout(
                timeout,
                redis::cmd("XLEN").arg(key).query_async::<i64>(&mut conn),
            )
            .await
            .ok()
            .and_then(Result::ok)
        };
        ctx.spawn(query.into_actor(self).map(|len, act, _| {
            if let Some(len) = len {
                act.set_depth(len);
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
        let conn = self.conn.clone();
        let connect = self.connect();
        let timeout = self.timeout;
        let ping = async move {
            let mut conn = match conn {
                Some(c) => c,
                None => connect.await?,
            };
            let _: String =
                tokio::time::timeout(timeout, redis::cmd("PING").query_async(&mut conn))
                    .await
                    .map_err(|_| EnqueueError::Timeout)?
                    .map_err(|e| EnqueueError::Unavailable(e.to_string()))?;
            Ok(conn)
        };
        Box::pin(ping.into_actor(self).map(|result, act, _| match result {
            Ok(conn) => {
                if act.conn.is_none() {
                    act.conn = Some(conn);
                }
                Ok(())
            }
            Err(e) => {
                act.conn = None;
                Err(e)
            }
        }))
    }
}
