#!/usr/bin/env bash
# make bench-latency: the latency curve of one capture node and its Redis.
# First its maximum rate (wrk, form posts), then loadgen (API votes from
# distinct voters with cookie jars) held at 25%, 50%, 75% and 90% of that
# rate: p50, p99 and p99.9 at each. Writes the "Latency curve" section of
# BENCHMARKS.md.
#   SECONDS_PER_STEP=10 scripts/bench-latency.sh (STEP_SECS=10 also works)
set -euo pipefail
cd "$(dirname "$0")/.."

STEP_SECS="${STEP_SECS:-${SECONDS_PER_STEP:-10}}"

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_start bench-latency
say "building release binaries"
cargo build --locked --release -q --bin capture --bin loadgen

start_redis node always
start_capture "$redis_port" MIN_CHANGE_INTERVAL_MS=0
port="$capture_port"

post_lua "$work/post.lua"
wrk -t2 -c64 -d2s -s "$work/post.lua" "http://127.0.0.1:$port/" >/dev/null
max="$(wrk -t2 -c64 -d"${STEP_SECS}s" -s "$work/post.lua" "http://127.0.0.1:$port/" |
  awk '/Requests\/sec/ {printf "%d", $2}')"
say "maximum ${max} votes/s (wrk)"

rows=()
for pct in 25 50 75 90; do
  rate=$((max * pct / 100))
  voters=$((rate * STEP_SECS))
  target/release/loadgen --target "http://127.0.0.1:$port" --voters "$voters" \
    --change-fraction 0 --rate "$rate" --concurrency 256 --report "$work/r$pct.md" >/dev/null
  read_loadgen_report "$work/r$pct.md"
  rows+=("| ${pct}% | ${rate} | ${lg_rate} | ${lg_p50} | ${lg_p99} | ${lg_p999} |")
  say "${pct}%: ${rate}/s asked, ${lg_rate}/s done, p99 ${lg_p99}"
done

section="$work/section.md"
{
  echo "<!-- latency:begin -->"
  echo "## Latency curve: one capture node and its Redis"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(cores_desc). Command: \`make bench-latency\`"
  echo "(\`scripts/bench-latency.sh\`): the node's maximum under wrk (form posts, 64 connections) was"
  echo "${max} votes/s; loadgen (JSON votes, a cookie jar per voter, 256 connections) then held"
  echo "each fraction of it for ${STEP_SECS} s. Redis at appendfsync always (as shipped); everything on one machine,"
  echo "so near the top loadgen itself competes for the cores: \"done\" is the rate achieved."
  echo
  echo "| load | asked votes/s | done votes/s | p50 | p99 | p99.9 |"
  echo "|-----:|--------------:|-------------:|----:|----:|------:|"
  printf '%s\n' "${rows[@]}"
  echo "<!-- latency:end -->"
} >"$section"
write_section latency "$section"
