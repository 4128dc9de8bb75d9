//! The poll's results on a real PostgreSQL and Redis: a bar per option
//! with every label escaped, a count hidden from the public until the
//! close while the operator's token sees it, the series behind the live
//! charts with each capture node's share, the CSV export to the byte, and
//! `results export`, which never calls a count final while votes are
//! queued.

mod common;

use std::process::Command;
use std::time::Duration;

use diesel::{Connection, PgConnection};
use voteswarm::cluster::postgres::PgRole;
use voteswarm::config::{SecretString, VoteChanges};
use voteswarm::poll::{Poll, ResultsVisible};
use voteswarm::vote::{Id128, Vote, VoteOption};

use common::{http, results_node, spawn_results, wait_until, PgServer, RedisServer};

const TOKEN: &str = "operator-token-0123456789";

fn vote(voter: u128, option: VoteOption, node: &str, ts: i64) -> Vote {
    Vote {
        vote_id: Id128(voter + 1_000_000),
        voter: Id128(voter),
        option,
        ts,
        node: node.into(),
    }
}

/// Commits `votes` as a worker would.
fn commit(url: &str, votes: &[Vote]) {
    let mut conn = PgConnection::establish(url).unwrap();
    voteswarm::db::commit_votes(&mut conn, votes, VoteChanges::Allow).unwrap();
}

fn poll(options: &[&str]) -> Poll {
    Poll {
        options: options.iter().map(|s| (*s).to_owned()).collect(),
        ..Poll::default()
    }
}

fn get_as(port: u16, path: &str, auth: Option<&str>) -> http::Reply {
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    http::exchange(
        port,
        format!("GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").as_bytes(),
    )
    .expect("results answers")
}

/// Waits for a snapshot satisfying `done` and returns it.
fn wait_snapshot(
    port: u16,
    auth: Option<&str>,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        last = get_as(port, "/api/results", auth)
            .json()
            .unwrap_or_default();
        done(&last)
    });
    assert!(ok, "no such snapshot; the last: {last}");
    last
}

#[test]
fn five_options_each_get_a_bar_and_every_label_is_escaped() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    commit(
        &pg.migrated_url(),
        &[
            vote(1, VoteOption::A, "capture01", 10),
            vote(2, VoteOption::B, "capture01", 10),
            vote(3, VoteOption::B, "capture02", 10),
            vote(4, VoteOption::E, "capture02", 10),
            vote(5, VoteOption::E, "capture02", 10),
            vote(6, VoteOption::E, "capture02", 10),
        ],
    );
    let mut settings = results_node::settings(pg.url_as(PgRole::Results), &redis.results_url());
    settings.poll = poll(&[
        "Red",
        "<script>alert(1)</script>",
        "Blue & Co",
        "Cyan",
        "Pink",
    ]);
    settings.poll.question = "Which <b>colour</b>?".into();
    let node = spawn_results(settings);
    let snap = wait_snapshot(node.port, None, |s| s["total"] == 6 && s["final"] == true);
    let counts: Vec<_> = snap["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["option"].as_str().unwrap(), o["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(counts, [("a", 1), ("b", 2), ("c", 0), ("d", 0), ("e", 3)]);
    assert_eq!(
        snap["options"][1]["label"], "<script>alert(1)</script>",
        "JSON carries the text"
    );

    let page = get_as(node.port, "/", None);
    assert_eq!(page.status, 200, "{}", page.text);
    let body = page.body();
    for letter in ["a", "b", "c", "d", "e"] {
        assert!(
            body.contains(&format!(r#"id="opt-{letter}""#)),
            "{letter}: {body}"
        );
    }
    assert!(!body.contains(r#"id="opt-f""#));
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<script>alert"), "{body}");
    assert!(body.contains("Blue &amp; Co") && body.contains("Which &lt;b&gt;colour&lt;/b&gt;?"));
    assert!(body.contains(r#"<span class="n">3 votes</span>"#), "{body}");
    assert!(
        body.contains(r#"<div class="bar w50">"#),
        "e's bar: half: {body}"
    );
    assert!(body.contains(r#"<strong id="total">6</strong>"#));
    assert!(body.contains("final: all queued votes counted"), "{body}");
    // The nodes' shares: capture01 took 2 of the 6.
    assert!(body.contains(r#"<span class="node-name">capture01</span> <span class="node-count">2 votes · 33.3%</span>"#), "{body}");

    // No inline script: the policy allows the node's own file.
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let style = &body[body.find("<style>").unwrap() + 7..body.find("</style>").unwrap()];
    assert!(csp.contains(&voteswarm::headers::csp_hash(style)), "{csp}");
    let js = get_as(node.port, "/results.js", None);
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.body().contains("new EventSource('/events')"));
}

#[test]
fn a_count_hidden_until_the_close_is_shown_only_to_the_operator_then_to_all() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    commit(
        &pg.migrated_url(),
        &[
            vote(1, VoteOption::A, "capture01", 10),
            vote(2, VoteOption::B, "capture01", 10),
            vote(3, VoteOption::B, "capture01", 10),
        ],
    );
    // Long enough for every "before" check on a loaded machine; the test
    // waits for the close by polling, never by sleeping.
    let closes = chrono::Utc::now() + chrono::Duration::seconds(20);
    let mut settings = results_node::settings(pg.url_as(PgRole::Results), &redis.results_url());
    settings.poll.closes = Some(closes);
    settings.poll.results_visible = ResultsVisible::AfterClose;
    settings.results_token = Some(SecretString::from(TOKEN.to_owned()));
    let node = spawn_results(settings);
    let bearer = format!("Bearer {TOKEN}");

    // The operator sees the count...
    let full = wait_snapshot(node.port, Some(&bearer), |s| s["total"] == 3);
    assert_eq!(full["hidden"], false);
    assert_eq!(full["options"][1]["count"], 2);
    assert_eq!(full["final"], false, "the poll is open");
    let csv = get_as(node.port, "/api/results.csv", Some(&bearer));
    assert_eq!(csv.status, 200, "{}", csv.text);
    assert!(csv.body().contains("option,b,Dogs,2\r\n"), "{}", csv.text);
    let series = get_as(node.port, "/api/results/series", Some(&bearer))
        .json()
        .unwrap();
    assert_eq!(series["nodes"][0]["count"], 3, "{series}");

    // ... the public sees none of it: not on the page, the API, the
    // series, the export or the event stream.
    assert!(
        chrono::Utc::now() < closes,
        "the checks must run before the close"
    );
    let public = get_as(node.port, "/api/results", None).json().unwrap();
    assert_eq!(public["hidden"], true, "{public}");
    assert!(
        public.get("total").is_none() && public.get("nodes").is_none(),
        "{public}"
    );
    assert!(public["options"][1].get("count").is_none(), "{public}");
    assert_eq!(public["options"][1]["label"], "Dogs");
    let page = get_as(node.port, "/", None);
    let body = page.body();
    assert!(
        body.contains("The count is hidden until voting closes at"),
        "{body}"
    );
    assert!(
        body.contains(r#"<strong id="total">hidden</strong>"#),
        "{body}"
    );
    assert!(
        !body.contains("2 votes") && !body.contains("capture01"),
        "{body}"
    );
    let series = get_as(node.port, "/api/results/series", None)
        .json()
        .unwrap();
    assert_eq!(series["hidden"], true);
    assert!(series["nodes"].is_null(), "{series}");
    assert!(
        series["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("counted").is_none()),
        "{series}"
    );
    for path in ["/api/results.csv", "/api/results.json"] {
        let r = get_as(node.port, path, None);
        assert_eq!(r.status, 403, "{path}: {}", r.text);
        assert_eq!(r.json().unwrap()["reason"], "results_hidden");
    }
    let (status, _, mut events) = http::open_stream(node.port, "/events", "");
    assert_eq!(status, 200);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        std::io::BufRead::read_line(&mut events, &mut line).unwrap();
    }
    let event: serde_json::Value = serde_json::from_str(&line[6..]).unwrap();
    assert_eq!(event["hidden"], true, "{event}");
    assert!(event.get("total").is_none(), "{event}");
    drop(events);

    // A wrong token is told so, not quietly answered as the public.
    for auth in ["Bearer not-the-token-at-all", "Basic b3A6b3A="] {
        let r = get_as(node.port, "/api/results", Some(auth));
        assert_eq!(r.status, 401, "{auth}: {}", r.text);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert!(!r.body().contains("\"total\""), "{}", r.text);
    }

    // After the close: everyone, and final once settled with nothing
    // queued.
    let after = wait_snapshot(node.port, None, |s| s["hidden"] == false);
    assert_eq!(after["total"], 3, "{after}");
    let settled = wait_snapshot(node.port, None, |s| s["final"] == true);
    assert_eq!(settled["window"]["phase"], "closed");
    assert!(settled["final_at"].is_string(), "{settled}");
    let page = get_as(node.port, "/", None);
    assert!(
        page.body().contains(r#"<strong id="total">3</strong>"#),
        "{}",
        page.text
    );
    // (The class stays in the style sheet; the note itself is gone.)
    assert!(
        !page.body().contains(r#"id="hidden-note""#),
        "{}",
        page.text
    );
    assert!(
        !page.body().contains("The count is hidden"),
        "{}",
        page.text
    );
    assert_eq!(get_as(node.port, "/api/results.csv", None).status, 200);
}

#[test]
fn the_series_has_a_point_a_second_and_each_nodes_share() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    let url = pg.migrated_url();
    commit(
        &url,
        &[
            vote(1, VoteOption::A, "capture01", 10),
            vote(2, VoteOption::B, "capture02", 10),
            vote(3, VoteOption::B, "capture02", 10),
            vote(4, VoteOption::A, "capture02", 10),
        ],
    );
    let node = spawn_results(results_node::settings(
        pg.url_as(PgRole::Results),
        &redis.results_url(),
    ));
    let series = || {
        get_as(node.port, "/api/results/series", None)
            .json()
            .unwrap()
    };
    let mut s = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), || {
            s = series();
            s["points"].as_array().is_some_and(|p| p.len() >= 3)
        }),
        "{s}"
    );
    assert_eq!(s["interval_seconds"], 1);
    let shares: Vec<_> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap(),
                n["count"].as_i64().unwrap(),
                n["percent"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shares, [("capture01", 1, 25.0), ("capture02", 3, 75.0)]);

    // A changed vote taken by another node moves that voter to it, and 3
    // new voters show as 3 counted in the points since.
    let before = s["points"].as_array().unwrap().last().unwrap()["t"]
        .as_i64()
        .unwrap();
    commit(
        &url,
        &[
            vote(1, VoteOption::B, "capture02", 20),
            vote(7, VoteOption::A, "capture01", 20),
            vote(8, VoteOption::A, "capture01", 20),
            vote(9, VoteOption::A, "capture03", 20),
        ],
    );
    let counted_since = |s: &serde_json::Value| -> i64 {
        s["points"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["t"].as_i64().unwrap() > before)
            .map(|p| p["counted"].as_i64().unwrap())
            .sum()
    };
    assert!(
        wait_until(Duration::from_secs(30), || {
            s = series();
            counted_since(&s) == 3
        }),
        "{s}"
    );
    let points = s["points"].as_array().unwrap();
    let ts: Vec<i64> = points.iter().map(|p| p["t"].as_i64().unwrap()).collect();
    assert!(
        ts.windows(2).all(|w| w[0] < w[1]),
        "one point a second, in order: {ts:?}"
    );
    assert!(points.iter().all(|p| p["backlog"] == 0), "{s}");
    let shares: Vec<_> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap(), n["count"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        shares,
        [("capture01", 2), ("capture02", 4), ("capture03", 1)]
    );
    // The event stream carries each new point for the charts.
    let (_, _, mut events) = http::open_stream(node.port, "/events", "");
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        std::io::BufRead::read_line(&mut events, &mut line).unwrap();
    }
    let event: serde_json::Value = serde_json::from_str(&line[6..]).unwrap();
    assert!(event["point"]["t"].as_i64().unwrap() >= before, "{event}");
}

/// A poll that closed an hour ago. No label has a comma: `results export`
/// reads them from OPTIONS, which commas separate; a quote still has to
/// be quoted.
fn closed_poll() -> (Poll, String, String) {
    let opens = chrono::Utc::now() - chrono::Duration::hours(2);
    let closes = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut p = poll(&["Tea", "Coffee \"black\"", "=cmd|' /C calc'!A0"]);
    p.question = "Tea \"or\" coffee?".into();
    p.opens = Some(opens);
    p.closes = Some(closes);
    (p, Poll::format_time(opens), Poll::format_time(closes))
}

fn known_votes() -> Vec<Vote> {
    vec![
        vote(1, VoteOption::A, "capture01", 10),
        vote(2, VoteOption::B, "capture01", 10),
        vote(3, VoteOption::B, "capture02", 10),
        vote(4, VoteOption::C, "capture02", 10),
        vote(5, VoteOption::B, "capture02", 10),
    ]
}

/// The export's CSV for [`known_votes`] and [`closed_poll`], final.
fn expected_csv(opens: &str, closes: &str, final_at: &str, as_of: &str) -> String {
    format!(
        "record,key,label,value\r\n\
         question,,\"Tea \"\"or\"\" coffee?\",\r\n\
         window,opens,,{opens}\r\n\
         window,closes,,{closes}\r\n\
         option,a,Tea,1\r\n\
         option,b,\"Coffee \"\"black\"\"\",3\r\n\
         option,c,'=cmd|' /C calc'!A0,1\r\n\
         total,,,5\r\n\
         node,capture01,,2\r\n\
         node,capture02,,3\r\n\
         backlog,,,0\r\n\
         unreachable_queues,,,0\r\n\
         final,,,true\r\n\
         final_at,,,{final_at}\r\n\
         as_of,,,{as_of}\r\n"
    )
}

/// The value of the CSV row `record` (rows with an empty key and label).
fn csv_value<'a>(csv: &'a str, record: &str) -> &'a str {
    csv.lines()
        .find_map(|l| l.strip_prefix(&format!("{record},,,")))
        .unwrap_or_else(|| panic!("no {record} row: {csv}"))
}

#[test]
fn the_csv_export_is_exact_for_a_known_database() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    commit(&pg.migrated_url(), &known_votes());
    let (p, opens, closes) = closed_poll();
    let mut settings = results_node::settings(pg.url_as(PgRole::Results), &redis.results_url());
    settings.poll = p;
    let node = spawn_results(settings);
    wait_snapshot(node.port, None, |s| s["final"] == true);
    let r = get_as(node.port, "/api/results.csv", None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let csv = r.body();
    let (final_at, as_of) = (csv_value(csv, "final_at"), csv_value(csv, "as_of"));
    assert!(final_at <= as_of && final_at.ends_with('Z'), "{csv}");
    assert_eq!(csv, expected_csv(&opens, &closes, final_at, as_of));

    let json = get_as(node.port, "/api/results.json", None).json().unwrap();
    assert_eq!(json["final"], true);
    assert_eq!(
        json["options"][1],
        serde_json::json!({"option": "b", "label": "Coffee \"black\"", "votes": 3})
    );
    assert_eq!(
        json["nodes"][1],
        serde_json::json!({"node": "capture02", "votes": 3})
    );
    assert_eq!(json["window"]["closes"], closes.as_str());
    assert!(json["not_final"].is_null(), "{json}");
}

#[test]
fn results_export_never_calls_a_count_final_while_votes_are_queued() {
    let pg = PgServer::start();
    let redis = RedisServer::start();
    commit(&pg.migrated_url(), &known_votes());
    let (p, opens, closes) = closed_poll();
    // One vote still queued (stamped before the close: it will count).
    redis.preload(&[vote(6, VoteOption::A, "capture01", 10)]);
    let export = |format: &str| {
        let out = Command::new(common::bin::RESULTS)
            .args(["export", "--database-url", &pg.url_as(PgRole::Results)])
            .args(["--format", format])
            .env("REDIS_URLS", redis.results_url())
            .env("OPTIONS", p.options.join(","))
            .env("QUESTION", &p.question)
            .env("POLL_OPENS", &opens)
            .env("POLL_CLOSES", &closes)
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, csv, err) = export("csv");
    assert_eq!(code, Some(3), "{csv}{err}");
    assert!(err.contains("not final: 1 vote is still queued"), "{err}");
    assert_eq!(csv_value(&csv, "final"), "false", "{csv}");
    assert_eq!(csv_value(&csv, "final_at"), "", "{csv}");
    assert_eq!(csv_value(&csv, "backlog"), "1", "{csv}");
    let (code, json, _) = export("json");
    assert_eq!(code, Some(3));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["final"], false);
    assert_eq!(json["not_final"], "1 vote is still queued");

    // Drained (the test stands in for the worker's XDEL): final now.
    let _: () = redis::cmd("DEL")
        .arg("votes")
        .query(&mut redis.conn())
        .unwrap();
    let (code, csv, err) = export("csv");
    assert_eq!(code, Some(0), "{csv}{err}");
    let as_of = csv_value(&csv, "as_of");
    assert_eq!(csv, expected_csv(&opens, &closes, as_of, as_of));

    // A queue that does not answer is no empty queue.
    let out = Command::new(common::bin::RESULTS)
        .args(["export", "--database-url", &pg.url_as(PgRole::Results)])
        .env(
            "REDIS_URLS",
            format!("redis://127.0.0.1:{}", common::free_port()),
        )
        .env("POLL_CLOSES", &closes)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a vote queue did not answer"));
}

#[test]
fn the_operator_token_is_checked_when_read() {
    let short = voteswarm::results::settings::token_from(Some("short".into()), None)
        .unwrap_err()
        .to_string();
    assert!(short.starts_with("RESULTS_TOKEN: at least 16"), "{short}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    std::fs::write(&f, format!("{TOKEN}\n")).unwrap();
    assert!(
        voteswarm::results::settings::token_from(None, Some(f.clone()))
            .unwrap()
            .is_some()
    );
    let both = voteswarm::results::settings::token_from(Some(TOKEN.into()), Some(f))
        .unwrap_err()
        .to_string();
    assert!(
        both.contains("RESULTS_TOKEN and RESULTS_TOKEN_FILE"),
        "{both}"
    );
}
