#!/usr/bin/env bash
# Creates the Secrets the manifests mount, in the cluster and nowhere else
# (no value is ever in k8s/), the same values as the swarm's secrets
# (swarm/README.md, "Secrets and roles"):
#
#   k8s/create-secrets.sh [--namespace NS] [--tls-pem FILE | --self-signed HOST] [--dry-run]
#
#   voteswarm-cookie    cookie_key                       every capture pod
#   voteswarm-edge-id   edge_id_key (base64)             every edge and capture pod
#   voteswarm-postgres  db_password (the superuser), pg_migrator_password,
#                       pg_worker_password, pg_results_password
#   voteswarm-pg-replication  pg_replication_password (the standby's login,
#                       role voteswarm_replicator): postgres and
#                       postgres-standby only
#   voteswarm-redis     redis_capture_password, redis_worker_password,
#                       redis_results_password, redis_admin_password
#   voteswarm-results-token  results_token: the operator's bearer token on
#                       the results API (RESULTS_TOKEN_FILE), results only
#   voteswarm-edge-tls  edge.pem: certificate chain and key in one file
#
# Each value is random (48 bytes); a Secret that exists is kept, so the
# script is safe to run again (a new password would lock the running
# roles out). --tls-pem takes the operator's certificate; --self-signed
# makes one for HOST with openssl (a local cluster only). --dry-run prints
# the kubectl commands without the values.
set -euo pipefail

ns=voteswarm
tls_pem=""
self_signed=""
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) ns="$2"; shift ;;
    --tls-pem) tls_pem="$2"; shift ;;
    --self-signed) self_signed="$2"; shift ;;
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "create-secrets: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -n "$tls_pem" ] && [ -n "$self_signed" ]; then
  echo "create-secrets: --tls-pem or --self-signed, not both" >&2
  exit 2
fi
kubectl="${KUBECTL:-kubectl}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umask 077

random_secret() { head -c 48 /dev/urandom | base64 -w0 | tr '+/' '-_'; }
# The edge id key in the standard alphabet, as HAProxy's hmac converter reads it.
random_base64() { head -c 48 /dev/urandom | base64 -w0; }

exists() {
  [ "$dry_run" = 0 ] && "$kubectl" -n "$ns" get secret "$1" >/dev/null 2>&1
}

# secret NAME KEY...: one random file per key, unless the Secret exists.
secret() {
  local name="$1" args=() key
  shift
  if exists "$name"; then
    echo "create-secrets: $name exists, kept" >&2
    return
  fi
  for key in "$@"; do
    if [ "$key" = edge_id_key ]; then random_base64; else random_secret; fi >"$work/$key"
    args+=("--from-file=$key=$work/$key")
  done
  run "$kubectl" -n "$ns" create secret generic "$name" "${args[@]}"
}

run() {
  if [ "$dry_run" = 1 ]; then
    echo "${*//$work\//}"
  else
    "$@" >/dev/null
    # kubectl -n NS create secret generic NAME ...
    echo "create-secrets: created $7" >&2
  fi
}

if [ "$dry_run" = 0 ] && ! "$kubectl" get namespace "$ns" >/dev/null 2>&1; then
  echo "create-secrets: namespace $ns does not exist: apply the overlay first (it makes it), or --namespace" >&2
  exit 1
fi

secret voteswarm-cookie cookie_key
# The edge's key for the identity it gives a first-time voter on its own 503
# (swarm/haproxy.cfg): every edge and capture pod.
secret voteswarm-edge-id edge_id_key
secret voteswarm-postgres db_password pg_migrator_password pg_worker_password pg_results_password
# A Secret of its own: the standby gets no other password, and a cluster
# made before the standby existed gets it without touching the others.
secret voteswarm-pg-replication pg_replication_password
secret voteswarm-redis redis_capture_password redis_worker_password redis_results_password redis_admin_password
# Its own Secret, like pg_replication_password: only results mounts it, and
# a cluster made before it existed gets it without touching the others.
secret voteswarm-results-token results_token

if exists voteswarm-edge-tls; then
  echo "create-secrets: voteswarm-edge-tls exists, kept" >&2
elif [ -n "$tls_pem" ]; then
  [ -s "$tls_pem" ] || { echo "create-secrets: $tls_pem is missing or empty" >&2; exit 1; }
  grep -q 'PRIVATE KEY' "$tls_pem" || { echo "create-secrets: $tls_pem holds no private key (HAProxy wants chain and key in one file)" >&2; exit 1; }
  run "$kubectl" -n "$ns" create secret generic voteswarm-edge-tls "--from-file=edge.pem=$tls_pem"
elif [ -n "$self_signed" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=$self_signed" -addext "subjectAltName=DNS:$self_signed" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  cat "$work/cert.pem" "$work/key.pem" >"$work/edge.pem"
  run "$kubectl" -n "$ns" create secret generic voteswarm-edge-tls "--from-file=edge.pem=$work/edge.pem"
else
  echo "create-secrets: no voteswarm-edge-tls: give --tls-pem FILE (or --self-signed HOST on a local cluster); the edge pods wait for it" >&2
  exit 1
fi
