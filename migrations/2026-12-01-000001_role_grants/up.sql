-- Least privilege (docs/SECURITY.md, "PostgreSQL roles"). This migration
-- runs as the migrator, which owns the database and so these tables; the
-- login roles themselves are made by the superuser before any migration
-- (docker/postgres-roles.sh: the postgres image's first start, or the local
-- cluster and the tests). A database without them (an operator's own, one
-- URL for every tier) gets no grants and works as before.
--
-- Workers: the upsert reads the row it may replace (SELECT, for the
-- `WHERE (votes.ts, votes.vote_id) < ...` and the conflict target), inserts
-- and updates; its statement triggers add to `vote_counts` the same way.
-- No DELETE, no TRUNCATE, no DDL (PostgreSQL 15 gives PUBLIC no CREATE on
-- the public schema, and the database is not theirs).
-- Results: the running totals and nothing else: not a voter's vote.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'voteswarm_worker') THEN
        GRANT SELECT, INSERT, UPDATE ON votes, vote_counts TO voteswarm_worker;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'voteswarm_results') THEN
        GRANT SELECT ON vote_counts TO voteswarm_results;
    END IF;
END
$$;
