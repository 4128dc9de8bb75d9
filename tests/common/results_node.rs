//! A results node in-process, on a real PostgreSQL and Redis, on its own
//! thread and actix system (for tests that are not actix tests).

use voteswarm::results::{Results, ResultsSettings, DEFAULT_MAX_STREAMS};

/// The settings a test starts from: port 0, the shipped defaults.
pub fn settings(database_url: String, redis_url: &str) -> ResultsSettings {
    ResultsSettings {
        listen: "127.0.0.1:0".into(),
        database_url: voteswarm::config::Secret::new(database_url),
        endpoints: voteswarm::endpoints::EndpointSource::parse(Some(redis_url), None).unwrap(),
        option_labels: ["Cats".into(), "Dogs".into()],
        stream_key: "votes".into(),
        max_streams: DEFAULT_MAX_STREAMS,
    }
}

/// Starts the node and returns its port; it runs until the test ends.
pub fn results_on_thread(settings: ResultsSettings) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let app = Results::build(settings).unwrap();
            tx.send(app.port()).unwrap();
            let _ = app.run_until_stopped().await;
        })
    });
    rx.recv().unwrap()
}
