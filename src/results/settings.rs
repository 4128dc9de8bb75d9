//! The `results` node's settings: its flags and environment variables
//! ([`ResultsArgs`]) and what they resolve to ([`ResultsSettings`]).

use std::path::PathBuf;

use clap::Args;

use crate::config::{secret_from, ConfigError, DatabaseArgs, SecretString};
use crate::endpoints::{EndpointSource, QueueArgs};
use crate::poll::{Poll, PollArgs};

use super::DEFAULT_MAX_STREAMS;

#[derive(Args, Debug, Clone)]
pub struct ResultsArgs {
    /// Address to listen on for HTTP.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: String,
    #[command(flatten)]
    pub count: CountArgs,
    /// The operator's token: `Authorization: Bearer TOKEN` on the API sees
    /// the count while RESULTS_VISIBLE=after_close hides it from the public.
    #[arg(long, env = "RESULTS_TOKEN", hide_env_values = true)]
    pub results_token: Option<String>,
    /// File holding that token (a Docker secret).
    #[arg(long, env = "RESULTS_TOKEN_FILE")]
    pub results_token_file: Option<PathBuf>,
    /// Live-update streams kept open at once; a new one beyond this ends
    /// the oldest (which reconnects later). Keep it below the edge's
    /// RESULTS_MAXCONN.
    #[arg(long, env = "MAX_STREAMS", default_value_t = DEFAULT_MAX_STREAMS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_streams: usize,
}

#[derive(Clone, Debug)]
pub struct ResultsSettings {
    pub listen: String,
    pub database_url: SecretString,
    pub endpoints: EndpointSource,
    pub poll: Poll,
    /// `None`: no operator view; a bearer token is refused.
    pub results_token: Option<SecretString>,
    pub stream_key: String,
    pub max_streams: usize,
}

/// A shorter token could be guessed through the API; 16 characters of a
/// generated secret (`openssl rand -hex 16` gives 32) leave no such hope.
pub const MIN_TOKEN_CHARS: usize = 16;

/// `RESULTS_TOKEN` (or `_FILE`), checked.
pub fn token_from(
    value: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    use crate::config::ExposeSecret;
    let token = secret_from("RESULTS_TOKEN", value, file)?;
    if let Some(t) = &token {
        let t = t.expose_secret();
        if t.chars().count() < MIN_TOKEN_CHARS
            || t.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ConfigError(format!(
                "RESULTS_TOKEN: at least {MIN_TOKEN_CHARS} characters, none of them blank or control characters"
            )));
        }
    }
    Ok(token)
}

impl ResultsArgs {
    pub fn into_settings(self) -> Result<ResultsSettings, ConfigError> {
        let count = self.count.resolve()?;
        let results_token = token_from(self.results_token, self.results_token_file)?;
        Ok(ResultsSettings {
            listen: self.listen,
            database_url: count.database_url,
            endpoints: count.endpoints,
            poll: count.poll,
            results_token,
            stream_key: count.stream_key,
            max_streams: self.max_streams,
        })
    }
}

/// Where the count is and what it counts: what the node and
/// `results export` both read.
#[derive(Args, Debug, Clone)]
pub struct CountArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub queues: QueueArgs,
    #[command(flatten)]
    pub poll: PollArgs,
    /// The Redis Stream holding the votes.
    #[arg(long, env = "STREAM_KEY", default_value = "votes")]
    pub stream_key: String,
}

/// What [`CountArgs`] resolve to.
#[derive(Clone, Debug)]
pub struct CountSource {
    pub database_url: SecretString,
    pub endpoints: EndpointSource,
    pub poll: Poll,
    pub stream_key: String,
}

impl CountArgs {
    pub fn resolve(self) -> Result<CountSource, ConfigError> {
        Ok(CountSource {
            poll: self.poll.into_poll()?,
            database_url: self.database.resolve()?,
            endpoints: self.queues.resolve()?,
            stream_key: self.stream_key,
        })
    }
}

/// `results export`: the count once, as CSV or JSON, from the same
/// database and queues a results node reads.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub count: CountArgs,
    /// `csv` or `json`.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    /// Where to write it [default: standard output].
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

/// What [`ExportArgs`] resolve to.
#[derive(Clone, Debug)]
pub struct ExportSettings {
    pub count: CountSource,
    pub format: ExportFormat,
    pub output: Option<PathBuf>,
}

impl ExportArgs {
    pub fn into_settings(self) -> Result<ExportSettings, ConfigError> {
        Ok(ExportSettings {
            count: self.count.resolve()?,
            format: self.format,
            output: self.output,
        })
    }
}
