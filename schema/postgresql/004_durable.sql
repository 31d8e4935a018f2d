-- 004_durable.sql -- checkpoints keep their history; long copies and deletes in steps. See
-- schema/sqlite/004_durable.sql for why.

ALTER TABLE checkpoints ADD COLUMN history_saved bigint NOT NULL DEFAULT 0;

CREATE TABLE checkpoint_history (
    checkpoint_id  bigint NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
    first_step     bigint NOT NULL,
    last_step      bigint NOT NULL,
    n              bigint NOT NULL,
    stride         bigint NOT NULL,
    at_ms          bigint NOT NULL,
    learning_rate  double precision,
    data           bytea NOT NULL,
    val            bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (checkpoint_id, first_step)
);

ALTER TABLE models ADD COLUMN hidden bigint NOT NULL DEFAULT 0;
