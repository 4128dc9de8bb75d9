//! `results`: the count, the backlog and whether it is final, as a live
//! page, JSON and server-sent events; `results export` writes the count
//! once, as CSV or JSON. See `voteswarm::results`.

use clap::{Parser, Subcommand};
use voteswarm::results::{export, ExportArgs, Results, ResultsArgs};

#[derive(Parser)]
#[command(
    version,
    about = "voteswarm results node: the live count from PostgreSQL and the Redis backlog",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: ResultsArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Write the count once (option, label, votes; per capture node; the
    /// window; whether and since when it is final) and exit: 0 when the
    /// count is final, 3 when it is written but not final (voting still
    /// open, votes still queued, a queue not answering), 1 when it cannot
    /// be read.
    Export(Box<ExportArgs>),
}

/// The exit status of an export that was written but is not final.
const NOT_FINAL: i32 = 3;

#[actix_web::main]
async fn main() {
    voteswarm::init_logging();
    let cli = Cli::parse();
    if let Some(Command::Export(args)) = cli.command {
        let settings = voteswarm::or_exit("results export", 2, args.into_settings());
        let output = settings.output.clone();
        let (exported, text) = voteswarm::or_exit("results export", 1, export::run(settings).await);
        let written = match &output {
            Some(path) => {
                std::fs::write(path, &text).map_err(|e| format!("--output {}: {e}", path.display()))
            }
            None => {
                use std::io::Write;
                std::io::stdout()
                    .write_all(text.as_bytes())
                    .map_err(|e| format!("standard output: {e}"))
            }
        };
        voteswarm::or_exit("results export", 1, written);
        if let Some(why) = &exported.not_final {
            eprintln!("results export: the count is not final: {why}");
            std::process::exit(NOT_FINAL);
        }
        return;
    }
    let settings = voteswarm::or_exit("results", 2, cli.args.into_settings());
    let listen = settings.listen.clone();
    let app = voteswarm::or_exit("results", 1, Results::build(settings));
    log::info!("results listening on {listen} (port {})", app.port());
    voteswarm::or_exit("results", 1, app.run_until_stopped().await);
}

voteswarm::use_mimalloc!();
