-- Running totals per capture node (`votes.node`: the node that took each
-- voter's counted vote), for the results page's "share per node" and the
-- export's per-node totals: kept the way `vote_counts` is (same triggers,
-- same transactions, a row per database session so concurrent workers
-- never wait on one counter row), so the results node reads a few rows a
-- second instead of grouping every voter.
CREATE TABLE node_counts (
    node    TEXT    NOT NULL,
    backend INTEGER NOT NULL,
    n       BIGINT  NOT NULL,
    PRIMARY KEY (node, backend)
);

-- Replacing the function leaves the triggers in place, which take no lock
-- on `votes`; this lock keeps writers out until the migration commits, so
-- no vote falls between the starting count below and the new function.
LOCK TABLE votes IN SHARE MODE;

CREATE OR REPLACE FUNCTION vote_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO vote_counts (option, backend, n)
        SELECT option, pg_backend_pid(), count(*) FROM new_rows GROUP BY option
        ON CONFLICT (option, backend) DO UPDATE SET n = vote_counts.n + EXCLUDED.n;
        INSERT INTO node_counts (node, backend, n)
        SELECT node, pg_backend_pid(), count(*) FROM new_rows GROUP BY node
        ON CONFLICT (node, backend) DO UPDATE SET n = node_counts.n + EXCLUDED.n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO vote_counts (option, backend, n)
        SELECT option, pg_backend_pid(), sum(d) FROM (
            SELECT option, 1 AS d FROM new_rows
            UNION ALL
            SELECT option, -1 AS d FROM old_rows
        ) changes GROUP BY option HAVING sum(d) <> 0
        ON CONFLICT (option, backend) DO UPDATE SET n = vote_counts.n + EXCLUDED.n;
        -- A changed vote taken by another node moves from the old node's
        -- total to the new one's.
        INSERT INTO node_counts (node, backend, n)
        SELECT node, pg_backend_pid(), sum(d) FROM (
            SELECT node, 1 AS d FROM new_rows
            UNION ALL
            SELECT node, -1 AS d FROM old_rows
        ) changes GROUP BY node HAVING sum(d) <> 0
        ON CONFLICT (node, backend) DO UPDATE SET n = node_counts.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO vote_counts (option, backend, n)
        SELECT option, pg_backend_pid(), -count(*) FROM old_rows GROUP BY option
        ON CONFLICT (option, backend) DO UPDATE SET n = vote_counts.n + EXCLUDED.n;
        INSERT INTO node_counts (node, backend, n)
        SELECT node, pg_backend_pid(), -count(*) FROM old_rows GROUP BY node
        ON CONFLICT (node, backend) DO UPDATE SET n = node_counts.n + EXCLUDED.n;
    ELSE -- TRUNCATE
        DELETE FROM vote_counts;
        DELETE FROM node_counts;
    END IF;
    RETURN NULL;
END
$$;

-- A poll already under way: start from what `votes` holds.
INSERT INTO node_counts (node, backend, n)
SELECT node, 0, count(*) FROM votes GROUP BY node;

-- As for `vote_counts` (`*_role_grants`): the workers' triggers add to it,
-- the results node reads it; neither sees more.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'voteswarm_worker') THEN
        GRANT SELECT, INSERT, UPDATE ON node_counts TO voteswarm_worker;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'voteswarm_results') THEN
        GRANT SELECT ON node_counts TO voteswarm_results;
    END IF;
END
$$;
