//! `Recent`: what a capture node remembers for a while, in bounded memory:
//! the answers to `Idempotency-Key`s (replayed to a retry) and the proofs
//! of work already spent (refused the second time).
//!
//! Entries expire after a fixed lifetime; at capacity the oldest goes
//! first, so memory is bounded by `capacity` whatever clients send. One
//! mutex per node, shared by its HTTP workers: a lookup is a hash probe, and
//! only requests that carry a key or a proof take it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Recent<V> {
    inner: Mutex<Inner<V>>,
    ttl: Duration,
    capacity: usize,
}

struct Inner<V> {
    map: HashMap<Box<str>, (Instant, V)>,
    /// Insertion order, for expiry and eviction; an entry whose key was
    /// removed or re-inserted since is skipped (its instant differs).
    order: VecDeque<(Instant, Box<str>)>,
}

impl<V: Clone> Recent<V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Recent {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            ttl,
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V>> {
        // A panic elsewhere leaves the map consistent (each operation is
        // a few steps that cannot panic halfway): keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value under `key`, if it was stored less than the lifetime ago.
    pub fn get(&self, key: &str) -> Option<V> {
        let now = Instant::now();
        let inner = self.lock();
        inner
            .map
            .get(key)
            .filter(|(at, _)| now.duration_since(*at) < self.ttl)
            .map(|(_, v)| v.clone())
    }

    /// Stores `value` under `key` unless a live entry is there already;
    /// returns whether it stored.
    pub fn insert_new(&self, key: &str, value: V) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.expire(now, self.ttl);
        if inner.map.contains_key(key) {
            return false;
        }
        while inner.map.len() >= self.capacity {
            let Some((at, old)) = inner.order.pop_front() else {
                break;
            };
            if inner.map.get(&old).is_some_and(|(t, _)| *t == at) {
                inner.map.remove(&old);
            }
        }
        let key: Box<str> = key.into();
        inner.map.insert(key.clone(), (now, value));
        inner.order.push_back((now, key));
        true
    }

    /// Forgets `key` (a claim that did not lead to a stored vote).
    pub fn remove(&self, key: &str) {
        self.lock().map.remove(key);
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V> Inner<V> {
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < ttl {
                break;
            }
            let (at, key) = self.order.pop_front().expect("front exists");
            if self.map.get(&key).is_some_and(|(t, _)| *t == at) {
                self.map.remove(&key);
            }
        }
        // Removed keys leave their order entries behind: drop them when
        // they outnumber the live ones, so `order` stays bounded too.
        if self.order.len() > 2 * self.map.len() + 16 {
            let map = &self.map;
            self.order
                .retain(|(at, k)| map.get(k).is_some_and(|(t, _)| t == at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_oldest_goes_first_at_capacity() {
        let r = Recent::new(Duration::from_secs(60), 3);
        for k in ["a", "b", "c"] {
            assert!(r.insert_new(k, k.len()));
        }
        assert!(!r.insert_new("a", 9), "a live key is not replaced");
        assert_eq!(r.get("a"), Some(1));
        assert!(r.insert_new("d", 1));
        assert_eq!(r.len(), 3);
        assert_eq!(r.get("a"), None, "the oldest was evicted");
        assert_eq!(r.get("d"), Some(1));
        r.remove("b");
        assert_eq!(r.get("b"), None);
        for i in 0..1000 {
            r.insert_new(&i.to_string(), i);
            r.remove(&i.to_string());
        }
        let live = r.len();
        assert!(r.lock().order.len() <= 2 * live + 17);

        let short = Recent::new(Duration::ZERO, 10);
        assert!(short.insert_new("x", ()));
        assert_eq!(short.get("x"), None, "expired at once");
        assert!(
            short.insert_new("x", ()),
            "an expired key can be stored again"
        );
    }
}
