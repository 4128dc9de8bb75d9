-- A poll of up to twelve options (issue 19): the stored option is its
-- letter, `a` to `l` (docs/PROTOCOL.md). Today's votes are `a` and `b` and
-- stay exactly as they are: only the check widens, so no row is rewritten
-- and `vote_counts` (keyed by the letter, its triggers blind to how many
-- letters there are) keeps its totals and counts the new letters the same
-- way.
--
-- Adding the check scans `votes` once under the ALTER's lock, which holds
-- the workers' commits back until the migration commits: they wait, they
-- do not fail, and what they hold stays unacknowledged in Redis.
ALTER TABLE votes DROP CONSTRAINT votes_option_check;
ALTER TABLE votes ADD CONSTRAINT votes_option_check
    CHECK (option IN ('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l'));
