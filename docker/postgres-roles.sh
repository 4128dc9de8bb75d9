#!/bin/sh
# voteswarm's PostgreSQL roles, made once by the superuser. The postgres
# image runs /docker-entrypoint-initdb.d/*.sh at its first start (an empty
# data directory): executed when executable, sourced otherwise, so this file
# works both ways (no `exit`, no `$0`, no `set`). Run it by hand
# (`docker exec`) on an existing database: it is idempotent, and also
# resets the passwords to the secrets' values.
#
#   voteswarm_migrator  owns the database and its schema: DDL, `--migrate`
#   voteswarm_worker    SELECT, INSERT, UPDATE on votes and vote_counts
#   voteswarm_results   SELECT on vote_counts
# (the table grants are in migrations/*_role_grants, run by the migrator).
#
# Passwords: the secret files pg_migrator_password, pg_worker_password and
# pg_results_password in $VOTESWARM_SECRETS_DIR [/run/secrets]; stored
# as SCRAM-SHA-256 verifiers. The local cluster and the tests run the SQL
# between the BEGIN/END ROLES lines themselves (src/cluster/postgres.rs).

voteswarm_roles_sql=$(cat <<'SQL'
-- BEGIN ROLES
SET password_encryption = 'scram-sha-256';
SELECT set_config('voteswarm.migrator_password', :'migrator_password', false),
       set_config('voteswarm.worker_password', :'worker_password', false),
       set_config('voteswarm.results_password', :'results_password', false);
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['migrator', 'worker', 'results'] LOOP
        IF current_setting('voteswarm.' || r || '_password') = '' THEN
            RAISE EXCEPTION 'the % password is empty', r;
        END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'voteswarm_' || r) THEN
            EXECUTE format('CREATE ROLE %I', 'voteswarm_' || r);
        END IF;
        EXECUTE format(
            'ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
            'voteswarm_' || r, current_setting('voteswarm.' || r || '_password'));
    END LOOP;
    -- The migrator owns the database, hence (PostgreSQL 15) the public
    -- schema: the tables it creates are its own. Nobody else may create
    -- anything there, nor temporary tables, nor connect unless listed.
    EXECUTE format('ALTER DATABASE %I OWNER TO voteswarm_migrator', current_database());
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO voteswarm_worker, voteswarm_results',
                   current_database());
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
END
$$;
SELECT set_config('voteswarm.migrator_password', '', false),
       set_config('voteswarm.worker_password', '', false),
       set_config('voteswarm.results_password', '', false);
-- END ROLES
SQL
)

voteswarm_secrets="${VOTESWARM_SECRETS_DIR:-/run/secrets}"
voteswarm_missing=""
for voteswarm_role in migrator worker results; do
  [ -s "${voteswarm_secrets}/pg_${voteswarm_role}_password" ] ||
    voteswarm_missing="${voteswarm_missing} pg_${voteswarm_role}_password"
done
if [ -n "${voteswarm_missing}" ]; then
  echo "postgres-roles.sh: missing or empty in ${voteswarm_secrets}:${voteswarm_missing}" >&2
  false
else
  # psql reads each password from its file itself (a backquoted \set), so
  # no password is on a command line or in the environment.
  {
    for voteswarm_role in migrator worker results; do
      # The backquotes are psql's, not this shell's.
      # shellcheck disable=SC2016
      printf '\\set %s_password `cat %s/pg_%s_password`\n' \
        "${voteswarm_role}" "${voteswarm_secrets}" "${voteswarm_role}"
    done
    printf '%s\n' "${voteswarm_roles_sql}"
  } | psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-voteswarm}"
fi
