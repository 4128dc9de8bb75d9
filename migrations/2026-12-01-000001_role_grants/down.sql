DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'voteswarm_worker') THEN
        REVOKE ALL ON votes, vote_counts FROM voteswarm_worker;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'voteswarm_results') THEN
        REVOKE ALL ON vote_counts FROM voteswarm_results;
    END IF;
END
$$;
