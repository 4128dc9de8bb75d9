#!/usr/bin/env bash
# make bench-latency: the latency curve of one capture node and its Redis.
# First its maximum rate (wrk, form posts), then loadgen (API votes from
# distinct voters with cookie jars) held at 25%, 50%, 75% and 90% of that
# rate: p50, p99 and p99.9 at each. Writes the "Latency curve" section of
# BENCHMARKS.md.
#   SECONDS_PER_STEP=10 scripts/bench-latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."

STEP_SECS="${SECONDS_PER_STEP:-10}"

echo "bench-latency: building release binaries" >&2
cargo build --locked --release -q --bin capture --bin loadgen

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

rport="$(free_port)"
redis-server --port "$rport" --bind 127.0.0.1 --dir "$work" --appendonly yes \
  --appendfsync everysec --save "" --logfile "$work/redis.log" &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
port="$(free_port)"
LISTEN="127.0.0.1:$port" REDIS_URL="redis://127.0.0.1:$rport" NODE_ID=bench \
  COOKIE_KEY="bench-cookie-key-bench-cookie-key-0123456789" MIN_CHANGE_INTERVAL_MS=0 RUST_LOG=warn \
  target/release/capture &
pids+=($!)
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "vote=a"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA
wrk -t2 -c64 -d2s -s "$work/post.lua" "http://127.0.0.1:$port/" >/dev/null
max="$(wrk -t2 -c64 -d"${STEP_SECS}s" -s "$work/post.lua" "http://127.0.0.1:$port/" |
  awk '/Requests\/sec/ {printf "%d", $2}')"
echo "bench-latency: maximum ${max} votes/s (wrk)" >&2

rows=()
for pct in 25 50 75 90; do
  rate=$((max * pct / 100))
  voters=$((rate * STEP_SECS))
  target/release/loadgen --target "http://127.0.0.1:$port" --voters "$voters" \
    --change-fraction 0 --rate "$rate" --concurrency 256 --report "$work/r$pct.md" >/dev/null
  line="$(grep '^| latency p50 / p90 / p99 / max' "$work/r$pct.md")"
  p50="$(awk -F'|' '{split($3, a, " / "); print a[1]}' <<<"$line" | xargs)"
  p99="$(awk -F'|' '{split($3, a, " / "); print a[3]}' <<<"$line" | xargs)"
  p999="$(grep '^| latency p99.9' "$work/r$pct.md" | awk -F'|' '{print $3}' | xargs)"
  got="$(grep '^| votes/s' "$work/r$pct.md" | awk -F'|' '{print $3}' | xargs)"
  rows+=("| ${pct}% | ${rate} | ${got} | ${p50} | ${p99} | ${p999} |")
  echo "bench-latency: ${pct}%: ${rate}/s asked, ${got}/s done, p99 ${p99}" >&2
done

cpu="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
section="$work/section.md"
{
  echo "<!-- latency:begin -->"
  echo "## Latency curve: one capture node and its Redis"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($cpu). Command: \`make bench-latency\`"
  echo "(\`scripts/bench-latency.sh\`): the node's maximum under wrk (form posts, 64 connections) was"
  echo "${max} votes/s; loadgen (JSON votes, a cookie jar per voter, 256 connections) then held"
  echo "each fraction of it for ${STEP_SECS} s. Redis at appendfsync everysec; everything on one machine,"
  echo "so near the top loadgen itself competes for the cores: \"done\" is the rate achieved."
  echo
  echo "| load | asked votes/s | done votes/s | p50 | p99 | p99.9 |"
  echo "|-----:|--------------:|-------------:|----:|----:|------:|"
  printf '%s\n' "${rows[@]}"
  echo "<!-- latency:end -->"
} >"$section"
python3 - "$section" <<'PY'
import re, sys
section = open(sys.argv[1]).read().strip() + "\n"
text = open("BENCHMARKS.md").read()
pat = re.compile(r"<!-- latency:begin -->.*?<!-- latency:end -->\n?", re.S)
text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip() + "\n\n" + section
open("BENCHMARKS.md", "w").write(text)
PY
cat "$section"
