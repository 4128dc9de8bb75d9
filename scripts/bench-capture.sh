#!/usr/bin/env bash
# make bench-capture: one capture node and its Redis under wrk (form posts),
# against the baseline (examples/baseline.rs: same form parser, no Redis),
# in one invocation, with Redis at appendfsync everysec and always; then the
# node at everysec under our own loadgen (JSON votes, a cookie jar per
# voter) at full rate. Writes the "Capture" section of BENCHMARKS.md.
# Then the edge: HAProxy with the shipped swarm/haproxy.cfg in front of one
# capture node (`cluster up --capture 1`), loadgen through it over plain
# HTTP, HTTPS keep-alive, and HTTPS with a new connection per voter
# (resumed, then full handshakes), one after another against the same
# edge; HAProxy's CPU per vote for each ("Edge" section). EDGE_ONLY=1
# runs only that part; EDGE_VOTERS voters per mode [20000].
#   DURATION=10 WARMUP=2 CONNECTIONS=64 LOADGEN_CONCURRENCY=256 scripts/bench-capture.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-2}"
LOADGEN_CONCURRENCY="${LOADGEN_CONCURRENCY:-256}"
EDGE_VOTERS="${EDGE_VOTERS:-20000}"
EDGE_CONCURRENCY="${EDGE_CONCURRENCY:-64}"

bench_start bench-capture
say "building release binaries"
cargo build --locked --release -q --bin capture --bin loadgen --bin cluster \
  --bin worker --bin results --example baseline

# edge_bench: the "Edge" section (see the top of this file).
edge_bench() {
  local dir="$work/edge" port tport rport trport cluster hpid mode flags target c0 c1 report rows=()
  chmod 755 "$work"
  port="$(free_port)" tport="$(free_port)" rport="$(free_port)" trport="$(free_port)"
  say "edge: cluster up --capture 1 --workers 1, HAProxy in front"
  target/release/cluster up --capture 1 --workers 1 --port "$port" --results-port "$rport" \
    --tls-port "$tport" --results-tls-port "$trport" --data-dir "$dir" >"$work/edge.out" 2>"$work/edge.log" &
  cluster=$!
  pids+=("$cluster")
  for _ in $(seq 600); do grep -q 'Ctrl-C to stop' "$work/edge.out" && break; sleep 0.1; done
  grep -q 'Ctrl-C to stop' "$work/edge.out" || die "edge: cluster did not start: $(tail -n 5 "$work/edge.log")"
  hpid="$(cat "$dir/run/haproxy.pid")"
  for mode in http http-new https https-new https-new-full; do
    case "$mode" in
      http) target="http://127.0.0.1:$port" flags=() ;;
      http-new) target="http://127.0.0.1:$port" flags=(--new-connection-per-voter) ;;
      https) target="https://localhost:$tport" flags=(--ca-file "$dir/tls/ca.pem") ;;
      https-new) target="https://localhost:$tport" flags=(--ca-file "$dir/tls/ca.pem" --new-connection-per-voter) ;;
      https-new-full) target="https://localhost:$tport" flags=(--ca-file "$dir/tls/ca.pem" --new-connection-per-voter --no-tls-resumption) ;;
    esac
    report="$work/edge-$mode.md"
    c0="$(cpu_ticks "$hpid")"
    target/release/loadgen --target "$target" "${flags[@]}" --voters "$EDGE_VOTERS" \
      --change-fraction 0 --concurrency "$EDGE_CONCURRENCY" --report "$report" >/dev/null ||
      { cat "$report" >&2 2>/dev/null; die "edge: loadgen ($mode) failed"; }
    c1="$(cpu_ticks "$hpid")"
    read_loadgen_report "$report"
    local hs hsr hsl
    hs="$(grep '^| TLS handshakes full / resumed / failed' "$report" | awk -F'|' '{print $3}' | xargs || true)"
    hsr="$(grep '^| TLS handshakes/s' "$report" | awk -F'|' '{print $3}' | xargs || true)"
    hsl="$(grep '^| TLS handshake p50' "$report" | awk -F'|' '{print $3}' | xargs || true)"
    rows+=("| $mode | $lg_rate | $lg_p50 / $lg_p99 | ${hs:--} | ${hsr:--} | ${hsl:--} | $(per_vote "$((c1 - c0))" "$lg_acked") µs |")
    say "edge, $mode: $lg_rate votes/s, HAProxy $(per_vote "$((c1 - c0))" "$lg_acked") µs per vote"
  done
  stop "$cluster"
  local section="$work/edge-section.md"
  {
    echo "<!-- edge:begin -->"
    echo "## Edge: HAProxy's CPU per vote, plain HTTP against HTTPS"
    echo
    echo "Measured $(date -u +%Y-%m-%d) on $(cores_desc), $(mem_desc), a machine shared with other"
    echo "builds while this ran (rates and latencies are noisy; CPU per vote less so)."
    echo "Command: \`EDGE_ONLY=1 make bench-capture\` (part of \`scripts/bench-capture.sh\`): \`cluster up --capture 1"
    echo "--workers 1\`, then loadgen, $EDGE_VOTERS voters per mode, --concurrency $EDGE_CONCURRENCY, --change-fraction 0,"
    echo "through the same HAProxy (the shipped \`swarm/haproxy.cfg\`, ECDSA P-256 certificate of the"
    echo "cluster's CA), one mode after another; HAProxy's CPU (user + system, /proc) over each run"
    echo "divided by the votes acknowledged in it."
    echo
    echo "| mode | votes/s | latency p50 / p99 | TLS handshakes full / resumed / failed | handshakes/s | handshake p50 / p90 / p99 / max | HAProxy CPU per vote |"
    echo "|---|---:|---|---|---:|---|---:|"
    printf '%s\n' "${rows[@]}"
    echo
    echo "http and https: keep-alive, $EDGE_CONCURRENCY connections for all voters. http-new: a new TCP"
    echo "connection per vote without TLS, which separates the cost of a connection (HAProxy's default"
    echo "\`http-reuse safe\` sends a session's first request on a server connection of its own, so this"
    echo "includes a new connection to capture) from the cost of TLS. https-new: a new TCP"
    echo "and TLS connection for every vote, resuming a session (TLS 1.3 tickets) from an earlier"
    echo "voter; https-new-full: the same with resumption refused, a full handshake (ECDHE"
    echo "X25519 + an ECDSA P-256 signature) per vote, which is what a million phones arriving at"
    echo "once cost. Every process here shares the same $(nproc) cores, loadgen's TLS included."
    echo "<!-- edge:end -->"
  } >"$section"
  write_section edge "$section"
}
if [ "${EDGE_ONLY:-0}" = 1 ]; then
  edge_bench
  exit 0
fi

post_lua "$work/post.lua"

# run_wrk NAME PORT PID [REDIS_PID]: a warm-up, then the measured run. Sets
# rps, p50, p99, p999, non2xx, rss (KiB), cpu and rcpu (µs per vote of the
# process and of its Redis).
run_wrk() {
  local name="$1" port="$2" pid="$3" rpid="${4:-}" out c0 c1 r0=0 r1=0 reqs us
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$work/post.lua" "http://127.0.0.1:$port/" >/dev/null
  c0="$(cpu_ticks "$pid")"
  [ -z "$rpid" ] || r0="$(cpu_ticks "$rpid")"
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -s "$work/post.lua" "http://127.0.0.1:$port/")"
  c1="$(cpu_ticks "$pid")"
  [ -z "$rpid" ] || r1="$(cpu_ticks "$rpid")"
  echo "$out" >"$work/$name.wrk"
  reqs="$(wrk_field REQUESTS "$out")"
  us="$(wrk_field DURATION_US "$out")"
  non2xx="$(wrk_field NON2XX "$out")"
  p50="$(fmt_us "$(wrk_field P50 "$out")")"
  p99="$(fmt_us "$(wrk_field P99 "$out")")"
  p999="$(fmt_us "$(wrk_field P999 "$out")")"
  rps="$(awk -v r="$reqs" -v n="$non2xx" -v us="$us" 'BEGIN { printf "%.0f", (r - n) / us * 1e6 }')"
  rss="$(peak_rss_kib "$pid")"
  cpu="$(per_vote "$((c1 - c0))" "$((reqs - non2xx))")"
  rcpu="$(per_vote "$((r1 - r0))" "$((reqs - non2xx))")"
}

# wrk_field KEY OUTPUT: the value of post.lua's line KEY.
wrk_field() { awk -v k="$1" '$1 == k {print $2}' <<<"$2"; }

ratio_to() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a/b }'; }

rows=()

port="$(free_port)"
LISTEN="127.0.0.1:$port" target/release/examples/baseline &
pids+=($!)
base_pid=$!
wait_port "$port"
say "baseline"
run_wrk baseline "$port" "$base_pid"
base_rps="$rps"
rows+=("| baseline (examples/baseline.rs), wrk | $rps | $p50 | $p99 | $p999 | $((rss / 1024)) MiB | $cpu µs | $non2xx | 1.00 |")
stop "$base_pid"

for fsync in everysec always; do
  start_redis "$fsync" "$fsync"
  start_capture "$redis_port"
  say "capture, appendfsync $fsync"
  run_wrk "capture-$fsync" "$capture_port" "$capture_pid" "$redis_pid"
  stored="$(redis-cli -p "$redis_port" xlen votes)"
  stop "$capture_pid" "$redis_pid"
  ratio="$(ratio_to "$rps" "$base_rps")"
  rows+=("| capture, appendfsync $fsync, wrk | $rps | $p50 | $p99 | $p999 | $((rss / 1024)) MiB | $cpu µs + Redis $rcpu µs | $non2xx | $ratio |")
  if [ "$fsync" = everysec ]; then everysec_rps="$rps"; fi
  say "$fsync: $rps votes/s (ratio $ratio), p99.9 $p999, $stored entries stored"
done

# --- loadgen at full rate, a fresh node at everysec --------------------------
# loadgen runs until its voters have voted: the warm-up's rate sizes the
# measured run to about DURATION seconds.
start_redis loadgen everysec
start_capture "$redis_port"
say "capture, appendfsync everysec, loadgen (concurrency $LOADGEN_CONCURRENCY)"
loadgen() { # VOTERS REPORT
  target/release/loadgen --target "http://127.0.0.1:$capture_port" --voters "$1" \
    --change-fraction 0 --concurrency "$LOADGEN_CONCURRENCY" --report "$2" >/dev/null ||
    { cat "$2" >&2 2>/dev/null; die "loadgen failed"; }
}
loadgen "$((everysec_rps * WARMUP))" "$work/loadgen-warmup.md"
read_loadgen_report "$work/loadgen-warmup.md"
voters="$((lg_rate * DURATION))"
c0="$(cpu_ticks "$capture_pid")"
r0="$(cpu_ticks "$redis_pid")"
o0="$(listen_overflows)"
loadgen "$voters" "$work/loadgen.md"
c1="$(cpu_ticks "$capture_pid")"
r1="$(cpu_ticks "$redis_pid")"
overflows=$(($(listen_overflows) - o0))
backlog="$(ss -Hltn "sport = :$capture_port" | awk '{print $3; exit}')"
read_loadgen_report "$work/loadgen.md"
rss="$(peak_rss_kib "$capture_pid")"
stop "$capture_pid" "$redis_pid"
ratio="$(ratio_to "$lg_rate" "$base_rps")"
rows+=("| capture, appendfsync everysec, loadgen | $lg_rate | $lg_p50 | $lg_p99 | $lg_p999 | $((rss / 1024)) MiB | $(per_vote "$((c1 - c0))" "$lg_acked") µs + Redis $(per_vote "$((r1 - r0))" "$lg_acked") µs | $((lg_requests - lg_acked)) | $ratio |")
say "loadgen: $lg_rate votes/s (ratio $ratio) from $voters voters, p99.9 $lg_p999, $overflows listen queue overflows"

section="$work/section.md"
{
  echo "<!-- capture:begin -->"
  echo "## Capture: one node and its Redis, form posts under wrk, JSON votes under loadgen"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(cores_desc), $(mem_desc)."
  echo "Command: \`make bench-capture\` (\`scripts/bench-capture.sh\`: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s after a ${WARMUP}s warm-up;"
  echo "then loadgen --concurrency $LOADGEN_CONCURRENCY --change-fraction 0, no --rate, $voters voters (about ${DURATION}s) after a warm-up;"
  echo "the load generator, the node and Redis share the machine)."
  echo
  echo "| run | votes/s | p50 | p99 | p99.9 | peak RSS | CPU per vote | non-2xx | ratio to baseline |"
  echo "|-----|--------:|----:|----:|------:|---------:|-------------:|--------:|------------------:|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "The baseline parses the same form with the same parser and answers at once;"
  echo "capture also signs a voter cookie, stamps the vote and waits for Redis to store"
  echo "it (one pipelined XADD batch per round trip, one writer per HTTP worker thread)."
  echo "wrk's latencies come from its own histogram (a Lua \`done\` hook reads p50, p99"
  echo "and p99.9 from it); loadgen's from its report."
  echo
  echo "The loadgen row is a real voter's request, not wrk's: JSON votes to \`/api/vote\`,"
  echo "each voter with its own cookie jar, $LOADGEN_CONCURRENCY connections; and loadgen, a heavier client"
  echo "than wrk, competes for the same $(nproc) cores as the node and its Redis, so its rate and"
  echo "latencies are those of the node and the load generator together (its ratio is"
  echo "still to the wrk baseline)."
  if [ "$overflows" -gt 0 ]; then
    echo "During the loadgen run $overflows connection attempts found the node's listen queue"
    echo "(backlog ${backlog:-?}) full, $LOADGEN_CONCURRENCY connecting at once, and were retried by the"
    echo "client's TCP a second later: the loadgen row's tail latencies include those seconds."
  fi
  echo
  echo "What limits the ratio (targets: 0.6 in the capture issue, 0.8 in the performance"
  echo "issue, at everysec): per vote, the node and its Redis together spend the CPU in the"
  echo "\"CPU per vote\" column, the baseline only its own, and all of it comes out of the same"
  echo "$(nproc) cores that wrk uses. \`make profile\` (the Profiles section) splits the node's"
  echo "share: in user space capture executes about 2.3-2.4 times the baseline's instructions"
  echo "(the cookie HMAC, the Redis client, handing the vote to the writer and back), but most"
  echo "of its CPU, like most of the baseline's, is the kernel's: loopback TCP for the HTTP"
  echo "answer and for the Redis pipeline, and the wake-ups between them. The user-space costs"
  echo "the profiles pointed at (HMAC keyed per request, cookie jars, Set-Cookie formatting,"
  echo "XADDs grown by doubling, header lookups by string, per-vote copies, glibc malloc) are"
  echo "gone. A ratio of 0.8 would need the node, two more socket round trips per batch and"
  echo "Redis to cost no more than 1.25 times a handler that answers at once; on this machine"
  echo "they cost about twice as much. In a deployment Redis and the load are not on the"
  echo "node's cores; there the node's own CPU per vote is the figure that counts."
  echo
  echo "\`swarm/redis.conf\` and \`cluster\` ship \`appendfsync always\`: under everysec a Redis"
  echo "killed while a write waits behind a slow fsync loses votes it acknowledged"
  echo "(\`docs/RELIABILITY.md\`), so the \`always\` row is the one to plan with."
  echo "<!-- capture:end -->"
} >"$section"
write_section capture "$section"
edge_bench
