//! What the binaries and the deploy files must never show: secret-bearing
//! values in `--help`, a database's or Redis's address and error text in a
//! public answer, the demo's ports on every interface.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{capture_node, free_port, http, results_node, spawn_capture, spawn_results};
use common::{wait_until, RedisServer};

/// A password that must not appear anywhere public.
const PASSWORD: &str = "hunter2-secret-pw";

#[test]
fn no_binarys_help_shows_a_secret_bearing_value() {
    let url = format!("postgres://vs:{PASSWORD}@127.0.0.1:5432/vs");
    let redis = format!("redis://:{PASSWORD}@127.0.0.1:6379");
    let dns = format!("redis://:{PASSWORD}@tasks.redis:6379");
    let key = format!("{PASSWORD}-cookie-key-0123456789abcdef");
    for bin in [
        env!("CARGO_BIN_EXE_capture"),
        env!("CARGO_BIN_EXE_worker"),
        env!("CARGO_BIN_EXE_results"),
        env!("CARGO_BIN_EXE_loadgen"),
        env!("CARGO_BIN_EXE_cluster"),
    ] {
        let out = Command::new(bin)
            .arg("--help")
            .env("DATABASE_URL", &url)
            .env("REDIS_URL", &redis)
            .env("REDIS_URLS", &redis)
            .env("REDIS_DNS", &dns)
            .env("COOKIE_KEY", &key)
            .env("COOKIE_KEYS_PREVIOUS", &key)
            .output()
            .expect("run --help");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{bin} --help failed: {text}");
        assert!(text.len() > 100, "{bin}: no help? {text}");
        assert!(
            !text.contains(PASSWORD),
            "{bin} --help shows a secret:\n{text}"
        );
    }
}

#[test]
fn a_database_that_does_not_answer_is_unavailable_to_the_public_and_detailed_in_the_log() {
    // A port nothing listens on: the error text would name it.
    let port = free_port();
    let node = spawn_results(results_node::settings(
        format!("postgres://vs:{PASSWORD}@127.0.0.1:{port}/vs"),
        "redis://127.0.0.1:1",
    ));
    let get = |path: &str| http::get(node.port, path).expect("results answers");
    let mut body = serde_json::Value::Null;
    // The first snapshot says "no tally yet"; wait for a failed tally.
    wait_until(Duration::from_secs(30), || {
        body = get("/api/results").json().expect("JSON");
        body["error"] != "no tally yet"
    });
    let error = body["error"].as_str().expect("an error is reported");
    assert!(error.contains("unavailable"), "{body}");
    for text in [
        body.to_string(),
        get("/").body().to_owned(),
        get("/readyz").body().to_owned(),
    ] {
        for leak in [
            PASSWORD,
            &port.to_string(),
            "127.0.0.1",
            "connection",
            "database:",
        ] {
            assert!(!text.contains(leak), "shows {leak:?}: {text}");
        }
    }
}

#[actix_web::test]
async fn a_vote_refused_for_redis_says_unavailable_and_not_why() {
    let redis = RedisServer::start();
    let node = spawn_capture(capture_node::settings(&redis.capture_url()));
    let url = redis.capture_url();
    let port = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    drop(redis);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = node.vote_api("a", None).await;
        if a.status == 503 && a.json()["reason"] == "unavailable" {
            let error = a.json()["error"].as_str().unwrap().to_owned();
            assert!(error.contains("unavailable"), "{error}");
            for leak in [port.as_str(), "127.0.0.1", "refused", "redis"] {
                assert!(
                    !error.to_lowercase().contains(leak),
                    "shows {leak:?}: {error}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never refused as unavailable: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_compose_demo_publishes_on_loopback_only_by_default() {
    let compose =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
            .unwrap();
    let mut published = 0;
    let mut in_ports = false;
    for line in compose.lines() {
        let t = line.trim();
        if t.starts_with("ports:") {
            in_ports = true;
            continue;
        }
        if in_ports && t.starts_with("- ") {
            published += 1;
            assert!(
                t.starts_with(r#"- "${VOTESWARM_BIND:-127.0.0.1}:"#),
                "a port published beyond loopback by default: {t}"
            );
        } else {
            in_ports = false;
        }
    }
    assert!(published >= 2, "the vote and results ports are published");
    assert!(
        compose.contains("ALLOW_DEMO_COOKIE_KEY"),
        "the demo says it uses the demo key"
    );
    let key = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/compose/secrets/cookie_key"
    ))
    .unwrap();
    assert!(key.contains(voteswarm::capture::settings::DEMO_KEY_MARKER));
}
