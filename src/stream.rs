//! Reading the vote streams: raw entries out of redis-rs's `XAUTOCLAIM`
//! replies (`XREADGROUP`'s are decoded by [`crate::xread`]), keeping every
//! field as Redis holds it (a repeated field must reach the decoder, which
//! refuses it, not be folded away by a map), and the names the workers
//! share.

use redis::Value;

/// The vote stream's name unless `STREAM_KEY` says otherwise (the local
/// cluster's Redis users are made for it).
pub const DEFAULT_STREAM_KEY: &str = "votes";

/// The consumer group every worker joins (`docs/PROTOCOL.md`).
pub const GROUP: &str = "workers";

/// The dead-letter stream of a vote stream.
pub fn dead_letter_key(stream_key: &str) -> String {
    format!("{stream_key}:dead")
}

/// Dead-letter values longer than this are cut: a poison entry must not
/// become a poison dead letter.
pub const DEAD_LETTER_VALUE_MAX: usize = 1024;

/// One stream entry. `fields` is `None` for an entry that is pending but was
/// deleted from the stream (Redis returns its id with no fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
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
    let fields = match parts.next() {
        Some(Value::Array(flat)) => {
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let Some(k) = flat.next() {
                let k = bytes(k).unwrap_or_default();
                let v = flat.next().and_then(bytes).unwrap_or_default();
                fields.push((k, v));
            }
            Some(fields)
        }
        Some(Value::Map(pairs)) => Some(
            pairs
                .into_iter()
                .map(|(k, v)| (bytes(k).unwrap_or_default(), bytes(v).unwrap_or_default()))
                .collect(),
        ),
        _ => None,
    };
    Some(Entry { id, fields })
}

fn entries(v: Value) -> Vec<Entry> {
    match v {
        Value::Array(items) => items.into_iter().filter_map(entry).collect(),
        _ => Vec::new(),
    }
}

/// The entries of an `XREADGROUP ... STREAMS key id` reply as redis-rs
/// returns it: how the worker read before [`crate::xread`], kept as the
/// reference that decoder's tests compare against.
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

/// `XAUTOCLAIM` reply: the cursor for the next call, the claimed entries,
/// and the ids that were pending but are gone from the stream.
pub fn parse_autoclaim(reply: Value) -> (String, Vec<Entry>, Vec<String>) {
    let Value::Array(parts) = reply else {
        return ("0-0".into(), Vec::new(), Vec::new());
    };
    let mut parts = parts.into_iter();
    let cursor = parts
        .next()
        .and_then(bytes)
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| "0-0".into());
    let claimed = parts.next().map(entries).unwrap_or_default();
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids
            .into_iter()
            .filter_map(|v| bytes(v).and_then(|b| String::from_utf8(b).ok()))
            .collect(),
        _ => Vec::new(),
    };
    (cursor, claimed, deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn repeated_fields_survive_parsing_and_deleted_entries_have_none() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("votes"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("a"), bulk("1"), bulk("a"), bulk("2")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let got = parse_read(reply);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].fields.as_ref().unwrap().len(), 2);
        assert_eq!(
            got[1],
            Entry {
                id: "2-0".into(),
                fields: None
            }
        );
        assert!(parse_read(Value::Nil).is_empty());
    }

    #[test]
    fn autoclaim_gives_cursor_claimed_and_deleted() {
        let reply = Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("3-0"),
                Value::Array(vec![bulk("k"), bulk("v")]),
            ])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let (cursor, claimed, deleted) = parse_autoclaim(reply);
        assert_eq!(cursor, "5-0");
        assert_eq!(claimed.len(), 1);
        assert_eq!(deleted, vec!["4-0".to_string()]);
    }
}
