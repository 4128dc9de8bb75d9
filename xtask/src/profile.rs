//! `make profile`: where each hot path's instructions go, per vote, counted
//! by callgrind (valgrind) so that the figures repeat whatever else runs on
//! the machine. Three profiles in one invocation:
//!   - capture (one node and its private Redis, appendonly everysec) taking
//!     VOTES form posts `vote=a` from new voters (no cookie), as wrk sends them;
//!   - the baseline (examples/baseline.rs: the same form parser, no Redis)
//!     taking the same VOTES;
//!   - one worker draining WORKER_VOTES from 3 Redis queues (examples/preload)
//!     into a private PostgreSQL.
//!
//! Each counts a steady-state window only: after a warm-up the counters are
//! zeroed (callgrind_control -z) and after the measured votes dumped
//! (callgrind_control -d). callgrind_annotate (self and inclusive) gives the
//! cost centres, grouped into buckets (`buckets.rs`). Callgrind sees no
//! kernel time: a short run without valgrind gives each process's
//! user/system CPU split. Writes the "Profiles" section of BENCHMARKS.md
//! (`profile_report.rs`) and keeps the callgrind files in target/profile/.
//! Progress goes to stderr.
//!   VOTES=20000 WARMUP_VOTES=2000 CONCURRENCY=16 WORKER_VOTES=100000 \
//!   WORKER_WARMUP_VOTES=10000 KERNEL_SECONDS=5 TOP=10 cargo xtask profile
//! SKIP_BUILD=1: use target/release as it is; REPORT_ONLY=1: only rewrite the
//! section from the last run's files in target/profile/.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use voteswarm::cluster::procs::Spec;

use crate::bench::{Bench, Child, Postgres, Redis};
use crate::worker::{preload, start_worker, Queues};
use crate::{env_num, env_or, profile_report, say, section, sys, tools, Res};

const QUEUES: usize = 3;
/// Under valgrind a node takes seconds to start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const COOKIE_KEY: &str = "profile-cookie-key-profile-cookie-key-0123456789";
/// Callgrind counts each iteration of a `rep stos`/`rep movs` as an
/// instruction, and glibc's memset/memcpy use them from 2 KiB up: a 3 KiB
/// memset counts 3,088 instructions that way, 182 with the vector loop. The
/// tunables keep glibc on the vector loops, so the counts follow the work.
const REP_TUNABLES: &str =
    "glibc.cpu.x86_rep_stosb_threshold=0x1000000:glibc.cpu.x86_rep_movsb_threshold=0x1000000";
/// The native runs' load: wrk's threads and connections, and the seconds
/// of warm-up before the measured KERNEL_SECONDS.
const NATIVE_THREADS: u32 = 2;
const NATIVE_CONNECTIONS: u32 = 64;
const NATIVE_WARMUP_S: u64 = 1;

struct Knobs {
    votes: u64,
    warmup: u64,
    concurrency: u64,
    worker_votes: u64,
    worker_warmup: u64,
    change_fraction: String,
    batch: String,
    pool: String,
    kernel_seconds: u64,
    top: u64,
    /// A drain under valgrind runs ~50x slower than natively.
    drain_timeout: Duration,
}

/// The figures the report reads (`meta`, KEY=VALUE lines).
struct Notes(Vec<(String, String)>);

impl Notes {
    fn note(&mut self, k: &str, v: impl Into<String>) {
        self.0.push((k.to_owned(), v.into()));
    }
}

pub fn run() -> Res<()> {
    let k = Knobs {
        votes: env_num("VOTES", 20000)?,
        warmup: env_num("WARMUP_VOTES", 2000)?,
        concurrency: env_num("CONCURRENCY", 16)?,
        worker_votes: env_num("WORKER_VOTES", 100_000)?,
        worker_warmup: env_num("WORKER_WARMUP_VOTES", 10000)?,
        change_fraction: env_or("CHANGE_FRACTION", "0.1"),
        batch: env_or("BATCH_SIZE", "2000"),
        pool: env_or("DB_POOL_SIZE", "4"),
        kernel_seconds: env_num("KERNEL_SECONDS", 5)?,
        top: env_num("TOP", 10)?,
        drain_timeout: Duration::from_secs(env_num("DRAIN_TIMEOUT_S", 900)?),
    };
    let b = Bench::start("profile")?;
    let keep = PathBuf::from("target/profile");
    if env_or("REPORT_ONLY", "0") == "1" {
        return section::write_benchmarks("profile", &profile_report::section(&keep)?);
    }
    for prog in [
        "valgrind",
        "callgrind_control",
        "callgrind_annotate",
        "wrk",
        "redis-server",
    ] {
        if !on_path(prog) {
            return Err(
                format!("{prog} not found (apt-get install valgrind wrk redis-server)").into(),
            );
        }
    }
    std::fs::create_dir_all(&keep)?;
    let mut notes = Notes(Vec::new());
    let built = if env_or("SKIP_BUILD", "0") == "1" {
        "the binaries found in target/release".to_owned()
    } else {
        say!(
            b,
            "building release binaries (with debug info: Cargo.toml's [profile.release] debug = 1)"
        );
        let built = built_from();
        b.build(&[
            "--bin",
            "capture",
            "--bin",
            "worker",
            "--example",
            "baseline",
            "--example",
            "preload",
        ])?;
        built
    };
    notes.note("built", built);

    profile_capture(&b, &k, &mut notes)?;
    profile_baseline(&b, &k, &mut notes)?;
    let pg = b.postgres()?;
    let mut q = Queues::start(&b, QUEUES)?;
    let mut runs = WorkerRuns {
        b: &b,
        k: &k,
        pg: &pg,
        queues: &mut q,
    };
    profile_worker(&mut runs, &mut notes)?;
    native_capture(&b, &k, &mut notes)?;
    native_baseline(&b, &k, &mut notes)?;
    native_worker(&mut runs, &mut notes)?;

    for name in profile_report::PATHS {
        annotate(&b, &keep, name)?;
    }
    say!(
        b,
        "callgrind files and annotations kept in {}/ (callgrind_annotate or kcachegrind)",
        keep.display()
    );

    notes.note("date", sys::today());
    notes.note(
        "machine",
        format!("{}, {}", sys::cores_desc(), sys::mem_desc()),
    );
    notes.note("valgrind", version_line("valgrind"));
    notes.note("redis", Redis::version());
    notes.note("pg", pg.version());
    notes.note(
        "command",
        format!(
            "VOTES={} WARMUP_VOTES={} CONCURRENCY={} WORKER_VOTES={} WORKER_WARMUP_VOTES={} CHANGE_FRACTION={} BATCH_SIZE={} DB_POOL_SIZE={} KERNEL_SECONDS={}",
            k.votes, k.warmup, k.concurrency, k.worker_votes, k.worker_warmup, k.change_fraction, k.batch, k.pool, k.kernel_seconds
        ),
    );
    notes.note("top", k.top.to_string());
    notes.note("keep", keep.display().to_string());
    let meta: String = notes.0.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(keep.join("meta"), meta)?;
    section::write_benchmarks("profile", &profile_report::section(&keep)?)
}

/// What was built: the commit, and whether the sources differ from it.
fn built_from() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let mut built = format!(
        "commit {}",
        git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "?".into())
    );
    let changed = git(&[
        "status",
        "--porcelain",
        "--",
        "src",
        "examples",
        "Cargo.toml",
        "Cargo.lock",
    ]);
    if changed.is_some_and(|c| !c.is_empty()) {
        built += " with uncommitted changes";
    }
    built
}

fn on_path(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// The first line a program prints for --version.
fn version_line(prog: &str) -> String {
    Command::new(prog)
        .arg("--version")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

/// valgrind --tool=callgrind, its file and log in the work directory, as
/// the command prefix of the program it profiles.
fn callgrind(b: &Bench, name: &str) -> Vec<String> {
    vec![
        "env".into(),
        format!("GLIBC_TUNABLES={REP_TUNABLES}"),
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--trace-children=no".into(),
        format!(
            "--callgrind-out-file={}",
            b.path(&format!("{name}.cg")).display()
        ),
        format!("--log-file={}", b.path(&format!("{name}.vg.log")).display()),
    ]
}

/// `program` (after `prefix`, if any) with `env`, its output to NAME.log in
/// the work directory, listening on `port` within START_TIMEOUT.
fn serve(
    b: &Bench,
    name: &str,
    prefix: &[String],
    program: &str,
    env: &[(&str, String)],
    port: u16,
) -> Res<Child> {
    let mut spec = match prefix.split_first() {
        Some((p, rest)) => rest.iter().fold(Spec::new(p), |s, a| s.arg(a)).arg(program),
        None => Spec::new(program),
    };
    for (k, v) in env {
        spec = spec.env(k, v.clone());
    }
    let log = std::fs::File::create(b.path(&format!("{name}.log")))?;
    let mut child = Child::spawn(&spec, Some(log))?;
    if !prefix.is_empty() {
        say!(b, "{name}: starting under callgrind (pid {})", child.pid());
    }
    sys::wait_port(port, START_TIMEOUT, || child.alive())?;
    Ok(child)
}

/// A capture node on `redis`, `prefix` (callgrind) before it.
fn capture(b: &Bench, name: &str, redis: &Redis, prefix: &[String]) -> Res<(u16, Child)> {
    let port = sys::free_port();
    let env = [
        ("LISTEN", format!("127.0.0.1:{port}")),
        ("REDIS_URL", redis.url.clone()),
        ("NODE_ID", "profile".into()),
        ("COOKIE_KEY", COOKIE_KEY.into()),
        ("RUST_LOG", "warn".into()),
    ];
    Ok((
        port,
        serve(b, name, prefix, "target/release/capture", &env, port)?,
    ))
}

fn baseline(b: &Bench, name: &str, prefix: &[String]) -> Res<(u16, Child)> {
    let port = sys::free_port();
    let env = [("LISTEN", format!("127.0.0.1:{port}"))];
    let program = "target/release/examples/baseline";
    Ok((port, serve(b, name, prefix, program, &env, port)?))
}

/// callgrind_control ARG PID, its output kept in NAME.control.log.
fn control(b: &Bench, name: &str, arg: &str, pid: u32) -> Res<()> {
    let log = b.path(&format!("{name}.control.log"));
    let f = std::fs::File::create(&log)?;
    let ok = Command::new("callgrind_control")
        .arg(arg)
        .arg(pid.to_string())
        .stdout(f.try_clone()?)
        .stderr(f)
        .status()?
        .success();
    if !ok {
        eprint!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        return Err(format!("{name}: callgrind_control {arg} failed").into());
    }
    Ok(())
}

/// Zero the counters now.
fn zero(b: &Bench, name: &str, pid: u32) -> Res<()> {
    control(b, name, "-z", pid)
}

/// Dump the counters to NAME.cg.1 (the first dump of NAME.cg).
fn dump(b: &Bench, name: &str, pid: u32) -> Res<()> {
    control(b, name, "-d", pid)?;
    let file = b.path(&format!("{name}.cg.1"));
    if std::fs::metadata(&file).map_or(true, |m| m.len() == 0) {
        return Err(format!("{name}: no dump in {}", file.display()).into());
    }
    Ok(())
}

/// Zero, VOTES votes, dump: the profile of VOTES votes.
fn window(b: &Bench, k: &Knobs, name: &str, port: u16, pid: u32, notes: &mut Notes) -> Res<()> {
    zero(b, name, pid)?;
    say!(
        b,
        "{name}: {} votes over {} connections under callgrind",
        k.votes,
        k.concurrency
    );
    let t0 = Instant::now();
    votes(port, k.votes, k.concurrency)?;
    dump(b, name, pid)?;
    say!(
        b,
        "{name}: window of {} votes took {:.3} s",
        k.votes,
        t0.elapsed().as_secs_f64()
    );
    notes.note(&format!("{name}_votes"), k.votes.to_string());
    Ok(())
}

/// s / c with `decimals`, 0 without any observation.
fn mean(s: f64, c: f64, decimals: usize) -> String {
    format!("{:.*}", decimals, if c != 0.0 { s / c } else { 0.0 })
}

fn profile_capture(b: &Bench, k: &Knobs, notes: &mut Notes) -> Res<()> {
    let mut redis = b.redis("capture", "everysec")?;
    let (port, mut node) = capture(b, "capture", &redis, &callgrind(b, "capture"))?;
    say!(b, "capture: warm-up, {} votes", k.warmup);
    votes(port, k.warmup, k.concurrency)?;
    let batch = |port| -> Res<(f64, f64)> {
        Ok((
            metric(port, "voteswarm_enqueue_batch_size_sum")?,
            metric(port, "voteswarm_enqueue_batch_size_count")?,
        ))
    };
    let (s0, c0) = batch(port)?;
    let x0 = redis.xlen()?;
    window(b, k, "capture", port, node.pid(), notes)?;
    let x1 = redis.xlen()?;
    let (s1, c1) = batch(port)?;
    if x1 - x0 != k.votes {
        return Err(format!(
            "capture: {} entries stored in the window, expected {}",
            x1 - x0,
            k.votes
        )
        .into());
    }
    notes.note("capture_batch", mean(s1 - s0, c1 - c0, 1));
    node.stop();
    Ok(())
}

fn profile_baseline(b: &Bench, k: &Knobs, notes: &mut Notes) -> Res<()> {
    let (port, mut node) = baseline(b, "baseline", &callgrind(b, "baseline"))?;
    say!(b, "baseline: warm-up, {} votes", k.warmup);
    votes(port, k.warmup, k.concurrency)?;
    window(b, k, "baseline", port, node.pid(), notes)?;
    node.stop();
    Ok(())
}

/// A worker on the queues (`prefix` before it), once its metrics listen.
fn worker(
    b: &Bench,
    k: &Knobs,
    name: &str,
    pg: &Postgres,
    q: &Queues,
    prefix: &[String],
) -> Res<(Child, u16)> {
    let (mut w, metrics) = start_worker(
        b,
        &format!("profile-{name}"),
        q,
        pg,
        &k.batch,
        &k.pool,
        prefix,
    )?;
    sys::wait_port(metrics, START_TIMEOUT, || w.alive())?;
    Ok((w, metrics))
}

/// Until every queue is empty with nothing pending; the worker's log if not.
fn drained(b: &Bench, k: &Knobs, name: &str, q: &mut Queues, w: &mut Child) -> Res<()> {
    q.wait_drained(k.drain_timeout, std::slice::from_mut(w))
        .map_err(|e| {
            let log = b.path(&format!("profile-{name}.log"));
            eprint!("{}", std::fs::read_to_string(log).unwrap_or_default());
            format!("{name}: not drained: {e}").into()
        })
}

/// What the worker's two runs (under callgrind, then native) share: the
/// bench, the knobs, the store and the queues they drain.
struct WorkerRuns<'a> {
    b: &'a Bench,
    k: &'a Knobs,
    pg: &'a Postgres,
    queues: &'a mut Queues,
}

fn profile_worker(runs: &mut WorkerRuns, notes: &mut Notes) -> Res<()> {
    let (b, k, pg, q) = (runs.b, runs.k, runs.pg, &mut *runs.queues);
    let (mut w, metrics) = worker(b, k, "worker", pg, q, &callgrind(b, "worker"))?;
    let pid = w.pid();
    say!(
        b,
        "worker: started under callgrind (pid {pid}); warm-up: {} votes",
        k.worker_warmup
    );
    preload(q, k.worker_warmup, &k.change_fraction, 1, None, true)?;
    drained(b, k, "worker", q, &mut w)?;
    let batches = || -> Res<[f64; 4]> {
        Ok([
            metric(metrics, "voteswarm_drain_batch_size_sum")?,
            metric(metrics, "voteswarm_drain_batch_size_count")?,
            metric(metrics, "voteswarm_commit_batch_votes_sum")?,
            metric(metrics, "voteswarm_commit_batch_votes_count")?,
        ])
    };
    let m0 = batches()?;
    zero(b, "worker", pid)?;
    say!(
        b,
        "worker: preloading and draining {} votes under callgrind",
        k.worker_votes
    );
    let t0 = Instant::now();
    preload(q, k.worker_votes, &k.change_fraction, 2, None, true)?;
    drained(b, k, "worker", q, &mut w)?;
    dump(b, "worker", pid)?;
    say!(
        b,
        "worker: window of {} votes took {:.3} s",
        k.worker_votes,
        t0.elapsed().as_secs_f64()
    );
    notes.note("worker_votes", k.worker_votes.to_string());
    let m1 = batches()?;
    notes.note("worker_read_batch", mean(m1[0] - m0[0], m1[1] - m0[1], 0));
    notes.note("worker_commit_batch", mean(m1[2] - m0[2], m1[3] - m0[3], 0));
    w.stop();
    Ok(())
}

// --- kernel time: the same paths without valgrind

/// µs of user and system CPU per vote between two (user, system) ticks.
fn split(t0: (u64, u64), t1: (u64, u64), votes: u64) -> String {
    let per = |d: u64| d as f64 / sys::clk_tck() * 1e6 / votes.max(1) as f64;
    format!("{:.2} {:.2}", per(t1.0 - t0.0), per(t1.1 - t0.1))
}

/// wrk for a second, then KERNEL_SECONDS measured: the process's (and its
/// Redis's) CPU per vote; the votes are Redis's count when there is one.
fn native_http(
    b: &Bench,
    k: &Knobs,
    name: &str,
    port: u16,
    pid: u32,
    mut redis: Option<&mut Redis>,
    notes: &mut Notes,
) -> Res<()> {
    let (t, c) = (NATIVE_THREADS, NATIVE_CONNECTIONS);
    tools::wrk(b, t, c, NATIVE_WARMUP_S, port)?;
    let c0 = sys::ticks(pid);
    let mut r0 = ((0, 0), 0);
    if let Some(r) = redis.as_deref_mut() {
        r0 = (sys::ticks(r.child.pid()), r.xlen()?);
    }
    let out = tools::wrk(b, t, c, k.kernel_seconds, port)?;
    let c1 = sys::ticks(pid);
    let mut n = out.requests;
    if let Some(r) = redis {
        let r1 = (sys::ticks(r.child.pid()), r.xlen()?);
        n = r1.1 - r0.1;
        notes.note(&format!("{name}_redis_cpu"), split(r0.0, r1.0, n));
    }
    notes.note(&format!("{name}_cpu"), split(c0, c1, n));
    notes.note(
        &format!("{name}_native_rate"),
        (n / k.kernel_seconds).to_string(),
    );
    say!(
        b,
        "{name} without valgrind: {n} votes in {}s",
        k.kernel_seconds
    );
    Ok(())
}

fn native_capture(b: &Bench, k: &Knobs, notes: &mut Notes) -> Res<()> {
    let mut redis = b.redis("native", "everysec")?;
    let (port, mut node) = capture(b, "native-capture", &redis, &[])?;
    let pid = node.pid();
    native_http(b, k, "capture", port, pid, Some(&mut redis), notes)?;
    node.stop();
    Ok(())
}

fn native_baseline(b: &Bench, k: &Knobs, notes: &mut Notes) -> Res<()> {
    let (port, node) = baseline(b, "native-baseline", &[])?;
    native_http(b, k, "baseline", port, node.pid(), None, notes)
}

/// User and system ticks of PostgreSQL's running processes.
fn pg_ticks(pg: &Postgres) -> (u64, u64) {
    let pid = pg.child.pid();
    sys::children(pid)
        .into_iter()
        .chain([pid])
        .map(sys::ticks)
        .fold((0, 0), |a, t| (a.0 + t.0, a.1 + t.1))
}

fn native_worker(runs: &mut WorkerRuns, notes: &mut Notes) -> Res<()> {
    let (b, k, pg, q) = (runs.b, runs.k, runs.pg, &mut *runs.queues);
    let (mut w, _) = worker(b, k, "native", pg, q, &[])?;
    preload(q, k.worker_warmup, &k.change_fraction, 3, None, true)?;
    drained(b, k, "native", q, &mut w)?;
    let (w0, p0) = (sys::ticks(w.pid()), pg_ticks(pg));
    preload(q, k.worker_votes, &k.change_fraction, 4, None, true)?;
    drained(b, k, "native", q, &mut w)?;
    let (w1, p1) = (sys::ticks(w.pid()), pg_ticks(pg));
    notes.note("worker_cpu", split(w0, w1, k.worker_votes));
    notes.note("worker_pg_cpu", split(p0, p1, k.worker_votes));
    say!(
        b,
        "worker without valgrind: drained {} votes",
        k.worker_votes
    );
    Ok(())
}

/// NAME's dump into target/profile (as NAME.callgrind) and its listings,
/// self (NAME.self.txt) and inclusive (NAME.inclusive.txt).
fn annotate(b: &Bench, keep: &Path, name: &str) -> Res<()> {
    // callgrind writes `calls=0` for calls made before the zeroing that
    // return after it; callgrind_annotate (3.19) then counts their
    // inclusive cost as the caller's self cost. Count them as one call.
    let dump = std::fs::read(b.path(&format!("{name}.cg.1")))?;
    let mut out = Vec::with_capacity(dump.len());
    for line in dump.split_inclusive(|&c| c == b'\n') {
        match line.strip_prefix(b"calls=0 ") {
            Some(rest) => {
                out.extend_from_slice(b"calls=1 ");
                out.extend_from_slice(rest);
            }
            None => out.extend_from_slice(line),
        }
    }
    let file = keep.join(format!("{name}.callgrind"));
    std::fs::write(&file, out)?;
    for (inclusive, listing) in [("no", "self"), ("yes", "inclusive")] {
        let txt = std::fs::File::create(keep.join(format!("{name}.{listing}.txt")))?;
        let ok = Command::new("callgrind_annotate")
            .arg(format!("--inclusive={inclusive}"))
            .args(["--auto=no", "--threshold=100"])
            .arg(&file)
            .stdout(txt)
            .stderr(Stdio::null())
            .status()?
            .success();
        if !ok {
            return Err(format!("callgrind_annotate of {} failed", file.display()).into());
        }
    }
    Ok(())
}

// --- the clients

/// Exactly `total` requests `POST / vote=a` (as wrk's post.lua: keep-alive,
/// no cookie) over `conns` connections; an error unless every answer is a
/// 2xx or the form's 303 (capture's POST/redirect/GET; the baseline
/// answers 200).
fn votes(port: u16, total: u64, conns: u64) -> Res<()> {
    let req = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 6\r\n\r\nvote=a"
    );
    let left = AtomicU64::new(total);
    let statuses: Mutex<HashMap<u16, u64>> = Mutex::new(HashMap::new());
    let take = || {
        left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    };
    let errors: Vec<String> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..conns.min(total))
            .map(|_| {
                s.spawn(|| -> Result<(), String> {
                    let sock =
                        TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                    // Under valgrind an answer can take seconds; none takes minutes.
                    sock.set_read_timeout(Some(Duration::from_secs(120)))
                        .map_err(|e| e.to_string())?;
                    let mut w = sock.try_clone().map_err(|e| e.to_string())?;
                    let mut r = BufReader::new(sock);
                    while take() {
                        w.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
                        let status = response(&mut r).map_err(|e| e.to_string())?;
                        *statuses.lock().unwrap().entry(status).or_default() += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        threads
            .into_iter()
            .filter_map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("a client thread panicked".into()))
                    .err()
            })
            .collect()
    });
    let statuses = statuses.into_inner().unwrap();
    let ok: u64 = statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s) || **s == 303)
        .map(|(_, n)| n)
        .sum();
    if ok != total {
        return Err(format!(
            "client: {ok} of {total} answered 2xx or 303: {statuses:?}{}",
            errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
        .into());
    }
    Ok(())
}

/// One HTTP/1.1 response (its body sized by Content-Length): its status.
fn response(r: &mut impl BufRead) -> std::io::Result<u16> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(bad("connection closed"));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("connection closed"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().map_err(|_| bad("bad content-length"))?;
            }
        }
    }
    std::io::copy(&mut r.take(length as u64), &mut std::io::sink())?;
    Ok(status)
}

/// The value of an unlabelled metric line at PORT's /metrics (0 if absent).
fn metric(port: u16, name: &str) -> Res<f64> {
    let (status, body) = sys::http_get(port, "/metrics", START_TIMEOUT)?;
    if !(200..300).contains(&status) {
        return Err(format!("GET /metrics on port {port}: status {status}").into());
    }
    // The last line of that name, as awk '$1 == m {v = $2}' found it.
    Ok(body
        .lines()
        .rev()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0))
}
