//! `loadgen`: simulated voters against the load balancer, then a check of
//! the count. Exit status 0 only when everything matched. See
//! `voteswarm::loadgen`.

use clap::Parser;
use voteswarm::loadgen::{self, LoadgenArgs};

#[derive(Parser)]
#[command(
    version,
    about = "voteswarm loadgen: rehearse the big night and verify the count"
)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

#[actix_web::main]
async fn main() {
    voteswarm::init_logging_with("warn");
    let args = Cli::parse().args;
    let report_json = args.report_json.clone();
    let settings = voteswarm::or_exit("loadgen", 2, args.into_settings());
    let report_path = settings.report.clone();
    let report = loadgen::run(settings).await;
    let text = report.render();
    print!("{text}");
    if let Some(path) = report_path {
        if let Err(e) = std::fs::write(&path, &text) {
            eprintln!(
                "loadgen: cannot write the report to {}: {e}",
                path.display()
            );
            std::process::exit(1);
        }
    }
    if let Some(path) = report_json {
        if let Err(e) = report.write_json(&path) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    std::process::exit(if report.passed() { 0 } else { 1 });
}

voteswarm::use_mimalloc!();
