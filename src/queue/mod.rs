//! The Redis stream each capture node queues its votes on, and every
//! command voteswarm sends about it. The actors call these; none builds a
//! stream command of its own.
//!
//! - [`entry`]: what an entry holds (the vote's fields, `docs/PROTOCOL.md`)
//!   and the dead letter written for one that is not a vote.
//! - [`connection`]: the reconnecting redis-rs connection every other
//!   command goes over.
//! - [`reader`]: the worker's own connection for `XREADGROUP`, and
//!   [`reply`], the decoder of its large replies (and of `XAUTOCLAIM`'s).
//!
//! The commands, in the order a vote meets them: [`Append`] (capture's
//! batch of `XADD`s, with the [`depth`] riding along), [`create_group`],
//! [`reader::Reader::read`], [`claim_idle`], [`acknowledgement`] (with the dead
//! letters), and [`depth_and_pending`] for the worker's gauges. "Depth" is
//! the stream's length (`XLEN`): the votes queued and not yet drained.

pub mod connection;
pub mod entry;
pub mod reader;
pub mod reply;

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{RedisResult, Value};

pub use connection::RedisConnection;
pub use entry::{Content, DeadLetter, Entry};
pub use reader::{Read, Reader};
pub use reply::Claimed;

use crate::vote::Vote;

/// The vote stream's name unless `STREAM_KEY` says otherwise (the local
/// cluster's Redis users are made for it).
pub const DEFAULT_STREAM_KEY: &str = "votes";

/// The consumer group every worker joins (`docs/PROTOCOL.md`).
pub const GROUP: &str = "workers";

/// The dead-letter stream of a vote stream.
pub fn dead_letter_key(stream_key: &str) -> String {
    format!("{stream_key}:dead")
}

/// A batch of votes to append, as one pipeline: one round trip (and with
/// `appendfsync always`, one fsync) however many votes.
pub struct Append {
    pipe: redis::Pipeline,
    votes: usize,
    /// Whether the pipeline ends with `WAIT` (see [`Append::wait_for_replicas`]).
    waits: bool,
}

/// What Redis answered an [`Append`].
pub struct Appended {
    /// The entry id of each vote, in order; fewer than the votes only if
    /// Redis misbehaved (the caller then trusts none of them).
    pub ids: Vec<String>,
    /// The stream's depth just after the batch, if Redis said.
    pub depth: Option<i64>,
    /// How many replicas acknowledged the batch, when it asked `WAIT`
    /// (`None` otherwise, or if the reply was not a count: never enough).
    pub replicas: Option<usize>,
}

impl Append {
    /// `XADD` per vote, then `XLEN`: the depth rides along for free, for
    /// `QUEUE_LIMIT`. Sized up front: the votes' commands plus `XLEN`.
    pub fn new<'a>(stream_key: &str, votes: impl ExactSizeIterator<Item = &'a Vote>) -> Append {
        let mut pipe = redis::Pipeline::with_capacity(votes.len() + 1);
        let count = votes.len();
        for vote in votes {
            pipe.add_command(vote.to_xadd(stream_key));
        }
        let mut xlen = redis::Cmd::with_capacity(2, "XLEN".len() + stream_key.len());
        xlen.arg("XLEN").arg(stream_key);
        pipe.add_command(xlen);
        Append {
            pipe,
            votes: count,
            waits: false,
        }
    }

    /// Ends the batch with `WAIT replicas timeout`: Redis answers once that
    /// many replicas have acknowledged every write this connection made
    /// (this batch included), or at the timeout with how many did. In the
    /// same pipeline, so that replication costs no extra round trip. The
    /// timeout is at least 1 ms, because `WAIT n 0` waits for ever.
    pub fn wait_for_replicas(&mut self, replicas: usize, timeout: Duration) {
        let ms = (timeout.as_millis() as u64).max(1);
        self.pipe.cmd("WAIT").arg(replicas).arg(ms);
        self.waits = true;
    }

    pub fn len(&self) -> usize {
        self.votes
    }

    pub fn is_empty(&self) -> bool {
        self.votes == 0
    }

    pub async fn send(self, conn: &mut MultiplexedConnection) -> RedisResult<Appended> {
        let mut replies: Vec<Value> = self.pipe.query_async(conn).await?;
        let replicas = if self.waits {
            replies
                .pop()
                .and_then(|v| redis::from_redis_value::<usize>(v).ok())
        } else {
            None
        };
        let depth = replies
            .pop()
            .and_then(|v| redis::from_redis_value::<i64>(v).ok());
        let ids = replies
            .into_iter()
            .filter_map(|v| redis::from_redis_value::<String>(v).ok())
            .collect();
        Ok(Appended {
            ids,
            depth,
            replicas,
        })
    }
}

/// Whether `e` is a replica refusing a write (`READONLY`): the endpoint is
/// a queue's standby copy, to be drained only once promoted. The workers'
/// commands (`XGROUP CREATE`, `XREADGROUP`, `XACK`) are all writes, so the
/// first of them tells, without a `ROLE` or `INFO` the worker's Redis user
/// may not send.
pub fn is_replica(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

/// `XLEN`: the votes queued on this stream.
pub async fn depth(conn: &mut MultiplexedConnection, stream_key: &str) -> RedisResult<i64> {
    redis::cmd("XLEN")
        .arg(stream_key)
        .query_async::<i64>(conn)
        .await
}

/// `XGROUP CREATE <key> workers 0 MKSTREAM`; a group that exists already
/// (`BUSYGROUP`) is what we wanted.
pub async fn create_group(conn: &mut MultiplexedConnection, stream_key: &str) -> RedisResult<()> {
    let created: RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream_key)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Err(e) if !e.to_string().contains("BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

/// `XAUTOCLAIM <key> workers <consumer> <idle> <cursor> COUNT <count>`:
/// entries another consumer has held longer than `idle` (a dead worker's
/// batch) become this consumer's.
pub async fn claim_idle(
    conn: &mut MultiplexedConnection,
    stream_key: &str,
    consumer: &str,
    idle: Duration,
    cursor: &str,
    count: usize,
) -> RedisResult<Claimed> {
    let reply: Value = redis::cmd("XAUTOCLAIM")
        .arg(stream_key)
        .arg(GROUP)
        .arg(consumer)
        .arg(idle.as_millis() as u64)
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    Ok(reply::parse_autoclaim(reply))
}

/// Done with these entries, once their batch committed: one `MULTI` that
/// copies the dead letters to `<key>:dead` and `XACK`s and `XDEL`s every
/// id, so that an entry is never acknowledged without its dead letter.
pub fn acknowledgement(stream_key: &str, ids: &[String], dead: &[DeadLetter]) -> redis::Pipeline {
    let dead_key = dead_letter_key(stream_key);
    let mut pipe = redis::pipe();
    pipe.atomic();
    for letter in dead {
        letter.add_to(&mut pipe, &dead_key);
    }
    pipe.cmd("XACK")
        .arg(stream_key)
        .arg(GROUP)
        .arg(ids)
        .ignore();
    pipe.cmd("XDEL").arg(stream_key).arg(ids).ignore();
    pipe
}

/// `XLEN` and `XPENDING`'s count, in one round trip, for the gauges.
pub async fn depth_and_pending(
    conn: &mut MultiplexedConnection,
    stream_key: &str,
) -> RedisResult<(i64, i64)> {
    let (depth, pending): (i64, Value) = redis::pipe()
        .cmd("XLEN")
        .arg(stream_key)
        .cmd("XPENDING")
        .arg(stream_key)
        .arg(GROUP)
        .query_async(conn)
        .await?;
    let pending = match pending {
        Value::Array(v) => match v.first() {
            Some(Value::Int(n)) => *n,
            _ => 0,
        },
        _ => 0,
    };
    Ok((depth, pending))
}
