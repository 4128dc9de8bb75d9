//! `make bench-latency`: the latency curve of one capture node and its
//! Redis. First its maximum rate (wrk, form posts), then loadgen (API votes
//! from distinct voters with cookie jars) held at 25%, 50%, 75% and 90% of
//! that rate: p50, p99 and p99.9 at each. Writes the "Latency curve"
//! section of BENCHMARKS.md.
//!   SECONDS_PER_STEP=10 cargo xtask bench-latency (STEP_SECS=10 also works)

use crate::bench::Bench;
use crate::{env_or, say, section, sys, tools, Res};

pub fn run() -> Res<()> {
    let step_secs: u64 = env_or("STEP_SECS", &env_or("SECONDS_PER_STEP", "10")).parse()?;
    let b = Bench::start("bench-latency")?;
    b.build(&["--bin", "capture", "--bin", "loadgen"])?;
    let redis = b.redis("node", "always")?;
    let (port, _capture) = b.capture(&redis, &[("MIN_CHANGE_INTERVAL_MS", "0")])?;

    tools::wrk(&b, 2, 64, 2, port)?;
    let max = tools::wrk(&b, 2, 64, step_secs, port)?.rate() as u64;
    say!(b, "maximum {max} votes/s (wrk)");

    let mut rows = Vec::new();
    for pct in [25u64, 50, 75, 90] {
        let rate = max * pct / 100;
        let voters = rate * step_secs;
        let mut args = tools::once_each(port, voters);
        args.extend(["--rate".into(), rate.to_string()]);
        args.extend(["--concurrency".into(), "256".into()]);
        let r = tools::loadgen(&args, &b.path(&format!("r{pct}.json")))?;
        let done = format!("{:.0}", r.votes_per_s);
        let p99 = tools::lat(r.latency_us, |l| l.p99);
        rows.push(format!(
            "| {pct}% | {rate} | {done} | {} | {p99} | {} |",
            tools::lat(r.latency_us, |l| l.p50),
            tools::lat(r.latency_us, |l| l.p999),
        ));
        say!(b, "{pct}%: {rate}/s asked, {done}/s done, p99 {p99}");
    }

    let s = format!(
        "<!-- latency:begin -->
## Latency curve: one capture node and its Redis

Measured {date} on {cores}. Command: `make bench-latency`
(`cargo xtask bench-latency`): the node's maximum under wrk (form posts, 64 connections) was
{max} votes/s; loadgen (JSON votes, a cookie jar per voter, 256 connections) then held
each fraction of it for {step_secs} s. Redis at appendfsync always (as shipped); everything on one machine,
so near the top loadgen itself competes for the cores: \"done\" is the rate achieved.

| load | asked votes/s | done votes/s | p50 | p99 | p99.9 |
|-----:|--------------:|-------------:|----:|----:|------:|
{rows}
<!-- latency:end -->
",
        date = sys::today(),
        cores = sys::cores_desc(),
        rows = rows.join("\n"),
    );
    section::write_benchmarks("latency", &s)
}
