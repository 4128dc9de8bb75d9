//! The vote as it travels: parsed from a request, stamped by a capture node,
//! queued, counted by a worker.
//!
//! Its stream encoding, the contract between `capture` and `worker`
//! (`docs/PROTOCOL.md`), is in [`crate::queue::entry`].

use std::fmt;

/// Longest `node` field a decoder accepts. Node ids are host names (at most
/// 253 bytes); anything longer is a poison entry, not a vote.
pub const MAX_NODE_LEN: usize = 253;

/// The two choices of the poll. The wire form is always `a` or `b`; the
/// labels ("Cats", "Dogs") are configuration and never stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VoteOption {
    A,
    B,
}

impl VoteOption {
    pub const ALL: [VoteOption; 2] = [VoteOption::A, VoteOption::B];

    pub fn as_str(self) -> &'static str {
        match self {
            VoteOption::A => "a",
            VoteOption::B => "b",
        }
    }

    pub fn parse(s: &str) -> Option<VoteOption> {
        match s {
            "a" => Some(VoteOption::A),
            "b" => Some(VoteOption::B),
            _ => None,
        }
    }
}

impl fmt::Display for VoteOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A random 128-bit identifier, printed as 32 lowercase hex digits. Used for
/// voter ids (kept in the cookie) and vote ids (one per accepted request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id128(pub u128);

impl Id128 {
    pub fn random() -> Self {
        Id128(rand::random::<u128>())
    }

    /// Parses exactly 32 lowercase hex digits; anything else is rejected so
    /// that one id has one spelling (the database compares them as text).
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        // One pass, digit by digit: a check and then `from_str_radix` (with
        // its overflow checks) was a tenth of the worker's instructions
        // (callgrind), two ids per vote.
        let mut n = 0u128;
        for b in s.bytes() {
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => return None,
            };
            n = (n << 4) | u128::from(digit);
        }
        Some(Id128(n))
    }
}

impl Id128 {
    /// The 32 hex digits without allocating (the vote path writes two per
    /// vote).
    pub fn hex(&self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = DIGITS[((self.0 >> (124 - 4 * i)) & 0xf) as usize];
        }
        out
    }
}

impl fmt::Display for Id128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One accepted vote, as stamped by the capture node that took it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    /// Unique per accepted request; breaks ties between equal `ts`.
    pub vote_id: Id128,
    pub voter: Id128,
    pub option: VoteOption,
    /// Hybrid logical clock, microseconds since the Unix epoch (see `clock`).
    pub ts: i64,
    pub node: String,
}

impl Vote {
    /// The order that decides which of a voter's votes wins: later `ts`,
    /// then greater `vote_id`. Total, so every worker decides the same way.
    pub fn order_key(&self) -> (i64, Id128) {
        (self.ts, self.vote_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_one_spelling() {
        assert_eq!(Id128(1).to_string(), "00000000000000000000000000000001");
        assert_eq!(Id128::parse("0000000000000000000000000000000A"), None);
        assert_eq!(Id128::parse("+0000000000000000000000000000001"), None);
        assert_eq!(Id128::parse("1"), None);
        assert_eq!(Id128::parse("000000000000000000000000000000g1"), None);
        for n in [
            0,
            1,
            0xab,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            assert_eq!(Id128::parse(&Id128(n).to_string()), Some(Id128(n)));
        }
    }
}
