# shellcheck shell=bash
# What the bench-*.sh scripts share. Sourced from the repository root:
#   # shellcheck source=scripts/bench-lib.sh
#   . scripts/bench-lib.sh
#   bench_start bench-NAME
# The start_* functions run their server in the background of the calling
# shell (so call them directly, not in $(...)), add its pid to `pids`, and
# leave their results in global variables, named at each function.

# bench_start NAME: messages prefixed with NAME, a private work directory
# `work`, the pids to stop `pids`, and a trap that stops them (and the
# PostgreSQL of start_pg) and removes `work` on exit.
bench_start() {
  bench_name="$1"
  work="$(mktemp -d)"
  pids=()
  pg_pid=""
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  # SIGINT: PostgreSQL's fast shutdown.
  [ -z "$pg_pid" ] || kill -INT "$pg_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}

say() { echo "$bench_name: $*" >&2; }
die() {
  say "$@"
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s at most).
wait_port() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
      return 0
    fi
    sleep 0.05
  done
  die "nothing listens on port $1"
}

# CPU time (user+system) of a process so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The same in seconds, one decimal.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat"; }
# per_vote TICKS VOTES: microseconds of CPU per vote, one decimal.
per_vote() {
  awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (n < 1) n = 1; printf "%.1f", t / hz * 1e6 / n }'
}
# tree_ticks PID: CPU ticks (user+system) of PID, of its children running
# now, and of its children already reaped: PostgreSQL's work is done by its
# backends, which exit when their client disconnects.
tree_ticks() {
  # shellcheck disable=SC2046 # one path per word
  cat "/proc/$1/stat" $(pgrep -P "$1" | sed 's|.*|/proc/&/stat|') 2>/dev/null |
    awk -v top="$1" '{t += $14 + $15; if ($1 == top) t += $16 + $17} END {print t + 0}'
}
# Peak resident memory (VmHWM) of a running process, in KiB.
peak_rss_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# The machine's count of connections dropped because a listen queue was
# full (their clients retry the SYN after a second).
listen_overflows() {
  awk '$1 == "TcpExt:" { if (!n) { for (i = 2; i <= NF; i++) col[$i] = i; n = 1 } else print $col["ListenOverflows"] }' /proc/net/netstat
}

now() { date +%s.%N; }
# since T0: seconds from T0 (a `now`) until now, three decimals.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

# fmt_us MICROSECONDS: as loadgen's report writes a latency (µs, ms, s).
fmt_us() {
  awk -v us="$1" 'BEGIN { if (us >= 1e6) printf "%.2f s", us / 1e6;
                          else if (us >= 1000) printf "%.1f ms", us / 1000;
                          else printf "%d µs", us }'
}

# The machine, for the sections' "Measured ..." line.
cores_desc() { echo "$(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo))"; }
mem_desc() { awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo; }

# start_redis NAME [APPENDFSYNC]: a private redis-server as capture's
# (append-only, fsync every second unless told otherwise) in $work/redis-NAME.
# Sets redis_port and redis_pid.
start_redis() {
  local dir="$work/redis-$1" fsync="${2:-everysec}"
  redis_port="$(free_port)"
  mkdir -p "$dir"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
    --appendfsync "$fsync" --save "" --logfile "$dir/log" &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  die "redis-server on port $redis_port did not come up (log: $dir/log)"
}

# start_queues N: N Redis queues for workers to drain, append-only with
# QUEUE_APPENDFSYNC (default always, as swarm/redis.conf ships). Sets rports
# (their ports), rpids (their pids), urls and redis_urls (comma-separated,
# REDIS_URLS).
start_queues() {
  local i
  QUEUE_APPENDFSYNC="${QUEUE_APPENDFSYNC:-always}"
  rports=()
  rpids=()
  urls=()
  for i in $(seq "$1"); do
    start_redis "q$i" "$QUEUE_APPENDFSYNC"
    rports+=("$redis_port")
    rpids+=("$redis_pid")
    urls+=("redis://127.0.0.1:$redis_port")
  done
  # shellcheck disable=SC2034 # read by the sourcing script
  redis_urls="$(IFS=,; echo "${urls[*]}")"
}

# wait_drained TIMEOUT_S PID...: until the queues of start_queues are empty
# with nothing pending (0); a PID exited first (1) or TIMEOUT_S passed (2),
# said on stderr. It polls every 20 ms over one connection per queue: two
# redis-cli runs per queue every 50 ms, as it polled before, took a tenth of
# the machine's CPU (perf) from the drain it was timing.
wait_drained() {
  python3 - "$@" "--" "${rports[@]}" <<'PY'
import os, socket, sys, time
args = sys.argv[1:]
sep = args.index("--")
timeout, pids, ports = float(args[0]), [int(p) for p in args[1:sep]], [int(p) for p in args[sep + 1:]]

def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    return s, s.makefile("rb")

def reply(f):
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b":":
        return int(rest)
    if kind == b"*":
        return [reply(f) for _ in range(int(rest))] if int(rest) >= 0 else None
    if kind == b"$":
        if int(rest) < 0:
            return None
        data = f.read(int(rest) + 2)[:-2]
        return data
    if kind == b"-":
        return RuntimeError(rest.decode())
    return rest

conns = [connect(p) for p in ports]
query = b"*2\r\n$4\r\nXLEN\r\n$5\r\nvotes\r\n*3\r\n$8\r\nXPENDING\r\n$5\r\nvotes\r\n$7\r\nworkers\r\n"
deadline = time.monotonic() + timeout
while True:
    left = 0
    for s, f in conns:
        s.sendall(query)
        length, pending = reply(f), reply(f)
        if isinstance(pending, RuntimeError):  # NOGROUP: no worker has started yet
            left = None
            break
        left += length + pending[0]
    if left == 0:
        sys.exit(0)
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print(f"process {pid} exited with {left} entries left", file=sys.stderr)
            sys.exit(1)
    if time.monotonic() > deadline:
        print(f"not drained after {timeout:.0f} s: {left} entries left", file=sys.stderr)
        sys.exit(2)
    time.sleep(0.02)
PY
}

# start_capture REDIS_PORT [VAR=VALUE...]: a release capture node on that
# Redis, the extra settings added to its environment. Sets capture_port and
# capture_pid.
start_capture() {
  local rport="$1"
  shift
  capture_port="$(free_port)"
  env LISTEN="127.0.0.1:$capture_port" REDIS_URL="redis://127.0.0.1:$rport" NODE_ID=bench \
    COOKIE_KEY="bench-cookie-key-bench-cookie-key-0123456789" RUST_LOG=warn "$@" \
    target/release/capture &
  capture_pid=$!
  pids+=("$capture_pid")
  wait_port "$capture_port"
}

# stop PID...: SIGTERM, and wait for it to exit.
stop() {
  local p
  for p in "$@"; do
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}

# post_lua FILE: wrk's script, a form vote per request. At the end it
# prints, from wrk's own summary and latency histogram, the lines
# REQUESTS, DURATION_US, NON2XX, P50, P99 and P999 (microseconds); wrk's
# --latency table stops at p99.
post_lua() {
  cat >"$1" <<'LUA'
wrk.method = "POST"
wrk.body = "vote=a"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"

done = function(summary, latency, requests)
  io.write(string.format("REQUESTS %d\nDURATION_US %d\nNON2XX %d\nP50 %d\nP99 %d\nP999 %d\n",
    summary.requests, summary.duration, summary.errors.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
LUA
}

# read_loadgen_report FILE: sets lg_requests, lg_acked, lg_rate (votes/s
# acknowledged), lg_p50, lg_p99, lg_p999 (as loadgen writes them) from
# loadgen's --report.
# shellcheck disable=SC2034 # they are for the sourcing script
read_loadgen_report() {
  local latency
  latency="$(grep '^| latency p50 / p90 / p99 / max' "$1")"
  lg_p50="$(awk -F'|' '{split($3, a, " / "); print a[1]}' <<<"$latency" | xargs)"
  lg_p99="$(awk -F'|' '{split($3, a, " / "); print a[3]}' <<<"$latency" | xargs)"
  lg_p999="$(grep '^| latency p99.9' "$1" | awk -F'|' '{print $3}' | xargs)"
  lg_rate="$(grep '^| votes/s' "$1" | awk -F'|' '{print $3}' | xargs)"
  lg_requests="$(grep '^| requests |' "$1" | awk -F'|' '{print $3}' | xargs)"
  lg_acked="$(grep '^| acknowledged |' "$1" | awk -F'|' '{print $3}' | xargs)"
}

# PostgreSQL refuses to run as root: run it as `postgres` then. `exec`, so
# that `as_pg ... &` leaves $! the server's own pid, which cleanup signals.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    exec "$@"
  fi
}

# start_pg: a private PostgreSQL with default settings (fsync and
# synchronous_commit on) in $work/pg. Sets pgbin (its programs), db (a URL)
# and pg_pid.
start_pg() {
  pgbin="$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -n1)"
  [ -x "$pgbin/initdb" ] || die "PostgreSQL server programs not found (apt-get install postgresql)"
  # The postgres user must reach $work/pg and read the files COPY reads.
  chmod 755 "$work"
  mkdir -p "$work/pg"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$work/pg"; fi
  (as_pg "$pgbin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 --no-instructions) >"$work/initdb.log"
  local port
  port="$(free_port)"
  as_pg "$pgbin/postgres" -D "$work/pg" -p "$port" -k "$work/pg" \
    -c listen_addresses=127.0.0.1 >"$work/postgres.log" 2>&1 &
  pg_pid=$!
  db="postgres://postgres@127.0.0.1:$port/postgres"
  for _ in $(seq 300); do psql -q "$db" -c 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
  psql -q "$db" -c 'select 1' >/dev/null
}

# sql STATEMENT: run it on start_pg's database; prints the rows, unaligned.
sql() { psql -qAt -v ON_ERROR_STOP=1 "$db" -c "$1"; }

# write_section NAME FILE: FILE (starting <!-- NAME:begin -->, ending
# <!-- NAME:end -->) replaces that section of BENCHMARKS.md, or is appended
# to it; then prints it.
write_section() {
  # shellcheck disable=SC2016 # the backticks are Markdown
  [ -f BENCHMARKS.md ] || printf '# Benchmarks\n\nEach section is written by its `make bench-*` target; rerun it to refresh.\n\n' >BENCHMARKS.md
  python3 - "$1" "$2" <<'PY'
import re, sys
name, path = sys.argv[1], sys.argv[2]
section = open(path).read().strip() + "\n"
text = open("BENCHMARKS.md").read()
pat = re.compile(r"<!-- %s:begin -->.*?<!-- %s:end -->\n?" % (re.escape(name), re.escape(name)), re.S)
text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip() + "\n\n" + section
open("BENCHMARKS.md", "w").write(text)
PY
  cat "$2"
}
