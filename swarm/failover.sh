#!/usr/bin/env bash
# Failover of the Swarm deployment (issue 17), one command per case, run on
# a manager (docs/DEPLOY.md and swarm/README.md, "Replicas"):
#
#   swarm/failover.sh queue NN   redisNN's node or disk is lost: its replica
#                                becomes the queue, and the workers drain it
#   swarm/failover.sh store      postgres's node or volume is lost: the
#                                standby becomes the store
#
# Each does, and prints, `docker service update`s: the lost one is
# scaled to 0 first, so that it never comes back on its own (a Redis
# restarted on an empty disk would make its replica drop every vote it
# holds; a PostgreSQL restarted beside the promoted one would take writes
# too), then the copy is restarted as a primary with REDIS_PROMOTED=1 /
# PROMOTED=1 (docker/redis-entrypoint.sh, docker/postgres-standby.sh) and
# pinned to the node that holds its data. Nothing needs the lost node. The
# workers and results list every replica (REDIS_URLS) and both PostgreSQL
# servers (target_session_attrs=read-write), so they follow by themselves;
# for a queue, the lost primary is then taken out of their REDIS_URLS
# (results calls the count final only once every listed queue answers
# empty). The capture of the lost queue's node fails /readyz without its
# Redis, so HAProxy sends its votes to the others.
#
# Afterwards, keep it so in the next `docker stack deploy`: REDISNN_PROMOTED=1
# or POSTGRES_STANDBY_PROMOTED=1 in its environment, and the pin
# (docker service inspect shows it). Going back: swarm/README.md.
#
#   STACK   the stack's name, the services' prefix [voteswarm]
#   DOCKER  the docker CLI [docker]
set -euo pipefail

stack="${STACK:-voteswarm}"
docker="${DOCKER:-docker}"

die() {
  echo "failover: $*" >&2
  exit 1
}

say() {
  printf '+ %s\n' "$*" >&2
  "$docker" "$@"
}

# The node a service's running task is on.
node_of() {
  "$docker" service ps --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' "$1" |
    awk '$2 == "Running" {print $1; exit}'
}

# promote LOST COPY ENV: LOST scaled to 0 without waiting for it (its node may
# be gone), then COPY restarted as a primary where its data is.
promote() {
  local lost="$1" copy="$2" env="$3" node
  "$docker" service inspect "$copy" >/dev/null 2>&1 || die "no service $copy"
  node="$(node_of "$copy")"
  [ -n "$node" ] || die "$copy has no running task: nothing to promote (docker service ps $copy)"
  say service update --detach --replicas 0 "$lost" >/dev/null
  say service update --detach=false --quiet --env-add "$env=1" \
    --constraint-add "node.hostname==$node" "$copy"
  echo "failover: $copy is the primary now, on $node; $lost is scaled to 0" >&2
}

# without_queue SERVICE URL: SERVICE's REDIS_URLS without URL, set if it was
# there (a rolling restart of that service).
without_queue() {
  local service="$1" url="$2" urls kept
  urls="$("$docker" service inspect -f '{{range .Spec.TaskTemplate.ContainerSpec.Env}}{{println .}}{{end}}' "$service" |
    sed -n 's/^REDIS_URLS=//p')"
  kept="$(printf '%s' "$urls" | tr ',' '\n' | grep -vxF "$url" | paste -sd, -)" || true
  if [ "$kept" = "$urls" ]; then
    echo "failover: $service's REDIS_URLS has no $url: unchanged" >&2
    return
  fi
  [ -n "$kept" ] || die "$service's REDIS_URLS would be empty without $url"
  say service update --detach=false --quiet --env-add "REDIS_URLS=$kept" "$service"
}

case "${1:-}" in
  queue)
    [ $# -eq 2 ] || die "usage: swarm/failover.sh queue NN (the queue's number, as in redisNN)"
    case "$2" in [0-9][0-9]) ;; *) die "queue must be two digits (01, 02, ...), not '$2'" ;; esac
    promote "${stack}_redis$2" "${stack}_redis$2-replica" REDIS_PROMOTED
    for s in worker results; do
      without_queue "${stack}_$s" "redis://redis$2:6379"
    done
    ;;
  store)
    [ $# -eq 1 ] || die "usage: swarm/failover.sh store"
    promote "${stack}_postgres" "${stack}_postgres-standby" PROMOTED
    ;;
  *) die "usage: swarm/failover.sh queue NN | store" ;;
esac
