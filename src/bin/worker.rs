//! `worker`: drains every capture node's Redis queue into PostgreSQL.
//! See `voteswarm::worker` and `docs/ARCHITECTURE.md`.

use clap::Parser;
use voteswarm::config::WorkerArgs;
use voteswarm::worker::Worker;

#[derive(Parser)]
#[command(
    version,
    about = "voteswarm worker: Redis Streams into PostgreSQL, each vote exactly once"
)]
struct Cli {
    #[command(flatten)]
    args: WorkerArgs,
}

#[actix_web::main]
async fn main() {
    voteswarm::init_logging();
    let settings = match Cli::parse().args.into_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("worker: {e}");
            std::process::exit(2);
        }
    };
    let (id, listen) = (settings.worker_id.clone(), settings.metrics_listen.clone());
    let worker = match Worker::build(settings) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("worker: {e}");
            std::process::exit(1);
        }
    };
    log::info!(
        "worker {id} running; metrics on {listen} (port {})",
        worker.port()
    );
    worker.run_until_stopped().await;
    log::info!("worker {id} stopped");
}
