//! The `results` node's settings: its flags and environment variables
//! ([`ResultsArgs`]) and what they resolve to ([`ResultsSettings`]).

use clap::Args;

use crate::config::{ConfigError, DatabaseArgs, SecretString};
use crate::endpoints::{EndpointSource, QueueArgs};

use super::DEFAULT_MAX_STREAMS;

#[derive(Args, Debug, Clone)]
pub struct ResultsArgs {
    /// Address to listen on for HTTP.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub queues: QueueArgs,
    /// Label of option `a`.
    #[arg(long, env = "OPTION_A", default_value = "Cats")]
    pub option_a: String,
    /// Label of option `b`.
    #[arg(long, env = "OPTION_B", default_value = "Dogs")]
    pub option_b: String,
    /// The Redis Stream holding the votes.
    #[arg(long, env = "STREAM_KEY", default_value = "votes")]
    pub stream_key: String,
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
    pub option_labels: [String; 2],
    pub stream_key: String,
    pub max_streams: usize,
}

impl ResultsArgs {
    pub fn into_settings(self) -> Result<ResultsSettings, ConfigError> {
        let database_url = self.database.resolve()?;
        let endpoints = self.queues.resolve()?;
        Ok(ResultsSettings {
            listen: self.listen,
            database_url,
            endpoints,
            option_labels: [self.option_a, self.option_b],
            stream_key: self.stream_key,
            max_streams: self.max_streams,
        })
    }
}
