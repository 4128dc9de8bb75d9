//! The nodes link none of the tools' dependencies: without the `tools`
//! feature (`cargo build --no-default-features`, as the Dockerfile builds
//! capture, worker and results) the crate's normal dependency tree holds
//! no HTTP client, progress bar, signal handler, temp files or TLS stack.

use std::process::Command;

/// Only the tools (`loadgen`, `cluster`) use these.
const TOOLS_ONLY: &[&str] = &[
    "awc",
    "indicatif",
    "signal-hook",
    "tempfile",
    "rcgen",
    "rustls",
    "tokio-rustls",
    "rustls-native-certs",
    "which",
    "hdrhistogram",
];

fn crates_in_tree(features: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let args = "tree --locked --offline -e normal --prefix none --format {p} -p voteswarm";
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args.split(' ').chain(features.iter().copied()))
        .output()
        .expect("cargo tree runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo tree failed: {err}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_nodes_link_none_of_the_tools_dependencies() {
    let nodes = crates_in_tree(&["--no-default-features"]);
    assert!(nodes.iter().any(|c| c == "actix-web"), "{nodes:?}");
    let found: Vec<_> = TOOLS_ONLY
        .iter()
        .filter(|t| nodes.iter().any(|c| c == *t))
        .collect();
    assert!(found.is_empty(), "the nodes link tools' crates: {found:?}");
    // The check sees them when they are there.
    let tools = crates_in_tree(&[]);
    for t in TOOLS_ONLY {
        assert!(tools.iter().any(|c| c == t), "{t} not in the tools' tree");
    }
}
