//! voteswarm's dev tasks, `cargo xtask TASK` (the make targets call them):
//! the benchmarks, each writing its section of BENCHMARKS.md, the profile,
//! and docs/RELIABILITY.md's chaos table and soak. Sizes come from the
//! environment, as each task's module says; progress goes to stderr.

mod bench;
mod buckets;
mod callgrind;
mod capture;
mod e2e;
mod latency;
mod profile;
mod profile_report;
mod reliability;
mod section;
mod soak;
mod sys;
mod tools;
mod worker;

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// An environment knob, or its default.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// A knob that takes a positive whole number.
pub fn env_num(name: &str, default: u64) -> Res<u64> {
    match std::env::var(name).ok().filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name} takes a positive whole number, got {v:?}").into()),
        },
    }
}

const USAGE: &str = "usage: cargo xtask TASK
  bench-capture      one capture node under wrk and loadgen; the edge (\"Capture\", \"Edge\")
  bench-worker       workers drain a backlog into PostgreSQL (\"Worker\")
  bench-latency      one node's latency at fractions of its maximum (\"Latency curve\")
  bench-e2e          `cluster rehearse` per topology and edge mode (\"End to end\")
  profile            callgrind instructions per vote of capture, the baseline, the worker (\"Profiles\")
  soak               the cluster for SOAK_MINUTES at a third of its maximum, faults, /proc samples (docs/RELIABILITY.md \"soak\")
  reliability-table DIR OUT   the chaos rows in DIR as OUT's fault table";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench-capture") => capture::run(),
        Some("bench-worker") => worker::run(),
        Some("bench-latency") => latency::run(),
        Some("bench-e2e") => e2e::run(),
        Some("profile") => profile::run(),
        Some("soak") => soak::run(),
        Some("reliability-table") if args.len() == 3 => {
            reliability::run(args[1].as_ref(), args[2].as_ref())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask {}: {e}", args[0]);
        std::process::exit(1);
    }
}
