//! `make soak` (`cargo xtask soak`): the local cluster for a long run at a
//! steady rate with faults, for what a short run cannot show: memory or
//! open files that grow, a recovery that slows down, a count that drifts.
//!
//! One invocation, on one `cluster up` (3 capture nodes, 2 workers,
//! release build, free ports):
//! 1. The maximum, measured on that cluster: loadgen through HAProxy with
//!    SOAK_PROBE_VOTERS voters (default 20,000; none changing), 256
//!    requests in flight, unpaced; loadgen's votes/s. It verifies its count
//!    too.
//! 2. The soak: loadgen paced at a third of that maximum for SOAK_MINUTES
//!    (default 30; the voters are sized to fill that time), a tenth of the
//!    voters changing their vote. Every SOAK_FAULT_SECONDS (default 180, or
//!    a sixth of a shorter soak) one of tests/chaos.rs' faults, in turn:
//!    SIGKILL a worker, a capture node, a Redis; SIGSTOP a Redis for
//!    SOAK_OUTAGE_SECONDS (default 10); PostgreSQL stopped as long. Each on
//!    the next node of its kind; each one's recovery (until the node it hit
//!    answers `/readyz` again) is timed.
//! 3. Every SOAK_SAMPLE_SECONDS (default 60), from /proc, every process's
//!    resident memory (VmRSS) and open file descriptors, and a progress
//!    line on stderr.
//! 4. loadgen verifies the count against its ground truth (per option and
//!    per voter); the cluster stops on SIGTERM.
//!
//! Writes the "soak" section of docs/RELIABILITY.md (also when the count is
//! not exact, which then fails the task) and every sample to
//! target/soak/samples.csv.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bench::{Bench, Child, ClusterUp};
use crate::{env_num, env_or, say, section, sys, tools, Res};

const CAPTURE: usize = 3;
const WORKERS: usize = 2;
/// As bench-e2e drives the edge for its maximum.
const PROBE_CONCURRENCY: u64 = 256;
/// Enough in flight for a paced third of the maximum, with room for the
/// slow answers of a fault.
const SOAK_CONCURRENCY: u64 = 64;
/// How long a faulted node may take to answer `/readyz` again before the
/// soak calls it a failure.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Where the samples go, for a look beyond start and end.
const SAMPLES_CSV: &str = "target/soak/samples.csv";
const DOC: &str = "docs/RELIABILITY.md";

/// The faults of tests/chaos.rs that a running soak can take, in the
/// order they come.
#[derive(Clone, Copy)]
enum Fault {
    KillWorker,
    KillCapture,
    KillRedis,
    HangRedis,
    StopPostgres,
}

const FAULTS: [Fault; 5] = [
    Fault::KillWorker,
    Fault::KillCapture,
    Fault::KillRedis,
    Fault::HangRedis,
    Fault::StopPostgres,
];

/// One fault as it happened.
struct Injected {
    at: Duration,
    what: String,
    recovery: Duration,
}

impl Fault {
    /// Injects the fault on its `round`th node of its kind (counting from
    /// 0); what it hit, and how long from the end of the fault until that
    /// node answered `/readyz`.
    fn inject(self, up: &ClusterUp, round: usize, outage: Duration) -> Res<(String, Duration)> {
        let capture = format!("capture{:02}", round % CAPTURE + 1);
        let redis = format!("redis{:02}", round % CAPTURE + 1);
        let worker = format!("worker{:02}", round % WORKERS + 1);
        Ok(match self {
            Fault::KillWorker => (
                format!("SIGKILL {worker}"),
                kill_until_ready(up, &worker, &worker)?,
            ),
            Fault::KillCapture => (
                format!("SIGKILL {capture}"),
                kill_until_ready(up, &capture, &capture)?,
            ),
            Fault::KillRedis => (
                format!("SIGKILL {redis}"),
                kill_until_ready(up, &redis, &capture)?,
            ),
            Fault::HangRedis => {
                let hung = Stopped::new(up.pid(&redis)?);
                std::thread::sleep(outage); // the hang itself
                drop(hung);
                (
                    format!("SIGSTOP {redis} for {} s", outage.as_secs()),
                    until_ready(up, &capture)?,
                )
            }
            Fault::StopPostgres => {
                let held = Held::new(up, "postgres")?;
                signal(up.pid("postgres")?, libc::SIGINT);
                std::thread::sleep(outage); // the outage itself
                drop(held);
                (
                    format!("PostgreSQL stopped for {} s", outage.as_secs()),
                    until_ready(up, "worker01")?,
                )
            }
        })
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill has no memory preconditions; the pid is a child of the
    // cluster we started, read from its pid file just now.
    unsafe { libc::kill(pid as i32, sig) };
}

/// A SIGSTOPped process, continued when dropped (also when the soak fails
/// during the hang).
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal(pid, libc::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

/// A hold file (`run/NAME.hold`): while it exists `cluster` does not
/// restart NAME. Removed when dropped.
struct Held(std::path::PathBuf);

impl Held {
    fn new(up: &ClusterUp, name: &str) -> Res<Held> {
        let path = up.dir.join("run").join(format!("{name}.hold"));
        std::fs::write(&path, "")?;
        Ok(Held(path))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Polls `ok` every 50 ms for up to `timeout`; how long it took.
fn poll(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Res<Duration> {
    let t = Instant::now();
    while !ok() {
        if t.elapsed() > timeout {
            return Err(format!("{what} after {timeout:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(t.elapsed())
}

/// Until the child `name` answers `/readyz` with 200.
fn until_ready(up: &ClusterUp, name: &str) -> Res<Duration> {
    let port = up.port_of(name)?;
    poll(
        &format!("{name} (:{port}) not ready"),
        RECOVERY_TIMEOUT,
        || voteswarm::cluster::http_get_status(port, "/readyz") == Some(200),
    )
}

/// SIGKILL to the child `name`; the time until the cluster has restarted
/// it (a new pid) and `ready` answers `/readyz`.
fn kill_until_ready(up: &ClusterUp, name: &str, ready: &str) -> Res<Duration> {
    let pid = up.pid(name)?;
    signal(pid, libc::SIGKILL);
    let t = Instant::now();
    poll(&format!("{name} not restarted"), RECOVERY_TIMEOUT, || {
        up.pid(name).is_ok_and(|p| p != pid)
    })?;
    until_ready(up, ready)?;
    Ok(t.elapsed())
}

/// One process (or group) at one sample.
struct Sample {
    at: Duration,
    name: String,
    /// For a group, its parent's.
    pid: u32,
    /// Processes in it: 1, or a group's.
    count: usize,
    rss_kib: u64,
    fds: u64,
}

/// Every process of the run now: each child of the cluster by its pid
/// file's name (the `cluster` supervisor among them), PostgreSQL's own
/// children as one group, and loadgen.
fn sample(run: &Path, loadgen: u32, at: Duration) -> Vec<Sample> {
    let mut out = Vec::new();
    for (name, pid) in sys::pid_files(run) {
        if name == "postgres" {
            // Its children come and go (a backend per connection); their
            // VmRSS counts the shared buffers each has touched, again per
            // process, so the group counts private memory only.
            let kids = sys::children(pid);
            out.push(Sample {
                at,
                name: "postgres's children".into(),
                pid,
                count: kids.len(),
                rss_kib: kids.iter().map(|&k| sys::status_kib(k, "RssAnon")).sum(),
                fds: kids.iter().map(|&k| sys::open_files(k)).sum(),
            });
        }
        out.push(Sample {
            at,
            name,
            pid,
            count: 1,
            rss_kib: sys::rss_kib(pid),
            fds: sys::open_files(pid),
        });
    }
    out.push(Sample {
        at,
        name: "loadgen".into(),
        pid: loadgen,
        count: 1,
        rss_kib: sys::rss_kib(loadgen),
        fds: sys::open_files(loadgen),
    });
    out
}

/// The results node's total through HAProxy, for the progress lines.
fn counted(results_port: u16) -> Option<i64> {
    let (_, body) = sys::http_get(results_port, "/api/results", Duration::from_secs(5)).ok()?;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["total"].as_i64()
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// What the samples of one process say: start, peak and end of each
/// figure, how often its pid changed, and whether it grew.
fn row(name: &str, s: &[&Sample]) -> String {
    let (first, last) = (s[0], s[s.len() - 1]);
    let mut pids: Vec<u32> = s.iter().map(|x| x.pid).collect();
    pids.dedup();
    let restarts = pids.len() - 1;
    let peak_rss = s.iter().map(|x| x.rss_kib).max().unwrap_or(0);
    let peak_fds = s.iter().map(|x| x.fds).max().unwrap_or(0);
    // Growth that matters: more than a tenth and more than 4 MiB; for
    // open files, more than 4 (a connection or two in flight at a sample).
    let grew = |a: &Sample, b: &Sample| {
        (b.rss_kib > a.rss_kib + (a.rss_kib / 10).max(4096))
            .then(|| format!("RSS +{} MiB", mib(b.rss_kib - a.rss_kib)))
            .into_iter()
            .chain((b.fds > a.fds + 4).then(|| format!("+{} open files", b.fds - a.fds)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let trend = |s: &[&Sample]| {
        let (first, mid, last) = (s[0], s[s.len() / 2], s[s.len() - 1]);
        match (grew(first, last), grew(mid, last)) {
            (all, _) if all.is_empty() => "flat".to_owned(),
            (all, late) if late.is_empty() => format!("{all} in the first half, flat since"),
            (all, late) => format!("grew: {all} ({late} in the second half)"),
        }
    };
    let verdict = if restarts > 0 {
        // Start and end are different processes: what the last one did
        // since it started is the figure to read.
        let since: Vec<&Sample> = s.iter().copied().filter(|x| x.pid == last.pid).collect();
        let t = if since.len() >= 3 {
            trend(&since)
        } else {
            "too few samples to tell".into()
        };
        format!("restarted by a fault ({restarts}×); since the last restart: {t}")
    } else {
        trend(s)
    };
    let name = if first.count == 1 && last.count == 1 {
        name.to_owned()
    } else {
        format!(
            "{name} ({} → {} processes; private memory, RssAnon)",
            first.count, last.count
        )
    };
    format!(
        "| {name} | {restarts} | {} / {} / {} | {} / {} / {} | {verdict} |",
        mib(first.rss_kib),
        mib(peak_rss),
        mib(last.rss_kib),
        first.fds,
        peak_fds,
        last.fds
    )
}

fn write_csv(samples: &[Sample]) -> Res<()> {
    let mut text = String::from("seconds,process,pid,processes,rss_kib,open_files\n");
    for s in samples {
        text += &format!(
            "{},{},{},{},{},{}\n",
            s.at.as_secs(),
            s.name,
            s.pid,
            s.count,
            s.rss_kib,
            s.fds
        );
    }
    std::fs::create_dir_all(Path::new(SAMPLES_CSV).parent().unwrap_or(Path::new(".")))?;
    std::fs::write(SAMPLES_CSV, text)?;
    Ok(())
}

pub fn run() -> Res<()> {
    let minutes = env_num("SOAK_MINUTES", 30)?;
    let soak = Duration::from_secs(minutes * 60);
    let fault_every =
        Duration::from_secs(env_num("SOAK_FAULT_SECONDS", (minutes * 60 / 6).min(180))?);
    let outage = Duration::from_secs(env_num("SOAK_OUTAGE_SECONDS", 10)?);
    let sample_every = Duration::from_secs(env_num("SOAK_SAMPLE_SECONDS", 60)?);
    let probe_voters = env_num("SOAK_PROBE_VOTERS", 20_000)?;
    let change_fraction: f64 = env_or("CHANGE_FRACTION", "0.1")
        .parse()
        .map_err(|_| "CHANGE_FRACTION takes a fraction, e.g. 0.1")?;
    let b = Bench::start("soak")?;
    b.build(&[
        "--bin", "cluster", "--bin", "capture", "--bin", "worker", "--bin", "results", "--bin",
        "loadgen",
    ])?;
    say!(b, "cluster up --capture {CAPTURE} --workers {WORKERS}");
    let mut up = b.cluster_up("cluster", CAPTURE, WORKERS)?;
    let run_dir = up.dir.join("run");
    let base_args = |voters: u64, cf: f64| -> Res<Vec<String>> {
        Ok(vec![
            "--target".into(),
            format!("http://127.0.0.1:{}", up.port),
            "--voters".into(),
            voters.to_string(),
            "--change-fraction".into(),
            cf.to_string(),
            "--results".into(),
            format!("http://127.0.0.1:{}", up.results_port),
            "--database-url".into(),
            up.database_url()?,
        ])
    };

    say!(
        b,
        "the maximum: {probe_voters} voters through HAProxy, {PROBE_CONCURRENCY} in flight, unpaced"
    );
    let mut args = base_args(probe_voters, 0.0)?;
    args.extend(["--concurrency".into(), PROBE_CONCURRENCY.to_string()]);
    let probe = tools::loadgen(&args, &b.path("probe.json"))
        .map_err(|e| format!("the maximum's run: {e}"))?;
    let max = probe.votes_per_s;
    let rate = max / 3.0;
    // Every voter votes once and a fraction again: that many requests at
    // `rate` fill the soak.
    let voters = (rate * soak.as_secs_f64() / (1.0 + change_fraction)).round() as u64;
    say!(
        b,
        "maximum {max:.0} votes/s; soaking at {rate:.0}/s for {minutes} min: {voters} voters, a fault every {} s",
        fault_every.as_secs()
    );

    let json = b.path("soak.json");
    let mut args = base_args(voters.max(1), change_fraction)?;
    args.extend([
        "--rate".into(),
        format!("{rate:.1}"),
        "--concurrency".into(),
        SOAK_CONCURRENCY.to_string(),
        // A fault's retries: up to a minute of backoff, never a voter given
        // up on for it.
        "--max-attempts".into(),
        "1000".into(),
        "--final-timeout-secs".into(),
        "600".into(),
        "--report-json".into(),
        json.display().to_string(),
    ]);
    let mut cmd = Command::new("target/release/loadgen");
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(b.path("loadgen.log"))?);
    let mut lg = Child::from_command(cmd, "loadgen".as_ref())?;
    let lg_pid = lg.pid();
    let started = Instant::now();

    let samples = Arc::new(Mutex::new(sample(&run_dir, lg_pid, Duration::ZERO)));
    let stop = Arc::new(AtomicBool::new(false));
    let faults_so_far = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (samples, stop, faults) = (samples.clone(), stop.clone(), faults_so_far.clone());
        let (run_dir, results_port, name) = (run_dir.clone(), up.results_port, b.name);
        std::thread::spawn(move || {
            let mut next = sample_every;
            while !stop.load(Ordering::SeqCst) {
                if started.elapsed() < next {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                let now = sample(&run_dir, lg_pid, started.elapsed());
                let rss: u64 = now.iter().map(|s| s.rss_kib).sum();
                let fds: u64 = now.iter().map(|s| s.fds).sum();
                eprintln!(
                    "{name}: minute {:.0} of {minutes}: {} counted, {} faults, {} MiB resident, {fds} open files in all",
                    started.elapsed().as_secs_f64() / 60.0,
                    counted(results_port).map_or("?".into(), |n| n.to_string()),
                    faults.load(Ordering::SeqCst),
                    mib(rss),
                );
                samples.lock().unwrap().extend(now);
                next += sample_every;
            }
        })
    };

    let mut injected = Vec::new();
    let mut round = 0;
    while lg.alive() {
        let due = fault_every * (round as u32 + 1);
        if due >= soak || started.elapsed() < due {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let fault = FAULTS[round % FAULTS.len()];
        let at = started.elapsed();
        let (what, recovery) = fault
            .inject(&up, round / FAULTS.len(), outage)
            .map_err(|e| {
                format!(
                    "fault {}: {e}; the cluster's log:\n{}",
                    round + 1,
                    crate::bench::tail(&up.log, 10)
                )
            })?;
        say!(
            b,
            "fault {}: {what}, recovered in {:.1} s",
            round + 1,
            recovery.as_secs_f64()
        );
        injected.push(Injected { at, what, recovery });
        round += 1;
        faults_so_far.store(round, Ordering::SeqCst);
    }
    let code = lg.wait()?;
    let ran = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    let mut samples = std::mem::take(&mut *samples.lock().unwrap());
    samples.extend(sample(&run_dir, lg_pid, ran));
    say!(
        b,
        "loadgen exited {code} after {:.1} min; stopping the cluster",
        ran.as_secs_f64() / 60.0
    );
    let stopped = up.stop()?;
    write_csv(&samples)?;
    let r = tools::read_report(&json).map_err(|e| {
        format!(
            "no report from the soak's loadgen ({e}); its log:\n{}",
            crate::bench::tail(&b.path("loadgen.log"), 20)
        )
    })?;

    let mut by_name: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in &samples {
        // loadgen's sample after it exited reads as 0: its last live one
        // is its end.
        if s.name == "loadgen" && s.rss_kib == 0 {
            continue;
        }
        // The sample at zero is the cluster idle after the maximum's run
        // (capture still holding its 256 connections, loadgen just
        // started): the CSV keeps it, the table starts under the soak's
        // load.
        if s.at.is_zero() && samples.iter().any(|x| x.name == s.name && !x.at.is_zero()) {
            continue;
        }
        by_name.entry(&s.name).or_default().push(s);
    }
    let process_rows: Vec<String> = by_name.iter().map(|(name, s)| row(name, s)).collect();
    let fault_rows: Vec<String> = injected
        .iter()
        .map(|f| {
            format!(
                "| {:.1} | {} | {:.1} s |",
                f.at.as_secs_f64() / 60.0,
                f.what,
                f.recovery.as_secs_f64()
            )
        })
        .collect();
    let requests = r.requests.max(1);
    let refused: u64 = r.rejected.values().sum::<u64>() + r.connection_errors;
    let exact = code == 0 && r.passed && r.mismatches.is_empty();
    let checked = r.database.as_ref().map_or("-".into(), |d| {
        format!(
            "{} rows, {} voters checked, {} mismatches",
            d.rows, d.checked, d.mismatches
        )
    });
    let shorter = if minutes < 30 {
        format!(
            " This run is shorter than the 30 minutes `make soak` runs by default (SOAK_MINUTES={minutes}): \
             a growth slower than the figures' resolution over {minutes} minutes would not show."
        )
    } else {
        String::new()
    };
    let recoveries: Vec<f64> = injected.iter().map(|f| f.recovery.as_secs_f64()).collect();
    let s = format!(
        "<!-- soak:begin -->
## Soak: {minutes} minutes at a third of the maximum, a fault every {fault_min} minutes

Measured {date} on {cores}, {mem}; release build; the machine shared with other
builds and tests while it ran.{shorter}
Command: `make soak` (`SOAK_MINUTES={minutes} cargo xtask soak`, xtask/src/soak.rs): `cluster up
--capture {CAPTURE} --workers {WORKERS}`, all of it and loadgen on this one machine. First the maximum,
on the same cluster: loadgen through HAProxy, {probe_voters} voters, {PROBE_CONCURRENCY} in flight, unpaced:
**{max:.0} votes/s** (count exact: {probe_exact}). Then loadgen paced at a third of that,
{rate:.0} requests/s, {voters} voters of whom {cf_pct:.0}% change their vote, {SOAK_CONCURRENCY} in flight,
for {ran_min:.1} minutes; a fault every {fault_s} s from tests/chaos.rs' list, in turn, each on the
next node of its kind (outages {outage_s} s).

| votes acknowledged | requests | voter-visible error rate | latency p50 / p90 / p99 / max | final after the last vote | count exact? | cluster stopped cleanly? |
|---:|---:|---:|---|---:|---|---|
| {ack} | {req} | {err:.3}% | {lat} | {waited} | {exact_s} ({checked}) | {stop_s} |

The error rate counts every answer that was not a `2xx` and every dropped
connection; loadgen retried each until acknowledged.

| minute | fault | recovered in |
|---:|---|---:|
{fault_rows}

Recovery runs from the end of the fault (the kill, the `SIGCONT`, PostgreSQL
allowed back) until the node it hit answers `/readyz` (a Redis: its capture
node; PostgreSQL: worker01). Slowest: {slowest}.

Every process, sampled every {sample_s} s from /proc (`VmRSS`, the entries of
`/proc/PID/fd`; every sample is in `{SAMPLES_CSV}`). Start is the first sample under the
soak's load (after its first {sample_s} s), end the last one before the cluster stopped.
A figure is called flat when it grew by less than a tenth and 4 MiB (open
files: by 4 or fewer).

| process | pid changes | RSS MiB start / peak / end | open files start / peak / end | verdict |
|---|---:|---|---|---|
{process_rows}
<!-- soak:end -->
",
        fault_min = fault_every.as_secs_f64() / 60.0,
        date = sys::today(),
        cores = sys::cores_desc(),
        mem = sys::mem_desc(),
        probe_exact = if probe.passed { "yes" } else { "no" },
        cf_pct = change_fraction * 100.0,
        ran_min = ran.as_secs_f64() / 60.0,
        fault_s = fault_every.as_secs(),
        outage_s = outage.as_secs(),
        ack = r.acknowledged,
        req = r.requests,
        err = refused as f64 * 100.0 / requests as f64,
        lat = tools::quantiles(r.latency_us),
        waited = r
            .results
            .as_ref()
            .map_or("?".into(), |x| format!("{:.1} s", x.waited_s)),
        exact_s = if exact { "yes" } else { "NO" },
        stop_s = if stopped == 0 {
            "yes".to_owned()
        } else {
            format!("no (exit {stopped})")
        },
        fault_rows = fault_rows.join("\n"),
        slowest = recoveries
            .iter()
            .cloned()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
            .map_or("no faults".into(), |x| format!("{x:.1} s")),
        sample_s = sample_every.as_secs(),
        process_rows = process_rows.join("\n"),
    );
    section::write(Path::new(DOC), "soak", &s, None)?;
    print!("{}", s.trim().to_owned() + "\n");
    if !exact {
        return Err(format!("the count is not exact (loadgen exit {code}); see {DOC}").into());
    }
    if stopped != 0 {
        return Err(format!("the cluster did not stop cleanly (exit {stopped})").into());
    }
    Ok(())
}
