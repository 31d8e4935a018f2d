-- 002_history_chunks.sql -- training history stored in chunks of packed records.
--
-- One history row per step cost a B-tree insert and ~60 bytes of WAL per step, which made a
-- fast train call recording every step 2.7 times slower than one recording none. A chunk holds
-- the records of one append (one training commit, up to ~1000 steps) and stores once what they
-- share. Record layout, little-endian: [step int64, when stride = 0] loss float64,
-- grad_norm float64, [learning_rate float64, when learning_rate is NULL]; a NaN loss or
-- grad_norm is null. Chunks of a model never overlap in steps; records ascend by step.
--
-- server/store_history.c converts the rows of the old `history` table into chunks and drops it
-- in this same transaction (migration_finish): packing doubles into BLOBs is not expressible in
-- SQL.

CREATE TABLE history_chunks (
    model_id       INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    first_step     INTEGER NOT NULL,              -- step of the first record
    last_step      INTEGER NOT NULL,              -- step of the last record
    n              INTEGER NOT NULL,              -- records, >= 1
    stride         INTEGER NOT NULL,              -- > 0: record i is step first_step + i*stride
    at_ms          INTEGER NOT NULL,              -- time of the append, ms since 1970 UTC
    learning_rate  REAL,                          -- shared by every record; NULL: per record
    data           BLOB NOT NULL,
    PRIMARY KEY (model_id, first_step)
) WITHOUT ROWID;
