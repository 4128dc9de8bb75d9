# voteswarm — the two commands that matter: `make demo` and `make test`.
# Each installs what is missing first (scripts/install-deps.sh).

CARGO ?= cargo
SHELL := /bin/bash

.PHONY: all deps test demo build release swarm-up swarm-down bench bench-capture bench-worker bench-latency bench-e2e profile chaos soak validate-deploy fuzz clean

all: build

deps:
	@scripts/install-deps.sh test

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release --bins --examples

## make test: installs what is missing, then format check, clippy, all tests.
## The release binaries first: tests/swarm.rs builds the image from them.
test: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	# The nodes as their images build them: without the tools.
	$(CARGO) clippy --locked --no-default-features --lib --bins -- -D warnings
	$(CARGO) build --locked --release --bins
	$(CARGO) test --locked --no-fail-fast
	$(CARGO) test --locked --package xtask
	shellcheck scripts/*.sh .ci/run
	scripts/validate-deploy.sh

## make swarm-up: the shipped swarm/stack.yml on a real three-node swarm on
## this machine (docker-in-docker, offline; scripts/swarm.sh): prints the
## vote, results and database URLs and the manager's DOCKER_HOST.
## VIA=services uses swarm/create-services.sh instead of the stack.
## make swarm-down removes all of it. Both are safe to run twice.
VIA ?= stack
swarm-up: deps
	$(CARGO) build --locked --release --bins
	scripts/swarm.sh up --via $(VIA)

swarm-down:
	scripts/swarm.sh down

## make validate-deploy: the deploy files' static checks alone.
validate-deploy: deps
	scripts/validate-deploy.sh

## make fuzz: each cargo-fuzz target for FUZZ_SECONDS (default 60).
## cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable
## toolchain accept them.
FUZZ_SECONDS ?= 60
fuzz: deps
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	for t in cookie vote_body stream_entry xread_reply; do \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## make demo: the whole system on this machine: vote at
## http://localhost:8080/, watch at http://localhost:8081/. Ctrl-C stops it;
## the votes stay in .demo/ for the next run.
DEMO_ARGS ?= --capture 3 --workers 2 --port 8080 --results-port 8081
demo:
	@scripts/install-deps.sh demo
	$(CARGO) build --locked --release --bins
	target/release/cluster up $(DEMO_ARGS) --bind 0.0.0.0 --data-dir .demo

## make bench: every benchmark (cargo xtask, xtask/); each writes its
## section of BENCHMARKS.md.
## Sizes, on the command line or in the environment: bench-capture
## DURATION=10 WARMUP=2 LOADGEN_CONCURRENCY=256 EDGE_VOTERS=20000 (EDGE_ONLY=1:
## only the edge over HTTP/HTTPS); bench-worker
## WORKER_COUNTS="1 2" TOTALS="1000000 5000000" (some 7 minutes);
## bench-latency SECONDS_PER_STEP=10; bench-e2e VOTERS=1000000 TOPOLOGIES="3x2 1x1"
## MODES="http http-new https https-new https-new-full" (the first topology once
## per mode; with a new TLS connection per vote 2 cores take about 1,000 votes/s,
## so each such mode at 1,000,000 voters runs some 20 minutes: MODES="http" for
## the few-minute run).
bench: bench-capture bench-worker bench-latency bench-e2e

bench-capture:
	@scripts/install-deps.sh bench
	$(CARGO) xtask bench-capture

bench-worker:
	@scripts/install-deps.sh bench
	$(CARGO) xtask bench-worker

bench-latency:
	@scripts/install-deps.sh bench
	$(CARGO) xtask bench-latency

bench-e2e:
	@scripts/install-deps.sh bench
	$(CARGO) xtask bench-e2e

## make profile: callgrind instruction counts per vote of capture, the
## baseline and the worker, by bucket, and the kernel's share of their CPU;
## writes the "Profiles" section of BENCHMARKS.md (needs valgrind; cargo
## xtask, xtask/src/profile.rs). Sizes: VOTES=20000 WARMUP_VOTES=2000
## CONCURRENCY=16 WORKER_VOTES=100000 WORKER_WARMUP_VOTES=10000
## KERNEL_SECONDS=5 TOP=10; SKIP_BUILD=1 uses target/release as it is;
## REPORT_ONLY=1 rewrites the section from target/profile/.
profile:
	@scripts/install-deps.sh bench
	$(CARGO) xtask profile

## make chaos: every fault scenario at full scale, one at a time
## (tests/chaos.rs: 20,000 voters, 10 s outages; tests/netfaults.rs, as
## root: 30 s partitions and 60 s of a bad database link), each suite's
## rows in target/chaos/SUITE/, then a table per suite in
## docs/RELIABILITY.md. `make test` runs the same scenarios at a small scale.
CHAOS_SUITES := chaos netfaults hostloss
chaos: deps
	rm -rf target/chaos
	for t in $(CHAOS_SUITES); do \
	  CHAOS_SCALE=full NETFAULT_SCALE=full CHAOS_REPORT_DIR=$(CURDIR)/target/chaos/$$t \
	    $(CARGO) test --locked --test $$t -- --test-threads=1 || exit 1; \
	done
	$(CARGO) xtask reliability-table target/chaos docs/RELIABILITY.md

## make soak (not part of make test; 30 minutes and more): the local
## cluster at a third of the maximum rate it measures first, a fault every
## few minutes, every process's memory and open files sampled each minute,
## the count checked at the end; writes the "soak" section of
## docs/RELIABILITY.md (cargo xtask soak, xtask/src/soak.rs). Sizes:
## SOAK_MINUTES=30 SOAK_FAULT_SECONDS=180 (a sixth of a shorter soak)
## SOAK_OUTAGE_SECONDS=10 SOAK_SAMPLE_SECONDS=60 SOAK_PROBE_VOTERS=20000.
soak:
	@scripts/install-deps.sh bench
	$(CARGO) xtask soak

clean:
	$(CARGO) clean
	rm -rf .demo
