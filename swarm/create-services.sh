#!/usr/bin/env bash
# voteswarm on Docker Swarm without stacks: the topology of swarm/stack.yml,
# created with `docker service create`, one command per role. Run it on a
# manager, from anywhere (paths are relative to this script).
#
#   swarm/create-services.sh [--dry-run] [--secrets-only] [--workers M]
#                            [--queues N] [--queue-replicas 0|1]
#                            [--no-resolve-image] [--with-registry-auth]
#
#   --dry-run       print every command instead of running it
#   --secrets-only  create the secrets (random values; those that exist are
#                   kept) and the edge's certificate from EDGE_PEM_FILE,
#                   and stop: what `docker stack deploy` needs first
#   --workers M     worker replicas [2, or $WORKERS]
#   --queues N      capture nodes' queues: redis01..redisNN, each on the
#                   node labelled queue=NN, each with its replica
#                   redisNN-replica [2, or $QUEUES]
#   --queue-replicas 0|1  1: each queue's replica, as above; 0: none (no
#                   redisNN-replica, REDIS_URLS the queues alone; needs
#                   ACK_REPLICAS=0) [1, or $QUEUE_REPLICAS]
#   --no-resolve-image  never ask a registry for an image's digest (a swarm
#                   with no registry, the images loaded on every node)
#   --with-registry-auth  send this CLI's registry login to the nodes (a
#                   private registry such as ECR, as `docker stack deploy
#                   --with-registry-auth`)
#
# Environment (same names as stack.yml): VOTESWARM_IMAGE, WORKERS,
# QUESTION, OPTIONS, POLL_OPENS, POLL_CLOSES, RESULTS_VISIBLE (the poll; the older
# OPTION_A/OPTION_B still name the first two labels), RESULTS_URL, VOTE_RATE_LIMIT, NEW_VOTER_LIMIT, REDIS_MAXMEMORY,
# REDIS_MEMORY_LIMIT, QUEUE_LIMIT, ACK_REPLICAS, REDIS_URLS,
# REDISNN_PROMOTED, POSTGRES_STANDBY_PROMOTED, CONFIG_VERSION, HTTPS_REDIRECT_PORT,
# RESULTS_HTTPS_REDIRECT_PORT,
# EDGE_PEM_SECRET, HAPROXY_CPUS, CAPTURE_CPUS, WORKER_CPUS, POSTGRES_CPUS; and
# EDGE_PEM_FILE: the certificate chain and key in one PEM, made the secret
# EDGE_PEM_SECRET [voteswarm_edge_pem] when that does not exist yet.
# Before: label nodes and prepare capture nodes' directories (README.md).
# The services get the stack's names (voteswarm_<role>) and the same DNS
# aliases, so swarm/haproxy.cfg (tasks.capture) works unchanged. Remove all
# with: docker service rm $(docker service ls -q -f label=com.voteswarm)
set -euo pipefail
# Its own path before the cd below, for --help from any directory.
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")"

dry_run=0
secrets_only=0
resolve=()
workers="${WORKERS:-2}"
queues="${QUEUES:-2}"
queue_replicas="${QUEUE_REPLICAS:-1}"
while (($#)); do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --secrets-only) secrets_only=1 ;;
    --no-resolve-image) resolve+=(--no-resolve-image) ;;
    --with-registry-auth) resolve+=(--with-registry-auth) ;;
    --workers)
      [ $# -ge 2 ] || { echo "create-services: --workers needs a number" >&2; exit 2; }
      workers="$2"
      shift
      ;;
    --queues)
      [ $# -ge 2 ] || { echo "create-services: --queues needs a number" >&2; exit 2; }
      queues="$2"
      shift
      ;;
    --queue-replicas)
      [ $# -ge 2 ] || { echo "create-services: --queue-replicas needs 0 or 1" >&2; exit 2; }
      queue_replicas="$2"
      shift
      ;;
    -h | --help)
      # The comment at the top, up to the first line of code.
      awk 'NR > 1 && !/^#/ {exit} NR > 1' "$self" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *) echo "create-services: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$workers" in
  '' | *[!0-9]*) echo "create-services: --workers must be a number, not '$workers'" >&2; exit 2 ;;
esac
case "$queues" in
  '' | *[!0-9]* | 0 | 0*) echo "create-services: --queues must be a number from 1 to 99, not '$queues'" >&2; exit 2 ;;
esac
((queues <= 99)) || { echo "create-services: --queues must be a number from 1 to 99, not '$queues'" >&2; exit 2; }
case "$queue_replicas" in
  0 | 1) ;;
  *) echo "create-services: --queue-replicas must be 0 or 1, not '$queue_replicas'" >&2; exit 2 ;;
esac

image="${VOTESWARM_IMAGE:-voteswarm:latest}"
question="${QUESTION:-Cats or Dogs?}"
options="${OPTIONS:-${OPTION_A:-Cats},${OPTION_B:-Dogs}}"
poll_opens="${POLL_OPENS:-}"
poll_closes="${POLL_CLOSES:-}"
results_visible="${RESULTS_VISIBLE:-always}"
rate_limit="${VOTE_RATE_LIMIT:-100}"
new_voter_limit="${NEW_VOTER_LIMIT:-10}"
redis_maxmemory="${REDIS_MAXMEMORY:-2gb}"
redis_memory_limit="${REDIS_MEMORY_LIMIT:-3G}"
queue_limit="${QUEUE_LIMIT:-5000000}"
ack_replicas="${ACK_REPLICAS:-$queue_replicas}"
# Capture waiting for a replica that does not exist would answer 503 to
# every vote.
if ((queue_replicas == 0)) && [ "$ack_replicas" != 0 ]; then
  echo "create-services: ACK_REPLICAS=$ack_replicas needs --queue-replicas 1" >&2
  exit 2
fi
# Every queue and its replica, for the workers and results (stack.yml).
queue_names=()
redis_urls=""
for ((q = 1; q <= queues; q++)); do
  nn="$(printf '%02d' "$q")"
  queue_names+=("$nn")
  redis_urls+="${redis_urls:+,}redis://redis${nn}:6379"
  ((queue_replicas)) && redis_urls+=",redis://redis${nn}-replica:6379"
done
redis_urls="${REDIS_URLS:-$redis_urls}"
# Both PostgreSQL servers: libpq keeps the one that accepts writes.
pg_hosts="postgres:5432,postgres-standby:5432"
pg_options="target_session_attrs=read-write"
config_version="${CONFIG_VERSION:-1}"
edge_pem_secret="${EDGE_PEM_SECRET:-voteswarm_edge_pem}"
label="com.voteswarm=1"

# run CMD...: print it (dry run) or run it.
run() {
  if ((dry_run)); then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

random_secret() { head -c 48 /dev/urandom | base64 -w0 | tr '+/' '-_'; }
# The edge id key in the standard alphabet, as HAProxy's hmac converter reads it.
random_base64() { head -c 48 /dev/urandom | base64 -w0; }

exists() { # exists secret|config|network NAME
  ((dry_run)) && return 1
  docker "$1" inspect "$2" >/dev/null 2>&1
}

# secret NAME VALUE: create it from standard input unless it exists (secrets
# are immutable; rotate by creating a new name and updating the services).
secret() {
  if exists secret "$1"; then
    echo "create-services: secret $1 exists, kept" >&2
  elif ((dry_run)); then
    # The value is not printed: it would be a real secret on the terminal.
    printf 'printf %%s "$%s" | docker secret create --label %s %s -\n' "${1^^}" "$label" "$1"
  else
    printf '%s' "$2" | docker secret create --label "$label" "$1" - >/dev/null
    echo "create-services: secret $1 created" >&2
  fi
}

# One secret per password, each given to the store that checks it and the
# one service that uses it (swarm/README.md, docs/SECURITY.md): PostgreSQL's
# superuser (db_password: no service uses it), its three roles, and the four
# Redis ACL users. Services read them as *_PASSWORD_FILE. results_token:
# the operator's bearer token on the results API (RESULTS_TOKEN_FILE).
for name in cookie_key db_password \
  pg_migrator_password pg_worker_password pg_results_password pg_replication_password \
  redis_capture_password redis_worker_password redis_results_password redis_admin_password \
  results_token; do
  secret "voteswarm_${name}" "$(random_secret)"
done
# The edge's key for the identity it gives a first-time voter on its own
# 503 (haproxy.cfg), shared with capture, which checks it.
secret voteswarm_edge_id_key "$(random_base64)"
# The edge's certificate: the operator's, never made up here (a browser
# would refuse a self-signed one). From a file, so the key is in no
# environment variable or command line.
if exists secret "$edge_pem_secret"; then
  echo "create-services: secret $edge_pem_secret exists, kept" >&2
elif [ -n "${EDGE_PEM_FILE:-}" ]; then
  if ! ((dry_run)) && ! grep -q -- '-----BEGIN .*PRIVATE KEY-----' "$EDGE_PEM_FILE"; then
    echo "create-services: EDGE_PEM_FILE $EDGE_PEM_FILE holds no private key (chain, then key, in one PEM)" >&2
    exit 1
  fi
  run docker secret create --label "$label" "$edge_pem_secret" "$EDGE_PEM_FILE"
else
  echo "create-services: no secret $edge_pem_secret: set EDGE_PEM_FILE to the edge's certificate chain and key in one PEM (swarm/README.md)" >&2
  ((dry_run)) || exit 1
fi
((secrets_only)) && exit 0

for cfg in "voteswarm_haproxy_cfg_${config_version}:haproxy.cfg" "voteswarm_redis_conf_${config_version}:redis.conf" \
  "voteswarm_redis_entrypoint_${config_version}:../docker/redis-entrypoint.sh" \
  "voteswarm_postgres_roles_${config_version}:../docker/postgres-roles.sh" \
  "voteswarm_postgres_replication_${config_version}:../docker/postgres-replication.sh" \
  "voteswarm_postgres_standby_${config_version}:../docker/postgres-standby.sh"; do
  name="${cfg%%:*}"
  if exists config "$name"; then
    echo "create-services: config $name exists, kept (bump CONFIG_VERSION after editing the file)" >&2
  else
    run docker config create --label "$label" "$name" "${cfg#*:}"
  fi
done

for net in voteswarm_front voteswarm_back; do
  exists network "$net" || run docker network create --driver overlay --label "$label" "$net"
done

# dnsrr: names resolve to the tasks' addresses, no virtual IP (stack.yml
# says why: VIPs need IPVS, and every client here resolves names itself).
# --detach: every service converges at once; waiting for each in turn (the
# CLI's default) took minutes, the workers waiting for a PostgreSQL created
# after them. Watch with `docker service ls`.
common=("${resolve[@]}" --label "$label" --detach --endpoint-mode dnsrr --restart-condition any --restart-delay 2s)

# HAProxy reads EDGE_ID_KEY from its environment only: exported from the
# secret file at start, as in stack.yml (single quotes: expanded in the task).
# shellcheck disable=SC2016
haproxy_start='EDGE_ID_KEY="$(cat /run/secrets/edge_id_key)" && export EDGE_ID_KEY && exec haproxy -W -db -f /usr/local/etc/haproxy/haproxy.cfg'

# Edge: HAProxy on every node labelled edge=true, ports in host mode so the
# per-client rate limit sees client addresses.
run docker service create --name voteswarm_haproxy "${common[@]}" \
  --mode global --constraint 'node.labels.edge==true' \
  --network name=voteswarm_front,alias=haproxy \
  --publish mode=host,target=8080,published=80,protocol=tcp \
  --publish mode=host,target=8443,published=443,protocol=tcp \
  --publish mode=host,target=8081,published=8081,protocol=tcp \
  --publish mode=host,target=8444,published=8444,protocol=tcp \
  --secret "source=${edge_pem_secret},target=edge.pem,uid=99,gid=99,mode=0400" \
  --secret source=voteswarm_edge_id_key,target=edge_id_key,uid=99,gid=99,mode=0400 \
  --env TLS_CERT=/run/secrets/edge.pem \
  --env "HTTPS_REDIRECT_PORT=${HTTPS_REDIRECT_PORT:-:443}" \
  --env "RESULTS_HTTPS_REDIRECT_PORT=${RESULTS_HTTPS_REDIRECT_PORT:-:8444}" \
  --config "source=voteswarm_haproxy_cfg_${config_version},target=/usr/local/etc/haproxy/haproxy.cfg" \
  --env CAPTURE_ADDR=tasks.capture:8080 \
  --env RESULTS_ADDR=results:8081 \
  --env "VOTE_RATE_LIMIT=${rate_limit}" \
  --env "NEW_VOTER_LIMIT=${new_voter_limit}" \
  --update-parallelism 1 --update-delay 10s --update-order stop-first --update-failure-action rollback \
  --limit-cpu "${HAPROXY_CPUS:-2}" --limit-memory 512M --reserve-cpu 0.25 --reserve-memory 64M \
  --entrypoint /bin/sh \
  haproxy:2.6 -c "$haproxy_start"

# Redis: a queue per capture node (redisNN on the node labelled queue=NN),
# AOF on the node's disk, socket shared with the capture container of the
# same node; and its replica (redisNN-replica) on a node labelled
# queue_replicas=true that is not that one, following it as admin
# (docker/redis-entrypoint.sh). Workers and results reach both by name.
# shellcheck disable=SC2054 # the commas are docker's, inside one option
redis_common=("${common[@]}" --replicas 1
  --user 10001:10001
  --config "source=voteswarm_redis_conf_${config_version},target=/usr/local/etc/redis/redis.conf"
  --config "source=voteswarm_redis_entrypoint_${config_version},target=/usr/local/bin/voteswarm-redis-entrypoint.sh,mode=0555"
  --entrypoint '/bin/sh /usr/local/bin/voteswarm-redis-entrypoint.sh'
  --secret source=voteswarm_redis_capture_password,target=redis_capture_password,uid=10001,gid=10001,mode=0400
  --secret source=voteswarm_redis_worker_password,target=redis_worker_password,uid=10001,gid=10001,mode=0400
  --secret source=voteswarm_redis_results_password,target=redis_results_password,uid=10001,gid=10001,mode=0400
  --secret source=voteswarm_redis_admin_password,target=redis_admin_password,uid=10001,gid=10001,mode=0400
  --health-interval 5s --health-timeout 3s --health-retries 3
  --stop-grace-period 60s
  --update-parallelism 1 --update-delay 30s --update-order stop-first --update-failure-action pause --update-monitor 30s
  --limit-cpu 1 --limit-memory "${redis_memory_limit}" --reserve-memory 256M)
for nn in "${queue_names[@]}"; do
  promoted_var="REDIS${nn}_PROMOTED"
  run docker service create --name "voteswarm_redis${nn}" "${redis_common[@]}" \
    --constraint 'node.labels.capture==true' --constraint "node.labels.queue==${nn}" \
    --network "name=voteswarm_back,alias=redis${nn}" \
    --mount type=bind,source=/var/lib/voteswarm/redis,target=/data \
    --mount type=bind,source=/var/lib/voteswarm/redis-socket,target=/run/redis \
    --health-cmd 'REDISCLI_AUTH="$(cat /run/secrets/redis_capture_password)" redis-cli --user capture -s /run/redis/redis.sock ping | grep -q PONG' \
    --reserve-cpu 0.25 \
    redis:7.0 \
    redis-server /usr/local/etc/redis/redis.conf --unixsocket /run/redis/redis.sock --maxmemory "${redis_maxmemory}"
  ((queue_replicas)) || continue
  run docker service create --name "voteswarm_redis${nn}-replica" "${redis_common[@]}" \
    --constraint 'node.labels.queue_replicas==true' --constraint "node.labels.queue!=${nn}" \
    --network "name=voteswarm_back,alias=redis${nn}-replica" \
    --env "REDIS_REPLICAOF=redis${nn} 6379" --env "REDIS_PROMOTED=${!promoted_var:-0}" \
    --mount "type=bind,source=/var/lib/voteswarm/redis-replica${nn},target=/data" \
    --health-cmd 'REDISCLI_AUTH="$(cat /run/secrets/redis_capture_password)" redis-cli --user capture -h 127.0.0.1 ping | grep -q PONG' \
    --reserve-cpu 0.1 \
    redis:7.0 \
    redis-server /usr/local/etc/redis/redis.conf --maxmemory "${redis_maxmemory}"
done

# Capture: one per capture node, talking to its own Redis over the socket.
run docker service create --name voteswarm_capture "${common[@]}" \
  --mode global --constraint 'node.labels.capture==true' --constraint 'node.labels.votes!=off' \
  --network name=voteswarm_front,alias=capture \
  --secret source=voteswarm_cookie_key,target=cookie_key,uid=10001,gid=10001,mode=0400 \
  --secret source=voteswarm_redis_capture_password,target=redis_capture_password,uid=10001,gid=10001,mode=0400 \
  --mount type=bind,source=/var/lib/voteswarm/redis-socket,target=/run/redis \
  --env LISTEN=0.0.0.0:8080 \
  --env REDIS_URL=redis+unix:///run/redis/redis.sock \
  --env REDIS_USER=capture --env REDIS_PASSWORD_FILE=/run/secrets/redis_capture_password \
  --env 'NODE_ID={{.Node.Hostname}}' \
  --env COOKIE_KEY_FILE=/run/secrets/cookie_key \
  --secret source=voteswarm_edge_id_key,target=edge_id_key,uid=10001,gid=10001,mode=0400 \
  --env EDGE_ID_KEY_FILE=/run/secrets/edge_id_key \
  --env "RESULTS_URL=${RESULTS_URL:-}" \
  --env "QUESTION=${question}" --env "OPTIONS=${options}" \
  --env "POLL_OPENS=${poll_opens}" --env "POLL_CLOSES=${poll_closes}" --env "RESULTS_VISIBLE=${results_visible}" \
  --env STREAM_KEY=votes \
  --env MIN_CHANGE_INTERVAL_MS=1000 --env VOTE_CHANGES=allow --env ENQUEUE_TIMEOUT_MS=2000 \
  --env "QUEUE_LIMIT=${queue_limit}" \
  --env "ACK_REPLICAS=${ack_replicas}" \
  --env RUST_LOG=info \
  --stop-grace-period 30s \
  --update-parallelism 1 --update-delay 10s --update-order start-first --update-failure-action rollback --update-monitor 30s \
  --limit-cpu "${CAPTURE_CPUS:-1.5}" --limit-memory 512M --reserve-cpu 0.5 --reserve-memory 128M \
  "$image" capture

# PostgreSQL: pinned to the store node, where its volume lives. At its first
# start the image runs the roles script (docker/postgres-roles.sh) and the
# replication one (docker/postgres-replication.sh: the replicator role, its
# pg_hba line, synchronous_standby_names).
run docker service create --name voteswarm_postgres "${common[@]}" \
  --replicas 1 --constraint 'node.labels.store==true' \
  --network name=voteswarm_back,alias=postgres \
  --config "source=voteswarm_postgres_roles_${config_version},target=/docker-entrypoint-initdb.d/voteswarm-roles.sh,mode=0555" \
  --config "source=voteswarm_postgres_replication_${config_version},target=/docker-entrypoint-initdb.d/voteswarm-replication.sh,mode=0555" \
  --secret source=voteswarm_db_password,target=db_password \
  --secret source=voteswarm_pg_migrator_password,target=pg_migrator_password \
  --secret source=voteswarm_pg_worker_password,target=pg_worker_password \
  --secret source=voteswarm_pg_results_password,target=pg_results_password \
  --secret source=voteswarm_pg_replication_password,target=pg_replication_password \
  --mount type=volume,source=voteswarm_pgdata,target=/var/lib/postgresql/data \
  --env POSTGRES_USER=postgres --env POSTGRES_DB=voteswarm \
  --env POSTGRES_PASSWORD_FILE=/run/secrets/db_password \
  --env POSTGRES_HOST_AUTH_METHOD=scram-sha-256 \
  --health-cmd 'pg_isready -U postgres -d voteswarm' --health-interval 5s --health-timeout 3s --health-retries 10 \
  --stop-grace-period 2m \
  --update-order stop-first --update-failure-action pause \
  --limit-cpu "${POSTGRES_CPUS:-4}" --limit-memory 4G --reserve-cpu 1 --reserve-memory 1G \
  postgres:15 postgres -c max_connections=200

# The synchronous standby, on a node labelled store_standby=true that is not
# the store's: a copy of postgres at its first start, then streaming
# (docker/postgres-standby.sh, run as the image's postgres user).
run docker service create --name voteswarm_postgres-standby "${common[@]}" \
  --replicas 1 --constraint 'node.labels.store_standby==true' --constraint 'node.labels.store!=true' \
  --network name=voteswarm_back,alias=postgres-standby \
  --user postgres \
  --config "source=voteswarm_postgres_standby_${config_version},target=/usr/local/bin/voteswarm-postgres-standby.sh,mode=0555" \
  --entrypoint '/bin/bash /usr/local/bin/voteswarm-postgres-standby.sh' \
  --secret source=voteswarm_pg_replication_password,target=pg_replication_password,uid=999,gid=999,mode=0400 \
  --mount type=volume,source=voteswarm_pgdata-standby,target=/var/lib/postgresql/data \
  --env PRIMARY_HOST=postgres \
  --env REPLICATION_PASSWORD_FILE=/run/secrets/pg_replication_password \
  --env "PROMOTED=${POSTGRES_STANDBY_PROMOTED:-0}" \
  --health-cmd 'pg_isready -U postgres -d voteswarm' --health-interval 5s --health-timeout 3s --health-retries 10 \
  --health-start-period 120s \
  --stop-grace-period 2m \
  --update-order stop-first --update-failure-action pause \
  --limit-cpu "${POSTGRES_CPUS:-4}" --limit-memory 4G --reserve-cpu 0.25 --reserve-memory 256M \
  postgres:15 postgres -c max_connections=200

# The schema, once, as the migrator; done when it exits 0.
run docker service create --name voteswarm_migrate "${resolve[@]}" --label "$label" --detach --endpoint-mode dnsrr \
  --restart-condition on-failure --restart-delay 5s \
  --replicas 1 --constraint 'node.labels.worker==true' \
  --network name=voteswarm_back,alias=migrate \
  --secret source=voteswarm_pg_migrator_password,target=pg_migrator_password,uid=10001,gid=10001,mode=0400 \
  --env "DATABASE_URL=postgres://voteswarm_migrator@${pg_hosts}/voteswarm?${pg_options}" \
  --env DATABASE_PASSWORD_FILE=/run/secrets/pg_migrator_password \
  --env RUST_LOG=info \
  --limit-cpu 1 --limit-memory 256M \
  "$image" worker --migrate-only

# Workers: M replicas on worker=true nodes, draining every queue, and a
# replica once it is promoted (until then it answers READONLY: a standby).
run docker service create --name voteswarm_worker "${common[@]}" \
  --replicas "$workers" --constraint 'node.labels.worker==true' --placement-pref spread=node.id \
  --network name=voteswarm_back,alias=worker \
  --secret source=voteswarm_pg_worker_password,target=pg_worker_password,uid=10001,gid=10001,mode=0400 \
  --secret source=voteswarm_redis_worker_password,target=redis_worker_password,uid=10001,gid=10001,mode=0400 \
  --env "DATABASE_URL=postgres://voteswarm_worker@${pg_hosts}/voteswarm?${pg_options}" \
  --env DATABASE_PASSWORD_FILE=/run/secrets/pg_worker_password \
  --env "REDIS_URLS=${redis_urls}" \
  --env REDIS_USER=worker --env REDIS_PASSWORD_FILE=/run/secrets/redis_worker_password \
  --env STREAM_KEY=votes \
  --env 'WORKER_ID=worker-{{.Task.Slot}}' \
  --env METRICS_LISTEN=0.0.0.0:9100 \
  --env VOTE_CHANGES=allow \
  --env "QUESTION=${question}" --env "OPTIONS=${options}" \
  --env "POLL_OPENS=${poll_opens}" --env "POLL_CLOSES=${poll_closes}" --env "RESULTS_VISIBLE=${results_visible}" \
  --env RUST_LOG=info \
  --stop-grace-period 60s \
  --update-parallelism 1 --update-delay 10s --update-order stop-first --update-failure-action rollback --update-monitor 30s \
  --limit-cpu "${WORKER_CPUS:-2}" --limit-memory 1G --reserve-cpu 0.5 --reserve-memory 128M \
  "$image" worker

# Results: beside PostgreSQL; HAProxy serves it on :8081.
run docker service create --name voteswarm_results "${common[@]}" \
  --replicas 1 --constraint 'node.labels.store==true' \
  --network name=voteswarm_front,alias=results \
  --network name=voteswarm_back,alias=results \
  --secret source=voteswarm_pg_results_password,target=pg_results_password,uid=10001,gid=10001,mode=0400 \
  --secret source=voteswarm_redis_results_password,target=redis_results_password,uid=10001,gid=10001,mode=0400 \
  --secret source=voteswarm_results_token,target=results_token,uid=10001,gid=10001,mode=0400 \
  --env LISTEN=0.0.0.0:8081 \
  --env "DATABASE_URL=postgres://voteswarm_results@${pg_hosts}/voteswarm?${pg_options}" \
  --env DATABASE_PASSWORD_FILE=/run/secrets/pg_results_password \
  --env "REDIS_URLS=${redis_urls}" \
  --env REDIS_USER=results --env REDIS_PASSWORD_FILE=/run/secrets/redis_results_password \
  --env RESULTS_TOKEN_FILE=/run/secrets/results_token \
  --env "QUESTION=${question}" --env "OPTIONS=${options}" \
  --env "POLL_OPENS=${poll_opens}" --env "POLL_CLOSES=${poll_closes}" --env "RESULTS_VISIBLE=${results_visible}" \
  --env STREAM_KEY=votes \
  --env RUST_LOG=info \
  --stop-grace-period 10s \
  --update-order start-first --update-failure-action rollback \
  --limit-cpu 1 --limit-memory 256M --reserve-cpu 0.25 --reserve-memory 64M \
  "$image" results

((dry_run)) || echo "create-services: done; watch with: docker service ls -f label=com.voteswarm" >&2
