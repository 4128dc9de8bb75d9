//! The actors, one per file, each with its messages beside it.
//!
//! - [`queue_writer::QueueWriter`] (capture): batches votes into Redis
//!   pipelines and answers each sender once Redis has stored its vote.

pub mod queue_writer;
