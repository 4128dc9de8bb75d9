//! The load tools the benchmarks drive: wrk (with a Lua hook that prints
//! its own figures) and loadgen (whose JSON report they read).

use std::path::Path;
use std::process::{Command, Stdio};

use voteswarm::loadgen::report::JsonReport;

use crate::bench::Bench;
use crate::Res;

/// wrk's script, a form vote per request. At the end it prints, from wrk's
/// own summary and latency histogram, the lines REQUESTS, DURATION_US,
/// NON2XX, P50, P99 and P999 (microseconds); wrk's --latency table stops
/// at p99.
const POST_LUA: &str = r#"wrk.method = "POST"
wrk.body = "vote=a"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

done = function(summary, latency, requests)
  io.write(string.format("REQUESTS %d\nDURATION_US %d\nNON2XX %d\nP50 %d\nP99 %d\nP999 %d\n",
    summary.requests, summary.duration, summary.errors.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

/// What post.lua's `done` hook printed.
#[derive(Debug, Default)]
pub struct Wrk {
    pub requests: u64,
    pub duration_us: u64,
    pub non2xx: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
}

impl Wrk {
    /// 2xx answers per second.
    pub fn rate(&self) -> f64 {
        (self.requests - self.non2xx) as f64 / self.duration_us.max(1) as f64 * 1e6
    }
    pub fn ok(&self) -> u64 {
        self.requests - self.non2xx
    }
}

/// `wrk -tT -cC -dDs -s post.lua http://127.0.0.1:PORT/`.
pub fn wrk(b: &Bench, threads: u32, conns: u32, secs: u64, port: u16) -> Res<Wrk> {
    let lua = b.path("post.lua");
    if !lua.exists() {
        std::fs::write(&lua, POST_LUA)?;
    }
    let out = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(&lua)
        .arg(format!("http://127.0.0.1:{port}/"))
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    if !out.status.success() {
        return Err("wrk failed".into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Wrk {
        requests: field("REQUESTS"),
        duration_us: field("DURATION_US"),
        non2xx: field("NON2XX"),
        p50: field("P50"),
        p99: field("P99"),
        p999: field("P999"),
    })
}

/// loadgen with `args`, its JSON report to `json`; fails unless it exited 0.
pub fn loadgen(args: &[String], json: &Path) -> Res<JsonReport> {
    let status = Command::new("target/release/loadgen")
        .args(args)
        .arg("--report-json")
        .arg(json)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run loadgen: {e}"))?;
    let report = read_report(json);
    if !status.success() {
        if let Ok(r) = &report {
            eprintln!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
        }
        return Err(format!("loadgen failed ({status})").into());
    }
    report
}

/// loadgen's arguments for `voters` new voters, each voting once, against
/// a node on `port` (on top of which a task adds its pacing).
pub fn once_each(port: u16, voters: u64) -> Vec<String> {
    vec![
        "--target".into(),
        format!("http://127.0.0.1:{port}"),
        "--voters".into(),
        voters.to_string(),
        "--change-fraction".into(),
        "0".into(),
    ]
}

pub fn read_report(json: &Path) -> Res<JsonReport> {
    let text = std::fs::read_to_string(json).map_err(|e| format!("{}: {e}", json.display()))?;
    Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json.display()))?)
}

/// "p50 / p90 / p99 / max" or "p50" and the like, as the Markdown report
/// writes them; "-" for none.
pub fn lat(
    l: Option<voteswarm::loadgen::report::Latency>,
    pick: fn(&voteswarm::loadgen::report::Latency) -> u64,
) -> String {
    l.map(|l| crate::sys::fmt_us(pick(&l)))
        .unwrap_or_else(|| "-".into())
}

pub fn quantiles(l: Option<voteswarm::loadgen::report::Latency>) -> String {
    match l {
        Some(l) => [l.p50, l.p90, l.p99, l.max]
            .map(crate::sys::fmt_us)
            .join(" / "),
        None => "- / - / - / -".into(),
    }
}
