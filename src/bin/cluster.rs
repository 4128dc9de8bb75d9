//! `cluster`: the whole voteswarm topology on one machine, from real
//! processes. See `voteswarm::cluster`.

use clap::Parser;
use voteswarm::cluster::{self, ClusterCommand};

#[derive(Parser)]
#[command(
    version,
    about = "voteswarm on one machine: redis-server, postgres, haproxy and every tier"
)]
struct Cli {
    #[command(subcommand)]
    command: ClusterCommand,
}

fn main() {
    voteswarm::init_logging();
    let code = match Cli::parse().command {
        ClusterCommand::Up { topology } => cluster::up(&topology).map(|()| 0),
        ClusterCommand::Backup { data_dir, out } => {
            cluster::backup::backup(&data_dir, out.as_deref()).map(|()| 0)
        }
        ClusterCommand::PromoteStandby { data_dir } => {
            cluster::standby::promote_by_hand(&data_dir).map(|()| 0)
        }
        ClusterCommand::Restore {
            data_dir,
            force,
            file,
        } => cluster::backup::restore(&data_dir, &file, force).map(|()| 0),
        ClusterCommand::Rehearse {
            topology,
            voters,
            change_fraction,
            concurrency,
            rate,
            report,
            final_timeout_secs,
            https,
            new_connection_per_voter,
            no_tls_resumption,
            past_close,
        } => cluster::rehearse(
            &topology,
            voters,
            change_fraction,
            concurrency,
            rate,
            report.as_deref(),
            final_timeout_secs,
            https,
            new_connection_per_voter,
            no_tls_resumption,
            past_close,
        ),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("cluster: {e}");
            std::process::exit(1);
        }
    }
}

voteswarm::use_mimalloc!();
