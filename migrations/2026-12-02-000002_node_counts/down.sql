LOCK TABLE votes IN SHARE MODE;

CREATE OR REPLACE FUNCTION vote_counts_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO vote_counts (option, backend, n)
        SELECT option, pg_backend_pid(), count(*) FROM new_rows GROUP BY option
        ON CONFLICT (option, backend) DO UPDATE SET n = vote_counts.n + EXCLUDED.n;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO vote_counts (option, backend, n)
        SELECT option, pg_backend_pid(), sum(d) FROM (
            SELECT option, 1 AS d FROM new_rows
            UNION ALL
            SELECT option, -1 AS d FROM old_rows
        ) changes GROUP BY option HAVING sum(d) <> 0
        ON CONFLICT (option, backend) DO UPDATE SET n = vote_counts.n + EXCLUDED.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO vote_counts (option, backend, n)
        SELECT option, pg_backend_pid(), -count(*) FROM old_rows GROUP BY option
        ON CONFLICT (option, backend) DO UPDATE SET n = vote_counts.n + EXCLUDED.n;
    ELSE -- TRUNCATE
        DELETE FROM vote_counts;
    END IF;
    RETURN NULL;
END
$$;

DROP TABLE IF EXISTS node_counts;
