//! A stream entry: what a worker reads ([`Entry`]), the vote's fields in
//! it (written by [`Vote::to_xadd`], read by [`Vote::from_fields`]: the
//! only implementation of the contract in `docs/PROTOCOL.md`), and the
//! dead letter a worker writes for an entry that is not a vote.

use crate::vote::{Id128, Vote, VoteOption, MAX_NODE_LEN};

/// One entry as read from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub content: Content,
}

/// What an entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// Its field/value pairs, every one as Redis holds it (repeated ones
    /// too: the decoder refuses them).
    Fields(Vec<(Vec<u8>, Vec<u8>)>),
    /// Pending in the group but deleted from the stream: Redis returns its
    /// id with no fields. Nothing to count; acknowledged all the same.
    Deleted,
}

/// An entry that is not a vote, and why: copied to the dead-letter stream
/// (`<key>:dead`) in the transaction that acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: String,
    pub reason: String,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Dead-letter values longer than this are cut: a poison entry must not
/// become a poison dead letter.
pub const DEAD_LETTER_VALUE_MAX: usize = 1024;

impl DeadLetter {
    /// `XADD <dead_key> * source_id <id> reason <reason> f:<name> <value>...`,
    /// names and values cut at [`DEAD_LETTER_VALUE_MAX`].
    pub(super) fn add_to(&self, pipe: &mut redis::Pipeline, dead_key: &str) {
        let cmd = pipe.cmd("XADD").arg(dead_key).arg("*");
        cmd.arg("source_id")
            .arg(&self.id)
            .arg("reason")
            .arg(&self.reason);
        for (k, v) in &self.fields {
            let mut name = b"f:".to_vec();
            name.extend_from_slice(&k[..k.len().min(DEAD_LETTER_VALUE_MAX)]);
            cmd.arg(name).arg(&v[..v.len().min(DEAD_LETTER_VALUE_MAX)]);
        }
        cmd.ignore();
    }
}

/// `XADD`, the key, `*` and five field/value pairs.
const XADD_ARGS: usize = 3 + 2 * 5;

/// Stream field names, in the order they are written.
pub const FIELD_ID: &str = "id";
pub const FIELD_VOTER: &str = "voter";
pub const FIELD_OPTION: &str = "option";
pub const FIELD_TS: &str = "ts";
pub const FIELD_NODE: &str = "node";

/// Why a stream entry is not a vote. The text goes to the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{0}` appears more than once")]
    Duplicate(&'static str),
    #[error("field `{0}` is not valid: {1}")]
    Invalid(&'static str, &'static str),
    #[error("unknown field `{0}`")]
    Unknown(String),
}

impl Vote {
    /// `XADD <stream_key> * f1 v1 f2 v2 ...`: the same encoding as
    /// [`Vote::to_fields`], in one command whose two buffers are allocated
    /// once at their final size (grown from empty they were reallocated
    /// several times per vote), with `ts` written by redis' own integer
    /// formatter rather than `core::fmt`.
    pub fn to_xadd(&self, stream_key: &str) -> redis::Cmd {
        let data = "XADD".len()
            + stream_key.len()
            + "*".len()
            + FIELD_ID.len()
            + 32
            + FIELD_VOTER.len()
            + 32
            + FIELD_OPTION.len()
            + 1
            + FIELD_TS.len()
            + 20
            + FIELD_NODE.len()
            + self.node.len();
        let mut cmd = redis::Cmd::with_capacity(XADD_ARGS, data);
        cmd.arg("XADD")
            .arg(stream_key)
            .arg("*")
            .arg(FIELD_ID)
            .arg(&self.vote_id.hex()[..])
            .arg(FIELD_VOTER)
            .arg(&self.voter.hex()[..])
            .arg(FIELD_OPTION)
            .arg(self.option.as_str())
            .arg(FIELD_TS)
            .arg(self.ts)
            .arg(FIELD_NODE)
            .arg(self.node.as_str());
        cmd
    }

    /// The entry's field/value pairs, for `XADD key * f1 v1 f2 v2 ...`.
    pub fn to_fields(&self) -> [(&'static str, String); 5] {
        [
            (FIELD_ID, self.vote_id.to_string()),
            (FIELD_VOTER, self.voter.to_string()),
            (FIELD_OPTION, self.option.as_str().to_owned()),
            (FIELD_TS, self.ts.to_string()),
            (FIELD_NODE, self.node.clone()),
        ]
    }

    /// Decodes an entry's field/value pairs. Strict on purpose: a worker must
    /// never count something it cannot fully explain, so an entry that is
    /// not exactly a vote goes to the dead-letter stream with this reason.
    pub fn from_fields<'a, I>(fields: I) -> Result<Vote, DecodeError>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut id = None;
        let mut voter = None;
        let mut option = None;
        let mut ts = None;
        let mut node = None;
        for (name, value) in fields {
            let (slot, field): (&mut Option<&[u8]>, &'static str) = match name {
                b"id" => (&mut id, FIELD_ID),
                b"voter" => (&mut voter, FIELD_VOTER),
                b"option" => (&mut option, FIELD_OPTION),
                b"ts" => (&mut ts, FIELD_TS),
                b"node" => (&mut node, FIELD_NODE),
                other => {
                    let shown: String = String::from_utf8_lossy(other).chars().take(64).collect();
                    return Err(DecodeError::Unknown(shown));
                }
            };
            if slot.replace(value).is_some() {
                return Err(DecodeError::Duplicate(field));
            }
        }
        let text = |v: Option<&'a [u8]>, f: &'static str| -> Result<&'a str, DecodeError> {
            let v = v.ok_or(DecodeError::Missing(f))?;
            std::str::from_utf8(v).map_err(|_| DecodeError::Invalid(f, "not UTF-8"))
        };
        let vote_id = Id128::parse(text(id, FIELD_ID)?)
            .ok_or(DecodeError::Invalid(FIELD_ID, "not 32 hex digits"))?;
        let voter = Id128::parse(text(voter, FIELD_VOTER)?)
            .ok_or(DecodeError::Invalid(FIELD_VOTER, "not 32 hex digits"))?;
        let option = VoteOption::parse(text(option, FIELD_OPTION)?).ok_or(DecodeError::Invalid(
            FIELD_OPTION,
            "not a letter `a` to `l`",
        ))?;
        let ts_text = text(ts, FIELD_TS)?;
        let ts = ts_text
            .parse::<i64>()
            .ok()
            .filter(|t| *t > 0 && ts_text.len() <= 19 && !ts_text.starts_with('+'))
            .ok_or(DecodeError::Invalid(FIELD_TS, "not a positive integer"))?;
        let node = text(node, FIELD_NODE)?;
        if node.is_empty() || node.len() > MAX_NODE_LEN {
            return Err(DecodeError::Invalid(FIELD_NODE, "empty or too long"));
        }
        // PostgreSQL text cannot hold NUL, and no host name has control
        // characters: such an entry would fail the commit over and over.
        if node.chars().any(char::is_control) {
            return Err(DecodeError::Invalid(FIELD_NODE, "control characters"));
        }
        Ok(Vote {
            vote_id,
            voter,
            option,
            ts,
            node: node.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vote::{Id128, VoteOption};

    fn sample() -> Vote {
        Vote {
            vote_id: Id128(0xfeed),
            voter: Id128(u128::MAX),
            option: VoteOption::B,
            ts: 1_790_000_000_000_000,
            node: "capture01".into(),
        }
    }

    fn decode(fields: &[(&str, &str)]) -> Result<Vote, DecodeError> {
        Vote::from_fields(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    #[test]
    fn an_encoded_vote_decodes_to_itself() {
        let v = sample();
        let fields = v.to_fields();
        let back = Vote::from_fields(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
        assert_eq!(back, Ok(v));
    }

    #[test]
    fn written_fields_are_the_listed_fields() {
        for v in [
            sample(),
            Vote {
                ts: i64::MAX,
                node: "n".repeat(MAX_NODE_LEN),
                ..sample()
            },
            Vote { ts: 1, ..sample() },
        ] {
            let written = v.to_xadd("votes");
            let mut listed = redis::cmd("XADD");
            listed.arg("votes").arg("*");
            for (k, val) in v.to_fields() {
                listed.arg(k).arg(val);
            }
            assert_eq!(written.get_packed_command(), listed.get_packed_command());
        }
        assert_eq!(
            Id128(0xab).hex().as_slice(),
            Id128(0xab).to_string().as_bytes()
        );
    }

    #[test]
    fn entries_that_are_not_exactly_votes_are_refused_with_a_reason() {
        let ok = sample().to_fields();
        let ok: Vec<(&str, &str)> = ok.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut missing = ok.clone();
        missing.remove(3);
        assert_eq!(decode(&missing), Err(DecodeError::Missing("ts")));
        let mut dup = ok.clone();
        dup.push(("option", "a"));
        assert_eq!(decode(&dup), Err(DecodeError::Duplicate("option")));
        for option in ["m", "A", "ab", ""] {
            let mut bad = ok.clone();
            bad[2] = ("option", option);
            assert!(
                matches!(decode(&bad), Err(DecodeError::Invalid("option", _))),
                "{option:?}"
            );
        }
        // Every letter is a vote here; whether the poll has it is the
        // worker's check (`Poll::refuses_count`).
        let mut twelfth = ok.clone();
        twelfth[2] = ("option", "l");
        assert_eq!(decode(&twelfth).unwrap().option, VoteOption::L);
        for ts in ["-5", "0", "x", "99999999999999999999", "+5"] {
            let mut bad = ok.clone();
            bad[3] = ("ts", ts);
            assert!(
                matches!(decode(&bad), Err(DecodeError::Invalid("ts", _))),
                "{ts}"
            );
        }
        let mut extra = ok.clone();
        extra.push(("color", "red"));
        assert_eq!(decode(&extra), Err(DecodeError::Unknown("color".into())));
        let mut nul = ok.clone();
        nul[4] = ("node", "a\0b");
        assert!(matches!(decode(&nul), Err(DecodeError::Invalid("node", _))));
        let long = "n".repeat(MAX_NODE_LEN + 1);
        let mut bad = ok;
        bad[4] = ("node", &long);
        assert!(matches!(decode(&bad), Err(DecodeError::Invalid("node", _))));
    }
}
