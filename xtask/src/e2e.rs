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
//!   VOTERS=1000000 TOPOLOGIES="3x2 1x1" CONCURRENCY=256 \
//!   MODES="http http-new https https-new https-new-full" cargo xtask bench-e2e

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use voteswarm::cluster::procs::Spec;

use crate::bench::{Bench, Child};
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

/// Until `stop`, every 0.5 s: each of the cluster's processes' CPU ticks
/// so far, with their children (PostgreSQL's backends do its work), by the
/// name of its pid file; loadgen's as `loadgen`. The last sample wins.
fn sample_cpu(dir: &Path, cluster: u32, stop: &AtomicBool, last: &Mutex<BTreeMap<String, u64>>) {
    while !stop.load(Ordering::SeqCst) {
        for (role, pid) in sys::pid_files(&dir.join("run")) {
            let t = sys::cpu_ticks(pid)
                + sys::children(pid)
                    .into_iter()
                    .map(sys::cpu_ticks)
                    .sum::<u64>();
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

pub fn run() -> Res<()> {
    let voters = env_num("VOTERS", 1_000_000)?;
    let change_fraction = env_or("CHANGE_FRACTION", "0.1");
    let topologies = env_or("TOPOLOGIES", "3x2 1x1");
    let concurrency = env_num("CONCURRENCY", 256)?;
    let modes = env_or("MODES", "http http-new https https-new https-new-full");
    let b = Bench::start("bench-e2e")?;
    b.build(&[
        "--bin", "cluster", "--bin", "capture", "--bin", "worker", "--bin", "results", "--bin",
        "loadgen",
    ])?;
    let topologies: Vec<&str> = topologies.split_whitespace().collect();
    let mut runs = Vec::new();
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
    let hz = sys::clk_tck();
    let (mut rows, mut cpu_rows, mut tls_rows) = (Vec::new(), Vec::new(), Vec::new());
    for (topo, m) in runs {
        let (capture, workers) = topo
            .split_once('x')
            .ok_or_else(|| format!("a topology is CAPTURExWORKERS, got {topo}"))?;
        let (flags, name) = mode(m)?;
        let dir = b.path(&format!("{topo}-{m}"));
        let json = b.path(&format!("{topo}-{m}.json"));
        let log = b.path(&format!("{topo}-{m}.log"));
        say!(
            b,
            "{topo}, {m}: {capture} capture nodes, {workers} workers, {voters} voters (this takes a minute or two)"
        );
        let started = Instant::now();
        // loadgen, started by `cluster rehearse`, reads its JSON report's
        // path from the environment.
        let mut cmd = Spec::new("target/release/cluster")
            .env("LOADGEN_REPORT_JSON", json.display().to_string())
            .command();
        cmd.arg("rehearse")
            .args([
                "--voters",
                &voters.to_string(),
                "--change-fraction",
                &change_fraction,
            ])
            .args(["--capture", capture, "--workers", workers])
            .args(["--concurrency", &concurrency.to_string()])
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
            "{topo}: exit {status} after {:.3} s",
            started.elapsed().as_secs_f64()
        );
        let r = tools::read_report(&json).map_err(|e| {
            format!(
                "{topo}: no report ({e}); see the log:\n{}",
                crate::bench::tail(&log, 20)
            )
        })?;

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
        let last = last.lock().unwrap();
        let mut line = format!("| {label} |");
        for role in [
            "haproxy", "capture", "redis", "loadgen", "postgres", "worker", "results",
        ] {
            let ticks: Vec<u64> = last
                .iter()
                .filter(|(k, _)| k.starts_with(role))
                .map(|(_, t)| *t)
                .collect();
            if ticks.is_empty() {
                say!(b, "{topo}: no CPU samples of {role}");
                line += " ? |";
            } else {
                let t: u64 = ticks.iter().sum();
                line += &format!(
                    " {:.1} µs |",
                    t as f64 / hz * 1e6 / r.acknowledged.max(1) as f64
                );
            }
        }
        cpu_rows.push(line);
    }

    let mut s = format!(
        "<!-- e2e:begin -->
## End to end: a {voters}-voter rehearsal through HAProxy

Measured {date} on {cores}, {mem}; release build, everything on
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
        date = sys::today(),
        cores = sys::cores_desc(),
        mem = sys::mem_desc(),
        rows = rows.join("\n"),
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
