//! `results`: the count, the backlog and whether it is final, as a live
//! page, JSON and server-sent events. See `voteswarm::results`.

use clap::Parser;
use voteswarm::results::{Results, ResultsArgs};

#[derive(Parser)]
#[command(
    version,
    about = "voteswarm results node: the live count from PostgreSQL and the Redis backlog"
)]
struct Cli {
    #[command(flatten)]
    args: ResultsArgs,
}

#[actix_web::main]
async fn main() {
    voteswarm::init_logging();
    let settings = match Cli::parse().args.into_settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("results: {e}");
            std::process::exit(2);
        }
    };
    let listen = settings.listen.clone();
    let app = match Results::build(settings) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("results: {e}");
            std::process::exit(1);
        }
    };
    log::info!("results listening on {listen} (port {})", app.port());
    if let Err(e) = app.run_until_stopped().await {
        eprintln!("results: {e}");
        std::process::exit(1);
    }
}
