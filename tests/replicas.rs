//! `ACK_REPLICAS`: capture against a real Redis primary with a real
//! replica (`--replicaof`). A `2xx` means the replica has the vote too; a
//! replica down means `503` and a failing `/readyz`, until it is back.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::capture_node::{self, post_with, spawn_on};
use common::{http, wait_until, RedisServer};

const ENQUEUE_TIMEOUT: Duration = Duration::from_millis(500);

fn vote_ids(redis: &RedisServer) -> HashSet<String> {
    redis
        .votes()
        .into_iter()
        .map(|v| v.vote_id.to_string())
        .collect()
}

/// `voteswarm_votes_rejected_total{reason}`, 0 when absent.
fn rejected(metrics: &str, reason: &str) -> u64 {
    let line = format!(r#"voteswarm_votes_rejected_total{{reason="{reason}"}} "#);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[actix_web::test]
async fn with_ack_replicas_a_2xx_is_on_the_replica_and_a_replica_down_is_503_until_it_returns() {
    let primary = RedisServer::start();
    let mut replica = RedisServer::start_replica_of(&primary);
    let node = spawn_on(&primary, |s| {
        s.ack_replicas = 1;
        s.enqueue_timeout = ENQUEUE_TIMEOUT;
    });
    // A fresh connection per poll: the test's pooled ones sit idle while
    // the replica restarts, and the node may close them just as they are
    // reused.
    let ready = || http::status(node.port, "/readyz") == Some(200);
    assert!(
        wait_until(Duration::from_secs(10), ready),
        "ready with its replica in sync"
    );

    // Every vote answered 2xx is on the replica the moment it is answered:
    // no waiting here, that is the promise.
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let a = node
            .vote_api(if i % 2 == 0 { "a" } else { "b" }, None)
            .await;
        assert_eq!(a.status, 202, "{}", a.body);
        let id = a.json()["vote_id"].as_str().unwrap().to_owned();
        assert!(
            vote_ids(&replica).contains(&id),
            "vote {id} answered 202 is on the replica"
        );
        acknowledged.push(id);
    }

    replica.stop();
    let not_ready = || http::status(node.port, "/readyz") == Some(503);
    assert!(
        wait_until(Duration::from_secs(10), not_ready),
        "/readyz fails while no replica is in sync"
    );
    let why = http::get(node.port, "/readyz").expect("readyz answers");
    assert!(why.body().contains("replicas"), "{}", why.body());
    let mut refused = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let a = node.vote_api("a", None).await;
        let took = started.elapsed();
        assert_eq!(a.status, 503, "no 2xx without a replica: {}", a.body);
        let reason = a.json()["reason"].as_str().unwrap().to_owned();
        assert!(
            ["replicas", "timeout"].contains(&reason.as_str()),
            "{}",
            a.body
        );
        assert!(a.retry_after.is_some());
        // Generous margin: the bound is the timeout, not the machine's speed.
        assert!(
            took < ENQUEUE_TIMEOUT + Duration::from_secs(2),
            "answered after {took:?}"
        );
        refused.push(a);
    }
    // The writer answers a little before the voter's own timeout, so the
    // refusals say why; a starved machine may still see the timeout first.
    let metrics = http::metrics(node.port);
    let (replicas, timeouts) = (
        rejected(&metrics, "replicas"),
        rejected(&metrics, "timeout"),
    );
    assert_eq!(replicas + timeouts, 5, "{metrics}");
    assert!(replicas > 0, "refused for want of a replica:\n{metrics}");
    // Refused, yet stored on the primary: the voter's retry is the same
    // voter (docs/PROTOCOL.md), so the count takes it once.
    assert_eq!(primary.xlen(), 25);

    replica.restart();
    assert!(replica.wait_in_sync(), "the replica catches up");
    assert!(
        wait_until(Duration::from_secs(10), ready),
        "ready again without restarting capture"
    );
    // The refused voter votes again until a vote is taken: on a busy
    // machine the first batches after the resync may still miss the
    // budget, and are refused like the others. A new client: the pooled
    // connections idled through the outage.
    let fresh = capture_node::client(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let retry = loop {
        let retry = post_with(
            &fresh,
            &node.base,
            "/api/vote",
            "application/json",
            r#"{"vote":"a"}"#,
            refused[0].cookie.as_deref(),
            &[],
        )
        .await;
        if retry.status != 503 || Instant::now() >= deadline {
            break retry;
        }
    };
    assert_eq!(retry.status, 202, "votes taken again: {}", retry.body);
    assert_eq!(
        retry.json()["voter"],
        primary.votes()[20].voter.to_string(),
        "the retry is the refused vote's voter"
    );
    let on_replica = vote_ids(&replica);
    acknowledged.push(retry.json()["vote_id"].as_str().unwrap().to_owned());
    for id in &acknowledged {
        assert!(
            on_replica.contains(id),
            "acknowledged vote {id} is on the replica"
        );
    }
    assert_eq!(
        on_replica.len(),
        primary.xlen(),
        "the replica holds what the primary does"
    );
}

/// `XADD`s in the append-only files under `dir` (a replica's: every
/// write it received from its primary, in RESP).
fn xadds_in_aof(dir: &std::path::Path) -> usize {
    let Ok(files) = std::fs::read_dir(dir.join("appendonlydir")) else {
        return 0;
    };
    files
        .filter_map(|f| std::fs::read(f.ok()?.path()).ok())
        .map(|bytes| {
            let command = b"\r\nXADD\r\n$";
            bytes
                .windows(command.len())
                .filter(|w| w == command)
                .count()
        })
        .sum()
}

#[test]
fn a_rehearsal_with_a_replica_per_queue_is_exact_and_every_acknowledged_vote_reached_a_replica() {
    common::require_program("redis-server", "redis-server");
    common::require_program("haproxy", "haproxy");
    let (dir, report) = common::cluster_proc::rehearse(
        "vs-replicas-",
        &[
            "--capture",
            "2",
            "--workers",
            "1",
            "--queue-replicas",
            "1",
            "--voters",
            "3000",
            "--change-fraction",
            "0.1",
            "--concurrency",
            "32",
            "--final-timeout-secs",
            "240",
        ],
    );
    let json = common::cluster_proc::json_report(&dir.path().join("report.json"));
    assert!(json.passed, "{report}");
    assert_eq!(json.acknowledged, 3_300, "{report}");
    let data = dir.path().join("data");
    let replicated =
        xadds_in_aof(&data.join("redis01-r1")) + xadds_in_aof(&data.join("redis02-r1"));
    assert!(
        replicated >= json.acknowledged as usize,
        "{replicated} votes reached a replica, {} were acknowledged",
        json.acknowledged
    );
}
