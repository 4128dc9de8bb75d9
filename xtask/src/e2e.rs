//! `make bench-e2e`: the whole system on this machine, end to end. For
//! each topology in TOPOLOGIES ("CAPTURExWORKERS"), `cluster rehearse`
//! starts PostgreSQL, a Redis per capture node, the capture nodes, the
//! workers, results and HAProxy, and loadgen votes through HAProxy as
//! VOTERS voters (CHANGE_FRACTION of them change once), then checks the
//! count against its ground truth. Reports the voting time, the time to
//! the final count, whether the count is exact, and each tier's CPU per
//! vote. The first topology runs once per edge mode in MODES, in the same
//! invocation: plain HTTP, HTTPS over keep-alive connections, HTTPS with a
//! new TLS connection per voter (sessions resumed), and the same with every
//! handshake full. Writes the "End to end" section of BENCHMARKS.md.
//! Before those, what replicated acknowledgement costs: the first topology
//! over plain HTTP per variant in VARIANTS (plain; replicas: a Redis replica
//! per queue and ACK_REPLICAS=1; standby: the synchronous PostgreSQL
//! standby; both), VARIANT_VOTERS voters each, ROUNDS rounds interleaved,
//! ratios to plain ("End to end with replication" section). VARIANTS_ONLY=1
//! runs only those; VARIANTS=none none of them.
//!   VOTERS=1000000 TOPOLOGIES="3x2 1x1" CONCURRENCY=256 \
//!   MODES="http http-new https https-new https-new-full" \
//!   VARIANTS="plain replicas standby both" VARIANT_VOTERS=200000 ROUNDS=2 cargo xtask bench-e2e

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use voteswarm::cluster::procs::Spec;

use voteswarm::loadgen::report::JsonReport;

use crate::bench::{interleaved, Bench, Child};
use crate::{env_num, env_or, say, section, sys, tools, Res};

/// What each edge mode asks of `cluster rehearse`, and its name in the
/// tables.
fn mode(m: &str) -> Res<(&'static [&'static str], &'static str)> {
    Ok(match m {
        "http" => (&[], "HTTP, keep-alive"),
        "http-new" => (
            &["--new-connection-per-voter"],
            "HTTP, new connection per voter",
        ),
        "https" => (&["--https"], "HTTPS, keep-alive"),
        "https-new" => (
            &["--https", "--new-connection-per-voter"],
            "HTTPS, new connection per voter (resumed)",
        ),
        "https-new-full" => (
            &[
                "--https",
                "--new-connection-per-voter",
                "--no-tls-resumption",
            ],
            "HTTPS, new connection per voter (full handshakes)",
        ),
        _ => {
            return Err(format!(
                "unknown mode {m} in MODES (http http-new https https-new https-new-full)"
            )
            .into())
        }
    })
}

/// What each replication variant asks of `cluster rehearse`, and its name
/// in the tables.
fn variant(v: &str) -> Res<(&'static [&'static str], &'static str)> {
    Ok(match v {
        "plain" => (&[], "no replicas, no standby (baseline)"),
        "replicas" => (
            &["--queue-replicas", "1"],
            "a replica per queue, ACK_REPLICAS=1",
        ),
        "standby" => (&["--pg-standby"], "a synchronous PostgreSQL standby"),
        "both" => (
            &["--queue-replicas", "1", "--pg-standby"],
            "a replica per queue, ACK_REPLICAS=1, and the synchronous standby",
        ),
        _ => {
            return Err(
                format!("unknown variant {v} in VARIANTS (plain replicas standby both)").into(),
            )
        }
    })
}

/// One variant's rehearsals over the rounds.
#[derive(Default)]
struct Rounds {
    acknowledged: u64,
    voting_s: f64,
    rates: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    waited: Vec<f64>,
    exact: bool,
    cpu: BTreeMap<&'static str, u64>,
}

impl Rounds {
    fn add(&mut self, r: &Rehearsal) {
        let first = self.rates.is_empty();
        self.acknowledged += r.report.acknowledged;
        self.voting_s += r.report.wall_time_s;
        self.rates.push(r.report.votes_per_s);
        if let Some(l) = r.report.latency_us {
            self.p50.push(l.p50 as f64);
            self.p99.push(l.p99 as f64);
        }
        if let Some(x) = &r.report.results {
            self.waited.push(x.waited_s);
        }
        self.exact = (first || self.exact) && r.status == 0;
        for (t, ticks) in &r.cpu {
            *self.cpu.entry(t).or_insert(0) += ticks;
        }
    }

    fn rate(&self) -> f64 {
        self.acknowledged as f64 / self.voting_s.max(1e-9)
    }

    fn cpu(&self, tier: &str) -> Option<f64> {
        self.cpu
            .get(tier)
            .map(|&t| sys::us_per_vote(t, self.acknowledged))
    }

    fn total_cpu(&self) -> f64 {
        TIERS.iter().filter_map(|t| self.cpu(t)).sum()
    }
}

/// The "End to end with replication" section: each of `variants` on the
/// first topology over plain HTTP, VARIANT_VOTERS voters,
/// [`interleaved`] over ROUNDS rounds; ratios to `plain`.
fn variants_section(b: &Bench, size: &Size, topo: &str, variants: &[&str]) -> Res<()> {
    let size = Size {
        voters: env_num("VARIANT_VOTERS", 200_000)?,
        change_fraction: size.change_fraction.clone(),
        concurrency: size.concurrency,
    };
    let rounds = env_num("ROUNDS", 2)?;
    let load_before = sys::loadavg();
    let (capture, workers) = topology(topo)?;
    let mut sums: Vec<Rounds> = variants.iter().map(|_| Rounds::default()).collect();
    for (round, i) in interleaved(rounds, variants.len()) {
        let v = variants[i];
        say!(
            b,
            "round {}, {v}: {topo}, {} voters (a minute or so)",
            round + 1,
            size.voters
        );
        let r = rehearse(
            b,
            &size,
            &format!("{topo}-{v}-{}", round + 1),
            (capture, workers),
            variant(v)?.0,
        )?;
        if r.status != 0 {
            say!(b, "{v}: the count was NOT exact (exit {})", r.status);
        }
        sums[i].add(&r);
    }
    let load_after = sys::loadavg();
    let base = &sums[variants.iter().position(|v| *v == "plain").unwrap_or(0)];
    let (mut rows, mut cpu_rows) = (Vec::new(), Vec::new());
    for (v, r) in variants.iter().zip(&sums) {
        let name = variant(v)?.1;
        rows.push(format!(
            "| {name} | {} | {:.0} | {} | {} / {} | {:.1} s | {} | {:.1} µs | {} | {} | {} |",
            r.acknowledged,
            r.rate(),
            r.rates
                .iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" / "),
            sys::fmt_us(sys::median(&r.p50) as u64),
            sys::fmt_us(sys::median(&r.p99) as u64),
            sys::median(&r.waited),
            if r.exact { "yes" } else { "no" },
            r.total_cpu(),
            sys::ratio(r.rate(), base.rate()),
            sys::ratio(sys::median(&r.p99), sys::median(&base.p99)),
            sys::ratio(r.total_cpu(), base.total_cpu()),
        ));
        let mut line = format!("| {name} |");
        for t in TIERS {
            line += &match r.cpu(t) {
                Some(us) => format!(" {us:.1} µs |"),
                None => " - |".into(),
            };
        }
        cpu_rows.push(line);
    }
    let s = format!(
        "<!-- e2e-replication:begin -->
## End to end with replication: what a replica per queue and a synchronous standby cost

{measured}; load average {load_before} (1, 5, 15 minutes)
at the start, {load_after} at the end: the machine is shared with other builds, so the
ratios, from runs interleaved in one invocation, say more than the absolute figures.
Command: `VARIANTS_ONLY=1 VARIANTS=\"{variants}\" make bench-e2e` (part of `cargo xtask bench-e2e`):
per variant and round, `cluster rehearse --voters {voters} --change-fraction {cf} --capture {capture}
--workers {workers} --concurrency {conc}` over plain HTTP, plus `--queue-replicas 1` (each
capture node's Redis with a replica, capture at ACK_REPLICAS=1) and/or `--pg-standby` (a
streaming standby named in the primary's `synchronous_standby_names`, `synchronous_commit =
on`) as the variant says; {rounds} rounds, the variants in the table's order, then in reverse.

| variant | votes acknowledged | votes/s | votes/s by round | latency p50 / p99 | final after the last vote | exact every round? | CPU per vote, all tiers | votes/s ratio | p99 ratio | CPU per vote ratio |
|---|---:|---:|---|---|---:|---|---:|---:|---:|---:|
{rows}

CPU per acknowledged vote, by tier (user + system, from /proc; every tier on this one machine):

| variant | HAProxy | capture | Redis | Redis replicas | loadgen | PostgreSQL | PostgreSQL standby | worker | results |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{cpu_rows}

Votes/s is every round's acknowledged votes over their voting time together; latencies and
\"final after the last vote\" are the median of the rounds' (loadgen's quantiles of separate
runs do not merge); each ratio is to the baseline row. \"Exact\" means `cluster rehearse`
exited 0 in every round: the results equal loadgen's ground truth, every voter's stored
choice is the last one acknowledged. The replicas and the standby share the same
{n} cores as everything else here; on their own hosts their CPU is not the capture or
store host's, and a network round trip is added to each batch's answer instead.
<!-- e2e-replication:end -->
",
        measured = sys::measured(),
        variants = variants.join(" "),
        voters = size.voters,
        cf = size.change_fraction,
        conc = size.concurrency,
        n = sys::nproc(),
        rows = rows.join("\n"),
        cpu_rows = cpu_rows.join("\n"),
    );
    section::write_benchmarks("e2e-replication", &s)
}

/// Until `stop`, every 0.5 s: each of the cluster's processes' CPU ticks
/// so far, with their children, running or reaped (PostgreSQL's backends
/// do its work), by the
/// name of its pid file; loadgen's as `loadgen`. The last sample wins.
fn sample_cpu(dir: &Path, cluster: u32, stop: &AtomicBool, last: &Mutex<BTreeMap<String, u64>>) {
    while !stop.load(Ordering::SeqCst) {
        for (role, pid) in sys::pid_files(&dir.join("run")) {
            // With the children already reaped: as the workers stop, their
            // backends exit and their time moves to the postmaster's
            // cutime, which the last sample must still count.
            let t = sys::tree_ticks(pid);
            if t > 0 {
                last.lock().unwrap().insert(role, t);
            }
        }
        for pid in sys::children(cluster) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "loadgen" {
                let t = sys::cpu_ticks(pid);
                if t > 0 {
                    last.lock().unwrap().insert("loadgen".into(), t);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What every rehearsal of one invocation shares.
struct Size {
    voters: u64,
    change_fraction: String,
    concurrency: u64,
}

/// One `cluster rehearse` and what was measured around it.
struct Rehearsal {
    report: JsonReport,
    /// Its exit code: 0 only when the count was exact.
    status: i32,
    /// CPU ticks by tier ([`TIERS`]), the last sample of each process.
    cpu: BTreeMap<&'static str, u64>,
}

/// The tiers CPU is reported by, in the tables' order.
const TIERS: [&str; 9] = [
    "haproxy", "capture", "redis", "replica", "loadgen", "postgres", "standby", "worker", "results",
];

/// The tier of a process by its pid file's name (`loadgen` for loadgen).
/// The cluster names a queue's replicas `redisNN-rR`; any PostgreSQL but
/// `postgres` itself, or anything called a standby, is the standby.
fn tier(name: &str) -> Option<&'static str> {
    if name.contains("standby") || (name.starts_with("postgres") && name != "postgres") {
        return Some("standby");
    }
    if name.starts_with("redis") {
        return Some(if name.contains("-r") {
            "replica"
        } else {
            "redis"
        });
    }
    TIERS.into_iter().find(|t| name.starts_with(t))
}

/// `cluster rehearse` with CAPTURE x WORKERS and `flags`, its data, log
/// and report in the work directory under `run`.
fn rehearse(
    b: &Bench,
    size: &Size,
    run: &str,
    (capture, workers): (&str, &str),
    flags: &[&str],
) -> Res<Rehearsal> {
    let dir = b.path(run);
    let json = b.path(&format!("{run}.json"));
    let log = b.path(&format!("{run}.log"));
    let started = Instant::now();
    // loadgen, started by `cluster rehearse`, reads its JSON report's
    // path from the environment.
    let mut cmd = Spec::new("target/release/cluster")
        .env("LOADGEN_REPORT_JSON", json.display().to_string())
        .command();
    cmd.arg("rehearse")
        .args([
            "--voters",
            &size.voters.to_string(),
            "--change-fraction",
            &size.change_fraction,
        ])
        .args(["--capture", capture, "--workers", workers])
        .args(["--concurrency", &size.concurrency.to_string()])
        .args(["--port", &sys::free_port().to_string()])
        .args(["--results-port", &sys::free_port().to_string()])
        .args(["--tls-port", &sys::free_port().to_string()])
        .args(["--results-tls-port", &sys::free_port().to_string()])
        .arg("--data-dir")
        .arg(&dir)
        .args(flags)
        .stdin(Stdio::null());
    let f = std::fs::File::create(&log)?;
    cmd.stdout(f.try_clone()?).stderr(f);
    let mut cluster = Child::from_command(cmd, "cluster".as_ref())?;
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(Mutex::new(BTreeMap::new()));
    let sampler = {
        let (dir, stop, last, pid) = (dir.clone(), stop.clone(), last.clone(), cluster.pid());
        std::thread::spawn(move || sample_cpu(&dir, pid, &stop, &last))
    };
    let status = cluster.wait()?;
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    say!(
        b,
        "{run}: exit {status} after {:.3} s",
        started.elapsed().as_secs_f64()
    );
    let report = tools::read_report(&json).map_err(|e| {
        format!(
            "{run}: no report ({e}); see the log:\n{}",
            crate::bench::tail(&log, 20)
        )
    })?;
    let mut cpu = BTreeMap::new();
    for (name, ticks) in last.lock().unwrap().iter() {
        if let Some(t) = tier(name) {
            *cpu.entry(t).or_insert(0) += ticks;
        }
    }
    Ok(Rehearsal {
        report,
        status,
        cpu,
    })
}

/// A topology, "CAPTURExWORKERS".
fn topology(topo: &str) -> Res<(&str, &str)> {
    Ok(topo
        .split_once('x')
        .ok_or_else(|| format!("a topology is CAPTURExWORKERS, got {topo}"))?)
}

pub fn run() -> Res<()> {
    let size = Size {
        voters: env_num("VOTERS", 1_000_000)?,
        change_fraction: env_or("CHANGE_FRACTION", "0.1"),
        concurrency: env_num("CONCURRENCY", 256)?,
    };
    let topologies = env_or("TOPOLOGIES", "3x2 1x1");
    let modes = env_or("MODES", "http http-new https https-new https-new-full");
    let variants = env_or("VARIANTS", "plain replicas standby both");
    let variants: Vec<&str> = match variants.as_str() {
        "none" => Vec::new(),
        v => v.split_whitespace().collect(),
    };
    for v in &variants {
        variant(v)?;
    }
    if !variants.is_empty() && !variants.contains(&"plain") {
        return Err("VARIANTS must include plain: the other variants' ratios are to it".into());
    }
    let variants_only = env_or("VARIANTS_ONLY", "0") == "1";
    let topologies: Vec<&str> = topologies.split_whitespace().collect();
    let first = *topologies.first().ok_or("TOPOLOGIES is empty")?;
    for topo in &topologies {
        topology(topo)?;
    }
    let mut runs = Vec::new();
    if !variants_only {
        for (i, topo) in topologies.iter().enumerate() {
            if i == 0 {
                for m in modes.split_whitespace() {
                    mode(m)?;
                    runs.push((*topo, m));
                }
            } else {
                runs.push((*topo, "http"));
            }
        }
    }
    let b = Bench::start("bench-e2e")?;
    b.build(&[
        "--bin", "cluster", "--bin", "capture", "--bin", "worker", "--bin", "results", "--bin",
        "loadgen",
    ])?;
    // Before the first run, not after the others: a variant the build
    // cannot run is the invocation's error.
    let rehearse_help = Spec::new("target/release/cluster")
        .command()
        .args(["rehearse", "--help"])
        .output()?;
    let rehearse_help = String::from_utf8_lossy(&rehearse_help.stdout);
    for v in &variants {
        for flag in variant(v)?.0.iter().filter(|f| f.starts_with("--")) {
            if !rehearse_help.contains(flag) {
                return Err(format!(
                    "variant {v} needs `cluster rehearse {flag}`, which this build's cluster does not have \
                     (--pg-standby is issue 17's synchronous standby); leave {v} out of VARIANTS"
                )
                .into());
            }
        }
    }
    if !variants.is_empty() {
        variants_section(&b, &size, first, &variants)?;
    }
    if variants_only {
        return Ok(());
    }
    let hz = sys::clk_tck();
    let (mut rows, mut cpu_rows, mut tls_rows) = (Vec::new(), Vec::new(), Vec::new());
    for (topo, m) in runs {
        let (capture, workers) = topology(topo)?;
        let (flags, name) = mode(m)?;
        say!(
            b,
            "{topo}, {m}: {capture} capture nodes, {workers} workers, {} voters (this takes a minute or two)",
            size.voters
        );
        let Rehearsal {
            report: r,
            status,
            cpu,
        } = rehearse(&b, &size, &format!("{topo}-{m}"), (capture, workers), flags)?;

        let label = format!("{capture} × capture, {workers} × worker, {name}");
        if m.starts_with("https") {
            let t = r.tls.as_ref();
            tls_rows.push(format!(
                "| {name} | {} | {} | {} |",
                t.map_or("-".into(), |t| format!(
                    "{} / {} / {}",
                    t.full, t.resumed, t.failed
                )),
                t.map_or("-".into(), |t| format!("{:.0}", t.per_s)),
                tools::quantiles(t.and_then(|t| t.latency_us)),
            ));
        }
        let waited = r.results.as_ref().map(|x| x.waited_s);
        let to_final = r.wall_time_s + waited.unwrap_or(0.0);
        let checked = r.database.as_ref().map_or("-".into(), |d| {
            format!("{} / {} / {}", d.rows, d.checked, d.mismatches)
        });
        rows.push(format!(
            "| {label} | {} | {:.2} s | {:.0} | {} s | {to_final:.1} s | {} / p99.9 {} | {} ({checked}) |",
            r.acknowledged,
            r.wall_time_s,
            r.votes_per_s,
            waited.map_or("?".into(), |w| format!("{w:.1}")),
            tools::quantiles(r.latency_us),
            tools::lat(r.latency_us, |l| l.p999),
            if status == 0 { "yes" } else { "no" },
        ));
        // CPU per acknowledged vote, by tier (each tier's processes
        // summed). Once a run came back without samples (not seen again):
        // say so, not 0.0 µs.
        let mut line = format!("| {label} |");
        for role in [
            "haproxy", "capture", "redis", "loadgen", "postgres", "worker", "results",
        ] {
            match cpu.get(role) {
                None => {
                    say!(b, "{topo}: no CPU samples of {role}");
                    line += " ? |";
                }
                Some(&t) => {
                    line += &format!(
                        " {:.1} µs |",
                        t as f64 / hz * 1e6 / r.acknowledged.max(1) as f64
                    );
                }
            }
        }
        cpu_rows.push(line);
    }

    let mut s = format!(
        "<!-- e2e:begin -->
## End to end: a {voters}-voter rehearsal through HAProxy

{measured}; release build, everything on
this one machine: HAProxy, the capture nodes with a Redis each, the workers, PostgreSQL,
results, and loadgen itself.
Command: `make bench-e2e` (`cargo xtask bench-e2e`: for each topology,
`cluster rehearse --voters {voters} --change-fraction {change_fraction} --capture C --workers W --concurrency {concurrency}`;
the first topology once per edge mode, `--https`, `--new-connection-per-voter`, `--no-tls-resumption`).
The machine is shared with other builds and benchmarks while this runs: CPU per vote
is the better guide than rates, and short runs (VOTERS below a million) are noisier.

| topology | votes acknowledged | voting time | capture rate (votes/s) | final after the last vote | first vote to final count | latency p50 / p90 / p99 / max | exact? (rows / voters checked / mismatches) |
|---|---:|---:|---:|---:|---:|---|---|
{rows}

The drain keeps up while voting goes on (the count is final within about a
second of the last vote), so the drain rate equals the capture rate here; the
drain's own ceiling, with a backlog, is in the Worker section. \"Exact\" means
`cluster rehearse` exited 0: the per-option results equal loadgen's ground
truth and every voter's stored choice is the last one acknowledged.

",
        measured = sys::measured(),
        rows = rows.join("\n"),
        voters = size.voters,
        change_fraction = size.change_fraction,
        concurrency = size.concurrency,
    );
    if !tls_rows.is_empty() {
        s += &format!(
            "TLS handshakes as loadgen made and timed them (ClientHello to finished; loadgen
shares the machine's two cores with every tier, so these latencies include waiting
for a core):

| edge mode | handshakes full / resumed / failed | handshakes/s | handshake p50 / p90 / p99 / max |
|---|---|---:|---|
{}

",
            tls_rows.join("\n")
        );
    }
    s += &format!(
        "CPU per acknowledged vote, by tier (user + system, from /proc):

| topology | HAProxy | capture | Redis | loadgen | PostgreSQL | worker | results |
|---|---:|---:|---:|---:|---:|---:|---:|
{}

Two cores give 2,000,000 µs of CPU a second; the sum of a row is what one vote
costs the whole machine, so 2,000,000 divided by it is the most this machine can
take end to end. HAProxy and loadgen are there only because everything shares
one machine; on separate hosts each tier has its own cores (`docs/CAPACITY.md`).
<!-- e2e:end -->
",
        cpu_rows.join("\n")
    );
    section::write_benchmarks("e2e", &s)
}

#[cfg(test)]
mod tests {
    use super::tier;

    #[test]
    fn replicas_and_the_standby_are_tiers_of_their_own() {
        assert_eq!(tier("redis02"), Some("redis"));
        assert_eq!(tier("redis02-r1"), Some("replica"));
        assert_eq!(tier("postgres"), Some("postgres"));
        assert_eq!(tier("postgres-standby"), Some("standby"));
        assert_eq!(tier("pg-standby"), Some("standby"));
        assert_eq!(tier("capture03"), Some("capture"));
        assert_eq!(tier("worker01"), Some("worker"));
        assert_eq!(tier("haproxy"), Some("haproxy"));
        assert_eq!(tier("something-else"), None);
    }
}
