//! The vote timestamp: a hybrid logical clock carried in the voter's cookie.
//!
//! `ts = max(now, last_ts + 1)`: a voter's later vote always carries a
//! greater timestamp than the earlier one, whichever node took either and
//! however far apart their clocks are. Synced clocks (chrony) keep `ts` close
//! to real time; they are not needed for the order of one voter's votes.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch by this host's clock.
pub fn now_micros() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        // A clock before 1970 is a broken host; count from the epoch rather
        // than panic on the vote path.
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The timestamp for a vote taken at `now` from a voter whose previous
/// accepted vote carried `last_ts`.
pub fn next_ts(now: i64, last_ts: Option<i64>) -> i64 {
    match last_ts {
        Some(last) => now.max(last.saturating_add(1)),
        None => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_vote_is_later_even_when_the_earlier_node_ran_ahead() {
        let now = 1_000;
        assert_eq!(next_ts(now, None), now);
        assert_eq!(next_ts(now, Some(10)), now);
        assert_eq!(next_ts(now, Some(5_000)), 5_001);
        assert_eq!(next_ts(now, Some(i64::MAX)), i64::MAX);
    }
}
