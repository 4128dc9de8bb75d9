//! `capture`: takes votes over HTTP and stores them in this node's Redis.
//! See `voteswarm::capture` and `docs/ARCHITECTURE.md`.

use clap::Parser;
use voteswarm::capture::Capture;
use voteswarm::config::CaptureArgs;

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
    let settings = match Cli::parse().args.into_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("capture: {e}");
            std::process::exit(2);
        }
    };
    let (listen, node) = (settings.listen.clone(), settings.node_id.clone());
    let app = match Capture::build(settings) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("capture: {e}");
            std::process::exit(1);
        }
    };
    log::info!(
        "capture node {node} listening on {listen} (port {})",
        app.port()
    );
    if let Err(e) = app.run_until_stopped().await {
        eprintln!("capture: {e}");
        std::process::exit(1);
    }
    log::info!("capture node {node} stopped");
}
