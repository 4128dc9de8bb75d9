#!/bin/bash
# The official postgres image's entrypoint, as far as the deploy files and
# their operators need it:
#   - a first argument that is an option means postgres;
#   - run as root, it gives PGDATA to the postgres user and drops to it;
#   - on first start (no PG_VERSION in PGDATA) it runs initdb with
#     POSTGRES_USER (postgres), POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE
#     (required unless POSTGRES_HOST_AUTH_METHOD=trust) and
#     POSTGRES_INITDB_ARGS, allows `host all all all` with
#     POSTGRES_HOST_AUTH_METHOD (scram-sha-256), creates POSTGRES_DB (the
#     user's name) and runs /docker-entrypoint-initdb.d/*.sh (sourced unless
#     executable), *.sql and *.sql.gz in name order, on a server listening
#     on its unix socket only; then starts postgres for real.
# Any *_FILE variable (POSTGRES_USER_FILE, ...) reads the value from a file.
set -Eeo pipefail

# file_env VAR [DEFAULT]: VAR from VAR or from the file VAR_FILE names.
file_env() {
  local var="$1" file_var="${1}_FILE" def="${2:-}" val
  if [ "${!var:-}" ] && [ "${!file_var:-}" ]; then
    echo "error: both $var and $file_var are set (but are exclusive)" >&2
    exit 1
  fi
  val="$def"
  if [ "${!var:-}" ]; then
    val="${!var}"
  elif [ "${!file_var:-}" ]; then
    val="$(<"${!file_var}")"
  fi
  export "$var"="$val"
  unset "$file_var"
}

if [ "${1:0:1}" = - ]; then
  set -- postgres "$@"
fi

if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 00700 "$PGDATA"
  mkdir -p /var/run/postgresql
  chown postgres:postgres /var/run/postgresql
  chmod 03775 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

process_sql() {
  PGHOST='' PGHOSTADDR='' psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc "$@"
}

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$auth" != trust ]; then
    echo "error: database is uninitialized and superuser password is not specified." >&2
    echo "  Set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE), or POSTGRES_HOST_AUTH_METHOD=trust." >&2
    exit 1
  fi
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of options
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
  # As the official image: when the method is scram-sha-256 (the default),
  # passwords are stored that way too.
  if [ "$auth" = scram-sha-256 ]; then
    echo "password_encryption = scram-sha-256" >>"$PGDATA/postgresql.conf"
  fi
  printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

  PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
  export PGPASSWORD="$POSTGRES_PASSWORD"
  if [ "$POSTGRES_DB" != postgres ]; then
    process_sql --dbname postgres --set db="$POSTGRES_DB" <<<"CREATE DATABASE :\"db\" ;"
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then
          echo "docker-entrypoint: running $f"
          "$f"
        else
          echo "docker-entrypoint: sourcing $f"
          # shellcheck disable=SC1090
          . "$f"
        fi
        ;;
      *.sql) echo "docker-entrypoint: running $f"; process_sql --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) echo "docker-entrypoint: running $f"; gunzip -c "$f" | process_sql --dbname "$POSTGRES_DB" ;;
      *) [ -e "$f" ] && echo "docker-entrypoint: ignoring $f" ;;
    esac
  done
  unset PGPASSWORD
  PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -m fast -w stop
  echo "docker-entrypoint: PostgreSQL init process complete; ready for start up."
fi

exec "$@"
