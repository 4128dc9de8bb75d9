//! `worker`: drains every capture node's Redis queue into PostgreSQL.
//! See `voteswarm::worker` and `docs/ARCHITECTURE.md`.

use clap::Parser;
use voteswarm::worker::{Worker, WorkerArgs};

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
    let settings = voteswarm::or_exit("worker", 2, Cli::parse().args.into_settings());
    if settings.migrate_only {
        voteswarm::or_exit("worker", 1, voteswarm::worker::migrate(&settings));
        return;
    }
    let (id, listen) = (settings.worker_id.clone(), settings.metrics_listen.clone());
    let worker = voteswarm::or_exit("worker", 1, Worker::build(settings));
    log::info!(
        "worker {id} running; metrics on {listen} (port {})",
        worker.port()
    );
    worker.run_until_stopped().await;
    log::info!("worker {id} stopped");
}

voteswarm::use_mimalloc!();
