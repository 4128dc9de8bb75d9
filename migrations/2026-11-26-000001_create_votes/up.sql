-- One row per voter: the vote that counts. Workers upsert batches into it
-- with a condition on (ts, vote_id), so replaying a batch changes nothing
-- and the winner is decided by the data, not by arrival order.
CREATE TABLE votes (
    voter_id     TEXT        PRIMARY KEY CHECK (voter_id ~ '^[0-9a-f]{32}$'),
    option       TEXT        NOT NULL CHECK (option IN ('a', 'b')),
    -- Hybrid logical clock of the vote, microseconds since the epoch.
    ts           BIGINT      NOT NULL CHECK (ts > 0),
    vote_id      TEXT        NOT NULL CHECK (vote_id ~ '^[0-9a-f]{32}$'),
    -- The capture node that took it.
    node         TEXT        NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The results query counts per option; this index lets it scan the small
-- index instead of the table.
CREATE INDEX votes_option_idx ON votes (option);
