//! The one retry policy: a wait that doubles from a first value up to a
//! ceiling. Every retry in the tree paces itself with it (the drainer's
//! reconnects, commits and acknowledgements, the supervisor's and the
//! local cluster's restarts, loadgen's resends), and an error that knows
//! whether trying again can help ([`Retriable`]) decides through
//! [`Backoff::retry`] whether there is a next attempt at all.
//!
//! Not the `backon` crate: its retries drive a future to completion, and
//! the actors here retry from timers in their own context
//! (`run_later`), holding their state between attempts.

use std::time::Duration;

/// How to pace retries: wait `first`, then twice as long each time, never
/// longer than `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub first: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    pub const fn doubling(first: Duration, max: Duration) -> RetryPolicy {
        RetryPolicy { first, max }
    }

    /// A fresh schedule, at `first`.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            wait: self.first,
        }
    }
}

/// Where one run of retries stands.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    wait: Duration,
}

/// An error that says whether trying again can help.
pub trait Retriable {
    fn retriable(&self) -> bool;
}

impl Retriable for crate::db::DbError {
    fn retriable(&self) -> bool {
        self.retriable
    }
}

impl Backoff {
    /// The wait before the next attempt; the one after is twice as long.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.wait;
        self.wait = (self.wait * 2).min(self.policy.max);
        wait
    }

    /// The wait the next attempt would get, without moving on.
    pub fn current(&self) -> Duration {
        self.wait
    }

    /// Like [`Self::next_wait`], but `None` once the wait has reached the
    /// ceiling: for retries that give up after a bounded while.
    pub fn next_wait_below_max(&mut self) -> Option<Duration> {
        (self.wait < self.policy.max).then(|| self.next_wait())
    }

    /// After `error`: the wait before trying again, or `None` if the error
    /// says trying again cannot help.
    pub fn retry(&mut self, error: &impl Retriable) -> Option<Duration> {
        error.retriable().then(|| self.next_wait())
    }

    /// After a success: the next run of retries starts at `first` again.
    pub fn reset(&mut self) {
        self.wait = self.policy.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy =
        RetryPolicy::doubling(Duration::from_millis(100), Duration::from_millis(500));

    struct Refused(bool);
    impl Retriable for Refused {
        fn retriable(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn waits_double_up_to_the_ceiling_and_reset_to_the_first() {
        let mut b = POLICY.backoff();
        let waits: Vec<u64> = (0..5).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.current(), Duration::from_millis(100));
    }

    #[test]
    fn bounded_retries_stop_at_the_ceiling() {
        let mut b = POLICY.backoff();
        let mut waits = Vec::new();
        while let Some(w) = b.next_wait_below_max() {
            waits.push(w.as_millis() as u64);
        }
        assert_eq!(waits, [100, 200, 400]);
    }

    #[test]
    fn the_error_decides_whether_there_is_a_next_attempt() {
        let mut b = POLICY.backoff();
        assert_eq!(b.retry(&Refused(false)), None);
        assert_eq!(b.current(), Duration::from_millis(100));
        assert_eq!(b.retry(&Refused(true)), Some(Duration::from_millis(100)));
        assert_eq!(b.retry(&Refused(true)), Some(Duration::from_millis(200)));
    }
}
