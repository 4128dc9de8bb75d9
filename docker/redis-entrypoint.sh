#!/bin/sh
# Starts redis-server with voteswarm's ACL users, made from secret files at
# every start (Redis cannot read a password from a file itself, and
# swarm/redis.conf is shared by every deployment, so it names no users):
#
#   redis-entrypoint.sh redis-server /usr/local/etc/redis/redis.conf [ARGS...]
#
# writes an ACL file (SHA-256 verifiers of the passwords, never the
# passwords) and execs the command with `--aclfile` added, through the
# image's own docker-entrypoint.sh when there is one (it drops root). The secrets, in
# $VOTESWARM_SECRETS_DIR [/run/secrets]: redis_capture_password,
# redis_worker_password, redis_results_password, redis_admin_password.
# STREAM_KEY [votes] is the vote stream the users may touch; the ACL file
# goes to $REDIS_ACL_FILE [/tmp/voteswarm-users.acl].
#
# One user per role, with only the commands that role sends (checked
# against src/ by docs/SECURITY.md's table):
#   default  off, no password: no client can be it, so without a password
#            nothing at all is answered, not even PING. Its rights stay
#            `+@all ~*` on purpose: Redis 7.0 replays a MULTI/EXEC from the
#            append-only file under the default user's rights, and with
#            none it drops every transaction at restart (the workers'
#            XACK + XDEL: tests/least_privilege.rs shows it).
#   capture  XADD, XLEN on the stream (enqueue, queue depth), PING
#            (readiness), WAIT and INFO (ACK_REPLICAS: a batch's replicas,
#            and readiness counting the replicas in sync; INFO shows server
#            statistics, no data and no passwords. `+info|replication`
#            would be narrower, but Redis 7 deprecates rules on the first
#            argument of a command without subcommands)
#   worker   the consumer group (XGROUP CREATE, XREADGROUP, XAUTOCLAIM,
#            XACK, XDEL, XPENDING), XLEN, PING on the stream, MULTI/EXEC
#            (dead letters, XACK and XDEL commit together); XADD only on
#            its dead-letter stream (a Redis 7 selector)
#   results  XLEN (the backlog) and PING
#   admin    everything, for operators; no service has its password
# The local cluster and the tests use the lines between BEGIN/END ACL
# themselves (src/cluster/redis_acl.rs).
#
# A replica of another node's queue (ACK_REPLICAS, docs/DEPLOY.md): with
# REDIS_REPLICAOF="HOST PORT" the server follows that primary, logged in as
# `admin` (replication needs PSYNC and REPLCONF, which no tier's user has;
# the local cluster's replica.conf does the same). The login goes into a
# file of its own (0600, $REDIS_REPLICA_CONF [/tmp/voteswarm-replica.conf])
# added with `--include`, never onto the command line where `ps` shows it.
# REDIS_PROMOTED=1 (what a failover sets, swarm/failover.sh) ignores
# REDIS_REPLICAOF: a promoted replica holds votes no one else has, and must
# never follow its old primary again, which may come back empty (a replica
# resyncs to an empty primary and drops everything it had).
set -eu

voteswarm_acl=$(cat <<'ACL'
# BEGIN ACL
user default off resetpass ~* &* +@all
user capture on #@capture@ resetkeys resetchannels ~@stream@ -@all +xadd +xlen +ping +wait +info
user worker on #@worker@ resetkeys resetchannels ~@stream@ -@all +xgroup|create +xreadgroup +xautoclaim +xack +xdel +xpending +xlen +ping +multi +exec (~@stream@:dead +xadd +xlen)
user results on #@results@ resetkeys resetchannels ~@stream@ -@all +xlen +ping
user admin on #@admin@ ~* &* +@all
# END ACL
ACL
)

secrets="${VOTESWARM_SECRETS_DIR:-/run/secrets}"
stream="${STREAM_KEY:-votes}"
acl_file="${REDIS_ACL_FILE:-/tmp/voteswarm-users.acl}"
case "${stream}" in
  *[!A-Za-z0-9:_.-]*|'') echo "redis-entrypoint: STREAM_KEY must be letters, digits and :_.-" >&2; exit 2 ;;
esac

# verifier ROLE: SHA-256 (hex) of the role's password; trailing newlines of
# the file are not part of it, as for every *_FILE the binaries read.
verifier() {
  f="${secrets}/redis_$1_password"
  [ -s "${f}" ] || { echo "redis-entrypoint: ${f} is missing or empty" >&2; exit 1; }
  printf '%s' "$(cat "${f}")" | sha256sum | cut -d' ' -f1
}

# Assignments, so that `set -e` stops at a missing secret.
v_capture="$(verifier capture)"
v_worker="$(verifier worker)"
v_results="$(verifier results)"
v_admin="$(verifier admin)"
umask 077
printf '%s\n' "${voteswarm_acl}" | grep -v '^#' |
  sed -e "s/@capture@/${v_capture}/" -e "s/@worker@/${v_worker}/" \
    -e "s/@results@/${v_results}/" -e "s/@admin@/${v_admin}/" \
    -e "s/@stream@/${stream}/g" >"${acl_file}"
# Started as root (compose), the image's own entrypoint drops to its
# `redis` user before running the server: that user must read the file.
if [ "$(id -u)" = 0 ] && id redis >/dev/null 2>&1; then
  chown redis:redis "${acl_file}"
fi

replica_args=""
case "${REDIS_PROMOTED:-0}" in
  1 | true | yes) promoted=1 ;;
  0 | false | no | '') promoted=0 ;;
  *) echo "redis-entrypoint: REDIS_PROMOTED must be 1 or 0, not '${REDIS_PROMOTED}'" >&2; exit 2 ;;
esac
if [ -n "${REDIS_REPLICAOF:-}" ] && [ "${promoted}" = 1 ]; then
  echo "redis-entrypoint: REDIS_PROMOTED=1: a primary, no longer following ${REDIS_REPLICAOF}" >&2
elif [ -n "${REDIS_REPLICAOF:-}" ]; then
  # "host port" or "host:port"; the host is a name the primary keeps
  # (Redis resolves it again at every reconnection).
  primary="$(printf '%s' "${REDIS_REPLICAOF}" | tr ':' ' ')"
  primary_host="${primary% *}"
  primary_port="${primary##* }"
  case "${primary_host}:${primary_port}" in
    :* | *: | *[!A-Za-z0-9._:-]* | *:*[!0-9]*)
      echo "redis-entrypoint: REDIS_REPLICAOF must be 'HOST PORT', not '${REDIS_REPLICAOF}'" >&2
      exit 2
      ;;
  esac
  admin_file="${secrets}/redis_admin_password"
  [ -s "${admin_file}" ] || { echo "redis-entrypoint: ${admin_file} is missing or empty (a replica logs in as admin)" >&2; exit 1; }
  replica_conf="${REDIS_REPLICA_CONF:-/tmp/voteswarm-replica.conf}"
  # Redis reads a double-quoted value with backslash escapes: quote those
  # two characters so that any password is read back as it is.
  admin_quoted="$(printf '%s' "$(cat "${admin_file}")" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
  printf 'replicaof %s %s\nmasteruser admin\nmasterauth "%s"\n' "${primary_host}" "${primary_port}" "${admin_quoted}" >"${replica_conf}"
  if [ "$(id -u)" = 0 ] && id redis >/dev/null 2>&1; then
    chown redis:redis "${replica_conf}"
  fi
  replica_args="${replica_conf}"
fi

# The include goes last: it adds to the shared redis.conf, it changes none of it.
if [ -n "${replica_args}" ]; then
  set -- "$@" --aclfile "${acl_file}" --include "${replica_args}"
else
  set -- "$@" --aclfile "${acl_file}"
fi
if command -v docker-entrypoint.sh >/dev/null 2>&1; then
  exec docker-entrypoint.sh "$@"
fi
exec "$@"
