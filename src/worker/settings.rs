//! The `worker`'s settings: its flags and environment variables
//! ([`WorkerArgs`]) and what they resolve to ([`WorkerSettings`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::{
    database_url_from, host_name, nonempty, ConfigError, DatabaseArgs, SecretString, VoteChanges,
};
use crate::endpoints::{EndpointSource, QueueArgs};
use crate::poll::{Poll, PollArgs};

/// Settings of a `worker`, as flags and environment variables.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// PostgreSQL URL of the migrator role (owner of the schema), used
    /// only by --migrate and --migrate-only [default: DATABASE_URL].
    #[arg(long, env = "MIGRATE_DATABASE_URL", hide_env_values = true)]
    pub migrate_database_url: Option<String>,
    /// The migrator's password, put into MIGRATE_DATABASE_URL.
    #[arg(long, env = "MIGRATE_DATABASE_PASSWORD", hide_env_values = true)]
    pub migrate_database_password: Option<String>,
    /// File holding that password (a Docker secret).
    #[arg(long, env = "MIGRATE_DATABASE_PASSWORD_FILE")]
    pub migrate_database_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub queues: QueueArgs,
    /// The Redis Stream holding the votes.
    #[arg(long, env = "STREAM_KEY", default_value = "votes")]
    pub stream_key: String,
    /// This worker's consumer name [default: host name and pid].
    #[arg(long, env = "WORKER_ID")]
    pub worker_id: Option<String>,
    /// Most stream entries per batch (one upsert each).
    #[arg(long, env = "BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Entries another consumer has held this long are claimed (a dead
    /// worker's batch).
    #[arg(long, env = "CLAIM_IDLE_MS", default_value_t = 30_000)]
    pub claim_idle_ms: u64,
    /// Database connections (and committing threads).
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 4)]
    pub db_pool_size: u32,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "METRICS_LISTEN", default_value = "0.0.0.0:9100")]
    pub metrics_listen: String,
    /// Apply the embedded database migrations at start (as the migrator:
    /// MIGRATE_DATABASE_URL).
    #[arg(long)]
    pub migrate: bool,
    /// Apply the migrations and exit: a one-off job, so that the workers
    /// that drain never hold the migrator's password.
    #[arg(long, conflicts_with = "migrate")]
    pub migrate_only: bool,
    /// `allow`: a voter's latest vote counts; `deny`: the first.
    #[arg(long, env = "VOTE_CHANGES", value_enum, default_value_t = VoteChanges::Allow)]
    pub vote_changes: VoteChanges,
    /// The poll, as capture has it: a vote for an option it does not have,
    /// or stamped at or after POLL_CLOSES, is a dead letter, not a count.
    #[command(flatten)]
    pub poll: PollArgs,
}

/// Entries per batch by default. Measured with `make bench-worker`: the
/// upsert's cost per row flattens out past a few thousand rows, and a batch
/// must stay small enough to commit well inside CLAIM_IDLE_MS.
pub const DEFAULT_BATCH_SIZE: usize = 2000;

/// Validated settings of a `worker`.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub database_url: SecretString,
    pub endpoints: EndpointSource,
    pub stream_key: String,
    pub worker_id: String,
    pub batch_size: usize,
    pub claim_idle: Duration,
    pub db_pool_size: u32,
    pub metrics_listen: String,
    pub migrate: bool,
    /// Who applies the migrations: the migrator role's URL, or
    /// DATABASE_URL when no MIGRATE_DATABASE_URL is set.
    pub migrate_url: SecretString,
    pub migrate_only: bool,
    pub vote_changes: VoteChanges,
    /// What the worker counts: the poll's options, up to its close.
    pub poll: Poll,
}

impl WorkerArgs {
    pub fn into_settings(self) -> Result<WorkerSettings, ConfigError> {
        let database_url = self.database.resolve()?;
        let migrate_url = database_url_from(
            "MIGRATE_",
            self.migrate_database_url,
            None,
            self.migrate_database_password,
            self.migrate_database_password_file,
        )?
        .unwrap_or_else(|| database_url.clone());
        // A one-off migration job talks to no queue.
        let endpoints = if self.migrate_only && self.queues.is_empty() {
            EndpointSource::default()
        } else {
            self.queues.resolve()?
        };
        nonempty("STREAM_KEY", &self.stream_key)?;
        if self.batch_size == 0 || self.batch_size > 100_000 {
            return Err(ConfigError("BATCH_SIZE must be 1 to 100000".into()));
        }
        if self.claim_idle_ms < 100 {
            return Err(ConfigError("CLAIM_IDLE_MS must be at least 100".into()));
        }
        if self.db_pool_size == 0 {
            return Err(ConfigError("DB_POOL_SIZE must be at least 1".into()));
        }
        let worker_id = self
            .worker_id
            .unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()));
        nonempty("WORKER_ID", &worker_id)?;
        let poll = self.poll.into_poll()?;
        Ok(WorkerSettings {
            database_url,
            endpoints,
            stream_key: self.stream_key,
            worker_id,
            batch_size: self.batch_size,
            claim_idle: Duration::from_millis(self.claim_idle_ms),
            db_pool_size: self.db_pool_size,
            metrics_listen: self.metrics_listen,
            migrate: self.migrate,
            migrate_url,
            migrate_only: self.migrate_only,
            vote_changes: self.vote_changes,
            poll,
        })
    }
}
