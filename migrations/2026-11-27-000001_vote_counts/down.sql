CREATE INDEX IF NOT EXISTS votes_option_idx ON votes (option);
DROP TRIGGER IF EXISTS vote_counts_truncate ON votes;
DROP TRIGGER IF EXISTS vote_counts_delete ON votes;
DROP TRIGGER IF EXISTS vote_counts_update ON votes;
DROP TRIGGER IF EXISTS vote_counts_insert ON votes;
DROP FUNCTION IF EXISTS vote_counts_add();
DROP TABLE IF EXISTS vote_counts;
