# shellcheck shell=bash
# What scripts/profile.sh uses (the benchmarks are `cargo xtask`, xtask/).
# Sourced from the repository root:
#   # shellcheck source=scripts/bench-lib.sh
#   . scripts/bench-lib.sh
#   bench_start NAME
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

now() { date +%s.%N; }
# since T0: seconds from T0 (a `now`) until now, three decimals.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

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
