-- 005_replicas.sql -- every neurond process using the database is a replica with a row.
--
-- A process inserts its row at start and refreshes heartbeat_at / heartbeat_ms every
-- --job-lease / 3 seconds; a row whose heartbeat is older than the lease belongs to a process
-- that is gone, and is deleted by the next live replica's heartbeat. GET /v1/cluster lists the
-- live rows. heartbeat_ms (milliseconds since the Unix epoch) is what liveness is compared on;
-- the text columns are what the API shows. AUTOINCREMENT: a dead replica's id is never reused,
-- so a job's replica_id keeps naming the process that ran it.

CREATE TABLE replicas (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    address       TEXT NOT NULL,
    version       TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL,
    heartbeat_ms  INTEGER NOT NULL
);
CREATE INDEX replicas_heartbeat ON replicas(heartbeat_ms);

-- The replica that took the job (NULL while queued). No foreign key: the job keeps the id after
-- the replica's row is cleaned up.
ALTER TABLE jobs ADD COLUMN replica_id INTEGER;
