#!/usr/bin/env bash
# make bench-capture: one capture node and its Redis under wrk (form posts),
# against the baseline (examples/baseline.rs: same form parser, no Redis),
# in one invocation, with Redis at appendfsync everysec and always.
# Writes the "Capture" section of BENCHMARKS.md.
#   DURATION=10 CONNECTIONS=64 scripts/bench-capture.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-2}"

echo "bench-capture: building release binaries" >&2
cargo build --locked --release -q --bin capture --example baseline

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

wait_http() { # url ending in :PORT
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${1##*:}") 2>/dev/null; then
      return 0
    fi
    sleep 0.05
  done
  echo "bench-capture: $1 did not come up" >&2
  return 1
}

cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = "vote=a"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
LUA

# CPU time (user+system) of a process so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_wrk NAME PORT PID [REDIS_PID] -> prints "rps p50 p99 non2xx rss_kib us_per_vote redis_us_per_vote"
run_wrk() {
  local name="$1" port="$2" pid="$3" rpid="${4:-}" out c0 c1 r0=0 r1=0
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" -s "$work/post.lua" "http://127.0.0.1:$port/" >/dev/null
  c0="$(cpu_ticks "$pid")"
  [ -n "$rpid" ] && r0="$(cpu_ticks "$rpid")"
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/")"
  c1="$(cpu_ticks "$pid")"
  [ -n "$rpid" ] && r1="$(cpu_ticks "$rpid")"
  echo "$out" >"$work/$name.wrk"
  local reqs non2xx secs p50 p99 rss
  reqs="$(awk '/requests in/ {print $1}' <<<"$out")"
  secs="$(awk '/requests in/ {gsub(/s,/,"",$4); print $4}' <<<"$out")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  non2xx="${non2xx:-0}"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  rss="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
  local hz
  hz="$(getconf CLK_TCK)"
  awk -v r="$reqs" -v n="$non2xx" -v s="$secs" -v a="$p50" -v b="$p99" -v m="$rss" \
    -v c="$((c1 - c0))" -v rc="$((r1 - r0))" -v hz="$hz" \
    'BEGIN { ok = r - n; if (ok < 1) ok = 1;
             printf "%.0f %s %s %d %d %.1f %.1f\n", (r-n)/s, a, b, n, m, c/hz*1e6/ok, rc/hz*1e6/ok }'
}

results=()

port="$(free_port)"
LISTEN="127.0.0.1:$port" target/release/examples/baseline &
pids+=($!); base_pid=$!
wait_http "http://127.0.0.1:$port"
echo "bench-capture: baseline" >&2
read -r base_rps base_p50 base_p99 base_non2xx base_rss base_cpu _ < <(run_wrk baseline "$port" "$base_pid")
kill -TERM "$base_pid"; wait "$base_pid" 2>/dev/null || true

for fsync in everysec always; do
  rport="$(free_port)"
  mkdir -p "$work/redis-$fsync"
  redis-server --port "$rport" --bind 127.0.0.1 --dir "$work/redis-$fsync" --appendonly yes \
    --appendfsync "$fsync" --save "" --logfile "$work/redis-$fsync/log" &
  pids+=($!); redis_pid=$!
  for _ in $(seq 100); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.05; done
  port="$(free_port)"
  LISTEN="127.0.0.1:$port" REDIS_URL="redis://127.0.0.1:$rport" NODE_ID=bench \
    COOKIE_KEY="bench-cookie-key-bench-cookie-key-0123456789" RUST_LOG=warn \
    target/release/capture &
  pids+=($!); cap_pid=$!
  wait_http "http://127.0.0.1:$port"
  echo "bench-capture: capture, appendfsync $fsync" >&2
  read -r rps p50 p99 non2xx rss cpu rcpu < <(run_wrk "capture-$fsync" "$port" "$cap_pid" "$redis_pid")
  stored="$(redis-cli -p "$rport" xlen votes)"
  kill -TERM "$cap_pid"; wait "$cap_pid" 2>/dev/null || true
  kill -TERM "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
  ratio="$(awk -v a="$rps" -v b="$base_rps" 'BEGIN { printf "%.2f", a/b }')"
  results+=("| capture, appendfsync $fsync | $rps | $p50 | $p99 | $((rss / 1024)) MiB | $cpu µs + Redis $rcpu µs | $non2xx | $ratio |")
  echo "bench-capture: $fsync: $rps votes/s (ratio $ratio), $stored entries stored" >&2
done

cpu="$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
section="$work/section.md"
{
  echo "<!-- capture:begin -->"
  echo "## Capture: one node and its Redis, form posts under wrk"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)."
  echo "Command: \`make bench-capture\` (\`scripts/bench-capture.sh\`: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s after a ${WARMUP}s warm-up;"
  echo "wrk, the node and Redis share the machine)."
  echo
  echo "| run | votes/s | p50 | p99 | peak RSS | CPU per vote | non-2xx | ratio to baseline |"
  echo "|-----|--------:|----:|----:|---------:|-------------:|--------:|------------------:|"
  echo "| baseline (examples/baseline.rs) | $base_rps | $base_p50 | $base_p99 | $((base_rss / 1024)) MiB | $base_cpu µs | $base_non2xx | 1.00 |"
  printf '%s\n' "${results[@]}"
  echo
  echo "The baseline parses the same form with the same parser and answers at once;"
  echo "capture also signs a voter cookie, stamps the vote and waits for Redis to store"
  echo "it (one pipelined XADD batch per round trip, one writer per HTTP worker thread)."
  echo
  echo "What limits the ratio (target 0.6 at everysec): Redis runs on the same 2 cores"
  echo "and costs the \"Redis\" CPU per vote above, which the baseline does not pay; and"
  echo "capture's own CPU per vote is about twice the baseline's. \`perf record\` on capture"
  echo "under this load puts most of that in the kernel (loopback send/recv of the HTTP"
  echo "answer and of the Redis pipeline, and the wake-ups between them); the user-space"
  echo "costs it showed (cross-thread hand-offs, per-vote page rendering, a cookie jar per"
  echo "vote, per-field allocations) are gone. With Redis on its own core, as in every"
  echo "deployment (one Redis per capture host), the node's own cost is what counts."
  echo "<!-- capture:end -->"
} >"$section"

# shellcheck disable=SC2016 # the backticks are Markdown
[ -f BENCHMARKS.md ] || printf '# Benchmarks\n\nEach section is written by its `make bench-*` target; rerun it to refresh.\n\n' >BENCHMARKS.md
python3 - "$section" <<'PY'
import re, sys
section = open(sys.argv[1]).read().strip() + "\n"
text = open("BENCHMARKS.md").read()
pat = re.compile(r"<!-- capture:begin -->.*?<!-- capture:end -->\n?", re.S)
text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip() + "\n\n" + section
open("BENCHMARKS.md", "w").write(text)
PY
cat "$section"
