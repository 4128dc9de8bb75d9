//! `cargo xtask reliability-table DIR OUT`: the fault table of
//! docs/RELIABILITY.md from the rows `make chaos` left in DIR (one
//! `<scenario>.json` per scenario, written by tests/chaos.rs).

use std::path::Path;

use serde::Deserialize;

use crate::{section, sys, Res};

/// One scenario's figures, as tests/chaos.rs writes them.
#[derive(Deserialize)]
struct Row {
    fault: String,
    acknowledged: i64,
    faults: u32,
    error_rate_pct: f64,
    recovery_s: f64,
    mismatches: usize,
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
    let mut rows = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let r: Row = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        rows.push(format!(
            "| {} | {} | {} | {:.2}% | {:.1} s | {} |",
            r.fault, r.acknowledged, r.faults, r.error_rate_pct, r.recovery_s, r.mismatches
        ));
    }
    let table = format!(
        "<!-- chaos:begin -->
Measured {} on {} cores with `make chaos` (debug build;
each scenario: `cluster up` with 3 capture nodes and 2 workers, loadgen with
20,000 voters of whom 20% change their vote, at 800 requests/s).

| fault | votes acknowledged | faults injected | client-visible error rate (whole run) | time to recover | mismatches |
|-------|-------------------:|----------------:|--------------------------------------:|----------------:|-----------:|
{}
<!-- chaos:end -->
",
        sys::today(),
        sys::nproc(),
        rows.join("\n")
    );
    section::write(out, "chaos", &table, None)?;
    eprintln!(
        "reliability-table: wrote {} scenarios to {}",
        rows.len(),
        out.display()
    );
    Ok(())
}
