-- +goose Up
-- The global position comes from a sequence, so appends to different streams
-- never wait on each other. Readers of the whole log use the sequence and
-- the transaction snapshot to find the highest position below which every
-- transaction has finished (see pgstore.ReadAll).
CREATE SEQUENCE events_position_seq AS bigint;

CREATE TABLE events (
    position       bigint      NOT NULL,
    transaction_id xid8        NOT NULL,
    id             text        NOT NULL,
    stream         text        NOT NULL,
    version        bigint      NOT NULL CHECK (version > 0),
    type           text        NOT NULL,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (position),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version),
    CONSTRAINT events_id_key UNIQUE (id)
);

-- +goose StatementBegin
-- Gives each new row its transaction id and then its position, in that
-- order: a transaction holds an id before it holds a position, which is what
-- lets a reader wait for every transaction that may hold a lower position.
CREATE FUNCTION events_assign_position() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.transaction_id := pg_current_xact_id();
    NEW.position := nextval('events_position_seq');
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_assign_position BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_assign_position();

-- +goose StatementBegin
CREATE FUNCTION events_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % on events is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
-- +goose StatementEnd

CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_immutable();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_immutable();

-- +goose Down
DROP TABLE events;
DROP FUNCTION events_immutable();
DROP FUNCTION events_assign_position();
DROP SEQUENCE events_position_seq;
