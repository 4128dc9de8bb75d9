#!/usr/bin/env bash
# A real three-node Docker Swarm on this one machine, running the shipped
# swarm/stack.yml (or swarm/create-services.sh), offline (issue 12).
#
#   scripts/swarm.sh up [--via stack|services]   # make swarm-up [VIA=services]
#   scripts/swarm.sh redeploy [--via ...]        # afresh, data wiped
#   scripts/swarm.sh down                        # make swarm-down
#   scripts/swarm.sh env                         # the lines below again
#
# up: starts its own dockerd (data, sockets and pid under SWARM_DIR, default
# target/swarm), imports the Debian base (debootstrap once, then the cached
# `docker save` in target/swarm-cache), builds the images once (voteswarm
# from the host's release binaries, the node image, the Redis, PostgreSQL
# and HAProxy stand-ins), starts three nodes (a dockerd each, in a
# container, on a network of its own), forms the swarm, labels and prepares
# the nodes as swarm/README.md tells an operator to, loads the images into
# every node, creates the secrets with create-services.sh --secrets-only,
# deploys, waits until every service converged and every container is
# healthy, and prints one per line:
#   vote: https://127.0.0.1:PORT/
#   results: https://127.0.0.1:PORT/
#   ca: .../tls/ca.pem   (the run's own CA: curl --cacert, loadgen --ca-file)
#   plain: http://127.0.0.1:PORT/ and http://127.0.0.1:PORT/ (308 to HTTPS)
#   database: postgres://voteswarm:PASSWORD@127.0.0.1:PORT/voteswarm
#   docker: DOCKER_HOST=unix://.../node1/docker.sock
# down: removes every container, network and volume it made, stops its
# dockerd by pid, unmounts what is left under SWARM_DIR and deletes it.
# Both are safe to run twice.
#
# Nodes: node1 edge+store and both queues' replicas (the manager), node2
# capture+worker with queue 01, node3 capture+worker with queue 02 and the
# store's standby: every copy on another node than its original. Environment: SWARM_DIR, SWARM_SUBNET (192.168.213.0/24),
# SWARM_VOTE_PORT, SWARM_RESULTS_PORT, SWARM_VOTE_TLS_PORT,
# SWARM_RESULTS_TLS_PORT, SWARM_DB_PORT (free ports when unset),
# and the stack's own variables (VOTE_RATE_LIMIT and NEW_VOTER_LIMIT default
# to 10000000 and 100000000 here: every simulated voter comes from one
# address).
# shellcheck disable=SC2317 # node_up and converged run through poll
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

dir="${SWARM_DIR:-$root/target/swarm}"
cache="$root/target/swarm-cache"
subnet="${SWARM_SUBNET:-192.168.213.0/24}"
net_prefix="${subnet%.*}"
docker_bin=/usr/bin/docker
sock="$dir/docker.sock"
net=vs-swarm
nodes=(1 2 3)
log() { echo "swarm: $*" >&2; }
die() {
  echo "swarm: error: $*" >&2
  exit 1
}

# The outer engine, and each node's engine through it.
D() { DOCKER_HOST="unix://$sock" "$docker_bin" "$@"; }
N() {
  local n="$1"
  shift
  D exec "vs-node$n" docker "$@"
}
manager_sock() { echo "$dir/node1/docker.sock"; }
M() { DOCKER_HOST="unix://$(manager_sock)" "$docker_bin" "$@"; }

# poll SECONDS WHAT CMD...: runs CMD every half second until it succeeds.
poll() {
  local secs="$1" what="$2" end
  shift 2
  end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || die "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ------------------------------------------------------------------ dockerd
start_dockerd() {
  dockerd_bin="$(PATH=/usr/sbin:/usr/bin:$PATH command -v dockerd)" || die "cannot start dockerd: dockerd is missing (scripts/install-deps.sh test installs docker.io)"
  [ "$(id -u)" = 0 ] || die "cannot start dockerd: it needs root (running as uid $(id -u))"
  mkdir -p "$dir/data" "$dir/exec"
  if [ -f "$dir/dockerd.pid" ] && kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; then
    return
  fi
  echo '{}' >"$dir/daemon.json"
  # Offline: no registry is reachable here. The variable keeps the engine
  # from pulling for services; the proxy on a closed port catches the rest.
  # --bridge none: no docker0, which another engine on this machine may own.
  DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY='' \
    setsid "$dockerd_bin" --config-file "$dir/daemon.json" --data-root "$dir/data" --exec-root "$dir/exec" \
    --pidfile "$dir/dockerd.pid" -H "unix://$sock" --bridge none --log-level warn \
    >"$dir/dockerd.log" 2>&1 </dev/null &
  local pid=$! end=$((SECONDS + 60))
  until D version >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -20 "$dir/dockerd.log" >&2
      die "cannot start dockerd (it exited; its log is above and in $dir/dockerd.log)"
    fi
    ((SECONDS < end)) || die "cannot start dockerd: no answer on $sock within 60 s ($dir/dockerd.log)"
    sleep 0.2
  done
  log "dockerd $(D version -f '{{.Server.Version}}') up (pid $pid, $sock)"
}

# ------------------------------------------------------------------ images
base_image() {
  D image inspect debian:bookworm-slim >/dev/null 2>&1 && return
  local tar="$cache/debian-bookworm-slim.tar"
  if [ ! -s "$tar" ]; then
    command -v debootstrap >/dev/null || die "debootstrap is missing (scripts/install-deps.sh test installs it)"
    # The mirror this machine's apt already uses.
    local mirror
    mirror="$({ cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true; } |
      sed -n 's/^URIs: *\(http[^ ]*\).*/\1/p; s/^deb  *\(http[^ ]*\) .*/\1/p' | sed -n 1p)"
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    log "debootstrap bookworm from $mirror (once; cached in $tar)"
    rm -rf "$cache/rootfs"
    mkdir -p "$cache"
    debootstrap --variant=minbase bookworm "$cache/rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
      die "debootstrap failed ($cache/debootstrap.log)"
    rm -rf "$cache/rootfs/var/cache/apt/archives/"*.deb "$cache/rootfs/var/lib/apt/lists/"*
    tar -C "$cache/rootfs" -c . | D import --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
    D save -o "$tar.tmp" debian:bookworm-slim
    mv "$tar.tmp" "$tar"
    rm -rf "$cache/rootfs"
  else
    D load -q -i "$tar" >/dev/null
  fi
}

# build TAG LOG ARGS...: one image; apt reaches the mirror on the host's network.
build() {
  local tag="$1" logf="$dir/build-$2.log"
  shift 2
  if DOCKER_BUILDKIT=1 D build --network host --progress plain -t "$tag" "$@" >"$logf" 2>&1; then
    log "built $tag"
  else
    tail -30 "$logf" >&2
    log "FAILED to build $tag ($logf)"
    return 1
  fi
}

images() {
  base_image
  local b
  for b in capture worker results loadgen cluster; do
    [ -x "target/release/$b" ] || die "target/release/$b is missing: run cargo build --locked --release --bins (make swarm-up does)"
  done
  # Stripped copies: the image needs no debug info, and is loaded into
  # every node.
  rm -rf target/swarm-bin
  mkdir -p target/swarm-bin
  for b in capture worker results loadgen cluster; do
    strip -o "target/swarm-bin/$b" "target/release/$b"
  done
  local pids=() failed=0 p
  build voteswarm:latest voteswarm --build-arg BINARIES=host --build-arg BINARIES_DIR=target/swarm-bin . &
  pids+=($!)
  build voteswarm-node:latest node -f docker/swarm-node/Dockerfile docker &
  pids+=($!)
  build redis:7.0 redis -f docker/standins/redis/Dockerfile docker &
  pids+=($!)
  build postgres:15 postgres -f docker/standins/postgres/Dockerfile docker &
  pids+=($!)
  build haproxy:2.6 haproxy -f docker/standins/haproxy/Dockerfile docker &
  pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  ((failed == 0)) || die "an image did not build (logs in $dir/build-*.log)"
}

# ------------------------------------------------------------------ nodes
node_ip() { echo "$net_prefix.$((10 + $1))"; }

# node_up N: node N's dockerd answers; dies with the node's log if the
# node's container stopped.
node_up() {
  if [ "$(D inspect -f '{{.State.Running}}' "vs-node$1")" != true ]; then
    D logs --tail 20 "vs-node$1" >&2 || true
    die "node$1 exited (its log is above)"
  fi
  N "$1" version
}

start_nodes() {
  D network inspect "$net" >/dev/null 2>&1 ||
    D network create --driver bridge --subnet "$subnet" --label com.voteswarm.swarm=1 "$net" >/dev/null
  local n ports
  for n in "${nodes[@]}"; do
    D container inspect "vs-node$n" >/dev/null 2>&1 && continue
    mkdir -p "$dir/node$n"
    ports=()
    if [ "$n" = 1 ]; then
      # The edge's host-mode ports and the store's PostgreSQL, to
      # 127.0.0.1 only.
      ports=(-p "127.0.0.1:$vote_port:80" -p "127.0.0.1:$results_port:8081"
        -p "127.0.0.1:$vote_tls_port:443" -p "127.0.0.1:$results_tls_port:8444"
        -p "127.0.0.1:$db_port:5432")
    fi
    # Not --privileged (it fails here: the bounding set lacks
    # CAP_SYS_RESOURCE); every other capability, no seccomp filter, /sys
    # writable (the entrypoint remounts it) and every device.
    D run -d --name "vs-node$n" --hostname "node$n" --network "$net" --ip "$(node_ip "$n")" \
      --label com.voteswarm.swarm=1 \
      --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined \
      --security-opt systempaths=unconfined --device-cgroup-rule 'a *:* rwm' \
      -v "vs-node$n-docker:/var/lib/docker" -v "$dir/node$n:/outside" \
      "${ports[@]}" voteswarm-node:latest -H unix:///var/run/docker.sock -H unix:///outside/docker.sock >/dev/null
  done
  for n in "${nodes[@]}"; do
    poll 60 "node$n's dockerd" node_up "$n"
  done
  log "3 nodes' dockerd up"
}

form_swarm() {
  if [ "$(N 1 info -f '{{.Swarm.LocalNodeState}}')" != active ]; then
    N 1 swarm init --advertise-addr "$(node_ip 1)" --listen-addr "$(node_ip 1):2377" >/dev/null
  fi
  local token n
  token="$(N 1 swarm join-token -q worker)"
  for n in 2 3; do
    if [ "$(N "$n" info -f '{{.Swarm.LocalNodeState}}')" != active ]; then
      N "$n" swarm join --advertise-addr "$(node_ip "$n")" --listen-addr "$(node_ip "$n"):2377" \
        --token "$token" "$(node_ip 1):2377" >/dev/null
    fi
  done
  poll 60 "3 nodes Ready" bash -c "[ \"\$(DOCKER_HOST=unix://$(manager_sock) $docker_bin node ls -f role=worker --format '{{.Status}}' | grep -c Ready)\" = 2 ]"
  # As swarm/README.md tells an operator: one label per role a node has.
  M node update --label-add edge=true --label-add store=true --label-add queue_replicas=true node1 >/dev/null
  M node update --label-add capture=true --label-add worker=true --label-add queue=01 node2 >/dev/null
  M node update --label-add capture=true --label-add worker=true --label-add queue=02 \
    --label-add store_standby=true node3 >/dev/null
  # Each capture node's directories, and the replicas' (swarm/README.md,
  # step 3).
  for n in 2 3; do
    D exec "vs-node$n" install -d -o 10001 -g 10001 -m 0700 /var/lib/voteswarm/redis /var/lib/voteswarm/redis-socket
  done
  D exec vs-node1 install -d -o 10001 -g 10001 -m 0700 /var/lib/voteswarm/redis-replica01 /var/lib/voteswarm/redis-replica02
  log "swarm formed: node1 edge+store+replicas (manager), node2 and node3 capture+worker (queues 01, 02), node3 the standby"
}

load_images() {
  local img n pids=() failed=0 p
  for img in voteswarm redis postgres haproxy; do
    D save -o "$dir/$img.tar" "$(image_tag "$img")"
  done
  # Each node gets what its labels let run there (postgres alone is 589 MB):
  # node1 the edge, the store and the replicas, nodes 2 and 3 capture, Redis
  # and workers, node3 the standby too.
  local want=([1]="haproxy postgres redis" [2]="redis" [3]="redis postgres")
  for n in "${nodes[@]}"; do
    (
      for img in voteswarm ${want[$n]}; do
        D exec -i "vs-node$n" docker load -q <"$dir/$img.tar" >/dev/null
      done
    ) &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  rm -f "$dir"/{voteswarm,redis,postgres,haproxy}.tar
  ((failed == 0)) || die "loading the images into a node failed"
  log "images loaded into the 3 nodes"
}

image_tag() {
  case "$1" in
    voteswarm) echo voteswarm:latest ;;
    redis) echo redis:7.0 ;;
    postgres) echo postgres:15 ;;
    haproxy) echo haproxy:2.6 ;;
  esac
}

# ------------------------------------------------------------------ TLS
# The edge's certificate, as an operator brings one: a CA of this run's own
# (the file loadgen's --ca-file and a browser trust) and a certificate for
# localhost and 127.0.0.1 signed by it, chain then key in one PEM, made a
# swarm secret by create-services.sh --secrets-only from EDGE_PEM_FILE.
edge_cert() {
  local t="$dir/tls"
  [ -s "$t/edge.pem" ] && return
  mkdir -p "$t"
  (
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -subj "/CN=voteswarm local swarm CA" -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj /CN=localhost -keyout "$t/edge.key" -out "$t/edge.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$t/ext"
    openssl x509 -req -in "$t/edge.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
      -days 30 -extfile "$t/ext" -out "$t/edge.crt" 2>/dev/null
    cat "$t/edge.crt" "$t/ca.pem" "$t/edge.key" >"$t/edge.pem"
  ) || die "cannot make the edge's certificate with openssl"
  chmod 644 "$t/ca.pem"
}

# ------------------------------------------------------------------ deploy
deploy() {
  edge_cert
  export EDGE_PEM_FILE="$dir/tls/edge.pem"
  # The redirects from the plain ports name the HTTPS ports as published
  # on 127.0.0.1.
  export HTTPS_REDIRECT_PORT=":$vote_tls_port" RESULTS_HTTPS_REDIRECT_PORT=":$results_tls_port"
  export VOTE_RATE_LIMIT="${VOTE_RATE_LIMIT:-10000000}"
  export NEW_VOTER_LIMIT="${NEW_VOTER_LIMIT:-100000000}"
  # Every node has this machine's CPUs; a limit above them is rejected.
  local cpus
  cpus="$(nproc)"
  export POSTGRES_CPUS="${POSTGRES_CPUS:-$((cpus < 4 ? cpus : 4))}"
  export HAPROXY_CPUS="${HAPROXY_CPUS:-$((cpus < 2 ? cpus : 2))}"
  export WORKER_CPUS="${WORKER_CPUS:-$((cpus < 2 ? cpus : 2))}"
  # /usr/bin first: the engine's own client (20.10) for the scripts too.
  local env=(env "PATH=/usr/bin:$PATH" "DOCKER_HOST=unix://$(manager_sock)")
  case "$via" in
    stack)
      "${env[@]}" swarm/create-services.sh --secrets-only
      "${env[@]}" docker stack deploy -c swarm/stack.yml --resolve-image never voteswarm
      ;;
    services) "${env[@]}" swarm/create-services.sh --no-resolve-image ;;
  esac
}

# converged: every service has all its tasks running, every container of
# the deployment on every node is healthy (none starting or unhealthy), and
# HAProxy answers on both published ports.
converged() {
  local name line n
  [ "$(M service ls -q | wc -l)" -ge 6 ] || return 1
  while read -r name line; do
    # A one-off service (the schema migration) is done once a task of it
    # completed; every other one runs all its tasks.
    if [ "$name" = voteswarm_migrate ]; then
      M service ps --format '{{.CurrentState}}' "$name" | grep -q '^Complete' || return 1
      continue
    fi
    case "$line" in 0/*) return 1 ;; esac
    [ "${line%%/*}" = "${line#*/}" ] || return 1
  done < <(M service ls --format '{{.Name}} {{.Replicas}}' | awk '{print $1, $2}')
  for n in "${nodes[@]}"; do
    if N "$n" ps --format '{{.Names}} {{.Status}}' | grep voteswarm_ | grep -qE 'starting|unhealthy'; then
      return 1
    fi
  done
  python3 - "$dir/tls/ca.pem" "$vote_port" "$vote_tls_port" "$results_tls_port" <<'PY'
import ssl, sys, urllib.request
ca, plain, *tls = sys.argv[1:]
# The plain port answers its health path itself; the rest redirects.
urllib.request.urlopen(f"http://127.0.0.1:{plain}/healthz", timeout=3).read()
ctx = ssl.create_default_context(cafile=ca)
for p in tls:
    urllib.request.urlopen(f"https://127.0.0.1:{p}/", timeout=3, context=ctx).read()
PY
}

db_forward() {
  # PostgreSQL is never published by the stack; for checking the count
  # from the host, node1 forwards its port 5432 (published on 127.0.0.1
  # only) into the network namespace of the PostgreSQL task, looked up per
  # connection so that a replaced task is found. (A script: socat would
  # split an inline command at its colons.)
  D exec -i vs-node1 install -m 0755 /dev/stdin /usr/local/bin/pg-forward <<'SH'
#!/bin/sh
pid="$(docker inspect -f '{{.State.Pid}}' "$(docker ps -q -f name=voteswarm_postgres | head -1)")"
exec nsenter -t "$pid" -n socat STDIO TCP:127.0.0.1:5432
SH
  D exec vs-node1 pkill -f 'socat TCP-LISTEN:5432' >/dev/null 2>&1 || true
  D exec -d vs-node1 socat TCP-LISTEN:5432,fork,reuseaddr EXEC:/usr/local/bin/pg-forward
}

print_env() {
  cat "$dir/env"
}

# converge_and_report: waits for the deployment, then writes and prints the
# lines a user (or tests/swarm.rs) needs.
converge_and_report() {
  local t1=$SECONDS pg env user db pw
  poll 300 "every service converged and healthy" converged
  log "converged $((SECONDS - t1)) s after the deploy"
  db_forward
  # The login PostgreSQL's first start made, as the deployment set it
  # (POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE), URL-encoded.
  pg="$(N 1 ps -q -f name=voteswarm_postgres | head -1)"
  env="$(N 1 inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$pg")"
  user="$(sed -n 's/^POSTGRES_USER=//p' <<<"$env")"
  db="$(sed -n 's/^POSTGRES_DB=//p' <<<"$env")"
  pw="$(N 1 exec "$pg" cat "$(sed -n 's/^POSTGRES_PASSWORD_FILE=//p' <<<"$env")")"
  read -r user pw < <(python3 -c 'import sys, urllib.parse as u; print(*(u.quote(a, safe="") for a in sys.argv[1:]))' "${user:-postgres}" "$pw")
  {
    echo "vote: https://127.0.0.1:$vote_tls_port/"
    echo "results: https://127.0.0.1:$results_tls_port/"
    echo "ca: $dir/tls/ca.pem"
    echo "plain: http://127.0.0.1:$vote_port/ and http://127.0.0.1:$results_port/ (308 to HTTPS)"
    echo "database: postgres://$user:$pw@127.0.0.1:$db_port/${db:-$user}"
    echo "docker: DOCKER_HOST=unix://$(manager_sock)"
  } >"$dir/env"
  chmod 600 "$dir/env"
  print_env
}

running() { [ -f "$dir/dockerd.pid" ] && kill -0 "$(cat "$dir/dockerd.pid")" 2>/dev/null; }

up() {
  if [ -s "$dir/env" ] && running; then
    log "already up (scripts/swarm.sh down first to start afresh)"
    print_env
    return
  fi
  local t0=$SECONDS
  mkdir -p "$dir"
  if [ -s "$dir/ports" ]; then
    read -r vote_port results_port db_port vote_tls_port results_tls_port <"$dir/ports"
  else
    vote_port="${SWARM_VOTE_PORT:-$(free_port)}"
    results_port="${SWARM_RESULTS_PORT:-$(free_port)}"
    db_port="${SWARM_DB_PORT:-$(free_port)}"
    vote_tls_port="${SWARM_VOTE_TLS_PORT:-$(free_port)}"
    results_tls_port="${SWARM_RESULTS_TLS_PORT:-$(free_port)}"
    echo "$vote_port $results_port $db_port $vote_tls_port $results_tls_port" >"$dir/ports"
  fi
  start_dockerd
  images
  log "images ready after $((SECONDS - t0)) s"
  start_nodes
  form_swarm
  load_images
  deploy
  converge_and_report
  log "up in $((SECONDS - t0)) s"
}

# redeploy: removes the deployment (stack or services), its data (the
# database volume, every Redis's append-only files) and deploys afresh,
# by the stack or by create-services.sh, on the same swarm.
redeploy() {
  if ! running || [ ! -s "$dir/ports" ]; then
    die "not up (scripts/swarm.sh up first)"
  fi
  read -r vote_port results_port db_port vote_tls_port results_tls_port <"$dir/ports"
  rm -f "$dir/env"
  M stack rm voteswarm >/dev/null 2>&1 || true
  local ids n
  ids="$(M service ls -q -f label=com.voteswarm)"
  # shellcheck disable=SC2086 # a list of ids
  [ -z "$ids" ] || M service rm $ids >/dev/null
  poll 120 "the services removed" bash -c "[ -z \"\$(DOCKER_HOST=unix://$(manager_sock) $docker_bin service ls -q)\" ]"
  for n in "${nodes[@]}"; do
    poll 120 "node$n's containers gone" bash -c "! DOCKER_HOST=unix://$sock $docker_bin exec vs-node$n docker ps -a --format '{{.Names}}' | grep -q voteswarm_"
  done
  poll 60 "the networks removed" bash -c "[ -z \"\$(DOCKER_HOST=unix://$(manager_sock) $docker_bin network ls -q -f name=voteswarm_)\" ]"
  N 1 volume rm -f voteswarm_pgdata >/dev/null
  N 3 volume rm -f voteswarm_pgdata-standby >/dev/null
  for n in 2 3; do
    D exec "vs-node$n" sh -c 'rm -rf /var/lib/voteswarm/redis/* /var/lib/voteswarm/redis-socket/*'
  done
  D exec vs-node1 sh -c 'rm -rf /var/lib/voteswarm/redis-replica01/* /var/lib/voteswarm/redis-replica02/*'
  log "deployment and its data removed; deploying by $via"
  deploy
  converge_and_report
}

# dockerd leaves its iptables chains behind when it exits (empty, but
# hooked into FORWARD, PREROUTING and OUTPUT). With no engine running they
# serve nothing, and a dockerd that starts makes them again: remove them
# so that a run leaves the machine's firewall as it found it.
remove_engine_chains() {
  command -v iptables >/dev/null || return 0
  pgrep -x dockerd >/dev/null && return 0
  local t rule c removed=0
  for t in filter nat; do
    while read -r rule; do
      # shellcheck disable=SC2086 # the rule's own words
      iptables -t "$t" ${rule/#-A/-D} 2>/dev/null && removed=1
    done < <(iptables -t "$t" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j DOCKER' | grep -v '^-A DOCKER')
    for c in $(iptables -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^DOCKER/ {print $2}'); do
      iptables -t "$t" -F "$c" 2>/dev/null || true
    done
    for c in $(iptables -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^DOCKER/ {print $2}'); do
      iptables -t "$t" -X "$c" 2>/dev/null && removed=1
    done
  done
  if ((removed)); then log "removed the iptables chains dockerd left"; fi
  return 0
}

down() {
  [ -d "$dir" ] || {
    log "nothing to remove ($dir does not exist)"
    remove_engine_chains
    return
  }
  case "$dir" in /* ) ;; *) die "SWARM_DIR must be an absolute path" ;; esac
  local pid=""
  [ -f "$dir/dockerd.pid" ] && pid="$(cat "$dir/dockerd.pid")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && D version >/dev/null 2>&1; then
    local ids
    ids="$(D ps -aq -f label=com.voteswarm.swarm=1)"
    if [ -n "$ids" ]; then
      # Killed, not stopped: everything they hold is deleted next, and a
      # node's dockerd would wait out every task's stop grace period.
      # shellcheck disable=SC2086 # a list of ids
      D rm -f -v $ids >/dev/null || true
    fi
    D network rm "$net" >/dev/null 2>&1 || true
    local v
    for v in "${nodes[@]}"; do D volume rm -f "vs-node$v-docker" >/dev/null 2>&1 || true; done
  fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    local end=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < end)); do sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    log "dockerd (pid $pid) stopped"
  fi
  # Whatever a killed engine left mounted under the run's directory.
  local m
  while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
  rm -rf "$dir"
  log "removed $dir"
  remove_engine_chains
}

main() {
  cmd="${1:-}"
  [ $# -gt 0 ] && shift
  via="${VIA:-stack}"
  while (($#)); do
    case "$1" in
      --via)
        [ $# -ge 2 ] || die "--via needs stack or services"
        via="$2"
        shift
        ;;
      *) die "unknown argument: $1" ;;
    esac
    shift
  done
  case "$via" in stack | services) ;; *) die "--via must be stack or services, not '$via'" ;; esac
  case "$cmd" in
    up) up ;;
    redeploy) redeploy ;;
    down) down ;;
    env) print_env ;;
    *) die "usage: scripts/swarm.sh up|redeploy [--via stack|services] | down | env" ;;
  esac
}

# One line: bash has read it whole before main runs, so editing this file
# while it runs cannot derail it.
main "$@"; exit $?
