//! The one reconnecting Redis connection, used by the `QueueWriter`, the
//! `Drainer` (for everything but `XREADGROUP`) and the `Tally`: a redis-rs
//! multiplexed connection made on first use, kept while it works, and
//! dropped after an error so that the next use connects again. A node thus
//! recovers by itself when its Redis comes back, without a reconnect loop
//! of its own.
//!
//! Why not redis-rs's `ConnectionManager`: it reconnects in the background
//! with retries of its own, so a command issued while Redis is down waits
//! on that schedule instead of failing within the caller's bound (a voter
//! must get `503` within `ENQUEUE_TIMEOUT_MS`, a tally must count a queue
//! as unreachable within its interval), and each caller here already owns
//! the pace of its retries ([`crate::retry`]).

use std::future::Future;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult};

pub struct RedisConnection {
    client: redis::Client,
    config: AsyncConnectionConfig,
    /// `None` until connected, and again after an error.
    conn: Option<MultiplexedConnection>,
}

impl RedisConnection {
    /// Bounds the connect and every command: a Redis that hangs must not
    /// wedge its caller.
    pub fn new(
        client: redis::Client,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> RedisConnection {
        RedisConnection {
            client,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout)),
            conn: None,
        }
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The open connection, or a new one: a future that borrows nothing,
    /// for an actor to spawn. Hand a new one back with [`Self::keep`].
    pub fn get(&self) -> impl Future<Output = RedisResult<MultiplexedConnection>> + 'static {
        let open = self.conn.clone();
        let client = self.client.clone();
        let config = self.config.clone();
        async move {
            match open {
                Some(c) => Ok(c),
                None => {
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                }
            }
        }
    }

    /// The open connection, if there is one (for work that is skipped
    /// rather than worth a connect, such as a gauge).
    pub fn open(&self) -> Option<MultiplexedConnection> {
        self.conn.clone()
    }

    pub fn is_open(&self) -> bool {
        self.conn.is_some()
    }

    /// Keeps a connection that just worked. Returns whether it is a new one
    /// (it was not open before), for the log.
    pub fn keep(&mut self, conn: MultiplexedConnection) -> bool {
        self.conn.replace(conn).is_none()
    }

    /// After an error: the next [`Self::get`] connects again. Returns
    /// whether a connection was open, so that one outage logs once.
    pub fn drop_connection(&mut self) -> bool {
        self.conn.take().is_some()
    }
}

/// `PING`: does Redis answer?
pub async fn ping(conn: &mut MultiplexedConnection) -> RedisResult<()> {
    redis::cmd("PING").query_async::<String>(conn).await?;
    Ok(())
}

/// Replicas connected and in sync (`INFO replication`: the `slaveN:` lines
/// whose `state=online`; one still loading its first copy does not count,
/// since `WAIT` does not count it either).
pub async fn replicas_online(conn: &mut MultiplexedConnection) -> RedisResult<usize> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(conn)
        .await?;
    Ok(count_online_replicas(&info))
}

fn count_online_replicas(info: &str) -> usize {
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_replicas_online_are_counted() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0\r\n\
            slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\n\
            master_failover_state:no-failover\r\n";
        assert_eq!(super::count_online_replicas(info), 1);
        assert_eq!(
            super::count_online_replicas("role:master\r\nconnected_slaves:0\r\n"),
            0
        );
    }
}
