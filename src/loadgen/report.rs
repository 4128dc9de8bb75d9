//! loadgen's report: the load phase's table, and each check with every
//! mismatch it found; the same figures as JSON (`--report-json`) for the
//! tools that read them (`cargo xtask`, the chaos and cluster tests).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{LoadStats, LoadgenSettings, ResultsSnapshot, VoterState};

/// Mismatches listed one by one before the report only counts the rest.
const MAX_LISTED: usize = 20;

pub struct Report {
    pub target: String,
    pub voters: usize,
    pub changers_planned: usize,
    pub stats: LoadStats,
    /// Voters loadgen gave up on (attempts exhausted, an unexpected 4xx).
    pub failed_voters: usize,
    pub uncertain_voters: usize,
    /// How many options the voters chose among (`a`, `b`, ...).
    pub options: usize,
    /// Each option letter's acknowledged count, the ground truth.
    pub expected: BTreeMap<char, i64>,
    pub results: Option<ResultsCheck>,
    pub database: Option<DbCheck>,
    /// Why no vote was sent at all (the poll's options unknown).
    pub not_started: Option<String>,
}

pub struct ResultsCheck {
    pub reached_final: bool,
    /// Caught up with every vote acknowledged, final or with the poll
    /// still open ([`ResultsSnapshot::caught_up`]).
    pub caught_up: bool,
    pub waited: Duration,
    pub observed: BTreeMap<String, i64>,
    pub backlog: Option<i64>,
    pub mismatches: Vec<String>,
}

pub struct DbCheck {
    pub rows: usize,
    pub checked: usize,
    pub mismatches: Vec<String>,
    pub mismatch_count: usize,
}

impl ResultsCheck {
    pub fn failed(why: String) -> ResultsCheck {
        ResultsCheck {
            reached_final: false,
            caught_up: false,
            waited: Duration::ZERO,
            observed: BTreeMap::new(),
            backlog: None,
            mismatches: vec![why],
        }
    }

    pub fn compare(
        last: Option<ResultsSnapshot>,
        last_error: Option<String>,
        expected: &BTreeMap<char, i64>,
        uncertain: i64,
        waited: Duration,
    ) -> ResultsCheck {
        let mut check = ResultsCheck {
            reached_final: false,
            caught_up: false,
            waited,
            observed: BTreeMap::new(),
            backlog: None,
            mismatches: Vec::new(),
        };
        let Some(snap) = last else {
            check.mismatches.push(format!(
                "no results: {}",
                last_error.unwrap_or_else(|| "no answer".into())
            ));
            return check;
        };
        check.reached_final = snap.is_final;
        check.caught_up = snap.caught_up();
        check.backlog = Some(snap.backlog);
        if !check.caught_up {
            check.mismatches.push(format!(
                "the count never became final (backlog {})",
                snap.backlog
            ));
        }
        let observed = snap.counts();
        let letters: std::collections::BTreeSet<char> =
            expected.keys().chain(observed.keys()).copied().collect();
        let mut drift = 0;
        for o in letters {
            let want = expected.get(&o).copied().unwrap_or(0);
            let got = observed.get(&o).copied().unwrap_or(0);
            check.observed.insert(o.to_string(), got);
            drift += (got - want).abs();
            if got != want && uncertain == 0 {
                check.mismatches.push(format!(
                    "option {o}: results say {got}, ground truth {want}"
                ));
            }
        }
        // Each uncertain voter can move the count of one option by one.
        if uncertain > 0 && drift > uncertain {
            check.mismatches.push(format!(
                "counts differ from the ground truth by {drift}, more than the {uncertain} uncertain voters explain"
            ));
        }
        check
    }
}

impl DbCheck {
    pub fn error(e: String) -> DbCheck {
        DbCheck {
            rows: 0,
            checked: 0,
            mismatches: vec![e],
            mismatch_count: 1,
        }
    }

    /// `baseline_rows`: rows in the table before the run (not our voters').
    pub fn compare(
        voters: &[VoterState],
        baseline_rows: usize,
        rows: impl IntoIterator<Item = (String, String)>,
    ) -> DbCheck {
        let stored: HashMap<String, String> = rows.into_iter().collect();
        let mut check = DbCheck {
            rows: stored.len(),
            checked: 0,
            mismatches: Vec::new(),
            mismatch_count: 0,
        };
        let mut known = 0;
        for (i, v) in voters.iter().enumerate() {
            let Some(id) = &v.voter_id else {
                continue;
            };
            known += 1;
            if v.uncertain || v.failed {
                continue;
            }
            let Some(want) = v.acked else { continue };
            check.checked += 1;
            let problem = match stored.get(id) {
                None => Some(format!(
                    "voter #{i} ({id}): no stored vote, acknowledged {want}"
                )),
                Some(got) if !got.trim().chars().eq([want]) => Some(format!(
                    "voter #{i} ({id}): stored {got}, acknowledged {want}"
                )),
                Some(_) => None,
            };
            if let Some(p) = problem {
                check.mismatch_count += 1;
                if check.mismatches.len() < MAX_LISTED {
                    check.mismatches.push(p);
                }
            }
        }
        let extra = stored.len().saturating_sub(known + baseline_rows);
        if extra > 0 {
            check.mismatch_count += extra;
            check.mismatches.push(format!(
                "{extra} stored votes belong to voters this run never acknowledged"
            ));
        }
        check
    }
}

impl Report {
    pub fn new(
        settings: &LoadgenSettings,
        options: usize,
        stats: LoadStats,
        voters: &[VoterState],
    ) -> Report {
        let (expected, uncertain) = super::expected_counts(voters);
        Report {
            target: settings.target.clone(),
            voters: settings.voters,
            changers_planned: (settings.voters as f64 * settings.change_fraction).round() as usize,
            failed_voters: voters.iter().filter(|v| v.failed).count(),
            uncertain_voters: uncertain as usize,
            options,
            expected,
            stats,
            results: None,
            database: None,
            not_started: None,
        }
    }

    /// A run that sent no vote, and why.
    pub fn not_started(settings: &LoadgenSettings, why: String) -> Report {
        let mut report = Report::new(settings, 0, LoadStats::default(), &[]);
        report.not_started = Some(why);
        report
    }

    /// Every option letter with its ground truth, in order.
    fn ground_truth(&self) -> BTreeMap<String, i64> {
        (0..self.options)
            .map(crate::poll::letter)
            .chain(self.expected.keys().copied())
            .map(|o| (o.to_string(), self.expected.get(&o).copied().unwrap_or(0)))
            .collect()
    }

    /// Everything matched: every voter acknowledged, and every check given
    /// found no mismatch.
    pub fn passed(&self) -> bool {
        self.not_started.is_none()
            && self.failed_voters == 0
            && self
                .results
                .as_ref()
                .is_none_or(|r| r.mismatches.is_empty())
            && self.database.as_ref().is_none_or(|d| d.mismatch_count == 0)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let st = &self.stats;
        let secs = st.elapsed.as_secs_f64().max(1e-9);
        let lat = Latency::of(&st.latencies_us);
        let _ = writeln!(
            s,
            "loadgen report: {} voters against {}",
            self.voters, self.target
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "| measure | value |");
        let _ = writeln!(s, "|---|---|");
        let _ = writeln!(s, "| requests | {} |", st.requests);
        let _ = writeln!(s, "| acknowledged | {} |", st.acknowledged);
        for (status, n) in &st.rejected {
            let what = if *status == 0 {
                "connection errors".to_owned()
            } else {
                format!("rejected {status}")
            };
            let _ = writeln!(s, "| {what} | {n} |");
        }
        if st.refused_closed > 0 {
            let _ = writeln!(
                s,
                "| refused after the close (403 poll_closed) | {} |",
                st.refused_closed
            );
        }
        let _ = writeln!(s, "| planned changes | {} |", self.changers_planned);
        let _ = writeln!(s, "| wall time | {:.2} s |", secs);
        let _ = writeln!(
            s,
            "| votes/s (acknowledged) | {:.0} |",
            st.acknowledged as f64 / secs
        );
        let _ = writeln!(s, "| latency p50 / p90 / p99 / max | {} |", quantiles(&lat));
        let _ = writeln!(s, "| latency p99.9 | {} |", fmt_opt(lat.map(|l| l.p999)));
        let hs = &st.handshakes;
        if hs.full + hs.resumed + hs.failed > 0 {
            let hl = Latency::of(&hs.latencies_us);
            let _ = writeln!(
                s,
                "| TLS handshakes full / resumed / failed | {} / {} / {} |",
                hs.full, hs.resumed, hs.failed
            );
            let _ = writeln!(
                s,
                "| TLS handshakes/s | {:.0} |",
                (hs.full + hs.resumed) as f64 / secs
            );
            let _ = writeln!(
                s,
                "| TLS handshake p50 / p90 / p99 / max | {} |",
                quantiles(&hl)
            );
        }
        let _ = writeln!(s, "| voters given up on | {} |", self.failed_voters);
        let _ = writeln!(s, "| uncertain voters | {} |", self.uncertain_voters);
        let truth = self.ground_truth();
        let letters: Vec<&str> = truth.keys().map(String::as_str).collect();
        let slashed = |counts: &mut dyn Iterator<Item = i64>| {
            counts
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let _ = writeln!(
            s,
            "| ground truth {} | {} |",
            letters.join(" / "),
            slashed(&mut truth.values().copied())
        );
        if let Some(r) = &self.results {
            let _ = writeln!(
                s,
                "| results {} | {} ({}, waited {:.1} s) |",
                letters.join(" / "),
                slashed(
                    &mut letters
                        .iter()
                        .map(|o| r.observed.get(*o).copied().unwrap_or(0))
                ),
                if r.reached_final {
                    "final"
                } else if r.caught_up {
                    "caught up; not final, the poll is open"
                } else {
                    "NOT final"
                },
                r.waited.as_secs_f64()
            );
        }
        if let Some(d) = &self.database {
            let _ = writeln!(
                s,
                "| database rows / voters checked / mismatches | {} / {} / {} |",
                d.rows, d.checked, d.mismatch_count
            );
        }
        let mut problems: Vec<&String> = Vec::new();
        if let Some(r) = &self.results {
            problems.extend(&r.mismatches);
        }
        if let Some(d) = &self.database {
            problems.extend(&d.mismatches);
        }
        let _ = writeln!(s);
        if let Some(why) = &self.not_started {
            let _ = writeln!(s, "MISMATCH: no vote sent: {why}");
        }
        if self.failed_voters > 0 {
            let _ = writeln!(
                s,
                "MISMATCH: {} voters were never acknowledged",
                self.failed_voters
            );
        }
        for p in problems {
            let _ = writeln!(s, "MISMATCH: {p}");
        }
        let _ = writeln!(
            s,
            "verdict: {}",
            if self.passed() {
                "PASS — every acknowledged vote counted, each voter's latest choice"
            } else {
                "FAIL"
            }
        );
        s
    }
}

/// "p50 / p90 / p99 / max", or dashes for none.
fn quantiles(l: &Option<Latency>) -> String {
    match l {
        Some(l) => format!(
            "{} / {} / {} / {}",
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.max)
        ),
        None => "- / - / - / -".into(),
    }
}

fn fmt_opt(us: Option<u64>) -> String {
    us.map(fmt_us).unwrap_or_else(|| "-".into())
}

/// A latency as every report writes it (µs, ms, s); the dev tasks too.
pub fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}

/// Significant figures the latency histogram keeps: every percentile is
/// within 0.1% of the exact one (exact below 2,048 µs).
pub const LATENCY_SIGFIGS: u8 = 3;

/// Percentiles of latencies in microseconds, from an HDR histogram.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    /// None for no samples.
    pub fn of(us: &[u32]) -> Option<Latency> {
        if us.is_empty() {
            return None;
        }
        let mut h = Histogram::<u64>::new_with_bounds(1, u64::from(u32::MAX), LATENCY_SIGFIGS)
            .expect("valid histogram bounds");
        for &v in us {
            // The histogram's lowest value is 1; a 0 µs answer counts as 1.
            h.saturating_record(u64::from(v.max(1)));
        }
        Some(Latency {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

/// `loadgen --report-json`: the figures of [`Report::render`], as numbers.
#[derive(Debug, Serialize, Deserialize)]
pub struct JsonReport {
    pub target: String,
    pub voters: usize,
    pub requests: u64,
    pub acknowledged: u64,
    /// Votes refused as too late (`403 poll_closed`, with `--past-close`).
    #[serde(default)]
    pub refused_poll_closed: u64,
    /// Refusals by HTTP status ("429", "503", ...).
    pub rejected: BTreeMap<String, u64>,
    pub connection_errors: u64,
    pub planned_changes: usize,
    pub wall_time_s: f64,
    pub votes_per_s: f64,
    pub latency_us: Option<Latency>,
    /// Over plain HTTP: none.
    pub tls: Option<JsonHandshakes>,
    pub failed_voters: usize,
    pub uncertain_voters: usize,
    /// How many options the voters chose among.
    #[serde(default)]
    pub options: usize,
    /// Each option's acknowledged count, the ground truth.
    pub ground_truth: BTreeMap<String, i64>,
    pub results: Option<JsonResults>,
    pub database: Option<JsonDatabase>,
    /// Every MISMATCH line of the report, without the prefix.
    pub mismatches: Vec<String>,
    pub passed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JsonHandshakes {
    pub full: u64,
    pub resumed: u64,
    pub failed: u64,
    pub per_s: f64,
    pub latency_us: Option<Latency>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JsonResults {
    /// Each option's count on the results page.
    pub observed: BTreeMap<String, i64>,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Caught up with every vote acknowledged (final, or the poll open).
    #[serde(default)]
    pub caught_up: bool,
    pub waited_s: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JsonDatabase {
    pub rows: usize,
    pub checked: usize,
    pub mismatches: usize,
}

impl Report {
    pub fn to_json(&self) -> JsonReport {
        let st = &self.stats;
        let secs = st.elapsed.as_secs_f64().max(1e-9);
        let hs = &st.handshakes;
        let mut mismatches = Vec::new();
        if let Some(why) = &self.not_started {
            mismatches.push(format!("no vote sent: {why}"));
        }
        if self.failed_voters > 0 {
            mismatches.push(format!(
                "{} voters were never acknowledged",
                self.failed_voters
            ));
        }
        if let Some(r) = &self.results {
            mismatches.extend(r.mismatches.iter().cloned());
        }
        if let Some(d) = &self.database {
            mismatches.extend(d.mismatches.iter().cloned());
        }
        JsonReport {
            target: self.target.clone(),
            voters: self.voters,
            requests: st.requests,
            acknowledged: st.acknowledged,
            refused_poll_closed: st.refused_closed,
            rejected: st
                .rejected
                .iter()
                .filter(|(status, _)| **status != 0)
                .map(|(status, n)| (status.to_string(), *n))
                .collect(),
            connection_errors: st.rejected.get(&0).copied().unwrap_or(0),
            planned_changes: self.changers_planned,
            wall_time_s: secs,
            votes_per_s: st.acknowledged as f64 / secs,
            latency_us: Latency::of(&st.latencies_us),
            tls: (hs.full + hs.resumed + hs.failed > 0).then(|| JsonHandshakes {
                full: hs.full,
                resumed: hs.resumed,
                failed: hs.failed,
                per_s: (hs.full + hs.resumed) as f64 / secs,
                latency_us: Latency::of(&hs.latencies_us),
            }),
            failed_voters: self.failed_voters,
            uncertain_voters: self.uncertain_voters,
            options: self.options,
            ground_truth: self.ground_truth(),
            results: self.results.as_ref().map(|r| JsonResults {
                observed: r.observed.clone(),
                is_final: r.reached_final,
                caught_up: r.caught_up,
                waited_s: r.waited.as_secs_f64(),
            }),
            database: self.database.as_ref().map(|d| JsonDatabase {
                rows: d.rows,
                checked: d.checked,
                mismatches: d.mismatch_count,
            }),
            mismatches,
            passed: self.passed(),
        }
    }

    /// The JSON report, pretty-printed, to `path`.
    pub fn write_json(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(&self.to_json()).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact percentile of the hand-written version this replaced: the
    /// value at index ceil(n * p) - 1 of the sorted samples.
    fn exact(sorted: &[u32], p: f64) -> u64 {
        let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        u64::from(sorted[i])
    }

    #[test]
    fn percentiles_within_the_histograms_precision() {
        let mut rng: u64 = 7;
        let mut us: Vec<u32> = (0..100_000)
            .map(|_| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((rng >> 33) % 3_000_000) as u32 + 1
            })
            .collect();
        let l = Latency::of(&us).unwrap();
        us.sort_unstable();
        for (got, p) in [(l.p50, 0.5), (l.p90, 0.9), (l.p99, 0.99), (l.p999, 0.999)] {
            let want = exact(&us, p);
            assert!(
                got >= want && got - want <= want / 1000 + 1,
                "p{p}: {got} against {want}"
            );
        }
        let max = u64::from(*us.last().unwrap());
        assert!(l.max >= max && l.max - max <= max / 1000 + 1);
    }

    #[test]
    fn small_latencies_are_exact() {
        let us: Vec<u32> = (1..=1000).collect();
        let l = Latency::of(&us).unwrap();
        assert_eq!(
            (l.p50, l.p90, l.p99, l.p999, l.max),
            (500, 900, 990, 999, 1000)
        );
        assert_eq!(Latency::of(&[]), None);
    }
}
