//! The whole system on one machine, through the `cluster` binary: real
//! redis-server, postgres and haproxy processes, every tier, loadgen.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::cluster_proc::{json_report, rehearse, sql, sql_counts, sql_counts_by_option, Up};
use common::{bin, free_port, http, spawn_cluster, wait_until};

fn require_tools() {
    common::require_program("redis-server", "redis-server");
    common::require_program("haproxy", "haproxy");
}

/// `(a, b)` of per-option counts.
fn pair(counts: &std::collections::BTreeMap<String, i64>) -> (i64, i64) {
    (counts["a"], counts["b"])
}

#[test]
fn a_rehearsal_with_20000_voters_is_exact_and_its_report_matches_sql() {
    require_tools();
    let (dir, report) = rehearse(
        "vs-rehearse-",
        &[
            "--capture",
            "2",
            "--workers",
            "2",
            "--voters",
            "20000",
            "--change-fraction",
            "0.1",
            "--concurrency",
            "64",
            "--final-timeout-secs",
            "240",
        ],
    );
    let json = json_report(&dir.path().join("report.json"));
    assert!(json.passed, "{report}");
    let acknowledged = json.acknowledged;
    assert_eq!(
        acknowledged, 22_000,
        "every first vote and change acknowledged: {report}"
    );

    let (_pg, url) = common::postgres::on_cluster_data(&dir.path().join("data"));
    let (a, b) = sql_counts(&url);
    assert_eq!(a + b, 20_000, "one row per voter");
    let results = json.results.expect("results checked");
    assert_eq!(
        pair(&results.observed),
        (a, b),
        "the report says what SQL says"
    );
    assert_eq!(pair(&json.ground_truth), (a, b));
}

#[test]
fn a_rehearsal_of_a_five_option_poll_through_haproxy_is_exact_per_option() {
    require_tools();
    let (dir, report) = rehearse(
        "vs-rehearse5-",
        &[
            "--capture",
            "2",
            "--workers",
            "2",
            "--voters",
            "3000",
            "--change-fraction",
            "0.1",
            "--concurrency",
            "32",
            "--final-timeout-secs",
            "180",
            "--question",
            "Which colour?",
            "--options",
            "Red,Green,Blue,Cyan,Pink",
        ],
    );
    let json = json_report(&dir.path().join("report.json"));
    assert!(json.passed, "{report}");
    assert_eq!(json.options, 5, "loadgen read five buttons: {report}");
    assert_eq!(json.acknowledged, 3_300, "{report}");

    let (_pg, url) = common::postgres::on_cluster_data(&dir.path().join("data"));
    let stored = sql_counts_by_option(&url);
    let letters: Vec<&str> = stored.keys().map(String::as_str).collect();
    assert_eq!(
        letters,
        ["a", "b", "c", "d", "e"],
        "every option voted, none past"
    );
    assert_eq!(stored.values().sum::<i64>(), 3_000, "one row per voter");
    let results = json.results.expect("results checked");
    assert_eq!(
        results.observed, stored,
        "the results page says what SQL says"
    );
    assert_eq!(
        json.ground_truth, stored,
        "what was acknowledged is what counts"
    );
}

#[test]
fn voters_who_keep_voting_across_the_close_have_every_earlier_vote_counted_and_none_after() {
    require_tools();
    // Paced so that the run straddles the close: the cluster's start
    // takes some of the 25 seconds, the 4,400 requests at 100 a second
    // take about 44.
    let (dir, report) = rehearse(
        "vs-rehearse-close-",
        &[
            "--capture",
            "2",
            "--workers",
            "2",
            "--voters",
            "4000",
            "--change-fraction",
            "0.1",
            "--concurrency",
            "16",
            "--rate",
            "100",
            "--final-timeout-secs",
            "180",
            "--options",
            "Tea,Coffee,Water",
            "--closes",
            "+25",
            "--past-close",
        ],
    );
    let json = json_report(&dir.path().join("report.json"));
    assert!(json.passed, "{report}");
    assert!(json.acknowledged > 0, "votes before the close: {report}");
    assert!(json.refused_poll_closed > 0, "votes after it: {report}");
    let results = json.results.expect("results checked");
    assert!(results.is_final, "final once closed and drained: {report}");

    let (_pg, url) = common::postgres::on_cluster_data(&dir.path().join("data"));
    let stored = sql_counts_by_option(&url);
    let voters: i64 = stored.values().sum();
    assert!(
        voters > 0 && voters < 4_000,
        "some voters only ever voted late: {stored:?}"
    );
    let truth: std::collections::BTreeMap<String, i64> = json
        .ground_truth
        .into_iter()
        .filter(|(_, n)| *n != 0)
        .collect();
    assert_eq!(
        truth, stored,
        "every acknowledged vote counted, no late one"
    );
    assert_eq!(results.observed, stored, "{report}");
}

fn loadgen(up: &Up, voters: usize, report: &Path) -> (i32, String) {
    let status = up
        .loadgen(voters, report)
        .args(["--final-timeout-secs", "20"])
        .status()
        .expect("run loadgen");
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(report).unwrap_or_default(),
    )
}

#[test]
fn loadgen_fails_on_a_database_altered_behind_its_back_and_a_restarted_cluster_resumes() {
    require_tools();
    let run = spawn_cluster("vs-up-", 3, 2, &[]);
    let (dir, data) = (&run.dir, run.up.data.clone());
    let up = run.up;
    for role in [
        "haproxy", "capture", "worker", "results", "redis", "postgres",
    ] {
        assert!(
            up.table.lines().any(|l| l.starts_with(role)),
            "{role} in:\n{}",
            up.table
        );
    }

    // The database URL in the table works as printed.
    assert_eq!(sql_counts(&up.psql_url()), (0, 0));
    if let Some(psql) = common::require_program_opt("psql") {
        let out = Command::new(psql)
            .arg(up.psql_url())
            .args(["-tAc", "SELECT count(*) FROM votes"])
            .output()
            .expect("run psql");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "0",
            "psql with the printed URL: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A second `cluster up` on a data dir in use refuses, in one line that
    // names the running supervisor and how to stop it.
    let second = Command::new(bin::CLUSTER)
        .args(["up", "--port", &free_port().to_string()])
        .args(["--results-port", &free_port().to_string()])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("run a second cluster up");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("in use by an earlier run"))
        .unwrap_or_else(|| panic!("no refusal in: {err}"));
    assert!(
        line.contains(&format!("cluster (pid {})", up.cluster_pid()))
            && line.contains(&format!("`kill {}`", up.cluster_pid())),
        "{line}"
    );

    // An honest run passes.
    let (code, report) = loadgen(&up, 300, &dir.path().join("honest.md"));
    assert_eq!(code, 0, "{report}");

    // Someone flips every vote of voters whose id starts with 0-7 to `b`.
    sql(
        &up.database_url(),
        "CREATE FUNCTION tamper() RETURNS trigger AS $$ BEGIN
           IF substr(NEW.voter_id, 1, 1) < '8' THEN NEW.option := 'b'; END IF; RETURN NEW;
         END $$ LANGUAGE plpgsql;
         CREATE TRIGGER tamper BEFORE INSERT OR UPDATE ON votes FOR EACH ROW EXECUTE FUNCTION tamper();",
    );
    let (code, report) = loadgen(&up, 300, &dir.path().join("tampered.md"));
    assert_ne!(code, 0, "a wrong count must fail:\n{report}");
    assert!(
        report.contains("MISMATCH: voter #"),
        "each wrong voter is named:\n{report}"
    );
    assert!(report.contains("verdict: FAIL"));
    sql(&up.database_url(), "DROP TRIGGER tamper ON votes");

    let before = sql_counts(&up.database_url());
    assert_eq!(before.0 + before.1, 600);
    assert_eq!(up.stop(), 0, "SIGTERM stops the cluster cleanly");

    // A second `cluster up` on the same data dir has the votes.
    let again = Up::start(&data, 3, 2);
    assert_eq!(sql_counts(&again.database_url()), before);
    let client = std::time::Instant::now();
    let total_shown = wait_until(Duration::from_secs(30), || {
        again.results_total() == Some(before.0 + before.1)
    });
    assert!(
        total_shown,
        "results shows the resumed count ({:?})",
        client.elapsed()
    );
    assert_eq!(again.stop(), 0);
}

#[test]
fn the_edge_rate_limits_one_client_address() {
    require_tools();
    let run = spawn_cluster("vs-rate-", 1, 1, &[("VOTE_RATE_LIMIT", "5")]);
    let port = run.up.ports.0;
    let statuses: Vec<u16> = (0..12)
        .map(|_| http::status(port, "/").unwrap_or(0))
        .collect();
    // `cluster up`'s own readiness probe through HAProxy counted too.
    let served = statuses.iter().take_while(|s| **s == 200).count();
    assert!((4..=5).contains(&served), "within the limit: {statuses:?}");
    assert!(
        statuses[served..].iter().all(|s| *s == 429),
        "beyond it, 429: {statuses:?}"
    );
    // The refusal says when to come back.
    let head = http::get(port, "/").expect("the edge answers").text;
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    assert_eq!(run.up.stop(), 0);
}
