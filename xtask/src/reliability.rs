//! `cargo xtask reliability-table DIR OUT`: the fault table of
//! docs/RELIABILITY.md from the rows `make chaos` left in DIR (one
//! `<scenario>.json` per scenario, written by tests/chaos.rs and
//! tests/netfaults.rs), a table for each suite.

use std::path::Path;

use serde::Deserialize;

use crate::{section, sys, Res};

/// One scenario's figures, as tests/chaos.rs and tests/netfaults.rs write
/// them.
#[derive(Deserialize)]
struct Row {
    fault: String,
    acknowledged: i64,
    faults: u32,
    error_rate_pct: f64,
    recovery_s: f64,
    mismatches: usize,
}

/// The fault names of tests/netfaults.rs's rows.
const NETNS_PREFIX: &str = "netns: ";

/// What each table's scenarios ran on, after "each scenario: ".
const CHAOS_SETUP: &str = "`cluster up` with 3 capture nodes and 2 workers, loadgen with
20,000 voters of whom 20% change their vote, at 800 requests/s";
const NETNS_SETUP: &str = "tests/netfaults.rs's hosts, each a network namespace (2 capture
nodes, their 2 Redis, 2 workers, PostgreSQL, results, the edge), loadgen with
20,000 voters of whom 20% change their vote, at 400 requests/s";

/// A section `name` of docs/RELIABILITY.md: the table of `rows`.
fn table(name: &str, setup: &str, rows: &[String]) -> String {
    format!(
        "<!-- {name}:begin -->
Measured {} on {} cores with `make chaos` (debug build;
each scenario: {setup}).

| fault | votes acknowledged | faults injected | client-visible error rate (whole run) | time to recover | mismatches |
|-------|-------------------:|----------------:|--------------------------------------:|----------------:|-----------:|
{}
<!-- {name}:end -->
",
        sys::today(),
        sys::nproc(),
        rows.join("\n")
    )
}

pub fn run(dir: &Path, out: &Path) -> Res<()> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no rows in {} (did the chaos tests run?)", dir.display()).into());
    }
    let (mut chaos, mut netns) = (Vec::new(), Vec::new());
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let r: Row = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        let line = format!(
            "| {} | {} | {} | {:.2}% | {:.1} s | {} |",
            r.fault, r.acknowledged, r.faults, r.error_rate_pct, r.recovery_s, r.mismatches
        );
        // The two suites' deployments differ, so each has its table.
        if r.fault.starts_with(NETNS_PREFIX) {
            netns.push(line);
        } else {
            chaos.push(line);
        }
    }
    if !chaos.is_empty() {
        section::write(out, "chaos", &table("chaos", CHAOS_SETUP, &chaos), None)?;
    }
    if !netns.is_empty() {
        section::write(
            out,
            "netfaults",
            &table("netfaults", NETNS_SETUP, &netns),
            None,
        )?;
    }
    eprintln!(
        "reliability-table: wrote {} scenarios to {}",
        chaos.len() + netns.len(),
        out.display()
    );
    Ok(())
}
