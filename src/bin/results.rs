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
    let settings = voteswarm::or_exit("results", 2, Cli::parse().args.into_settings());
    let listen = settings.listen.clone();
    let app = voteswarm::or_exit("results", 1, Results::build(settings));
    log::info!("results listening on {listen} (port {})", app.port());
    voteswarm::or_exit("results", 1, app.run_until_stopped().await);
}

voteswarm::use_mimalloc!();
