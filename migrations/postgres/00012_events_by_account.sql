-- +goose Up
-- An account's events in position order, for the event API: session
-- streams are named session:<account>:<session> (eventcodec.StreamName),
-- so the account is the second part of the stream name, and an index on
-- that expression and the position serves a read of one account's events
-- after a position with one range scan, whatever the other accounts hold.
-- The INSERT of an append is unchanged; each event costs one more index
-- entry. Built once here, holding appends while it builds.
CREATE INDEX events_account ON events (split_part(stream, ':', 2), position);

-- +goose Down
DROP INDEX events_account;
