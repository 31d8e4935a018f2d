-- 001_init.sql -- the initial neurond schema. Applied once, in one transaction, by store_open();
-- recorded in schema_version. Never edit an applied migration: add 002_*.sql instead.
--
-- Conventions: ids are INTEGER PRIMARY KEY AUTOINCREMENT so a deleted id is never handed out
-- again; timestamps are RFC 3339 UTC text ("2026-11-28T04:36:37.123Z"); float64 arrays are
-- BLOBs of little-endian IEEE doubles, row major; every child row goes with its model
-- (ON DELETE CASCADE, foreign_keys=ON is set on every connection).

CREATE TABLE models (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT UNIQUE,                      -- NULL = unnamed; unique when given
    kind        TEXT NOT NULL,                    -- linear | logistic | ... | graph
    spec_json   TEXT NOT NULL,                    -- the resolved spec, as JSON
    step        INTEGER NOT NULL DEFAULT 0,       -- updates over the model's life
    status      TEXT NOT NULL DEFAULT 'idle',     -- idle | training
    rows        INTEGER NOT NULL DEFAULT 0,       -- stored training rows, sum of batches.rows
    loss        REAL,                             -- loss_after of the last train/step call
    version     INTEGER NOT NULL DEFAULT 1,       -- bumped by every change (cache key)
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE parameters (
    model_id    INTEGER PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
    data        BLOB NOT NULL                     -- n_params float64
);

CREATE TABLE optim_state (
    model_id    INTEGER PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
    data        BLOB NOT NULL                     -- optimizer-specific float64 array
);

CREATE TABLE batches (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id    INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    rows        INTEGER NOT NULL,
    n_x         INTEGER NOT NULL,
    n_y         INTEGER NOT NULL,
    x           BLOB NOT NULL,                    -- rows*n_x float64
    y           BLOB NOT NULL,                    -- rows*n_y float64
    created_at  TEXT NOT NULL
);
CREATE INDEX batches_model ON batches(model_id, id);

CREATE TABLE history (
    model_id       INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    step           INTEGER NOT NULL,              -- row t describes the update t -> t+1
    loss           REAL,
    grad_norm      REAL,
    learning_rate  REAL,
    at             TEXT NOT NULL,
    PRIMARY KEY (model_id, step)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id    INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    step        INTEGER NOT NULL,
    label       TEXT,
    params      BLOB NOT NULL,
    optim       BLOB,
    created_at  TEXT NOT NULL
);
CREATE INDEX checkpoints_model ON checkpoints(model_id, id);

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id        INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    status          TEXT NOT NULL DEFAULT 'queued',   -- queued | running | succeeded | failed | cancelled
    request_json    TEXT NOT NULL,
    progress_step   INTEGER NOT NULL DEFAULT 0,
    progress_steps  INTEGER NOT NULL DEFAULT 0,
    progress_loss   REAL,
    result_json     TEXT,
    error           TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX jobs_model ON jobs(model_id, id);
CREATE INDEX jobs_status ON jobs(status);

-- Small key/value table for the daemon itself (e.g. the /healthz write probe).
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT
) WITHOUT ROWID;
