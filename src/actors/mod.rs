//! The actors, one per file, each with its messages beside it.
//!
//! - [`queue_writer::QueueWriter`] (capture): batches votes into Redis
//!   pipelines and answers each sender once Redis has stored its vote.
//! - [`tally::Tally`] (results): counts once a second and publishes the
//!   snapshot every viewer reads.

pub mod queue_writer;
pub mod tally;
