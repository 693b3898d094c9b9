-- +goose Up
-- Events a projector could not apply and passed over (docs/read-models.md):
-- each is recorded in the transaction that moves the projector's checkpoint
-- past it. /readyz reports them while any are recorded; a rebuild deletes
-- them and records again those it cannot apply either.
CREATE TABLE projection_skipped (
    projector  text        NOT NULL,
    position   bigint      NOT NULL,
    event_id   text        NOT NULL,
    type       text        NOT NULL,
    error      text        NOT NULL,
    skipped_at timestamptz NOT NULL,
    PRIMARY KEY (projector, position)
);

-- +goose Down
DROP TABLE projection_skipped;
