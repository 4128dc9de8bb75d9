//! `capture`: takes votes over HTTP and stores them in this node's Redis.
//! See `voteswarm::capture` and `docs/ARCHITECTURE.md`.

use clap::Parser;
use voteswarm::capture::{Capture, CaptureArgs};

#[derive(Parser)]
#[command(
    version,
    about = "voteswarm capture node: HTTP votes into this node's Redis Stream"
)]
struct Cli {
    #[command(flatten)]
    args: CaptureArgs,
}

#[actix_web::main]
async fn main() {
    voteswarm::init_logging();
    let settings = voteswarm::or_exit("capture", 2, Cli::parse().args.into_settings());
    let (listen, node) = (settings.listen.clone(), settings.node_id.clone());
    let app = voteswarm::or_exit("capture", 1, Capture::build(settings));
    log::info!(
        "capture node {node} listening on {listen} (port {})",
        app.port()
    );
    voteswarm::or_exit("capture", 1, app.run_until_stopped().await);
    log::info!("capture node {node} stopped");
}

voteswarm::use_mimalloc!();
