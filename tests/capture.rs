//! The capture node against a real Redis: every status code, concurrency,
//! the voter cookie and its clock, Redis outages.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::capture_node::{self, assert_pow_votes, post_with, spawn_on, test_key};
use common::{spawn_capture, RedisServer};
use futures_util::StreamExt;
use voteswarm::capture::settings::CaptureSettings;
use voteswarm::clock;
use voteswarm::config::VoteChanges;
use voteswarm::cookie::VoterCookie;
use voteswarm::vote::{Id128, VoteOption};

#[actix_web::test]
async fn a_form_vote_is_stored_and_answered_303_to_the_page_marking_it() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));

    let (status, page) = node.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("Cats or Dogs?") && page.contains("capture-test"));
    assert!(
        !page.contains(" chosen\""),
        "nothing is marked before a vote"
    );

    let resp = node.vote_form("b", None).await;
    assert_eq!(resp.status, 303, "POST/redirect/GET");
    assert_eq!(resp.headers.get("location").unwrap(), "/");
    assert_eq!(resp.headers.get("cache-control").unwrap(), "no-store");
    let cookie = resp.cookie.clone().expect("a voter cookie is set");
    assert_eq!(
        resp.set_cookie("thanks").as_deref(),
        Some("1"),
        "the one-time thanks"
    );
    assert!(resp.body.is_empty());

    let votes = redis.votes();
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0].option, VoteOption::B);
    assert_eq!(votes[0].node, "capture-test");
    let decoded = VoterCookie::decode(&test_key(), &cookie).expect("our cookie");
    assert_eq!(decoded.voter, votes[0].voter);
    assert_eq!(decoded.last, Some((votes[0].ts, VoteOption::B)));

    // The page the redirect names, as the browser loads it: the choice,
    // thanked once (the thanks cookie is cleared with it), and loading it
    // again (a reload, Back) sends no vote.
    let get = |cookies: String| {
        let client = node.client.clone();
        let url = format!("{}/", node.base);
        async move {
            let mut resp = client
                .get(url)
                .insert_header(("Cookie", cookies))
                .send()
                .await
                .unwrap();
            let cleared = resp.cookie("thanks").map(|c| c.value().to_owned());
            let body = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
            (resp.status().as_u16(), cleared, body)
        }
    };
    let (status, cleared, body) = get(format!("voter={cookie}; thanks=1")).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#"class="b chosen""#), "the choice is marked");
    assert!(body.contains("Thanks! Your vote for Dogs is in."));
    assert_eq!(cleared.as_deref(), Some(""), "the thanks is shown once");
    // The page served later to the same voter remembers the choice.
    let (status, _, body) = get(format!("voter={cookie}")).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#"class="b chosen""#));
    assert!(body.contains("You voted for <strong>Dogs</strong>"));
    assert!(!body.contains("Thanks"));
    assert_eq!(redis.xlen(), 1, "loading the page again sent no vote");
}

#[actix_web::test]
async fn a_form_vote_too_soon_gets_an_html_page_with_lang_a_link_back_and_the_wait() {
    let redis = RedisServer::start();
    let node = spawn_on(&redis, |s| s.min_change_interval = Duration::from_secs(60));
    let first = node.vote_form("a", None).await;
    assert_eq!(first.status, 303);
    let cookie = first.cookie.unwrap();
    let resp = node.vote_form("b", Some(&cookie)).await;
    assert_eq!(resp.status, 429);
    let (h, page) = (resp.headers, resp.body);
    assert_eq!(h.get("content-type").unwrap(), "text/html; charset=utf-8");
    let wait = h.get("retry-after").unwrap().to_str().unwrap().to_owned();
    let wait_secs: u64 = wait.parse().unwrap();
    assert!((1..=60).contains(&wait_secs), "Retry-After {wait}");
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(page.contains(r#"<html lang="en">"#), "{page}");
    assert!(page.contains("<title>Not so fast"), "{page}");
    assert!(page.contains(r#"<a href="/">"#), "a link back: {page}");
    assert!(
        page.contains(&format!("Try again in <strong>{wait} seconds</strong>")),
        "the wait, in words: {page}"
    );
    assert!(
        page.contains(&format!(r#"data-retry-after="{wait}""#)),
        "{page}"
    );
    assert!(page.contains(r#"name="vote" value="b""#), "{page}");
    assert!(page.contains(r#"<script src="/retry.js"></script>"#));
    assert_page_headers(&h, "429 page");
    let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
    let style = &page[page.find("<style>").unwrap() + 7..page.find("</style>").unwrap()];
    assert!(csp.contains(&voteswarm::headers::csp_hash(style)), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let (status, h, script) = node.get_with_headers("/retry.js").await;
    assert_eq!(status, 200);
    assert!(h
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(script.contains("data-retry-after"));

    // The API's answer is the JSON it always was.
    let api = node.vote_api("b", Some(&cookie)).await;
    assert_eq!(api.status, 429);
    assert_eq!(
        api.body,
        format!(
            r#"{{"error":"vote changed too soon; try again in {} s","reason":"too_soon"}}"#,
            api.retry_after.as_deref().unwrap()
        )
    );
    assert_eq!(redis.xlen(), 1);
}

#[actix_web::test]
async fn an_api_vote_gets_a_receipt_matching_the_stream_entry() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let a = node.vote_api("a", None).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let receipt = a.json();
    let votes = redis.votes();
    assert_eq!(votes.len(), 1);
    assert_eq!(receipt["vote_id"], votes[0].vote_id.to_string());
    assert_eq!(receipt["ts"], votes[0].ts);
    assert_eq!(receipt["node"], "capture-test");
    assert_eq!(receipt["option"], "a");
}

#[actix_web::test]
async fn bad_requests_get_their_documented_status_and_store_nothing() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let form = "application/x-www-form-urlencoded";
    let json = "application/json";
    let big = format!("vote=a&pad={}", "x".repeat(5000));
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        ("/", form, b"vote=c".to_vec(), 400),
        ("/", form, b"vote=".to_vec(), 400),
        ("/", form, b"".to_vec(), 400),
        ("/", form, b"color=a".to_vec(), 400),
        ("/", form, b"vote=a&vote=b".to_vec(), 400),
        ("/", form, big.clone().into_bytes(), 413),
        ("/", "text/plain", b"vote=a".to_vec(), 415),
        ("/", json, br#"{"vote":"a"}"#.to_vec(), 415),
        ("/api/vote", json, br#"{"vote":"c"}"#.to_vec(), 400),
        ("/api/vote", json, br#"{"vote":1}"#.to_vec(), 400),
        ("/api/vote", json, br#"{"vote":"a","x":1}"#.to_vec(), 400),
        ("/api/vote", json, br#"{}"#.to_vec(), 400),
        ("/api/vote", json, br#"{"vote":"a""#.to_vec(), 400),
        ("/api/vote", json, vec![0xff, 0xfe], 400),
        ("/api/vote", json, big.into_bytes(), 413),
        ("/api/vote", form, b"vote=a".to_vec(), 415),
    ];
    for (path, ct, body, want) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(40)
            .collect::<String>();
        let a = node.post(path, ct, body, None).await;
        assert_eq!(a.status, want, "{path} {ct} {shown:?}: {}", a.body);
        assert!(a.cookie.is_none(), "no cookie for a refused vote");
        if path == "/api/vote" {
            assert!(a.json()["error"].is_string(), "API errors are JSON");
        } else {
            // The form's refusals are pages in the vote page's look (they
            // were one line of plain text before issue 18).
            assert!(
                a.body.contains(r#"<html lang="en">"#) && a.body.contains(r#"<a href="/">"#),
                "an HTML page with a link back: {}",
                a.body
            );
            assert!(a.body.len() < 8192, "a small page: {}", a.body.len());
        }
    }
    assert_eq!(redis.xlen(), 0, "no refused request stored a vote");
    let (_, metrics) = node.get("/metrics").await;
    for reason in ["bad_option", "malformed", "too_large", "content_type"] {
        assert!(
            metrics.contains(&format!(
                "voteswarm_votes_rejected_total{{reason=\"{reason}\"}}"
            )),
            "metrics count {reason}:\n{metrics}"
        );
    }
}

#[actix_web::test]
async fn a_change_within_the_minimum_interval_gets_429_with_retry_after() {
    let redis = RedisServer::start();
    let node = spawn_on(&redis, |s| s.min_change_interval = Duration::from_secs(60));
    let first = node.vote_api("a", None).await;
    assert_eq!(first.status, 202);
    let cookie = first.cookie.unwrap();
    let change = node.vote_api("b", Some(&cookie)).await;
    assert_eq!(change.status, 429, "{}", change.body);
    let wait: u64 = change.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // Voting the same option again is not a change.
    assert_eq!(node.vote_api("a", Some(&cookie)).await.status, 202);
    let votes = redis.votes();
    assert!(votes.iter().all(|v| v.option == VoteOption::A));
    assert_eq!(votes.len(), 2);
}

#[actix_web::test]
async fn a_change_after_the_minimum_interval_is_accepted() {
    let redis = RedisServer::start();
    let node = spawn_on(&redis, |s| s.min_change_interval = Duration::from_millis(0));
    let first = node.vote_api("a", None).await;
    let change = node.vote_api("b", first.cookie.as_deref()).await;
    assert_eq!(change.status, 202, "{}", change.body);
    let votes = redis.votes();
    assert_eq!(votes.len(), 2);
    assert_eq!(votes[0].voter, votes[1].voter);
    assert!(votes[1].ts > votes[0].ts);
}

/// VOTE_CHANGES=deny, with no minimum interval in the way.
fn deny_changes(s: &mut CaptureSettings) {
    s.vote_changes = VoteChanges::Deny;
    s.min_change_interval = Duration::ZERO;
}

#[actix_web::test]
async fn in_deny_mode_a_changed_vote_gets_409() {
    let redis = RedisServer::start();
    let node = spawn_on(&redis, deny_changes);
    let first = node.vote_form("a", None).await;
    assert_eq!(first.status, 303);
    let cookie = first.cookie.unwrap();
    let change = node.vote_form("b", Some(&cookie)).await;
    assert_eq!(change.status, 409, "{}", change.body);
    assert!(change.body.contains("<title>Your first vote stands"));
    let api = node.vote_api("b", Some(&cookie)).await;
    assert_eq!(api.status, 409);
    assert_eq!(api.json()["reason"], "changes_denied");
    assert_eq!(node.vote_form("a", Some(&cookie)).await.status, 303);
    assert_eq!(redis.xlen(), 2);
}

#[actix_web::test]
async fn a_forged_cookie_is_a_new_voter() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let victim = Id128(0xabcdef);
    let forged = VoterCookie {
        voter: victim,
        last: Some((clock::now_micros(), VoteOption::A)),
    };
    let other_key = voteswarm::capture::settings::cookie_key_from(
        "another-cookie-key-for-forgeries-0123456789",
    )
    .unwrap();
    let good = forged.encode(&test_key());
    let garbage = [
        forged.encode(&other_key.key()),
        format!("{}x", &good[..good.len() - 1]),
        good[..good.len() / 2].to_owned(),
        "v1.00000000000000000000000000abcdef.0.-".to_owned(),
        "%%%".to_owned(),
    ];
    for bad in &garbage {
        let a = node.vote_api("b", Some(bad)).await;
        assert_eq!(a.status, 202, "a bad cookie is not an error: {}", a.body);
        let new = VoterCookie::decode(&test_key(), &a.cookie.unwrap()).unwrap();
        assert_ne!(new.voter, victim);
    }
    let votes = redis.votes();
    assert_eq!(votes.len(), garbage.len());
    assert!(votes.iter().all(|v| v.voter != victim));
    let distinct: HashSet<_> = votes.iter().map(|v| v.voter).collect();
    assert_eq!(distinct.len(), garbage.len(), "each is a fresh voter");
}

#[actix_web::test]
async fn a_voters_second_vote_is_later_even_when_the_cookie_comes_from_the_future() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    // The earlier vote was taken by a node whose clock runs 30 s ahead,
    // within the skew a cookie may carry.
    let ahead = clock::now_micros() + 30_000_000;
    let voter = Id128::random();
    let cookie = VoterCookie {
        voter,
        last: Some((ahead, VoteOption::A)),
    }
    .encode(&test_key());
    // A change must wait until this node's clock is past that vote by the
    // change interval; the same choice again is no change.
    let change = node.vote_api("b", Some(&cookie)).await;
    assert_eq!(change.status, 429, "{}", change.body);
    let wait: u64 = change.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((30..=32).contains(&wait), "Retry-After {wait}");
    let a = node.vote_api("a", Some(&cookie)).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let ts = a.json()["ts"].as_i64().unwrap();
    assert!(ts > ahead, "{ts} must be after {ahead}");
    let next = VoterCookie::decode(&test_key(), &a.cookie.unwrap()).unwrap();
    assert_eq!(next.voter, voter);
    assert_eq!(next.last, Some((ts, VoteOption::A)));
    let votes = redis.votes();
    assert_eq!((votes[0].voter, votes[0].ts), (voter, ts));
}

#[actix_web::test]
async fn ten_thousand_voters_over_256_connections_are_each_stored_once() {
    const VOTERS: usize = 10_000;
    const CONNECTIONS: usize = 256;
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let client = capture_node::client(CONNECTIONS);
    let base = node.base.clone();
    let answers: Vec<_> = futures_util::stream::iter(0..VOTERS)
        .map(|i| {
            let (client, base) = (&client, &base);
            async move {
                let (path, ct, body) = if i % 2 == 0 {
                    (
                        "/api/vote",
                        "application/json",
                        r#"{"vote":"a"}"#.to_owned(),
                    )
                } else {
                    (
                        "/",
                        "application/x-www-form-urlencoded",
                        "vote=b".to_owned(),
                    )
                };
                post_with(client, base, path, ct, body, None, &[]).await
            }
        })
        .buffer_unordered(CONNECTIONS)
        .collect()
        .await;
    let ok = answers
        .iter()
        .filter(|a| a.status == 303 || a.status == 202)
        .count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a.status >= 400)
        .map(|a| a.status)
        .collect();
    assert!(
        refused.iter().all(|s| *s == 503),
        "only 503 may refuse: {refused:?}"
    );
    assert_eq!(ok + refused.len(), VOTERS);
    let votes = redis.votes();
    assert_eq!(votes.len(), ok, "exactly one entry per 2xx");
    let ids: HashSet<_> = votes.iter().map(|v| v.vote_id).collect();
    assert_eq!(ids.len(), votes.len(), "no duplicate vote id");
    let voters: HashSet<_> = votes.iter().map(|v| v.voter).collect();
    assert_eq!(voters.len(), votes.len(), "distinct voters");
    let receipts: HashSet<String> = answers
        .iter()
        .filter(|a| a.status == 202)
        .map(|a| a.json()["vote_id"].as_str().unwrap().to_owned())
        .collect();
    let stored: HashSet<String> = ids.iter().map(|i| i.to_string()).collect();
    assert!(
        receipts.is_subset(&stored),
        "every receipt is in the stream"
    );
    assert!(
        ok >= VOTERS * 9 / 10,
        "a healthy Redis takes nearly all: {ok}"
    );
}

#[actix_web::test]
async fn with_redis_down_votes_get_503_in_time_and_readyz_fails_until_it_returns() {
    let mut redis = RedisServer::start();
    let node = spawn_on(&redis, |s| s.enqueue_timeout = Duration::from_millis(500));
    assert_eq!(node.vote_api("a", None).await.status, 202);
    assert_eq!(node.get("/readyz").await.0, 200);

    redis.stop();
    let started = Instant::now();
    let a = node.vote_api("a", None).await;
    let took = started.elapsed();
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.retry_after.as_deref(), Some("1"));
    // The vote may still reach Redis, so the new voter gets an identity
    // (and no recorded vote), and their retry is the same voter.
    let identity = VoterCookie::decode(&test_key(), a.cookie.as_deref().unwrap()).unwrap();
    assert_eq!(identity.last, None);
    // Generous margin: the bound is the timeout, not the machine's speed.
    assert!(
        took < Duration::from_millis(500 + 2_000),
        "answered after {took:?}"
    );
    assert_eq!(node.get("/readyz").await.0, 503);
    assert_eq!(node.get("/healthz").await.0, 200, "alive while not ready");

    redis.restart();
    let back = common::wait_until_async(Duration::from_secs(10), || async {
        node.get("/readyz").await.0 == 200
    })
    .await;
    assert!(back, "/readyz recovers without restarting capture");
    let retry = node.vote_api("b", a.cookie.as_deref()).await;
    assert_eq!(retry.status, 202);
    assert_eq!(retry.json()["voter"], identity.voter.to_string());
    // The vote taken before the crash survived it (append-only file).
    let votes = redis.votes();
    assert_eq!(votes.len(), 2);
}

#[actix_web::test]
async fn a_hung_redis_gets_503_within_the_enqueue_timeout() {
    let redis = RedisServer::start();
    let node = spawn_on(&redis, |s| s.enqueue_timeout = Duration::from_millis(300));
    assert_eq!(node.vote_api("a", None).await.status, 202);
    redis.pause();
    let started = Instant::now();
    let a = node.vote_api("a", None).await;
    let took = started.elapsed();
    redis.resume();
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(
        took < Duration::from_millis(300 + 2_000),
        "answered after {took:?}"
    );
    let recovered = common::wait_until_async(Duration::from_secs(10), || async {
        node.vote_api("b", None).await.status == 202
    })
    .await;
    assert!(recovered, "votes are accepted again once Redis answers");
}

#[actix_web::test]
async fn metrics_count_accepted_votes_batches_and_latency() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    for o in ["a", "a", "b"] {
        assert_eq!(node.vote_api(o, None).await.status, 202);
    }
    let (status, text) = node.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"voteswarm_votes_accepted_total{option="a"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"voteswarm_votes_accepted_total{option="b"} 1"#));
    assert!(text.contains("voteswarm_enqueue_batch_size_count 3"));
    assert!(text.contains("voteswarm_enqueue_latency_seconds_count 3"));
    assert!(!text.contains(capture_node::TEST_COOKIE_KEY));
}

#[actix_web::test]
async fn a_cross_site_form_post_is_refused_and_a_same_site_one_accepted() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let host = node.base.trim_start_matches("http://").to_owned();
    let cases: Vec<(Vec<(&str, String)>, u16)> = vec![
        (vec![("Sec-Fetch-Site", "cross-site".into())], 403),
        (vec![("Sec-Fetch-Site", "same-site".into())], 403),
        (vec![("Origin", "https://evil.example".into())], 403),
        (vec![("Origin", "null".into())], 403),
        (vec![("Sec-Fetch-Site", "same-origin".into())], 303),
        (vec![("Origin", format!("http://{host}"))], 303),
        (vec![], 303),
    ];
    for (headers, want) in cases {
        let mut req = node
            .client
            .post(format!("{}/", node.base))
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"));
        for (k, v) in &headers {
            req = req.insert_header((*k, v.clone()));
        }
        let resp = req.send_body("vote=a").await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "{headers:?}");
    }
    assert_eq!(redis.xlen(), 3, "only the same-site votes are stored");
}

#[actix_web::test]
async fn over_queue_limit_votes_get_503_and_readyz_fails_until_the_queue_drains() {
    let redis = RedisServer::start();
    let node = spawn_on(&redis, |s| s.queue_limit = 5);
    let mut stored = 0;
    for _ in 0..6 {
        assert_eq!(node.vote_api("a", None).await.status, 202);
        stored += 1;
    }
    // The queue now holds more than the limit: refused, and out of rotation.
    let refused = node.vote_api("a", None).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["reason"], "queue_full");
    assert_eq!(refused.retry_after.as_deref(), Some("1"));
    assert_eq!(node.get("/readyz").await.0, 503);
    assert_eq!(redis.xlen(), stored);
    let (_, metrics) = node.get("/metrics").await;
    assert!(metrics.contains("voteswarm_queue_depth 6"), "{metrics}");

    // A worker drains the queue (XACK + XDEL; here XDEL of every entry).
    let mut conn = redis.conn();
    let ids: Vec<String> = stream_votes_ids(&mut conn);
    let _: i64 = redis::cmd("XDEL")
        .arg("votes")
        .arg(&ids)
        .query(&mut conn)
        .unwrap();
    let back = common::wait_until_async(Duration::from_secs(10), || async {
        node.get("/readyz").await.0 == 200
    })
    .await;
    assert!(back, "the node returns to rotation by itself");
    assert_eq!(node.vote_api("b", None).await.status, 202);
}

fn stream_votes_ids(conn: &mut redis::Connection) -> Vec<String> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("votes")
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap();
    reply.ids.into_iter().map(|e| e.id).collect()
}

#[actix_web::test]
async fn a_request_retried_by_the_edge_is_one_voter_and_one_vote_on_any_node() {
    let redis = RedisServer::start();
    let one = spawn_capture(capture_node::settings(&redis.capture_url()));
    let two = spawn_on(&redis, |s| s.node_id = "capture-other".into());
    let mut receipts = Vec::new();
    for node in [&one, &two] {
        let mut resp = node
            .client
            .post(format!("{}/api/vote", node.base))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("X-Voteswarm-Request", "edge-request-42"))
            .send_body(r#"{"vote":"a"}"#)
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let v: serde_json::Value = resp.json().await.unwrap();
        receipts.push(v);
    }
    assert_eq!(
        receipts[0]["voter"], receipts[1]["voter"],
        "the same voter on both nodes"
    );
    assert_eq!(
        receipts[0]["vote_id"], receipts[1]["vote_id"],
        "the same vote"
    );
    assert_ne!(receipts[0]["node"], receipts[1]["node"]);
}

#[actix_web::test]
async fn when_the_edge_says_new_voters_are_spent_only_returning_voters_vote() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    // A new voter's accepted vote says so, for the edge to count.
    let first = node
        .client
        .post(format!("{}/api/vote", node.base))
        .insert_header(("Content-Type", "application/json"))
        .send_body(r#"{"vote":"a"}"#)
        .await
        .unwrap();
    assert_eq!(first.status().as_u16(), 202);
    assert!(first.headers().contains_key("x-voteswarm-new-voter"));
    let cookie = first.cookie("voter").unwrap().value().to_owned();
    let spent = |cookie: Option<String>| {
        let mut req = node
            .client
            .post(format!("{}/api/vote", node.base))
            .insert_header(("Content-Type", "application/json"))
            .insert_header(("X-Voteswarm-New-Voters-Spent", "1"));
        if let Some(c) = cookie {
            req = req.insert_header(("Cookie", format!("voter={c}")));
        }
        req.send_body(r#"{"vote":"a"}"#)
    };
    // No cookie, or one that does not verify: a new voter, refused.
    for c in [None, Some("garbage".to_owned())] {
        let refused = spent(c.clone()).await.unwrap();
        assert_eq!(refused.status().as_u16(), 429, "cookie {c:?}");
        assert_eq!(refused.headers().get("Retry-After").unwrap(), "600");
    }
    // The returning voter still votes, and is not counted as new.
    let back = spent(Some(cookie)).await.unwrap();
    assert_eq!(back.status().as_u16(), 202);
    assert!(!back.headers().contains_key("x-voteswarm-new-voter"));
    assert_eq!(redis.xlen(), 2, "the refused votes stored nothing");
}

/// 32 random hex digits: a well-formed Idempotency-Key.
fn idem_key() -> String {
    Id128::random().to_string()
}

#[actix_web::test]
async fn the_same_idempotency_key_is_the_same_vote_and_another_vote_under_it_gets_422() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let k = idem_key();
    let key = [("Idempotency-Key", k.as_str())];
    let first = node.vote_api_with("a", None, &key).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let quoted = format!("\"{k}\"");
    for (cookie, headers) in [
        (None, key),
        (None, [("Idempotency-Key", quoted.as_str())]),
        (first.cookie.as_deref(), key),
    ] {
        let again = node.vote_api_with("a", cookie, &headers).await;
        assert_eq!(again.status, 202, "{}", again.body);
        for field in ["vote_id", "voter", "ts", "option"] {
            assert_eq!(again.json()[field], first.json()[field], "{field}");
        }
    }
    for cookie in [None, first.cookie.as_deref()] {
        let other = node.vote_api_with("b", cookie, &key).await;
        assert_eq!(other.status, 422, "{}", other.body);
        assert_eq!(other.json()["reason"], "idempotency_key_reused");
        assert!(other.cookie.is_none(), "a refusal hands out no identity");
    }
    // Another voter's cookie with this key is not this request either.
    let stranger = VoterCookie::new_voter().encode(&test_key());
    assert_eq!(
        node.vote_api_with("a", Some(&stranger), &key).await.status,
        422
    );
    let votes = redis.votes();
    assert_eq!(votes.len(), 1, "one request, stored once");
    assert_eq!(votes[0].option, VoteOption::A);
    assert_eq!(votes[0].vote_id.to_string(), first.json()["vote_id"]);
}

#[actix_web::test]
async fn the_change_policy_holds_whatever_headers_a_vote_carries() {
    let redis = RedisServer::start();
    let deny = spawn_on(&redis, deny_changes);
    let slow = spawn_on(&redis, |s| s.min_change_interval = Duration::from_secs(60));
    for (node, status) in [(&deny, 409), (&slow, 429)] {
        let k = idem_key();
        let first = node
            .vote_api_with("a", None, &[("Idempotency-Key", k.as_str())])
            .await;
        assert_eq!(first.status, 202, "{}", first.body);
        let cookie = first.cookie.as_deref();
        let k2 = idem_key();
        for headers in [
            vec![("Idempotency-Key", k2.as_str())],
            vec![("X-Voteswarm-Request", "edge-1")],
            vec![
                ("Idempotency-Key", k2.as_str()),
                ("X-Voteswarm-Request", "edge-2"),
            ],
        ] {
            let change = node.vote_api_with("b", cookie, &headers).await;
            assert_eq!(change.status, status, "{headers:?}: {}", change.body);
        }
        // The issue's bypass: the same key, cookieless, the other option.
        let replay = node
            .vote_api_with("b", None, &[("Idempotency-Key", k.as_str())])
            .await;
        assert_eq!(replay.status, 422, "{}", replay.body);
    }
    let votes = redis.votes();
    assert_eq!(votes.len(), 2);
    assert!(votes.iter().all(|v| v.option == VoteOption::A));
}

#[actix_web::test]
async fn an_idempotency_key_never_reaches_another_voter() {
    let redis = RedisServer::start();
    // Four nodes, none of which has seen what the others took.
    let [one, two, three, four] =
        ["n1", "n2", "n3", "n4"].map(|n| spawn_on(&redis, |s| s.node_id = n.into()));
    let k = idem_key();
    let key = [("Idempotency-Key", k.as_str())];
    let victim = one.vote_api_with("a", None, &key).await;
    assert_eq!(victim.status, 202);
    let victim_id = victim.json()["voter"].clone();
    // The same key on the other node (no record of it): the retry of the
    // same vote is the same voter and vote...
    let retry = two.vote_api_with("a", None, &key).await;
    assert_eq!(retry.json()["voter"], victim_id);
    assert_eq!(retry.json()["vote_id"], victim.json()["vote_id"]);
    // ...another vote under it is a new voter, not a change of the first;
    let stolen = three.vote_api_with("b", None, &key).await;
    assert_eq!(stolen.status, 202, "{}", stolen.body);
    assert_ne!(stolen.json()["voter"], victim_id);
    // and with a cookie, the cookie's voter votes, whatever the key says.
    let me = VoterCookie::new_voter();
    let mine = four
        .vote_api_with("a", Some(&me.encode(&test_key())), &key)
        .await;
    assert_eq!(mine.json()["voter"], me.voter.to_string());
    let victims: Vec<_> = redis
        .votes()
        .into_iter()
        .filter(|v| v.voter.to_string() == victim_id)
        .collect();
    assert_eq!(victims.len(), 2);
    assert!(victims.iter().all(|v| v.option == VoteOption::A));
}

#[actix_web::test]
async fn a_weak_or_malformed_idempotency_key_gets_400_and_stores_nothing() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let long = "a1".repeat(65);
    for bad in [
        "1",
        "retry-1",
        "00000000000000000000000000000000",
        "0123456789abcdef0123456789abcde",
        "not a key at all, has spaces 123",
        long.as_str(),
        "abcdefghijklmnopqrstuvwxyz+/==0123",
    ] {
        let a = node
            .vote_api_with("a", None, &[("Idempotency-Key", bad)])
            .await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert_eq!(a.json()["reason"], "bad_idempotency_key");
        assert!(a.json()["error"].as_str().unwrap().contains("128 bits"));
    }
    assert_eq!(redis.xlen(), 0);
    for good in [
        "0f8a4c2e-9b1d-4e7a-8c3f-5d6b7a8e9f01",
        "ZTx3q_9-KpLm2RvN8sWb4Y",
        "9f86d081884c7d659a2feaa0c55ad015",
    ] {
        let a = node
            .vote_api_with("a", None, &[("Idempotency-Key", good)])
            .await;
        assert_eq!(a.status, 202, "{good}: {}", a.body);
    }
}

#[actix_web::test]
async fn a_cookie_from_far_in_the_future_is_a_new_voter() {
    let redis = RedisServer::start();
    let node = spawn_on(&redis, |s| s.min_change_interval = Duration::from_secs(60));
    let victim = Id128::random();
    for last_ts in [
        clock::now_micros() + voteswarm::cookie::MAX_CLOCK_SKEW_MICROS + 5_000_000,
        i64::MAX,
    ] {
        let forged = VoterCookie {
            voter: victim,
            last: Some((last_ts, VoteOption::A)),
        }
        .encode(&test_key());
        let a = node.vote_api("b", Some(&forged)).await;
        assert_eq!(a.status, 202, "not a change, so no 429: {}", a.body);
        let ts = a.json()["ts"].as_i64().unwrap();
        assert!(ts <= clock::now_micros(), "stamped by our clock: {ts}");
        let next = VoterCookie::decode(&test_key(), &a.cookie.unwrap()).unwrap();
        assert_ne!(next.voter, victim);
    }
    let votes = redis.votes();
    assert!(votes.iter().all(|v| v.voter != victim));
}

#[actix_web::test]
async fn the_cookie_a_voter_gets_shows_neither_the_voter_nor_the_choice() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    for option in ["a", "b"] {
        let a = node.vote_api(option, None).await;
        let cookie = a.cookie.clone().unwrap();
        let voter = a.json()["voter"].as_str().unwrap().to_owned();
        let ts = a.json()["ts"].to_string();
        for secret in [voter.as_str(), ts.as_str(), &format!(".{option}"), "v1."] {
            assert!(!cookie.contains(secret), "{cookie} shows {secret}");
        }
        let decoded = VoterCookie::decode(&test_key(), &cookie).unwrap();
        assert_eq!(decoded.voter.to_string(), voter);
    }
}

#[actix_web::test]
async fn after_a_key_rotation_voters_keep_their_id_and_get_the_new_key() {
    let redis = RedisServer::start();
    let old = VoterCookie {
        voter: Id128::random(),
        last: Some((clock::now_micros() - 5_000_000, VoteOption::A)),
    };
    let old_cookie = old.encode(&test_key());
    let new_key = "rotated-cookie-key-0123456789-abcdefghijklmnop";
    let node = spawn_on(&redis, |s| {
        s.cookie_key = voteswarm::capture::settings::cookie_key_from(new_key).unwrap();
        s.cookie_keys_previous =
            vec![
                voteswarm::capture::settings::cookie_key_from(capture_node::TEST_COOKIE_KEY)
                    .unwrap(),
            ];
        s.min_change_interval = Duration::from_secs(60);
    });
    // A change 5 s after the old cookie's vote: the same voter, so 429.
    assert_eq!(node.vote_api("b", Some(&old_cookie)).await.status, 429);
    let again = node.vote_api("a", Some(&old_cookie)).await;
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["voter"], old.voter.to_string());
    let resealed = again.cookie.unwrap();
    let new = voteswarm::capture::settings::cookie_key_from(new_key).unwrap();
    assert_eq!(
        VoterCookie::decode(&new.key(), &resealed).map(|c| c.voter),
        Some(old.voter)
    );
    assert_eq!(VoterCookie::decode(&test_key(), &resealed), None);
}

fn assert_page_headers(h: &awc::http::header::HeaderMap, what: &str) {
    let csp = h
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"))
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(
        h.get("x-content-type-options").unwrap(),
        "nosniff",
        "{what}"
    );
    assert_eq!(h.get("referrer-policy").unwrap(), "no-referrer", "{what}");
    assert_eq!(h.get("x-frame-options").unwrap(), "DENY", "{what}");
}

#[actix_web::test]
async fn the_vote_page_forbids_frames_and_allows_only_its_own_style() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let (status, h, page) = node.get_with_headers("/").await;
    assert_eq!(status, 200);
    assert_page_headers(&h, "GET /");
    let csp = h.get("content-security-policy").unwrap().to_str().unwrap();
    let style = &page[page.find("<style>").unwrap() + 7..page.find("</style>").unwrap()];
    assert!(csp.contains(&voteswarm::headers::csp_hash(style)), "{csp}");
    assert!(
        !page.contains("<script"),
        "no script without a proof of work"
    );
    let resp = node.vote_form("a", None).await;
    assert_eq!(resp.status, 303);
    assert_page_headers(&resp.headers, "POST /");
}

#[actix_web::test]
async fn with_a_proof_of_work_a_new_voter_pays_once_and_the_fallback_still_votes() {
    use voteswarm::capture::pow;
    let redis = RedisServer::start();
    let node = spawn_on(&redis, |s| s.pow_bits = 10);
    let (_, _, body) = node.get_with_headers("/api/pow").await;
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["bits"], 10);
    let challenge = j["challenge"].as_str().unwrap().to_owned();
    let (_, h, page) = node.get_with_headers("/").await;
    assert!(
        page.contains(&format!(r#"data-pow="{challenge}" data-pow-bits="10""#)),
        "{page}"
    );
    assert!(page.contains(r#"<script src="/pow.js">"#));
    assert!(h
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let (status, js_headers, js) = node.get_with_headers("/pow.js").await;
    assert_eq!((status, js.as_str()), (200, pow::SCRIPT));
    assert!(js_headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));

    let solution = pow::solve(&challenge, 10);
    let post = |path: String, cookie: Option<String>| {
        let node = &node;
        async move {
            post_with(
                &node.client,
                &node.base,
                &path,
                "application/json",
                r#"{"vote":"a"}"#,
                cookie.as_deref(),
                &[],
            )
            .await
        }
    };
    let paid = post(format!("/api/vote?pow={solution}"), None).await;
    assert_eq!(paid.status, 202, "{}", paid.body);
    let spent = post(format!("/api/vote?pow={solution}"), None).await;
    assert_eq!(
        spent.status, 403,
        "a solution is one new voter: {}",
        spent.body
    );
    assert_eq!(spent.json()["reason"], "pow_refused");
    let work = |s: &str| {
        use sha2::Digest;
        let d = sha2::Sha256::digest(s.as_bytes());
        u32::from_be_bytes([d[0], d[1], d[2], d[3]]).leading_zeros()
    };
    let lazy = (0..)
        .map(|n| format!("{challenge}.{n}"))
        .find(|s| work(s) < 10)
        .unwrap();
    for bad in [
        format!("{challenge}.zz{}", "9".repeat(30)),
        "1.00ff00ff00ff00ff.1".to_owned(),
        lazy,
    ] {
        let refused = post(format!("/api/vote?pow={bad}"), None).await;
        assert_eq!(refused.status, 403, "{bad}: {}", refused.body);
    }
    // No JavaScript: no solution, still a vote (the edge limits these).
    assert_eq!(post("/api/vote".to_owned(), None).await.status, 202);
    // A voter with a cookie is not new: nothing to pay, a bad proof ignored.
    assert_eq!(
        post("/api/vote?pow=junk".to_owned(), paid.cookie.clone())
            .await
            .status,
        202
    );
    let (_, _, metrics) = node.get_with_headers("/metrics").await;
    assert_pow_votes(&metrics, 1, 1);
    assert_eq!(redis.xlen(), 3);
}

#[actix_web::test]
async fn loadgen_solves_the_proof_of_work_for_every_new_voter() {
    let redis = RedisServer::start();
    let node = spawn_on(&redis, |s| {
        s.pow_bits = 8;
        s.min_change_interval = Duration::ZERO;
    });
    let voters = 40;
    let report = voteswarm::loadgen::run(voteswarm::loadgen::LoadgenSettings {
        target: node.base.clone(),
        voters,
        change_fraction: 0.25,
        concurrency: 8,
        rate: None,
        results: None,
        database_url: None,
        report: None,
        final_timeout: Duration::from_secs(30),
        seed: 7,
        max_attempts: 20,
        threads: 1,
        tls: None,
        new_connection_per_voter: false,
        options: None,
        past_close: false,
    })
    .await;
    assert_eq!(report.failed_voters, 0);
    assert_eq!(report.stats.acknowledged, 50);
    let (_, _, metrics) = node.get_with_headers("/metrics").await;
    assert_pow_votes(&metrics, voters, 0);
}

/// A five-option poll whose question and second label are markup.
fn five_options(s: &mut CaptureSettings) {
    s.poll.question = "Which <b>colour</b>?".into();
    s.poll.options = [
        "Red",
        "<script>alert(1)</script>",
        "Blue & Co",
        "Cyan",
        "Pink",
    ]
    .map(String::from)
    .to_vec();
}

#[actix_web::test]
async fn a_five_option_poll_takes_a_to_e_refuses_f_and_escapes_every_label() {
    let redis = RedisServer::start();
    let node = spawn_on(&redis, five_options);
    let form = "application/x-www-form-urlencoded";
    let json = "application/json";
    for (path, ct, body) in [
        ("/", form, "vote=f"),
        ("/api/vote", json, r#"{"vote":"f"}"#),
        ("/", form, "vote=m"),
    ] {
        let a = node.post(path, ct, body.as_bytes().to_vec(), None).await;
        assert_eq!(a.status, 400, "{path} {body}: {}", a.body);
        assert!(!a.body.contains("<script>alert"), "{}", a.body);
    }
    assert_eq!(redis.xlen(), 0, "a letter past the poll stores nothing");

    let e = node.vote_api("e", None).await;
    assert_eq!(e.status, 202, "{}", e.body);
    assert_eq!(e.json()["option"], "e");
    let votes = redis.votes();
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0].option, VoteOption::E);

    let (status, page) = node.get("/").await;
    assert_eq!(status, 200);
    for letter in ["a", "b", "c", "d", "e"] {
        assert!(
            page.contains(&format!(r#"name="vote" value="{letter}""#)),
            "a button for {letter}: {page}"
        );
    }
    assert!(!page.contains(r#"value="f""#), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(page.contains("Blue &amp; Co") && page.contains("Which &lt;b&gt;colour&lt;/b&gt;?"));
}

#[actix_web::test]
async fn before_the_opening_a_vote_gets_403_poll_not_open_and_after_the_close_403_poll_closed() {
    let redis = RedisServer::start();
    let now = chrono::Utc::now();
    let hour = chrono::Duration::hours(1);
    for (opens, closes, reason, says) in [
        (
            now + hour,
            now + hour * 2,
            "poll_not_open",
            "Voting opens at",
        ),
        (
            now - hour * 2,
            now - hour,
            "poll_closed",
            "Voting has closed",
        ),
    ] {
        let node = spawn_on(&redis, |s| {
            s.poll.opens = Some(opens);
            s.poll.closes = Some(closes);
        });
        let api = node.vote_api("a", None).await;
        assert_eq!(api.status, 403, "{reason}: {}", api.body);
        assert_eq!(api.json()["reason"], reason, "{}", api.body);
        assert!(api.json()["error"].is_string(), "{}", api.body);
        let form = node.vote_form("b", None).await;
        assert_eq!(form.status, 403, "{reason}: {}", form.body);
        assert!(
            form.body.contains(r#"<html lang="en">"#),
            "a page: {}",
            form.body
        );
        let (_, page) = node.get("/").await;
        assert!(page.contains(says), "{reason}: {page}");
        let (_, metrics) = node.get("/metrics").await;
        assert!(
            metrics.contains(&format!(
                "voteswarm_votes_rejected_total{{reason=\"{reason}\"}}"
            )),
            "{metrics}"
        );
    }
    assert_eq!(redis.xlen(), 0, "outside the window nothing is stored");
}
