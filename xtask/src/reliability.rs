//! `cargo xtask reliability-table DIR OUT`: the fault tables of
//! docs/RELIABILITY.md from the rows `make chaos` left in DIR: one
//! `<scenario>.json` per scenario, in DIR itself or in DIR/SUITE/ (one
//! directory per test file, tests/SUITE.rs, as the Makefile runs them).
//! Each suite gets its own table (its section `SUITE` of the document),
//! because the suites' deployments differ.
//!
//! A scenario nobody has seen before is a row like any other: a table is
//! whatever its files hold, in a stable order (by the fault's name), so a
//! rerun moves no row. A figure a row does not carry shows as "-".

use std::path::Path;

use serde::Deserialize;

use crate::{section, sys, Res};

/// One scenario's figures, as tests/chaos.rs writes them. Only the name is
/// required: a suite that measures less still gets its row.
#[derive(Deserialize)]
struct Row {
    fault: String,
    acknowledged: Option<i64>,
    faults: Option<u32>,
    error_rate_pct: Option<f64>,
    recovery_s: Option<f64>,
    mismatches: Option<usize>,
}

/// A row and the suite (test file) it came from.
struct Scenario {
    suite: String,
    row: Row,
}

/// The `.json` files in `dir`, sorted.
fn json_files(dir: &Path) -> Res<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every row under `dir`, each with its suite: a subdirectory's name, or
/// `chaos` for the rows in `dir` itself (where `make chaos` wrote them
/// before there was a second suite).
fn read(dir: &Path) -> Res<Vec<Scenario>> {
    let mut places = vec![("chaos".to_owned(), dir.to_path_buf())];
    for e in std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
    {
        if e.path().is_dir() {
            places.push((e.file_name().to_string_lossy().into_owned(), e.path()));
        }
    }
    let mut out = Vec::new();
    for (suite, place) in places {
        for f in json_files(&place)? {
            let text = std::fs::read_to_string(&f)?;
            let row: Row =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", f.display()))?;
            out.push(Scenario {
                suite: suite.clone(),
                row,
            });
        }
    }
    Ok(out)
}

fn or_dash<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or("-".into(), f)
}

/// Each suite's table rows, suites and rows in their stable order.
fn tables(mut scenarios: Vec<Scenario>) -> Vec<(String, Vec<String>)> {
    scenarios.sort_by(|a, b| {
        (a.suite != "chaos", &a.suite, &a.row.fault).cmp(&(
            b.suite != "chaos",
            &b.suite,
            &b.row.fault,
        ))
    });
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for Scenario { suite, row: r } in scenarios {
        let line = format!(
            "| {} | {} | {} | {} | {} | {} |",
            r.fault,
            or_dash(r.acknowledged, |n| n.to_string()),
            or_dash(r.faults, |n| n.to_string()),
            or_dash(r.error_rate_pct, |p| format!("{p:.2}%")),
            or_dash(r.recovery_s, |s| format!("{s:.1} s")),
            or_dash(r.mismatches, |n| n.to_string()),
        );
        match out.last_mut() {
            Some((s, rows)) if *s == suite => rows.push(line),
            _ => out.push((suite, vec![line])),
        }
    }
    out
}

/// What a suite's scenarios ran on, after "each scenario: ".
fn setup(suite: &str) -> String {
    match suite {
        "chaos" => "`cluster up` with 3 capture nodes and 2 workers, loadgen with
20,000 voters of whom 20% change their vote, at 800 requests/s (the clocks
scenario: as its row says above)"
            .into(),
        "netfaults" => "tests/netfaults.rs's hosts, each a network namespace (2 capture
nodes, their 2 Redis, 2 workers, PostgreSQL, results, the edge), loadgen with
20,000 voters of whom 20% change their vote, at 400 requests/s"
            .into(),
        other => format!("as tests/{other}.rs's module documentation says"),
    }
}

/// Section `suite` of docs/RELIABILITY.md: the table of `rows`.
fn table(suite: &str, rows: &[String]) -> String {
    format!(
        "<!-- {suite}:begin -->
Measured {} on {} cores; written by `make chaos` (its last step, `cargo xtask
reliability-table target/chaos docs/RELIABILITY.md`, from the row each scenario
of tests/{suite}.rs wrote). Debug build; each scenario: {}.

| fault | votes acknowledged | faults injected | voter-visible error rate (whole run) | time to recover | mismatches |
|-------|-------------------:|----------------:|-------------------------------------:|----------------:|-----------:|
{}
<!-- {suite}:end -->
",
        sys::today(),
        sys::nproc(),
        setup(suite),
        rows.join("\n")
    )
}

pub fn run(dir: &Path, out: &Path) -> Res<()> {
    let tables = tables(read(dir)?);
    if tables.is_empty() {
        return Err(format!("no rows in {} (did the chaos tests run?)", dir.display()).into());
    }
    let mut count = 0;
    for (suite, rows) in &tables {
        // A document without the suite's markers gets its table appended.
        section::write(out, suite, &table(suite, rows), None)?;
        count += rows.len();
    }
    eprintln!(
        "reliability-table: wrote {count} scenarios in {} tables to {}",
        tables.len(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_every_suite_in_a_stable_order_whatever_they_carry() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, json: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, json).unwrap();
        };
        let full = r#"{"fault":"F","acknowledged":10,"faults":2,"error_rate_pct":0.5,"recovery_s":1.34,"mismatches":0}"#;
        write(
            "netfaults/a.json",
            &full.replace("\"F\"", "\"a partition\""),
        );
        write("chaos/z.json", &full.replace("\"F\"", "\"z kill\""));
        write("chaos/b.json", &full.replace("\"F\"", "\"b kill\""));
        // A scenario never seen before, with a figure this table does not
        // know and without two it does.
        write(
            "netfaults/0.json",
            r#"{"fault":"a disk fills","acknowledged":5,"faults":1,"mismatches":0,"new_figure":3}"#,
        );
        let tables = tables(read(dir.path()).unwrap());
        assert_eq!(
            tables,
            [
                (
                    "chaos".to_owned(),
                    vec![
                        "| b kill | 10 | 2 | 0.50% | 1.3 s | 0 |".to_owned(),
                        "| z kill | 10 | 2 | 0.50% | 1.3 s | 0 |".to_owned(),
                    ]
                ),
                (
                    "netfaults".to_owned(),
                    vec![
                        "| a disk fills | 5 | 1 | - | - | 0 |".to_owned(),
                        "| a partition | 10 | 2 | 0.50% | 1.3 s | 0 |".to_owned(),
                    ]
                ),
            ]
        );
    }

    #[test]
    fn a_row_without_its_name_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.json"), r#"{"acknowledged":1}"#).unwrap();
        let e = read(dir.path()).err().expect("an error").to_string();
        assert!(e.contains("x.json") && e.contains("fault"), "{e}");
    }
}
