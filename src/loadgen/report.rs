//! loadgen's report: the load phase's table, and each check with every
//! mismatch it found.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::time::Duration;

use super::{LoadStats, LoadgenSettings, ResultsSnapshot, VoterState};
use crate::vote::VoteOption;

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
    pub expected: HashMap<VoteOption, i64>,
    pub results: Option<ResultsCheck>,
    pub database: Option<DbCheck>,
}

pub struct ResultsCheck {
    pub reached_final: bool,
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
            waited: Duration::ZERO,
            observed: BTreeMap::new(),
            backlog: None,
            mismatches: vec![why],
        }
    }

    pub fn compare(
        last: Option<ResultsSnapshot>,
        last_error: Option<String>,
        expected: &HashMap<VoteOption, i64>,
        uncertain: i64,
        waited: Duration,
    ) -> ResultsCheck {
        let mut check = ResultsCheck {
            reached_final: false,
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
        check.backlog = Some(snap.backlog);
        if !snap.is_final {
            check.mismatches.push(format!(
                "the count never became final (backlog {})",
                snap.backlog
            ));
        }
        let mut drift = 0;
        for o in VoteOption::ALL {
            let want = expected.get(&o).copied().unwrap_or(0);
            let got = snap
                .options
                .iter()
                .find(|c| c.option == o.as_str())
                .map(|c| c.count)
                .unwrap_or(0);
            check.observed.insert(o.as_str().to_owned(), got);
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
                Some(got) if got.trim() != want.as_str() => Some(format!(
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
    pub fn new(settings: &LoadgenSettings, stats: LoadStats, voters: &[VoterState]) -> Report {
        let (expected, uncertain) = super::expected_counts(voters);
        Report {
            target: settings.target.clone(),
            voters: settings.voters,
            changers_planned: (settings.voters as f64 * settings.change_fraction).round() as usize,
            failed_voters: voters.iter().filter(|v| v.failed).count(),
            uncertain_voters: uncertain as usize,
            expected,
            stats,
            results: None,
            database: None,
        }
    }

    /// Everything matched: every voter acknowledged, and every check given
    /// found no mismatch.
    pub fn passed(&self) -> bool {
        self.failed_voters == 0
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
        let mut lat = st.latencies_us.clone();
        lat.sort_unstable();
        let pct = |p: f64| percentile(&lat, p);
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
        let _ = writeln!(s, "| planned changes | {} |", self.changers_planned);
        let _ = writeln!(s, "| wall time | {:.2} s |", secs);
        let _ = writeln!(
            s,
            "| votes/s (acknowledged) | {:.0} |",
            st.acknowledged as f64 / secs
        );
        let _ = writeln!(s, "| latency p50 / p90 / p99 / max | {} |", quantiles(&lat));
        let _ = writeln!(s, "| latency p99.9 | {} |", pct(0.999));
        let hs = &st.handshakes;
        if hs.full + hs.resumed + hs.failed > 0 {
            let mut hl = hs.latencies_us.clone();
            hl.sort_unstable();
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
        let want = |o: VoteOption| self.expected.get(&o).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "| ground truth a / b | {} / {} |",
            want(VoteOption::A),
            want(VoteOption::B)
        );
        if let Some(r) = &self.results {
            let _ = writeln!(
                s,
                "| results a / b | {} / {} ({}, waited {:.1} s) |",
                r.observed.get("a").copied().unwrap_or(0),
                r.observed.get("b").copied().unwrap_or(0),
                if r.reached_final {
                    "final"
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

/// "p50 / p90 / p99 / max" of sorted microseconds.
fn quantiles(sorted: &[u32]) -> String {
    let max = sorted
        .last()
        .map(|v| fmt_us(*v))
        .unwrap_or_else(|| "-".into());
    format!(
        "{} / {} / {} / {max}",
        percentile(sorted, 0.50),
        percentile(sorted, 0.90),
        percentile(sorted, 0.99)
    )
}

/// The `p` quantile of sorted microseconds, formatted; "-" for none.
fn percentile(sorted: &[u32], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    fmt_us(sorted[i])
}

fn fmt_us(us: u32) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{us} µs")
    }
}
