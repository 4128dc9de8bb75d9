//! `DbWriter`: commits batches to PostgreSQL, on an actix `SyncArbiter`
//! (diesel blocks), one connection from the r2d2 pool per batch.
//!
//! Receives [`CommitBatch`] from a `Drainer`; answers `Ok(rows changed)`
//! only after the one upsert statement of the batch committed, or a
//! [`DbError`] that says whether retrying can help. It never retries by
//! itself: a `SyncContext` has no timers, so the `Drainer` (async) holds
//! the batch and retries with backoff, and meanwhile reads nothing more.

use std::time::Instant;

use actix::prelude::*;

use crate::config::VoteChanges;
use crate::db::{self, DbError, DbPool};
use crate::metrics::WorkerMetrics;
use crate::vote::Vote;

/// Commit these votes (at most one per voter).
#[derive(Message)]
#[rtype(result = "Result<usize, DbError>")]
pub struct CommitBatch {
    pub votes: Vec<Vote>,
}

/// Is the database answering, and confirming commits? (A primary whose
/// synchronous standby is gone answers, but holds every commit.)
#[derive(Message)]
#[rtype(result = "Result<(), DbError>")]
pub struct CheckDb;

pub struct DbWriter {
    pub pool: DbPool,
    pub mode: VoteChanges,
    pub metrics: WorkerMetrics,
}

impl Actor for DbWriter {
    type Context = SyncContext<Self>;
}

impl Handler<CommitBatch> for DbWriter {
    type Result = Result<usize, DbError>;

    fn handle(&mut self, msg: CommitBatch, _: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let result = self
            .pool
            .get()
            .map_err(DbError::from)
            .and_then(|mut conn| db::commit_votes(&mut conn, &msg.votes, self.mode));
        match &result {
            Ok(_) => self
                .metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64()),
            Err(_) => self.metrics.commit_errors.inc(),
        }
        result
    }
}

impl Handler<CheckDb> for DbWriter {
    type Result = Result<(), DbError>;

    fn handle(&mut self, _: CheckDb, _: &mut Self::Context) -> Self::Result {
        let mut conn = self.pool.get()?;
        db::ping(&mut conn)?;
        match db::stalled_sync_commits(&mut conn)? {
            0 => Ok(()),
            n => Err(DbError {
                message: format!(
                    "{n} commit(s) waiting over {} s for the synchronous standby; nothing they hold is acknowledged",
                    db::SYNC_WAIT_REPORTED.as_secs()
                ),
                retriable: true,
            }),
        }
    }
}
