//! The results tier started in-process on its own thread and port 0, as
//! the roles log in: PostgreSQL's `voteswarm_results`, Redis's `results`.

use voteswarm::cluster::postgres::PgRole;
use voteswarm::results::{Results, ResultsSettings};

use super::postgres::PgServer;
use super::RedisServer;

/// Settings for a results node on `pg` (migrated) and `redis`.
pub fn settings(pg: &PgServer, redis: &RedisServer) -> ResultsSettings {
    ResultsSettings {
        listen: "127.0.0.1:0".into(),
        database_url: voteswarm::config::Secret::new(pg.url_as(PgRole::Results)),
        endpoints: voteswarm::endpoints::EndpointSource::parse(Some(&redis.results_url()), None)
            .unwrap(),
        option_labels: ["Cats".into(), "Dogs".into()],
        stream_key: "votes".into(),
    }
}

/// Starts it on a thread of its own; returns its port.
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
