//! The actors, one per file, each with its messages beside it.
//!
//! - [`queue_writer::QueueWriter`] (capture): batches votes into Redis
//!   pipelines and answers each sender once Redis has stored its vote.
//! - [`supervisor::Supervisor`] (worker): one `Drainer` per Redis endpoint,
//!   from `REDIS_URLS` and `REDIS_DNS`, restarted when they fail.
//! - [`drainer::Drainer`] (worker): reads one stream in batches, claims a
//!   dead worker's entries, acknowledges only what committed.
//! - [`dedup::Dedup`] (worker): one vote per voter per batch; poison
//!   entries to the dead-letter stream.
//! - [`db_writer::DbWriter`] (worker, `SyncArbiter`): one upsert per batch.
//! - [`tally::Tally`] (results): counts once a second and publishes the
//!   snapshot every viewer reads.

pub mod db_writer;
pub mod dedup;
pub mod drainer;
pub mod queue_writer;
pub mod supervisor;
pub mod tally;
