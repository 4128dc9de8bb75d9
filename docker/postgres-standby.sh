#!/bin/bash
# The entrypoint of the store's synchronous standby (docs/DEPLOY.md, "The
# store's standby"), on the stock postgres image, run as its `postgres`
# user:
#
#   postgres-standby.sh postgres [-c SETTING=VALUE ...]
#
# At its first start (no PG_VERSION in PGDATA) it copies the primary with
# pg_basebackup through a physical replication slot it makes if missing,
# and sets itself up to stream from it as `voteswarm_standby`, the name the
# primary's synchronous_standby_names waits for
# (docker/postgres-replication.sh). Every start then runs the image's own
# entrypoint, which finds the data directory made and starts the server.
#
#   PRIMARY_HOST                the primary's address [postgres]
#   PRIMARY_PORT                [5432]
#   REPLICATION_USER            [voteswarm_replicator]
#   REPLICATION_PASSWORD_FILE   [/run/secrets/pg_replication_password]
#   STANDBY_NAME                application_name and slot [voteswarm_standby]
#   PROMOTED=1                  what a failover sets (swarm/failover.sh):
#                               start as the primary (standby.signal is
#                               removed: recovery ends, a new timeline
#                               begins); set from then on, so that no
#                               restart makes it a standby again.
# The password is written to a passfile in /tmp (0600) at every start, for
# pg_basebackup and for primary_conninfo: never on a command line.
# The standby has no synchronous_standby_names of its own (the copied one
# is removed): once promoted, it commits alone until a new standby is made
# for it.
set -Eeuo pipefail

die() { echo "postgres-standby: $*" >&2; exit 1; }

primary_host="${PRIMARY_HOST:-postgres}"
primary_port="${PRIMARY_PORT:-5432}"
user="${REPLICATION_USER:-voteswarm_replicator}"
password_file="${REPLICATION_PASSWORD_FILE:-/run/secrets/pg_replication_password}"
name="${STANDBY_NAME:-voteswarm_standby}"
: "${PGDATA:?PGDATA is not set (the postgres image sets it)}"

case "${primary_port}" in '' | *[!0-9]*) die "PRIMARY_PORT must be a port number, not '${primary_port}'" ;; esac
case "${name}" in '' | *[!a-z0-9_]*) die "STANDBY_NAME must be lower-case letters, digits and _, not '${name}'" ;; esac
case "${PROMOTED:-0}" in
  1 | true | yes) promoted=1 ;;
  0 | false | no | '') promoted=0 ;;
  *) die "PROMOTED must be 1 or 0, not '${PROMOTED}'" ;;
esac
[ "$(id -u)" != 0 ] || die "run it as the image's postgres user (user: postgres), not root: the copied files must be that user's"
[ -s "${password_file}" ] || die "REPLICATION_PASSWORD_FILE ${password_file} is missing or empty"

# host:port:database:user:password; `replication` matches the streaming
# connection, `*` the slot's SQL connection. A password's : and \ escaped.
passfile=/tmp/voteswarm-standby.pgpass
umask 077
password="$(<"${password_file}")"
password="${password//\\/\\\\}"
password="${password//:/\\:}"
printf '%s:%s:*:%s:%s\n' "${primary_host}" "${primary_port}" "${user}" "${password}" >"${passfile}"
unset password
export PGPASSFILE="${passfile}"

conninfo="host=${primary_host} port=${primary_port} user=${user} application_name=${name} passfile=${passfile}"

# A copy that finished leaves this file; one interrupted half-way (a killed
# container) is wiped and made again, never started.
done_marker="${PGDATA}/voteswarm-standby-copied"
if [ ! -e "${done_marker}" ] && [ "${promoted}" = 0 ]; then
  if [ -n "$(ls -A "${PGDATA}" 2>/dev/null)" ]; then
    echo "postgres-standby: ${PGDATA} holds an unfinished copy; starting it again" >&2
    find "${PGDATA}" -mindepth 1 -delete
  fi
  mkdir -p "${PGDATA}"
  chmod 0700 "${PGDATA}"
  echo "postgres-standby: copying ${primary_host}:${primary_port} into ${PGDATA}" >&2
  # The slot keeps the WAL the standby has not streamed yet, from before the
  # copy starts (the database `postgres`: the roles script lets nobody but
  # its listed roles connect to `voteswarm`).
  psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet -d "${conninfo} dbname=postgres" -v slot="${name}" <<'SQL'
SELECT pg_create_physical_replication_slot(:'slot')
WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = :'slot');
SQL
  pg_basebackup --pgdata="${PGDATA}" --dbname="${conninfo}" --slot="${name}" \
    --wal-method=stream --checkpoint=fast --progress --verbose
  # The primary's setting names this standby: kept here, a promoted standby
  # would wait for itself at every commit.
  sed -i '/^[[:space:]]*synchronous_standby_names[[:space:]]*=/d' "${PGDATA}/postgresql.auto.conf"
  {
    echo "# The standby (docker/postgres-standby.sh)"
    echo "primary_conninfo = '${conninfo}'"
    echo "primary_slot_name = '${name}'"
  } >>"${PGDATA}/postgresql.auto.conf"
  touch "${PGDATA}/standby.signal"
  sync
  touch "${done_marker}"
  echo "postgres-standby: copied; streaming from ${primary_host}:${primary_port} as ${name}" >&2
fi

if [ "${promoted}" = 1 ]; then
  [ -s "${PGDATA}/PG_VERSION" ] || die "PROMOTED=1 but ${PGDATA} holds no database: nothing to promote"
  if [ -e "${PGDATA}/standby.signal" ]; then
    echo "postgres-standby: PROMOTED=1: starting as the primary (recovery ends here)" >&2
    rm -f "${PGDATA}/standby.signal"
  fi
fi

exec docker-entrypoint.sh "$@"
