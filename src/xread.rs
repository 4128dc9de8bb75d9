//! `XREADGROUP` on a connection of its own, its reply decoded straight
//! into stream [`Entry`]s.
//!
//! Why not redis-rs for this one command: its reply decoder (a parser
//! combinator) spent about 1.65 µs per stream entry, some 60% of the
//! worker's CPU (perf; `make profile`), and the worker shares the machine
//! with PostgreSQL and Redis, so each of those microseconds is taken from
//! the drain (`BENCHMARKS.md`, Worker). This decoder does the same in about
//! a tenth of that. Everything else the worker says to Redis (the group,
//! acknowledgements, claims, gauges) stays on redis-rs: only this reply is
//! large.
//!
//! The connection speaks RESP2 and only ever sends `AUTH` and `SELECT` (from
//! the URL, as redis-rs would) and then `XREADGROUP`, one command at a time.
//! A reply it does not expect is an error; the caller drops the connection
//! and connects again, as after any Redis error, so a confused connection is
//! never reused.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, ErrorKind, RedisError, ServerErrorKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::stream::Entry;

/// Replies larger than this are refused: a batch of votes is a few hundred
/// KiB; a runaway length must not make the worker allocate gigabytes.
const MAX_REPLY: usize = 256 << 20;
/// Arrays nested deeper than this are refused (an XREADGROUP reply nests 4).
const MAX_DEPTH: usize = 8;
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

fn protocol(what: &'static str, detail: String) -> RedisError {
    RedisError::from((ErrorKind::Parse, what, detail))
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

fn server_error(reply: &[u8]) -> RedisError {
    let line = reply.split(|b| *b == b'\r').next().unwrap_or_default();
    let message = String::from_utf8_lossy(line.get(1..).unwrap_or_default()).into_owned();
    RedisError::from((
        ErrorKind::Server(ServerErrorKind::ResponseError),
        "Redis answered an error",
        message,
    ))
}

/// Where a scan of a partly received reply stands, so that each read
/// scans only the bytes that arrived since the last one.
#[derive(Default)]
struct Scan {
    pos: usize,
    /// Elements still to come in each open array, outermost first.
    open: Vec<usize>,
}

impl Scan {
    /// Scans on from where it stopped. `Some(len)` once `buf[..len]` is one
    /// whole RESP2 reply; `None` while more bytes are needed.
    fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, RedisError> {
        loop {
            let Some(line_end) = find_crlf(buf, self.pos) else {
                return Ok(None);
            };
            if line_end == self.pos {
                return Err(protocol("malformed reply", "an empty line".into()));
            }
            let line = &buf[self.pos + 1..line_end];
            let mut next = line_end + 2;
            let whole = match buf[self.pos] {
                b'+' | b'-' | b':' => true,
                b'$' => {
                    let n = length(line)?;
                    if let Some(n) = n {
                        let end = next + n + 2;
                        if end > buf.len() {
                            return Ok(None);
                        }
                        if &buf[end - 2..end] != b"\r\n" {
                            return Err(protocol("malformed reply", "bulk string".into()));
                        }
                        next = end;
                    }
                    true
                }
                b'*' => match length(line)? {
                    Some(n) if n > 0 => {
                        if self.open.len() >= MAX_DEPTH {
                            return Err(protocol("malformed reply", "nested too deep".into()));
                        }
                        self.open.push(n);
                        false
                    }
                    _ => true,
                },
                other => {
                    return Err(protocol(
                        "malformed reply",
                        format!("unknown type byte {other:#04x}"),
                    ))
                }
            };
            self.pos = next;
            if whole {
                // A complete element completes the arrays it ends.
                loop {
                    match self.open.last_mut() {
                        None => return Ok(Some(self.pos)),
                        Some(left) => {
                            *left -= 1;
                            if *left > 0 {
                                break;
                            }
                            self.open.pop();
                        }
                    }
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let i = at + memchr::memchr(b'\r', buf.get(at..)?)?;
        match buf.get(i + 1) {
            Some(b'\n') => return Some(i),
            Some(_) => at = i + 1,
            None => return None,
        }
    }
}

/// A `$`/`*` length: `None` for -1 (nil). Digits by hand: through
/// `str::parse` this was a fifth of the worker's instructions (callgrind),
/// each length read twice (scan, then decode).
fn length(line: &[u8]) -> Result<Option<usize>, RedisError> {
    if line == b"-1" {
        return Ok(None);
    }
    let bad = || {
        protocol(
            "malformed reply",
            format!("length {:?}", String::from_utf8_lossy(line)),
        )
    };
    // Ten digits at most: no overflow, and MAX_REPLY is checked after.
    if line.is_empty() || line.len() > 10 {
        return Err(bad());
    }
    let mut n = 0usize;
    for &b in line {
        if !b.is_ascii_digit() {
            return Err(bad());
        }
        n = n * 10 + usize::from(b - b'0');
    }
    if n > MAX_REPLY {
        return Err(bad());
    }
    Ok(Some(n))
}

/// Reads values off one whole reply (checked by [`Scan`]).
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Item<'a> {
    Array(Option<usize>),
    Bulk(Option<&'a [u8]>),
    Error,
    Other,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Result<Item<'a>, RedisError> {
        let short = || protocol("malformed reply", "truncated".into());
        let kind = *self.buf.get(self.pos).ok_or_else(short)?;
        let line_end = find_crlf(self.buf, self.pos)
            .filter(|end| *end > self.pos)
            .ok_or_else(short)?;
        let line = &self.buf[self.pos + 1..line_end];
        self.pos = line_end + 2;
        Ok(match kind {
            b'*' => Item::Array(length(line)?),
            b'$' => match length(line)? {
                None => Item::Bulk(None),
                Some(n) => {
                    let data = self.buf.get(self.pos..self.pos + n).ok_or_else(short)?;
                    self.pos += n + 2;
                    Item::Bulk(Some(data))
                }
            },
            b'-' => Item::Error,
            _ => Item::Other,
        })
    }

    fn array(&mut self, what: &'static str) -> Result<Option<usize>, RedisError> {
        match self.next()? {
            Item::Array(n) => Ok(n),
            _ => Err(protocol(
                "unexpected XREADGROUP reply",
                format!("{what}: not an array"),
            )),
        }
    }

    fn bulk(&mut self, what: &'static str) -> Result<&'a [u8], RedisError> {
        match self.next()? {
            Item::Bulk(Some(b)) => Ok(b),
            _ => Err(protocol(
                "unexpected XREADGROUP reply",
                format!("{what}: not a string"),
            )),
        }
    }
}

/// The entries of one whole `XREADGROUP` reply: `[[key, [[id, [f, v, ...]
/// | nil], ...]], ...]`, or nil when a `BLOCK` ran out. An entry that is
/// pending but deleted has nil for its fields (`fields: None`). Every field
/// is kept as Redis holds it, repeated ones too, as [`crate::stream`] does.
pub fn decode_read_reply(reply: &[u8]) -> Result<Vec<Entry>, RedisError> {
    let mut c = Cursor { buf: reply, pos: 0 };
    let streams = match c.next()? {
        Item::Array(None) | Item::Bulk(None) => return Ok(Vec::new()),
        Item::Array(Some(n)) => n,
        Item::Error => return Err(server_error(reply)),
        _ => {
            return Err(protocol(
                "unexpected XREADGROUP reply",
                "not an array".into(),
            ))
        }
    };
    let mut out = Vec::new();
    for _ in 0..streams {
        if c.array("stream")? != Some(2) {
            return Err(protocol(
                "unexpected XREADGROUP reply",
                "stream: not a pair".into(),
            ));
        }
        c.bulk("stream key")?;
        let n = c.array("entries")?.unwrap_or(0);
        out.reserve(n);
        for _ in 0..n {
            if c.array("entry")? != Some(2) {
                return Err(protocol(
                    "unexpected XREADGROUP reply",
                    "entry: not a pair".into(),
                ));
            }
            let id = String::from_utf8(c.bulk("entry id")?.to_vec()).map_err(|_| {
                protocol("unexpected XREADGROUP reply", "entry id: not UTF-8".into())
            })?;
            let fields = match c.next()? {
                Item::Array(None) | Item::Bulk(None) => None,
                Item::Array(Some(k)) => {
                    let mut fields = Vec::with_capacity(k / 2);
                    for _ in 0..k / 2 {
                        let name = c.bulk("field name")?.to_vec();
                        let value = c.bulk("field value")?.to_vec();
                        fields.push((name, value));
                    }
                    if k % 2 == 1 {
                        // A name without a value, as the redis-rs path kept it.
                        fields.push((c.bulk("field name")?.to_vec(), Vec::new()));
                    }
                    Some(fields)
                }
                _ => {
                    return Err(protocol(
                        "unexpected XREADGROUP reply",
                        "entry fields: not an array".into(),
                    ))
                }
            };
            out.push(Entry { id, fields });
        }
    }
    Ok(out)
}

/// For the fuzz target: scans `data` fed in chunks of `chunk` bytes, and
/// decodes the reply it finds. Never panics, whatever the bytes.
pub fn scan_and_decode(data: &[u8], chunk: usize) -> Option<Result<Vec<Entry>, RedisError>> {
    let mut scan = Scan::default();
    let chunk = chunk.max(1);
    let mut upto = 0;
    while upto < data.len() {
        upto = (upto + chunk).min(data.len());
        match scan.advance(&data[..upto]) {
            Ok(Some(end)) => return Some(decode_read_reply(&data[..end])),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Vec<u8> {
        let mut v = format!("${}\r\n", s.len()).into_bytes();
        v.extend_from_slice(s);
        v.extend_from_slice(b"\r\n");
        v
    }

    fn entry(id: &str, fields: Option<&[(&str, &[u8])]>) -> Vec<u8> {
        let mut v = b"*2\r\n".to_vec();
        v.extend(bulk(id.as_bytes()));
        match fields {
            None => v.extend_from_slice(b"*-1\r\n"),
            Some(f) => {
                v.extend_from_slice(format!("*{}\r\n", f.len() * 2).as_bytes());
                for (k, val) in f {
                    v.extend(bulk(k.as_bytes()));
                    v.extend(bulk(val));
                }
            }
        }
        v
    }

    fn reply(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut v = b"*1\r\n*2\r\n".to_vec();
        v.extend(bulk(b"votes"));
        v.extend_from_slice(format!("*{}\r\n", entries.len()).as_bytes());
        for e in entries {
            v.extend_from_slice(e);
        }
        v
    }

    /// The reply decoded by redis-rs and by `crate::stream`, the path this
    /// replaces: both must give the same entries.
    fn via_redis_rs(reply: &[u8]) -> Vec<Entry> {
        crate::stream::parse_read(redis::parse_redis_value(reply).unwrap())
    }

    #[test]
    fn decodes_as_the_redis_rs_path_does_in_every_chunking() {
        let binary: &[u8] = b"\x00\xff\r\n\r\n$3\r\n";
        let r = reply(&[
            entry(
                "1-0",
                Some(&[("id", b"0123"), ("voter", b"ab"), ("voter", b"cd")]),
            ),
            entry("2-0", None),
            entry("3-5", Some(&[("node", binary), ("", b"")])),
        ]);
        let want = via_redis_rs(&r);
        assert_eq!(want.len(), 3);
        assert_eq!(decode_read_reply(&r).unwrap(), want);
        for chunk in [1, 2, 3, 7, 64, r.len()] {
            let got = scan_and_decode(&r, chunk).expect("whole").unwrap();
            assert_eq!(got, want, "chunks of {chunk}");
        }
        // One byte short is not a whole reply.
        assert!(scan_and_decode(&r[..r.len() - 1], 5).is_none());
    }

    #[test]
    fn nil_and_empty_replies_are_no_entries() {
        for r in [&b"*-1\r\n"[..], b"$-1\r\n", b"*0\r\n"] {
            assert_eq!(scan_and_decode(r, 1).unwrap().unwrap(), Vec::new());
        }
        assert!(reply(&[]).len() > 4);
        assert_eq!(decode_read_reply(&reply(&[])).unwrap(), Vec::new());
    }

    #[test]
    fn an_error_reply_is_a_server_error_with_its_message() {
        let e = scan_and_decode(b"-NOGROUP No such key 'votes'\r\n", 4)
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("NOGROUP No such key"), "{e}");
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for bad in [
            &b"\r\n"[..],
            b"*1\r\n\r\n",
            b"!3\r\nabc\r\n",
            b"$3\r\nabcd\r\n",
            b"*x\r\n",
            b"$-2\r\n",
            b"*99999999999\r\n",
            b"*1\r\n:5\r\n",
            b"*1\r\n*1\r\n$1\r\na\r\n",
            b"*1\r\n*2\r\n$1\r\na\r\n*1\r\n*2\r\n:1\r\n*0\r\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            match scan_and_decode(bad, 3) {
                Some(Err(_)) => {}
                other => panic!(
                    "{:?}: {:?}",
                    String::from_utf8_lossy(bad),
                    other.map(|r| r.map(|e| e.len()))
                ),
            }
        }
    }

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
