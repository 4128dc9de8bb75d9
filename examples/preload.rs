//! The worker benchmark's backlog: appends `TOTAL` votes to the `votes`
//! stream of each Redis in `REDIS_URLS`, as capture nodes would (pipelined
//! `XADD`s), and writes the table the worker must end with as CSV (for the
//! `COPY` baseline and for checking the result).
//!
//! A fraction `CHANGE_FRACTION` of the voters votes twice; the change goes
//! to a queue picked at random, independently of the first vote's, so a
//! voter's two votes are often drained from different queues in either
//! order.
//!
//! `REDIS_URLS=redis://127.0.0.1:7001,redis://127.0.0.1:7002 TOTAL=1000000 \
//!  CHANGE_FRACTION=0.1 EXPECTED_CSV=/tmp/final.csv \
//!  cargo run --release --example preload`

use std::collections::HashMap;
use std::io::Write;

use rand::{Rng, SeedableRng};
use voteswarm::vote::{Id128, Vote, VoteOption};

/// XADDs per pipeline: one round trip each, as capture's batches are.
const PIPELINE: usize = 1000;
/// Timestamps start here (microseconds, November 2026) and each vote moves
/// the clock on by a random step, so they look like a real burst.
const START_TS: i64 = 1_795_000_000_000_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("preload: {name} is malformed: {v:?}");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn main() {
    let urls: Vec<String> = std::env::var("REDIS_URLS")
        .unwrap_or_default()
        .split(',')
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.is_empty() {
        eprintln!("preload: REDIS_URLS is required");
        std::process::exit(2);
    }
    let total: usize = env_or("TOTAL", 1_000_000);
    let change: f64 = env_or("CHANGE_FRACTION", 0.1);
    let seed: u64 = env_or("SEED", 1);
    let key = std::env::var("STREAM_KEY").unwrap_or_else(|_| "votes".into());
    let csv = std::env::var("EXPECTED_CSV").ok();

    // voters + voters * change = total.
    let voters = ((total as f64) / (1.0 + change)).round() as usize;
    let changers = total - voters;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut streams: Vec<Vec<Vote>> = vec![Vec::new(); urls.len()];
    let mut ts = START_TS;
    let mut ids: Vec<Id128> = Vec::with_capacity(voters);
    let mut stamp = |rng: &mut rand::rngs::StdRng, voter: Id128| {
        ts += rng.random_range(1..20);
        let node = rng.random_range(0..urls.len());
        let option = if rng.random_bool(0.5) {
            VoteOption::A
        } else {
            VoteOption::B
        };
        (
            node,
            Vote {
                vote_id: Id128(rng.random()),
                voter,
                option,
                ts,
                node: format!("capture{:02}", node + 1),
            },
        )
    };
    for _ in 0..voters {
        let voter = Id128(rng.random());
        ids.push(voter);
        let (n, v) = stamp(&mut rng, voter);
        streams[n].push(v);
    }
    // The changes come later (greater ts), from the first `changers` voters.
    for voter in ids.iter().take(changers) {
        let (n, v) = stamp(&mut rng, *voter);
        streams[n].push(v);
    }

    if let Some(path) = csv {
        let mut last: HashMap<Id128, &Vote> = HashMap::with_capacity(voters);
        for v in streams.iter().flatten() {
            let e = last.entry(v.voter).or_insert(v);
            if v.order_key() > e.order_key() {
                *e = v;
            }
        }
        let file = std::fs::File::create(&path).unwrap_or_else(|e| {
            eprintln!("preload: cannot write {path}: {e}");
            std::process::exit(1)
        });
        let mut out = std::io::BufWriter::new(file);
        for v in last.values() {
            writeln!(
                out,
                "{},{},{},{},{}",
                v.voter, v.option, v.ts, v.vote_id, v.node
            )
            .expect("write csv");
        }
        out.flush().expect("write csv");
    }

    for (url, votes) in urls.iter().zip(&streams) {
        let client = redis::Client::open(url.as_str()).expect("a Redis URL");
        let mut conn = client.get_connection().unwrap_or_else(|e| {
            eprintln!("preload: {url}: {e}");
            std::process::exit(1)
        });
        for chunk in votes.chunks(PIPELINE) {
            let mut pipe = redis::pipe();
            for v in chunk {
                let cmd = pipe.cmd("XADD").arg(&key).arg("*");
                for (k, val) in v.to_fields() {
                    cmd.arg(k).arg(val);
                }
                cmd.ignore();
            }
            pipe.query::<()>(&mut conn).expect("XADD pipeline");
        }
    }
    eprintln!(
        "preload: {total} votes from {voters} voters ({changers} changed once) across {} queues",
        urls.len()
    );
}

// The same allocator as the nodes, so the comparison is of the code alone.
voteswarm::use_mimalloc!();
