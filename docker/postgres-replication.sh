#!/bin/sh
# The primary's side of the synchronous standby (docs/DEPLOY.md, "The
# store's standby"), made once by the superuser. The postgres image runs
# /docker-entrypoint-initdb.d/*.sh at its first start (an empty data
# directory): executed when executable, sourced otherwise, so this file
# works both ways (no `exit`, no `$0`, no `set`). On an existing database,
# run it by hand (`docker exec`) and then `SELECT pg_reload_conf()`: it is
# idempotent and resets the password to the secret's value.
#
#   - role voteswarm_replicator: LOGIN REPLICATION, nothing else; its
#     password is the secret pg_replication_password in
#     $VOTESWARM_SECRETS_DIR [/run/secrets], stored as a SCRAM verifier;
#     docker/postgres-standby.sh logs in with it to copy and to stream;
#   - pg_hba.conf: replication connections for that role alone, with a
#     password (the image's `host all all all` line covers no replication);
#   - synchronous_standby_names = 'voteswarm_standby' (the standby's
#     application_name) with synchronous_commit = on: a COMMIT returns once
#     the standby has flushed its WAL, so a worker acknowledges a batch to
#     Redis only once two machines hold it. Set with ALTER SYSTEM and not
#     reloaded here: at the first start the scripts after this one commit
#     on a server that has no standby yet; the real start reads it.
#     While the standby is down, commits wait (nothing is acknowledged, the
#     queues keep the votes): the price of the promise.
# The standby's own slot is made by the standby (docker/postgres-standby.sh),
# so that a standby rebuilt from nothing gets one again.

voteswarm_replication_sql=$(cat <<'SQL'
SET password_encryption = 'scram-sha-256';
-- SET, not SELECT set_config(): nothing is printed, so the password is in
-- no log.
SET voteswarm.replicator_password = :'replicator_password';
DO $$
BEGIN
    IF current_setting('voteswarm.replicator_password') = '' THEN
        RAISE EXCEPTION 'the replicator password is empty';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'voteswarm_replicator') THEN
        CREATE ROLE voteswarm_replicator;
    END IF;
    EXECUTE format(
        'ALTER ROLE voteswarm_replicator WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD %L',
        current_setting('voteswarm.replicator_password'));
END
$$;
RESET voteswarm.replicator_password;
ALTER SYSTEM SET synchronous_standby_names = 'voteswarm_standby';
ALTER SYSTEM SET synchronous_commit = 'on';
SQL
)

voteswarm_secrets="${VOTESWARM_SECRETS_DIR:-/run/secrets}"
if [ ! -s "${voteswarm_secrets}/pg_replication_password" ]; then
  echo "postgres-replication.sh: missing or empty: ${voteswarm_secrets}/pg_replication_password" >&2
  false
else
  voteswarm_hba="host replication voteswarm_replicator all scram-sha-256"
  grep -qxF "${voteswarm_hba}" "${PGDATA}/pg_hba.conf" ||
    printf '\n# The standby (docker/postgres-replication.sh)\n%s\n' "${voteswarm_hba}" >>"${PGDATA}/pg_hba.conf"
  {
    # The backquotes are psql's, not this shell's.
    # shellcheck disable=SC2016
    printf '\\set replicator_password `cat %s/pg_replication_password`\n' "${voteswarm_secrets}"
    printf '%s\n' "${voteswarm_replication_sql}"
  } | psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-voteswarm}"
fi
