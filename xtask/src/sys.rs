//! What the benchmarks read from the machine: /proc, free ports, the date.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::Res;

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

pub fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A port nothing listens on now, outside the ephemeral range the
/// benchmarks' own connections use (see `voteswarm::cluster::ports`).
pub fn free_port() -> u16 {
    voteswarm::cluster::ports::free_port().expect("a free port on 127.0.0.1")
}

/// Fields of /proc/PID/stat after the command name: index 0 is field 3.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// User and system CPU ticks of a process so far (0, 0 once it is gone).
pub fn ticks(pid: u32) -> (u64, u64) {
    stat_fields(pid).map_or((0, 0), |f| (f[11], f[12]))
}

/// User + system CPU ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let (u, s) = ticks(pid);
    u + s
}

/// The children of PID running now.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// CPU ticks of PID, of its children running now, and of its children
/// already reaped: PostgreSQL's work is done by its backends, which exit
/// when their client disconnects.
pub fn tree_ticks(pid: u32) -> u64 {
    let own = stat_fields(pid).map_or(0, |f| f[11] + f[12] + f[13] + f[14]);
    own + children(pid).into_iter().map(cpu_ticks).sum::<u64>()
}

/// A line's value from /proc/PID/status, e.g. VmHWM in KiB.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory (VmRSS) of a running process now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// The file descriptors a process holds open now (0 once it is gone).
pub fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// The pid files in a cluster's `run/` directory (`NAME.pid`, as
/// `voteswarm::cluster::procs` writes them): each name and pid, by name.
pub fn pid_files(run: &Path) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = std::fs::read_dir(run)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|f| {
            let p = f.path();
            if p.extension().is_none_or(|x| x != "pid") {
                return None;
            }
            let pid = std::fs::read_to_string(&p).ok()?.trim().parse().ok()?;
            Some((p.file_stem()?.to_string_lossy().into_owned(), pid))
        })
        .collect();
    out.sort();
    out
}

/// `GET PATH` on 127.0.0.1:PORT over HTTP/1.0 (the body unchunked, up to
/// the close): the status and the body.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Res<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {path} on port {port}: no status line"))?;
    Ok((status, body.to_owned()))
}

/// Peak resident memory (VmHWM) of a running process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// The machine's count of connections dropped because a listen queue was
/// full (their clients retry the SYN after a second).
pub fn listen_overflows() -> u64 {
    let s = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = s.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Microseconds of CPU per vote.
pub fn us_per_vote(ticks: u64, votes: u64) -> f64 {
    ticks as f64 / clk_tck() * 1e6 / votes.max(1) as f64
}

/// Microseconds of CPU per vote, one decimal.
pub fn per_vote(ticks: u64, votes: u64) -> String {
    format!("{:.1}", us_per_vote(ticks, votes))
}

/// `a / b`, two decimals, as the tables' ratio columns write it.
pub fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}", a / b)
}

/// The middle of separate runs' figures (the mean of the middle two of an
/// even number): quantiles of separate runs do not merge, their median
/// does not let one run's hiccup stand for all.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The machine's load averages over 1, 5 and 15 minutes, as
/// /proc/loadavg has them: a section measured on a shared machine says
/// how shared it was.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// As loadgen's report writes a latency (µs, ms, s).
pub use voteswarm::loadgen::report::fmt_us;

/// The `n`th word (from 0) of what `cmd` prints on stdout, if it runs.
pub fn nth_word_of(cmd: &mut std::process::Command, n: usize) -> Option<String> {
    let out = cmd.output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(n)
        .map(str::to_owned)
}

/// The machine, for the sections' "Measured ..." line.
pub fn cores_desc() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(": ")
                    .map(|(_, m)| m.to_owned())
            })
        })
        .unwrap_or_default();
    format!("{} cores ({model})", nproc())
}

pub fn mem_desc() -> String {
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
        })
        .unwrap_or(0.0);
    format!("{:.0} GiB", kib / 1_048_576.0)
}

/// A section's "Measured DATE on CORES, MEM" (its words after that are
/// the section's own).
pub fn measured() -> String {
    format!("Measured {} on {}, {}", today(), cores_desc(), mem_desc())
}

/// Today, UTC, as YYYY-MM-DD.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Until something listens on 127.0.0.1:PORT, while `alive` says the
/// process that should is still running.
pub fn wait_port(port: u16, timeout: Duration, mut alive: impl FnMut() -> bool) -> Res<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if !alive() {
            return Err(format!("the process for port {port} exited before listening").into());
        }
        if Instant::now() > deadline {
            return Err(format!("nothing listens on port {port} after {timeout:?}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
