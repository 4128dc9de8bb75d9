//! The vote as it travels: parsed from a request, stamped by a capture node,
//! queued, counted by a worker.
//!
//! Its stream encoding, the contract between `capture` and `worker`
//! (`docs/PROTOCOL.md`), is in [`crate::queue::entry`].

use std::fmt;

use crate::poll::MAX_OPTIONS;

/// Longest `node` field a decoder accepts. Node ids are host names (at most
/// 253 bytes); anything longer is a poison entry, not a vote.
pub const MAX_NODE_LEN: usize = 253;

/// One of a poll's options, by its letter: `a` is the first, `l` the
/// twelfth ([`MAX_OPTIONS`]). The wire form is always the letter; the
/// labels ("Cats", "Dogs") are configuration and never stored, so a poll of
/// two options writes `a` and `b` as it always did. Which letters a given
/// poll has is the poll's to say ([`crate::poll::Poll::vote_option`]): a
/// value of this type is only ever one of the twelve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum VoteOption {
    A,
    B,
    C,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    L,
}

/// The letters, in option order (one `&'static str` each, so that writing
/// a vote allocates nothing for its option).
const LETTERS: [&str; MAX_OPTIONS] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];

impl VoteOption {
    /// Every letter, in order; a poll of `n` options has the first `n`.
    pub const ALL: [VoteOption; MAX_OPTIONS] = [
        VoteOption::A,
        VoteOption::B,
        VoteOption::C,
        VoteOption::D,
        VoteOption::E,
        VoteOption::F,
        VoteOption::G,
        VoteOption::H,
        VoteOption::I,
        VoteOption::J,
        VoteOption::K,
        VoteOption::L,
    ];

    /// 0 for `a`, 1 for `b`, ...: the option's place in the poll's labels.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: usize) -> Option<VoteOption> {
        VoteOption::ALL.get(i).copied()
    }

    pub fn as_str(self) -> &'static str {
        LETTERS[self.index()]
    }

    /// One lowercase letter `a` to `l`, nothing else (whatever the poll's
    /// size: the poll checks its own letters).
    pub fn parse(s: &str) -> Option<VoteOption> {
        crate::poll::letter_index(s).and_then(VoteOption::from_index)
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
    fn options_are_the_letters_a_to_l_in_order() {
        for (i, o) in VoteOption::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
            assert_eq!(VoteOption::from_index(i), Some(*o));
            assert_eq!(VoteOption::parse(o.as_str()), Some(*o));
            assert_eq!(o.as_str(), crate::poll::letter(i).to_string());
        }
        assert_eq!(VoteOption::from_index(MAX_OPTIONS), None);
        for bad in ["m", "A", "", "ab", " a", "z"] {
            assert_eq!(VoteOption::parse(bad), None, "{bad:?}");
        }
    }

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
