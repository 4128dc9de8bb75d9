-- Back to two options. A vote for `c` to `l` fails the narrower check and
-- the whole migration with it: going down never deletes a counted vote;
-- an operator who means to drop them does so by hand first.
ALTER TABLE votes DROP CONSTRAINT votes_option_check;
ALTER TABLE votes ADD CONSTRAINT votes_option_check CHECK (option IN ('a', 'b'));
