//! A results node in-process, on a real PostgreSQL and Redis.

use voteswarm::results::{Results, ResultsSettings, DEFAULT_MAX_STREAMS};

use super::node_thread::NodeThread;

/// The settings a test starts from: port 0, the shipped defaults.
pub fn settings(database_url: String, redis_url: &str) -> ResultsSettings {
    ResultsSettings {
        listen: "127.0.0.1:0".into(),
        database_url: voteswarm::config::SecretString::from(database_url),
        endpoints: voteswarm::endpoints::EndpointSource::parse(Some(redis_url), None).unwrap(),
        poll: voteswarm::poll::Poll::default(),
        results_token: None,
        stream_key: "votes".into(),
        max_streams: DEFAULT_MAX_STREAMS,
    }
}

/// A running node; it stops when dropped.
pub struct TestResults {
    pub port: u16,
    node: NodeThread,
}

/// Starts a node on a thread of its own (see `node_thread`).
pub fn spawn_results(settings: ResultsSettings) -> TestResults {
    let (node, port) = NodeThread::start_server("results", move || {
        let app = Results::build(settings).expect("build results");
        (app.port(), app.handle(), app.run_until_stopped())
    });
    TestResults { port, node }
}
