//! Decoding Redis replies about the stream: the large `XREADGROUP` reply
//! straight from the bytes ([`decode_read_reply`], behind
//! [`super::reader::Reader`]), and the `XAUTOCLAIM` reply from redis-rs's
//! values ([`parse_autoclaim`]). Decoding only: connections live in
//! [`super::reader`] and [`super::connection`], as mini-redis keeps
//! `frame.rs` apart from `connection.rs`.
//!
//! Every field is kept as Redis holds it: a repeated field must reach the
//! vote decoder, which refuses it, not be folded away by a map.

use redis::{ErrorKind, RedisError, ServerErrorKind, Value};

use super::entry::{Content, Entry};

/// Replies larger than this are refused: a batch of votes is a few hundred
/// KiB; a runaway length must not make the worker allocate gigabytes.
pub(super) const MAX_REPLY: usize = 256 << 20;
/// Arrays nested deeper than this are refused (an XREADGROUP reply nests 4).
const MAX_DEPTH: usize = 8;

pub(super) fn protocol(what: &'static str, detail: String) -> RedisError {
    RedisError::from((ErrorKind::Parse, what, detail))
}

pub(super) fn server_error(reply: &[u8]) -> RedisError {
    let line = reply.split(|b| *b == b'\r').next().unwrap_or_default();
    let message = String::from_utf8_lossy(line.get(1..).unwrap_or_default()).into_owned();
    // Kept apart, as redis-rs does: a replica's refusal is how the drainer
    // tells a standby from a failing queue (`super::is_replica`).
    let kind = if message.starts_with("READONLY") {
        ServerErrorKind::ReadOnly
    } else {
        ServerErrorKind::ResponseError
    };
    RedisError::from((ErrorKind::Server(kind), "Redis answered an error", message))
}

/// Where a scan of a partly received reply stands, so that each read
/// scans only the bytes that arrived since the last one.
#[derive(Default)]
pub(super) struct Scan {
    pos: usize,
    /// Elements still to come in each open array, outermost first.
    open: Vec<usize>,
}

impl Scan {
    /// Scans on from where it stopped. `Some(len)` once `buf[..len]` is one
    /// whole RESP2 reply; `None` while more bytes are needed.
    pub(super) fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, RedisError> {
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
#[inline]
fn length(line: &[u8]) -> Result<Option<usize>, RedisError> {
    if line == b"-1" {
        return Ok(None);
    }
    // Ten digits at most: no overflow, and MAX_REPLY is checked after.
    if line.is_empty() || line.len() > 10 {
        return Err(bad_length(line));
    }
    let mut n = 0usize;
    for &b in line {
        if !b.is_ascii_digit() {
            return Err(bad_length(line));
        }
        n = n * 10 + usize::from(b - b'0');
    }
    if n > MAX_REPLY {
        return Err(bad_length(line));
    }
    Ok(Some(n))
}

/// Out of line: the error's formatting stays off the decoder's path.
#[cold]
#[inline(never)]
fn bad_length(line: &[u8]) -> RedisError {
    protocol(
        "malformed reply",
        format!("length {:?}", String::from_utf8_lossy(line)),
    )
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
/// pending but deleted has nil for its fields ([`Content::Deleted`]). Every
/// field is kept as Redis holds it, repeated ones too, as [`parse_autoclaim`]
/// does.
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
            let content = match c.next()? {
                Item::Array(None) | Item::Bulk(None) => Content::Deleted,
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
                    Content::Fields(fields)
                }
                _ => {
                    return Err(protocol(
                        "unexpected XREADGROUP reply",
                        "entry fields: not an array".into(),
                    ))
                }
            };
            out.push(Entry { id, content });
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

/// Takes the bytes out of a reply value (the reply is consumed: no copy).
fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn entry(v: Value) -> Option<Entry> {
    let Value::Array(parts) = v else { return None };
    let mut parts = parts.into_iter();
    let id = String::from_utf8(bytes(parts.next()?)?).ok()?;
    let content = match parts.next() {
        Some(Value::Array(flat)) => {
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let Some(k) = flat.next() {
                let k = bytes(k).unwrap_or_default();
                let v = flat.next().and_then(bytes).unwrap_or_default();
                fields.push((k, v));
            }
            Content::Fields(fields)
        }
        Some(Value::Map(pairs)) => Content::Fields(
            pairs
                .into_iter()
                .map(|(k, v)| (bytes(k).unwrap_or_default(), bytes(v).unwrap_or_default()))
                .collect(),
        ),
        _ => Content::Deleted,
    };
    Some(Entry { id, content })
}

fn entries(v: Value) -> Vec<Entry> {
    match v {
        Value::Array(items) => items.into_iter().filter_map(entry).collect(),
        _ => Vec::new(),
    }
}

/// The entries of an `XREADGROUP ... STREAMS key id` reply as redis-rs
/// returns it: how the worker read before [`decode_read_reply`], kept as
/// the reference that decoder's tests compare against.
/// The entries of an `XREADGROUP ... STREAMS key id` reply as redis-rs
/// returns it: how the worker read before [`decode_read_reply`], kept as
/// the reference that decoder's tests compare against.
#[cfg(test)]
pub fn parse_read(reply: Value) -> Vec<Entry> {
    match reply {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => {
                    pair.into_iter().nth(1).map(entries).unwrap_or_default()
                }
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().flat_map(|(_, e)| entries(e)).collect(),
        _ => Vec::new(),
    }
}

/// What one `XAUTOCLAIM` answered.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Claimed {
    /// Where the next call goes on from (`0-0`: the scan went round).
    pub cursor: String,
    pub entries: Vec<Entry>,
    /// Ids that were pending but are gone from the stream: Redis already
    /// dropped them from the pending list, so nothing acknowledges them.
    pub deleted: Vec<String>,
}

/// The `XAUTOCLAIM` reply: `[cursor, [entry...], [deleted id...]]`.
pub fn parse_autoclaim(reply: Value) -> Claimed {
    let Value::Array(parts) = reply else {
        return Claimed {
            cursor: "0-0".into(),
            ..Claimed::default()
        };
    };
    let mut parts = parts.into_iter();
    let cursor = parts
        .next()
        .and_then(bytes)
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| "0-0".into());
    let entries = parts.next().map(entries).unwrap_or_default();
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids
            .into_iter()
            .filter_map(|v| bytes(v).and_then(|b| String::from_utf8(b).ok()))
            .collect(),
        _ => Vec::new(),
    };
    Claimed {
        cursor,
        entries,
        deleted,
    }
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

    /// The reply decoded by redis-rs and by [`parse_read`], the path this
    /// replaces: both must give the same entries.
    fn via_redis_rs(reply: &[u8]) -> Vec<Entry> {
        parse_read(redis::parse_redis_value(reply).unwrap())
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

    fn bulk_value(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn repeated_fields_survive_parsing_and_deleted_entries_have_none() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk_value("votes"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk_value("1-0"),
                    Value::Array(vec![
                        bulk_value("a"),
                        bulk_value("1"),
                        bulk_value("a"),
                        bulk_value("2"),
                    ]),
                ]),
                Value::Array(vec![bulk_value("2-0"), Value::Nil]),
            ]),
        ])]);
        let got = parse_read(reply);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].content,
            Content::Fields(vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"a".to_vec(), b"2".to_vec())
            ])
        );
        assert_eq!(
            got[1],
            Entry {
                id: "2-0".into(),
                content: Content::Deleted
            }
        );
        assert!(parse_read(Value::Nil).is_empty());
    }

    #[test]
    fn autoclaim_gives_cursor_claimed_and_deleted() {
        let reply = Value::Array(vec![
            bulk_value("5-0"),
            Value::Array(vec![Value::Array(vec![
                bulk_value("3-0"),
                Value::Array(vec![bulk_value("k"), bulk_value("v")]),
            ])]),
            Value::Array(vec![bulk_value("4-0")]),
        ]);
        let claimed = parse_autoclaim(reply);
        assert_eq!(claimed.cursor, "5-0");
        assert_eq!(claimed.entries.len(), 1);
        assert_eq!(claimed.deleted, vec!["4-0".to_string()]);
    }
}
