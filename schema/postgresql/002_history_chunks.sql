-- 002_history_chunks.sql -- training history stored in chunks of packed records; the layout is
-- described in schema/sqlite/002_history_chunks.sql. server/store_history.c converts the rows of
-- the old `history` table into chunks and drops it in this same transaction.

CREATE TABLE history_chunks (
    model_id       bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    first_step     bigint NOT NULL,
    last_step      bigint NOT NULL,
    n              bigint NOT NULL,
    stride         bigint NOT NULL,
    at_ms          bigint NOT NULL,
    learning_rate  double precision,
    data           bytea NOT NULL,
    PRIMARY KEY (model_id, first_step)
);
