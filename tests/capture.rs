//! The capture node against a real Redis: every status code, concurrency,
//! the voter cookie and its clock, Redis outages.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::capture_node::{self, spawn_capture, stream_votes, test_key};
use common::RedisServer;
use futures_util::StreamExt;
use voteswarm::clock;
use voteswarm::config::VoteChanges;
use voteswarm::cookie::VoterCookie;
use voteswarm::vote::{Id128, VoteOption};

fn xlen(redis: &RedisServer) -> usize {
    redis::cmd("XLEN")
        .arg("votes")
        .query(&mut redis.conn())
        .unwrap()
}

#[actix_web::test]
async fn a_form_vote_is_stored_and_answered_with_the_page_marking_it() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));

    let (status, page) = node.get("/").await;
    assert_eq!(status, 200);
    assert!(page.contains("Cats or Dogs?") && page.contains("capture-test"));
    assert!(
        !page.contains(" chosen\""),
        "nothing is marked before a vote"
    );

    let a = node.vote_form("b", None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.body.contains(r#"class="b chosen""#),
        "the choice is marked"
    );
    assert!(a.body.contains("Your vote for Dogs is in"));
    let cookie = a.cookie.expect("a voter cookie is set");

    let votes = stream_votes(&mut redis.conn(), "votes");
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0].option, VoteOption::B);
    assert_eq!(votes[0].node, "capture-test");
    let decoded = VoterCookie::decode(&test_key(), &cookie).expect("our cookie");
    assert_eq!(decoded.voter, votes[0].voter);
    assert_eq!(decoded.last, Some((votes[0].ts, VoteOption::B)));

    // The page served later to the same voter remembers the choice.
    let mut resp = node
        .client
        .get(format!("{}/", node.base))
        .insert_header(("Cookie", format!("voter={cookie}")))
        .send()
        .await
        .unwrap();
    let body = String::from_utf8(resp.body().await.unwrap().to_vec()).unwrap();
    assert!(body.contains(r#"class="b chosen""#));
    assert!(body.contains("You voted for <strong>Dogs</strong>"));
}

#[actix_web::test]
async fn an_api_vote_gets_a_receipt_matching_the_stream_entry() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let a = node.vote_api("a", None).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let receipt = a.json();
    let votes = stream_votes(&mut redis.conn(), "votes");
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
            assert!(!a.body.is_empty() && a.body.len() < 200, "short plain body");
        }
    }
    assert_eq!(xlen(&redis), 0, "no refused request stored a vote");
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
    let mut s = capture_node::settings(&redis.capture_url());
    s.min_change_interval = Duration::from_secs(60);
    let node = spawn_capture(s);
    let first = node.vote_api("a", None).await;
    assert_eq!(first.status, 202);
    let cookie = first.cookie.unwrap();
    let change = node.vote_api("b", Some(&cookie)).await;
    assert_eq!(change.status, 429, "{}", change.body);
    let wait: u64 = change.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // Voting the same option again is not a change.
    assert_eq!(node.vote_api("a", Some(&cookie)).await.status, 202);
    let votes = stream_votes(&mut redis.conn(), "votes");
    assert!(votes.iter().all(|v| v.option == VoteOption::A));
    assert_eq!(votes.len(), 2);
}

#[actix_web::test]
async fn a_change_after_the_minimum_interval_is_accepted() {
    let redis = RedisServer::start();
    let mut s = capture_node::settings(&redis.capture_url());
    s.min_change_interval = Duration::from_millis(0);
    let node = spawn_capture(s);
    let first = node.vote_api("a", None).await;
    let change = node.vote_api("b", first.cookie.as_deref()).await;
    assert_eq!(change.status, 202, "{}", change.body);
    let votes = stream_votes(&mut redis.conn(), "votes");
    assert_eq!(votes.len(), 2);
    assert_eq!(votes[0].voter, votes[1].voter);
    assert!(votes[1].ts > votes[0].ts);
}

#[actix_web::test]
async fn in_deny_mode_a_changed_vote_gets_409() {
    let redis = RedisServer::start();
    let mut s = capture_node::settings(&redis.capture_url());
    s.vote_changes = VoteChanges::Deny;
    s.min_change_interval = Duration::ZERO;
    let node = spawn_capture(s);
    let first = node.vote_form("a", None).await;
    assert_eq!(first.status, 200);
    let cookie = first.cookie.unwrap();
    let change = node.vote_form("b", Some(&cookie)).await;
    assert_eq!(change.status, 409, "{}", change.body);
    let api = node.vote_api("b", Some(&cookie)).await;
    assert_eq!(api.status, 409);
    assert_eq!(api.json()["reason"], "changes_denied");
    assert_eq!(node.vote_form("a", Some(&cookie)).await.status, 200);
    assert_eq!(xlen(&redis), 2);
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
    let other_key = voteswarm::config::cookie_key_from(&"another-key-".repeat(4)).unwrap();
    let good = forged.encode(&test_key());
    let garbage = [
        forged.encode(other_key.expose()),
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
    let votes = stream_votes(&mut redis.conn(), "votes");
    assert_eq!(votes.len(), garbage.len());
    assert!(votes.iter().all(|v| v.voter != victim));
    let distinct: HashSet<_> = votes.iter().map(|v| v.voter).collect();
    assert_eq!(distinct.len(), garbage.len(), "each is a fresh voter");
}

#[actix_web::test]
async fn a_voters_second_vote_is_later_even_when_the_cookie_comes_from_the_future() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    // The earlier vote was taken by a node whose clock runs 10 minutes ahead.
    let ahead = clock::now_micros() + 600_000_000;
    let voter = Id128::random();
    let cookie = VoterCookie {
        voter,
        last: Some((ahead, VoteOption::A)),
    }
    .encode(&test_key());
    let a = node.vote_api("b", Some(&cookie)).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let ts = a.json()["ts"].as_i64().unwrap();
    assert!(ts > ahead, "{ts} must be after {ahead}");
    let next = VoterCookie::decode(&test_key(), &a.cookie.unwrap()).unwrap();
    assert_eq!(next.voter, voter);
    assert_eq!(next.last, Some((ts, VoteOption::B)));
    let votes = stream_votes(&mut redis.conn(), "votes");
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
                capture_node::post_to(client, base, path, ct, body, None).await
            }
        })
        .buffer_unordered(CONNECTIONS)
        .collect()
        .await;
    let ok = answers
        .iter()
        .filter(|a| a.status == 200 || a.status == 202)
        .count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a.status >= 300)
        .map(|a| a.status)
        .collect();
    assert!(
        refused.iter().all(|s| *s == 503),
        "only 503 may refuse: {refused:?}"
    );
    assert_eq!(ok + refused.len(), VOTERS);
    let votes = stream_votes(&mut redis.conn(), "votes");
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
    let mut s = capture_node::settings(&redis.capture_url());
    s.enqueue_timeout = Duration::from_millis(500);
    let node = spawn_capture(s);
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
    let votes = stream_votes(&mut redis.conn(), "votes");
    assert_eq!(votes.len(), 2);
}

#[actix_web::test]
async fn a_hung_redis_gets_503_within_the_enqueue_timeout() {
    let redis = RedisServer::start();
    let mut s = capture_node::settings(&redis.capture_url());
    s.enqueue_timeout = Duration::from_millis(300);
    let node = spawn_capture(s);
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
        (vec![("Sec-Fetch-Site", "same-origin".into())], 200),
        (vec![("Origin", format!("http://{host}"))], 200),
        (vec![], 200),
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
    assert_eq!(xlen(&redis), 3, "only the same-site votes are stored");
}

#[actix_web::test]
async fn over_queue_limit_votes_get_503_and_readyz_fails_until_the_queue_drains() {
    let redis = RedisServer::start();
    let mut s = capture_node::settings(&redis.capture_url());
    s.queue_limit = 5;
    let node = spawn_capture(s);
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
    assert_eq!(xlen(&redis), stored);
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
    let mut other = capture_node::settings(&redis.capture_url());
    other.node_id = "capture-other".into();
    let two = spawn_capture(other);
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
    assert_eq!(xlen(&redis), 2, "the refused votes stored nothing");
}
