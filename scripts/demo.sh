#!/usr/bin/env bash
# The local demo: a Redis of its own (unix socket, append-only, in .demo/)
# and one capture node on http://localhost:8080. Ctrl-C stops both; the
# votes stay in .demo/ for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

data="$PWD/.demo"
mkdir -p "$data"
key_file="$data/cookie.key"
if [ ! -s "$key_file" ]; then
  head -c 48 /dev/urandom | base64 -w0 >"$key_file"
  chmod 600 "$key_file"
fi

redis-server --port 0 --unixsocket "$data/redis.sock" --unixsocketperm 700 \
  --dir "$data" --appendonly yes --save "" --daemonize no \
  --logfile "$data/redis.log" &
redis_pid=$!
capture_pid=""
cleanup() {
  [ -n "$capture_pid" ] && kill -TERM "$capture_pid" 2>/dev/null && wait "$capture_pid" 2>/dev/null
  kill -TERM "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  echo "demo stopped; votes kept in $data"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

for _ in $(seq 100); do
  [ -S "$data/redis.sock" ] && break
  sleep 0.1
done
[ -S "$data/redis.sock" ] || { echo "demo: redis did not start; see $data/redis.log" >&2; exit 1; }

LISTEN="${LISTEN:-0.0.0.0:8080}" \
REDIS_URL="redis+unix://$data/redis.sock" \
COOKIE_KEY_FILE="$key_file" \
NODE_ID="${NODE_ID:-demo-capture}" \
  target/release/capture &
capture_pid=$!
echo "vote at http://localhost:8080/  (Ctrl-C to stop)"
echo "queued votes: redis-cli -s $data/redis.sock XLEN votes"
wait "$capture_pid"
