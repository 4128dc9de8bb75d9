# voteswarm — the two commands that matter: `make demo` and `make test`.
# Each installs what is missing first (scripts/install-deps.sh).

CARGO ?= cargo
SHELL := /bin/bash

.PHONY: all deps test check fmt lint unit demo build release bench bench-capture clean

all: build

deps:
	@scripts/install-deps.sh test

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release --bins --examples

## make test: installs what is missing, then format check, clippy, all tests.
test: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) test --locked --no-fail-fast
	shellcheck scripts/*.sh .ci/run

## make demo: one Redis and one capture node on http://localhost:8080.
demo:
	@scripts/install-deps.sh demo
	$(CARGO) build --locked --release --bin capture
	scripts/demo.sh

## make bench: every benchmark; each writes its section of BENCHMARKS.md.
bench: bench-capture

bench-capture:
	@scripts/install-deps.sh bench
	scripts/bench-capture.sh

clean:
	$(CARGO) clean
	rm -rf .demo
