//! The open live-update streams of one results node, oldest first.
//!
//! A viewer's `/events` stream stays open for as long as the page does, so
//! the count of open streams, not the request rate, is what exhausts a
//! results node (and the edge's connection slots to it). [`Streams`] caps
//! them at `MAX_STREAMS`: a stream admitted beyond the cap ends the oldest
//! one, which is told to come back later (`retry:`), instead of the node
//! refusing the newcomer. The oldest has had the results longest; its page
//! keeps the last numbers it showed, and the browser's `EventSource`
//! reconnects by itself after the delay. The edge caps the streams of one
//! address (`STREAMS_PER_ADDRESS` in `swarm/haproxy.cfg`), so one client
//! cannot shed everyone else by itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The reconnection delay a shed stream is given, in milliseconds: long
/// enough that shed viewers do not immediately shed others in turn.
pub const SHED_RETRY_MS: u64 = 30_000;

/// The open streams, by admission order.
pub struct Streams {
    max: usize,
    inner: Mutex<Inner>,
    shed_total: prometheus::IntCounter,
}

struct Inner {
    next_id: u64,
    /// Admission number -> how to tell that stream to end. A BTreeMap so
    /// the oldest is the first key.
    open: BTreeMap<u64, oneshot::Sender<()>>,
}

/// One admitted stream. Dropping it (the viewer left) frees its slot.
pub struct Ticket {
    id: u64,
    streams: Arc<Streams>,
    /// Fires when this stream is shed; `None` once it has.
    pub shed: Option<oneshot::Receiver<()>>,
}

impl Streams {
    /// `max` is at least 1: a node that admits no stream serves no viewer.
    pub fn new(max: usize, shed_total: prometheus::IntCounter) -> Arc<Streams> {
        Arc::new(Streams {
            max: max.max(1),
            inner: Mutex::new(Inner {
                next_id: 0,
                open: BTreeMap::new(),
            }),
            shed_total,
        })
    }

    /// Admits a stream, ending the oldest ones if that makes more than
    /// `max` open.
    pub fn admit(self: &Arc<Self>) -> Ticket {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        while inner.open.len() >= self.max {
            let Some((_, oldest)) = inner.open.pop_first() else {
                break;
            };
            // The stream may be gone already (its receiver dropped): then
            // there is nothing to tell, and its slot is free all the same.
            let _ = oldest.send(());
            self.shed_total.inc();
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.open.insert(id, tx);
        Ticket {
            id,
            streams: Arc::clone(self),
            shed: Some(rx),
        }
    }

    pub fn open(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .len()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.streams
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams(max: usize) -> Arc<Streams> {
        Streams::new(max, prometheus::IntCounter::new("shed", "shed").unwrap())
    }

    #[test]
    fn beyond_the_cap_the_oldest_is_shed_and_the_newest_admitted() {
        let s = streams(2);
        let mut first = s.admit();
        let mut second = s.admit();
        let mut third = s.admit();
        assert_eq!(first.shed.as_mut().unwrap().try_recv(), Ok(()));
        assert!(second.shed.as_mut().unwrap().try_recv().is_err());
        assert!(third.shed.as_mut().unwrap().try_recv().is_err());
        assert_eq!(s.open(), 2);
        assert_eq!(s.shed_total.get(), 1);
    }

    #[test]
    fn a_viewer_that_leaves_frees_its_slot_without_shedding_anyone() {
        let s = streams(2);
        let first = s.admit();
        let mut second = s.admit();
        drop(first);
        let _third = s.admit();
        assert!(second.shed.as_mut().unwrap().try_recv().is_err());
        assert_eq!(s.open(), 2);
        assert_eq!(s.shed_total.get(), 0);
    }
}
