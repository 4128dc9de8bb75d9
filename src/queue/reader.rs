//! The worker's connection for `XREADGROUP`: set-up (TCP or a Unix
//! socket, `AUTH` and `SELECT` from the URL, as redis-rs would) and one
//! command at a time, its reply decoded by [`super::reply`].
//!
//! Why not redis-rs for this one command: its reply decoder (a parser
//! combinator) spent about 1.65 µs per stream entry, some 60% of the
//! worker's CPU (perf; `make profile`), and the worker shares the machine
//! with PostgreSQL and Redis, so each of those microseconds is taken from
//! the drain (`BENCHMARKS.md`, Worker). The decoder here does the same in
//! about a tenth of that. Everything else the worker says to Redis (the
//! group, acknowledgements, claims, gauges) stays on redis-rs: only this
//! reply is large.
//!
//! The connection speaks RESP2 and only ever sends `AUTH` and `SELECT` and
//! then `XREADGROUP`. A reply it does not expect is an error; the caller
//! drops the connection and connects again, as after any Redis error, so a
//! confused connection is never reused.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, RedisError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::entry::Entry;
use super::reply::{decode_read_reply, protocol, server_error, Scan, MAX_REPLY};

/// How much to read at a time.
const READ_CHUNK: usize = 64 << 10;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection for `XREADGROUP`.
pub struct Reader {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

/// One `XREADGROUP ... STREAMS key id` call.
pub struct Read<'a> {
    pub group: &'a str,
    pub consumer: &'a str,
    pub count: usize,
    /// `BLOCK` this long for new entries; `None`: do not block.
    pub block: Option<Duration>,
    pub key: &'a str,
    /// `>` for new entries, or an id to re-read this consumer's pending ones.
    pub id: &'a str,
}

impl Reader {
    /// Connects as the URL says (TCP or a Unix socket), then `AUTH` and
    /// `SELECT` if it names a password or a database.
    pub async fn connect(info: &ConnectionInfo) -> Result<Reader, RedisError> {
        let io: Box<dyn Io> = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                // Commands are single small writes; do not hold them back.
                s.set_nodelay(true)?;
                Box::new(s)
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            other => {
                return Err(RedisError::from((
                    ErrorKind::InvalidClientConfig,
                    "unsupported Redis address",
                    format!("{other}"),
                )))
            }
        };
        let mut reader = Reader {
            io,
            buf: Vec::new(),
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
            reader.expect_ok(&auth, "AUTH").await.map_err(|e| {
                RedisError::from((
                    ErrorKind::AuthenticationFailed,
                    "Redis refused the password",
                    e.to_string(),
                ))
            })?;
        }
        if settings.db() != 0 {
            reader
                .expect_ok(redis::cmd("SELECT").arg(settings.db()), "SELECT")
                .await?;
        }
        Ok(reader)
    }

    async fn expect_ok(&mut self, cmd: &redis::Cmd, what: &'static str) -> Result<(), RedisError> {
        self.send(cmd).await?;
        let end = self.read_reply().await?;
        let reply = &self.buf[..end];
        let result = match reply.first() {
            Some(b'+') => Ok(()),
            Some(b'-') => Err(server_error(reply)),
            _ => Err(protocol("unexpected reply", format!("to {what}"))),
        };
        self.buf.drain(..end);
        result
    }

    /// `XREADGROUP GROUP g c COUNT n [BLOCK ms] STREAMS key id`: the entries
    /// of the one stream asked for (none when a `BLOCK` ran out).
    pub async fn read(&mut self, r: &Read<'_>) -> Result<Vec<Entry>, RedisError> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(r.group)
            .arg(r.consumer)
            .arg("COUNT")
            .arg(r.count);
        if let Some(block) = r.block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(r.key).arg(r.id);
        self.send(&cmd).await?;
        let end = self.read_reply().await?;
        let entries = decode_read_reply(&self.buf[..end]);
        self.buf.drain(..end);
        entries
    }

    /// Commands are encoded by redis-rs; only replies are decoded here.
    async fn send(&mut self, cmd: &redis::Cmd) -> Result<(), RedisError> {
        self.io.write_all(&cmd.get_packed_command()).await?;
        Ok(())
    }

    /// Reads until `buf` starts with one whole reply; returns its length.
    async fn read_reply(&mut self) -> Result<usize, RedisError> {
        let mut scan = Scan::default();
        loop {
            if let Some(end) = scan.advance(&self.buf)? {
                return Ok(end);
            }
            if self.buf.len() > MAX_REPLY {
                return Err(protocol(
                    "reply too large",
                    format!("over {MAX_REPLY} bytes"),
                ));
            }
            self.buf.reserve(READ_CHUNK);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "Redis closed the connection",
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_encoded_as_resp_arrays() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (ours, mut theirs) = tokio::io::duplex(1 << 16);
            let mut reader = Reader {
                io: Box::new(ours),
                buf: Vec::new(),
            };
            let read = Read {
                group: "workers",
                consumer: "w1",
                count: 2000,
                block: Some(Duration::from_millis(1000)),
                key: "votes",
                id: ">",
            };
            let server = async {
                let mut got = vec![0u8; 4096];
                let n = theirs.read(&mut got).await.unwrap();
                theirs.write_all(b"*-1\r\n").await.unwrap();
                got.truncate(n);
                got
            };
            let (entries, sent) = tokio::join!(reader.read(&read), server);
            assert_eq!(entries.unwrap(), Vec::new());
            assert_eq!(
                String::from_utf8(sent).unwrap(),
                "*11\r\n$10\r\nXREADGROUP\r\n$5\r\nGROUP\r\n$7\r\nworkers\r\n$2\r\nw1\r\n\
                 $5\r\nCOUNT\r\n$4\r\n2000\r\n$5\r\nBLOCK\r\n$4\r\n1000\r\n\
                 $7\r\nSTREAMS\r\n$5\r\nvotes\r\n$1\r\n>\r\n"
            );
        });
    }
}
