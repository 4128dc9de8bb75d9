//! The `capture` binary as an operator runs it: configuration errors, and
//! SIGTERM with votes in flight.

mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::capture_node::{self, post_with, TEST_COOKIE_KEY};
use common::process::{clean_command, exit_and_stderr as one_line_error};
use common::{bin, free_port, http, wait_until, wait_until_async, Proc, RedisServer};

fn capture_cmd() -> Command {
    clean_command(bin::CAPTURE)
}

#[test]
fn start_up_refuses_the_demo_key_unless_allowed_and_a_low_entropy_key_with_one_line() {
    let demo = include_str!("../compose/secrets/cookie_key").trim();
    let weak = "ab".repeat(24);
    for (key, why) in [
        (demo, "is marked DEMO-ONLY"),
        (weak.as_str(), "looks low-entropy"),
    ] {
        let (code, err) = one_line_error(capture_cmd().env("COOKIE_KEY", key));
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(why), "{err}");
        assert!(!err.contains(key), "the key itself is not printed: {err}");
    }
    // Allowed for a demo, the key passes the key checks: the next problem
    // reported is another setting's.
    let (code, err) = one_line_error(
        capture_cmd()
            .env("COOKIE_KEY", demo)
            .env("ALLOW_DEMO_COOKIE_KEY", "true")
            .env("HTTP_WORKERS", "0"),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("HTTP_WORKERS"), "{err}");
}

#[test]
fn start_up_fails_with_one_line_naming_a_missing_or_short_cookie_key() {
    let (code, err) = one_line_error(&mut capture_cmd());
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("COOKIE_KEY"), "{err}");

    let (code, err) = one_line_error(capture_cmd().env("COOKIE_KEY", "short"));
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("COOKIE_KEY is too short"), "{err}");
    assert!(!err.contains("short\""), "the key itself is not printed");

    let (code, err) = one_line_error(
        capture_cmd()
            .env("COOKIE_KEY", TEST_COOKIE_KEY)
            .env("MIN_CHANGE_INTERVAL_MS", "soon"),
    );
    assert_eq!(code, 2);
    assert!(
        err.lines()
            .next()
            .unwrap()
            .contains("MIN_CHANGE_INTERVAL_MS"),
        "{err}"
    );

    let (code, err) = one_line_error(
        capture_cmd()
            .env("COOKIE_KEY", TEST_COOKIE_KEY)
            .env("HTTP_WORKERS", "0"),
    );
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("HTTP_WORKERS must be 1 to"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let (code, err) =
        one_line_error(capture_cmd().env("COOKIE_KEY_FILE", dir.path().join("missing")));
    assert_eq!(code, 2);
    assert!(err.contains("COOKIE_KEY_FILE: cannot read"), "{err}");
}

#[actix_web::test]
async fn on_sigterm_every_vote_already_taken_is_answered_and_stored() {
    const IN_FLIGHT: usize = 100;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("cookie.key");
    std::fs::write(&key_file, format!("{TEST_COOKIE_KEY}\n")).unwrap();
    let port = free_port();
    let mut proc = Proc::spawn(
        capture_cmd()
            .env("LISTEN", format!("127.0.0.1:{port}"))
            .env("REDIS_URL", redis.capture_url())
            .env("COOKIE_KEY_FILE", &key_file)
            .env("NODE_ID", "sigterm-node")
            // Long enough that only Redis' answer ends these requests.
            .env("ENQUEUE_TIMEOUT_MS", "30000")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = capture_node::client(IN_FLIGHT + 8);
    let up = wait_until_async(Duration::from_secs(20), || async {
        // Any answer: the node is up.
        http::get_async(port, "/healthz")
            .await
            .is_some_and(|r| r.status != 0)
    })
    .await;
    assert!(up, "capture did not come up");
    let first = post_with(
        &client,
        &base,
        "/api/vote",
        "application/json",
        r#"{"vote":"a"}"#,
        None,
        &[],
    )
    .await;
    assert_eq!(first.status, 202);

    // Hang Redis so the next votes are taken but not yet answered.
    redis.pause();
    let mut pending = Vec::new();
    for i in 0..IN_FLIGHT {
        let (client, base) = (client.clone(), base.clone());
        pending.push(actix_web::rt::spawn(async move {
            let body = if i % 2 == 0 {
                r#"{"vote":"a"}"#
            } else {
                r#"{"vote":"b"}"#
            };
            post_with(
                &client,
                &base,
                "/api/vote",
                "application/json",
                body,
                None,
                &[],
            )
            .await
        }));
    }
    let all_waiting = wait_until_async(Duration::from_secs(20), || async {
        let Some(r) = http::get_async(port, "/metrics").await else {
            return false;
        };
        let text = r.body();
        // Each writer has one pipeline hung in Redis; the rest wait.
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0)
        };
        gauge("voteswarm_writer_pending ") + gauge("voteswarm_writer_in_flight ") == IN_FLIGHT
    })
    .await;
    assert!(all_waiting, "votes did not reach the writer");

    proc.signal(libc::SIGTERM);
    let closed = wait_until(Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert!(closed, "capture still accepts connections after SIGTERM");
    redis.resume();

    let mut acked = HashSet::new();
    for p in pending {
        let a = p.await.unwrap();
        assert_eq!(
            a.status, 202,
            "a vote taken before SIGTERM is answered: {}",
            a.body
        );
        acked.insert(a.json()["vote_id"].as_str().unwrap().to_owned());
    }
    let exited = proc.wait_exit(Duration::from_secs(20));
    assert!(exited.is_some(), "capture did not exit");
    assert_eq!(exited.unwrap().code(), Some(0));

    let stored: HashSet<String> = redis
        .votes()
        .iter()
        .map(|v| v.vote_id.to_string())
        .collect();
    assert_eq!(acked.len(), IN_FLIGHT);
    assert!(
        acked.is_subset(&stored),
        "every acknowledged vote is in the stream"
    );
    assert_eq!(stored.len(), IN_FLIGHT + 1);
}
