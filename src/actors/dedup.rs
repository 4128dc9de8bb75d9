//! `Dedup`: turns a batch of raw stream entries into what the database
//! should see.
//!
//! Receives [`DedupBatch`] from a `Drainer`; answers with a [`Deduped`]:
//! one vote per voter (the greatest `(ts, vote_id)` when changes are
//! allowed, the smallest when denied: PostgreSQL refuses a batch upsert
//! that touches one row twice, and the loser could never win anyway), the
//! entries that are not votes with the reason (for the dead-letter stream),
//! and every entry id, since all of them are acknowledged once the batch
//! has committed. A vote the poll does not count (an option it does not
//! have, a stamp at or after its close: [`Poll::refuses_count`]) is a dead
//! letter too, and never competes for its voter's row.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use crate::config::VoteChanges;
use crate::poll::Poll;
use crate::queue::{Content, DeadLetter, Entry};
use crate::vote::Vote;

/// A batch as read from one stream.
#[derive(Message)]
#[rtype(result = "Deduped")]
pub struct DedupBatch {
    pub entries: Vec<Entry>,
}

#[derive(Debug, Default, MessageResponse)]
pub struct Deduped {
    /// At most one per voter.
    pub votes: Vec<Vote>,
    pub dead: Vec<DeadLetter>,
    /// Every id of the batch: acknowledged after the commit.
    pub ids: Vec<String>,
}

/// The logic, as a plain function (the actor only carries it).
pub fn dedup(entries: Vec<Entry>, mode: VoteChanges, poll: &Poll) -> Deduped {
    let mut out = Deduped {
        ids: Vec::with_capacity(entries.len()),
        ..Deduped::default()
    };
    let mut best: HashMap<crate::vote::Id128, Vote> = HashMap::with_capacity(entries.len());
    for e in entries {
        let fields = match e.content {
            Content::Fields(fields) => fields,
            Content::Deleted => {
                out.ids.push(e.id);
                continue;
            }
        };
        let vote = Vote::from_fields(fields.iter().map(|(k, v)| (&k[..], &v[..])))
            .map_err(|e| e.to_string())
            .and_then(|v| match poll.refuses_count(v.option, v.ts) {
                Some(reason) => Err(reason),
                None => Ok(v),
            });
        match vote {
            Ok(v) => {
                let keep_new = match best.get(&v.voter) {
                    None => true,
                    Some(old) => match mode {
                        VoteChanges::Allow => v.order_key() > old.order_key(),
                        VoteChanges::Deny => v.order_key() < old.order_key(),
                    },
                };
                if keep_new {
                    best.insert(v.voter, v);
                }
                out.ids.push(e.id);
            }
            Err(reason) => {
                out.dead.push(DeadLetter {
                    id: e.id.clone(),
                    reason,
                    fields,
                });
                out.ids.push(e.id);
            }
        }
    }
    out.votes = best.into_values().collect();
    out
}

pub struct Dedup {
    pub mode: VoteChanges,
    pub poll: Arc<Poll>,
}

impl Actor for Dedup {
    type Context = Context<Self>;
}

impl Handler<DedupBatch> for Dedup {
    type Result = Deduped;

    fn handle(&mut self, msg: DedupBatch, _: &mut Self::Context) -> Deduped {
        dedup(msg.entries, self.mode, &self.poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vote::{Id128, VoteOption};

    fn entry(id: &str, voter: u128, option: VoteOption, ts: i64, vote_id: u128) -> Entry {
        let v = Vote {
            vote_id: Id128(vote_id),
            voter: Id128(voter),
            option,
            ts,
            node: "n".into(),
        };
        Entry {
            id: id.into(),
            content: Content::Fields(
                v.to_fields()
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn a_batch_keeps_one_vote_per_voter_the_latest_or_the_first() {
        let batch = || {
            vec![
                entry("1-0", 1, VoteOption::A, 10, 1),
                entry("2-0", 1, VoteOption::B, 30, 2),
                entry("3-0", 1, VoteOption::A, 20, 3),
                entry("4-0", 2, VoteOption::B, 5, 4),
                // Same ts: the greater vote id wins the tie.
                entry("5-0", 3, VoteOption::A, 7, 9),
                entry("6-0", 3, VoteOption::B, 7, 8),
            ]
        };
        let pick = |d: &Deduped, voter: u128| {
            d.votes
                .iter()
                .find(|v| v.voter == Id128(voter))
                .unwrap()
                .option
        };
        let poll = Poll::default();
        let allow = dedup(batch(), VoteChanges::Allow, &poll);
        assert_eq!(allow.votes.len(), 3);
        assert_eq!(allow.ids.len(), 6);
        assert_eq!(pick(&allow, 1), VoteOption::B);
        assert_eq!(pick(&allow, 3), VoteOption::A);
        let deny = dedup(batch(), VoteChanges::Deny, &poll);
        assert_eq!(pick(&deny, 1), VoteOption::A);
        assert_eq!(pick(&deny, 3), VoteOption::B);
    }

    #[test]
    fn poison_entries_become_dead_letters_and_are_still_acknowledged() {
        let poison = Entry {
            id: "9-0".into(),
            content: Content::Fields(vec![(b"option".to_vec(), b"c".to_vec())]),
        };
        let gone = Entry {
            id: "8-0".into(),
            content: Content::Deleted,
        };
        let d = dedup(
            vec![entry("1-0", 1, VoteOption::A, 1, 1), poison, gone],
            VoteChanges::Allow,
            &Poll::default(),
        );
        assert_eq!(d.votes.len(), 1);
        assert_eq!(d.dead.len(), 1);
        assert_eq!(d.dead[0].id, "9-0");
        assert!(
            d.dead[0].reason.contains("missing field"),
            "{}",
            d.dead[0].reason
        );
        assert_eq!(d.ids, vec!["1-0", "9-0", "8-0"]);
    }

    #[test]
    fn a_vote_the_poll_does_not_count_is_a_dead_letter_and_its_voters_earlier_vote_stands() {
        let mut poll = Poll::with_options(&["Red", "Green", "Blue", "Cyan", "Pink"]);
        poll.closes = chrono::DateTime::from_timestamp_micros(1_000);
        let d = dedup(
            vec![
                entry("1-0", 1, VoteOption::B, 999, 1),
                // Later, so it would win: but stamped at the close.
                entry("2-0", 1, VoteOption::C, 1_000, 2),
                entry("3-0", 2, VoteOption::F, 10, 3),
                entry("4-0", 3, VoteOption::E, 10, 4),
            ],
            VoteChanges::Allow,
            &poll,
        );
        let mut counted: Vec<_> = d.votes.iter().map(|v| (v.voter.0, v.option)).collect();
        counted.sort();
        assert_eq!(counted, [(1, VoteOption::B), (3, VoteOption::E)]);
        assert_eq!(d.ids.len(), 4, "every entry is acknowledged");
        let reasons: Vec<(&str, &str)> = d
            .dead
            .iter()
            .map(|l| (l.id.as_str(), l.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2);
        assert!(
            reasons[0].0 == "2-0" && reasons[0].1.starts_with("poll_closed: "),
            "{reasons:?}"
        );
        assert!(
            reasons[1].0 == "3-0" && reasons[1].1.starts_with("bad_option: option `f`"),
            "{reasons:?}"
        );
    }
}
