#!/usr/bin/env bash
# make bench-e2e: the whole system on this machine, end to end. For each
# topology in TOPOLOGIES ("CAPTURExWORKERS"), `cluster rehearse` starts
# PostgreSQL, a Redis per capture node, the capture nodes, the workers,
# results and HAProxy, and loadgen votes through HAProxy as VOTERS voters
# (CHANGE_FRACTION of them change once), then checks the count against its
# ground truth. Reports the voting time, the time to the final count,
# whether the count is exact, and each tier's CPU per vote. The first
# topology runs once per edge mode in MODES, in the same invocation: plain
# HTTP, HTTPS over keep-alive connections, HTTPS with a new TLS connection
# per voter (sessions resumed), and the same with every handshake full.
# Writes the "End to end" section of BENCHMARKS.md.
#   VOTERS=1000000 TOPOLOGIES="3x2 1x1" CONCURRENCY=256 \
#   MODES="http http-new https https-new https-new-full" scripts/bench-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VOTERS="${VOTERS:-1000000}"
CHANGE_FRACTION="${CHANGE_FRACTION:-0.1}"
TOPOLOGIES="${TOPOLOGIES:-3x2 1x1}"
CONCURRENCY="${CONCURRENCY:-256}"
MODES="${MODES:-http http-new https https-new https-new-full}"

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_start bench-e2e
# PostgreSQL runs as the postgres user when we are root: it must reach its
# directory inside ours.
chmod 755 "$work"
say "building release binaries"
cargo build --locked --release -q --bin cluster --bin capture --bin worker --bin results --bin loadgen

hz="$(getconf CLK_TCK)"

# sample_cpu DIR PID_OF_CLUSTER OUT: until the cluster exits, every 0.5 s,
# records each process's CPU ticks so far (the last sample wins) as
# "role ticks" lines in OUT, by process name.
sample_cpu() {
  local dir="$1" cluster="$2" out="$3" f pid ticks
  declare -A last=()
  while kill -0 "$cluster" 2>/dev/null; do
    for f in "$dir"/run/*.pid; do
      [ -e "$f" ] || continue
      pid="$(cat "$f" 2>/dev/null)" || continue
      # With its children: PostgreSQL's backends do its work.
      # shellcheck disable=SC2046 # one pid per word
      ticks="$(cat "/proc/$pid/stat" $(pgrep -P "$pid" | sed 's|.*|/proc/&/stat|') 2>/dev/null |
        awk '{t += $14 + $15} END {print t + 0}')"
      [ "$ticks" -gt 0 ] || continue
      last["$(basename "$f" .pid)"]="$ticks"
    done
    for pid in $(pgrep -P "$cluster" -f loadgen || true); do
      ticks="$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null)" || continue
      last[loadgen]="$ticks"
    done
    : >"$out.tmp"
    for f in "${!last[@]}"; do echo "$f ${last[$f]}" >>"$out.tmp"; done
    mv "$out.tmp" "$out"
    sleep 0.5
  done
}

field() { # field REPORT "measure" -> its value cell
  awk -F' \\| ' -v m="$2" '$1 == "| " m {sub(/ \|$/, "", $2); print $2; exit}' "$1"
}

# What each edge mode asks of `cluster rehearse`, and its name in the tables.
mode_flags() {
  case "$1" in
    http) ;;
    http-new) echo --new-connection-per-voter ;;
    https) echo --https ;;
    https-new) echo --https --new-connection-per-voter ;;
    https-new-full) echo --https --new-connection-per-voter --no-tls-resumption ;;
    *) die "unknown mode $1 in MODES (http http-new https https-new https-new-full)" ;;
  esac
}
mode_name() {
  case "$1" in
    http) echo "HTTP, keep-alive" ;;
    http-new) echo "HTTP, new connection per voter" ;;
    https) echo "HTTPS, keep-alive" ;;
    https-new) echo "HTTPS, new connection per voter (resumed)" ;;
    https-new-full) echo "HTTPS, new connection per voter (full handshakes)" ;;
  esac
}
first="${TOPOLOGIES%% *}"
runs=()
for topo in $TOPOLOGIES; do
  if [ "$topo" = "$first" ]; then
    for mode in $MODES; do runs+=("$topo:$mode"); done
  else
    runs+=("$topo:http")
  fi
done

rows=()
cpu_rows=()
tls_rows=()
for run in "${runs[@]}"; do
  topo="${run%%:*}"
  mode="${run#*:}"
  capture="${topo%x*}"
  workers="${topo#*x}"
  dir="$work/$topo-$mode"
  report="$work/$topo-$mode.report"
  say "$topo, $mode: $capture capture nodes, $workers workers, $VOTERS voters (this takes a minute or two)"
  started="$(now)"
  # shellcheck disable=SC2046 # the mode's flags, one per word
  target/release/cluster rehearse --voters "$VOTERS" --change-fraction "$CHANGE_FRACTION" \
    --capture "$capture" --workers "$workers" --concurrency "$CONCURRENCY" \
    --port "$(free_port)" --results-port "$(free_port)" \
    --tls-port "$(free_port)" --results-tls-port "$(free_port)" --data-dir "$dir" \
    $(mode_flags "$mode") \
    --report "$report" >"$work/$topo-$mode.log" 2>&1 &
  cluster=$!
  pids+=("$cluster")
  sample_cpu "$dir" "$cluster" "$work/$topo-$mode.cpu" &
  sampler=$!
  status=0
  wait "$cluster" || status=$?
  wait "$sampler" || true
  say "$topo: exit $status after $(since "$started") s"
  [ -f "$report" ] || die "$topo: no report; see the log:$(tail -n 20 "$work/$topo-$mode.log")"

  acked="$(field "$report" acknowledged)"
  wall="$(field "$report" "wall time")"
  rate="$(field "$report" "votes/s (acknowledged)")"
  lat="$(field "$report" "latency p50 / p90 / p99 / max")"
  p999="$(field "$report" "latency p99.9")"
  results="$(field "$report" "results a / b")"
  checked="$(field "$report" "database rows / voters checked / mismatches")"
  waited="$(sed -n 's/.*final, waited \([0-9.]*\) s.*/\1/p' <<<"$results")"
  to_final="$(awk -v w="${wall% s}" -v f="${waited:-0}" 'BEGIN { printf "%.1f s", w + f }')"
  exact="no"
  [ "$status" -eq 0 ] && exact="yes"
  label="${capture} × capture, ${workers} × worker, $(mode_name "$mode")"
  if [ "${mode#https}" != "$mode" ]; then
    tls_rows+=("| $(mode_name "$mode") | $(field "$report" "TLS handshakes full / resumed / failed") | $(field "$report" "TLS handshakes/s") | $(field "$report" "TLS handshake p50 / p90 / p99 / max") |")
  fi
  rows+=("| $label | $acked | $wall | $rate | ${waited:-?} s | $to_final | $lat / p99.9 $p999 | $exact ($checked) |")

  # CPU per acknowledged vote, by tier (each tier's processes summed). Once
  # a run came back without samples (not seen again): say so, not 0.0 µs.
  cpu_line="| $label |"
  for role in haproxy capture redis loadgen postgres worker results; do
    if grep -q "^$role" "$work/$topo-$mode.cpu" 2>/dev/null; then
      us="$(awk -v r="$role" -v hz="$hz" -v n="$acked" '
        index($1, r) == 1 { t += $2 }
        END { printf "%.1f µs", t / hz * 1e6 / n }' "$work/$topo-$mode.cpu")"
    else
      say "$topo: no CPU samples of $role"
      us="?"
    fi
    cpu_line+=" $us |"
  done
  cpu_rows+=("$cpu_line")
done

section="$work/section.md"
{
  echo "<!-- e2e:begin -->"
  echo "## End to end: a ${VOTERS}-voter rehearsal through HAProxy"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(cores_desc), $(mem_desc); release build, everything on"
  echo "this one machine: HAProxy, the capture nodes with a Redis each, the workers, PostgreSQL,"
  echo "results, and loadgen itself."
  echo "Command: \`make bench-e2e\` (\`scripts/bench-e2e.sh\`: for each topology,"
  echo "\`cluster rehearse --voters $VOTERS --change-fraction $CHANGE_FRACTION --capture C --workers W --concurrency $CONCURRENCY\`;"
  echo "the first topology once per edge mode, \`--https\`, \`--new-connection-per-voter\`, \`--no-tls-resumption\`)."
  echo "The machine is shared with other builds and benchmarks while this runs: CPU per vote"
  echo "is the better guide than rates, and short runs (VOTERS below a million) are noisier."
  echo
  echo "| topology | votes acknowledged | voting time | capture rate (votes/s) | final after the last vote | first vote to final count | latency p50 / p90 / p99 / max | exact? (rows / voters checked / mismatches) |"
  echo "|---|---:|---:|---:|---:|---:|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "The drain keeps up while voting goes on (the count is final within about a"
  echo "second of the last vote), so the drain rate equals the capture rate here; the"
  echo "drain's own ceiling, with a backlog, is in the Worker section. \"Exact\" means"
  echo "\`cluster rehearse\` exited 0: the per-option results equal loadgen's ground"
  echo "truth and every voter's stored choice is the last one acknowledged."
  echo
  if [ "${#tls_rows[@]}" -gt 0 ]; then
    echo "TLS handshakes as loadgen made and timed them (ClientHello to finished; loadgen"
    echo "shares the machine's two cores with every tier, so these latencies include waiting"
    echo "for a core):"
    echo
    echo "| edge mode | handshakes full / resumed / failed | handshakes/s | handshake p50 / p90 / p99 / max |"
    echo "|---|---|---:|---|"
    printf '%s\n' "${tls_rows[@]}"
    echo
  fi
  echo "CPU per acknowledged vote, by tier (user + system, from /proc):"
  echo
  echo "| topology | HAProxy | capture | Redis | loadgen | PostgreSQL | worker | results |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${cpu_rows[@]}"
  echo
  echo "Two cores give 2,000,000 µs of CPU a second; the sum of a row is what one vote"
  echo "costs the whole machine, so 2,000,000 divided by it is the most this machine can"
  echo "take end to end. HAProxy and loadgen are there only because everything shares"
  echo "one machine; on separate hosts each tier has its own cores (\`docs/CAPACITY.md\`)."
  echo "<!-- e2e:end -->"
} >"$section"
write_section e2e "$section"
