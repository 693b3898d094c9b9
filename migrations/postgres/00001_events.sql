-- +goose Up
-- The global position comes from a sequence, so appends to different streams
-- never wait on each other. Readers of the whole log use the sequence and the
-- lock table to find the highest position below which every inserting
-- transaction has finished (see pgstore.ReadAll).
CREATE SEQUENCE events_position_seq AS bigint;

CREATE TABLE events (
    position    bigint      NOT NULL DEFAULT nextval('events_position_seq'),
    id          text        NOT NULL,
    stream      text        NOT NULL,
    version     bigint      NOT NULL CHECK (version > 0),
    type        text        NOT NULL,
    data        jsonb       NOT NULL,
    metadata    jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_pkey PRIMARY KEY (position),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version),
    CONSTRAINT events_id_key UNIQUE (id)
);
ALTER SEQUENCE events_position_seq OWNED BY events.position;

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
