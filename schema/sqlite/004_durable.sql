-- 004_durable.sql -- checkpoints keep their history; long copies and deletes in steps.
--
-- 1. A checkpoint keeps the history it was taken with. Restore used to only delete the history
-- rows at and after the checkpoint's step. After a restore to an earlier checkpoint and
-- training on another branch, the rows before a later checkpoint's step were the other
-- branch's, and restoring that later checkpoint brought back its parameters with the wrong
-- history. A checkpoint now copies the model's history chunks (the layout of history_chunks:
-- 002_history_chunks.sql, 003_validation.sql) in the transaction that saves its parameters,
-- and restore puts exactly those back.
--
-- Checkpoints saved before this migration have no copy (history_saved = 0): restoring one
-- keeps the old rule, deleting the rows at and after its step.

ALTER TABLE checkpoints ADD COLUMN history_saved INTEGER NOT NULL DEFAULT 0;

CREATE TABLE checkpoint_history (
    checkpoint_id  INTEGER NOT NULL REFERENCES checkpoints(id) ON DELETE CASCADE,
    first_step     INTEGER NOT NULL,
    last_step      INTEGER NOT NULL,
    n              INTEGER NOT NULL,
    stride         INTEGER NOT NULL,
    at_ms          INTEGER NOT NULL,
    learning_rate  REAL,
    data           BLOB NOT NULL,
    val            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (checkpoint_id, first_step)
) WITHOUT ROWID;

-- 2. A fork or delete of a large model is done in bounded transactions, so it never holds the
-- write lock (and stalls every other writer) for the whole copy. Meanwhile the model is hidden:
-- every read and write of the API treats it as absent. A fork's copy is hidden until its last
-- transaction makes it visible; a delete first hides the model (one short transaction), then
-- removes its data in steps and its row last. A hidden model left by a crash is deleted at the
-- next start.

ALTER TABLE models ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
