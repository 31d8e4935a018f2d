-- 006_model_leases.sql -- a training run holds its model's lease; every commit checks it.
--
-- A run takes the lease of its model when it starts: this replica as the owner, the epoch one
-- higher than any before it, and an expiry the owner's heartbeat pushes forward (--job-lease).
-- Every training commit checks, in its own transaction, that the lease still has the run's owner
-- and epoch, so a run whose lease was taken over (its replica paused or cut off past the expiry)
-- can never commit again: fencing by epoch. The row stays after the run (the epoch must only
-- grow); a model's delete takes it along.

CREATE TABLE model_leases (
    model_id    INTEGER PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
    replica_id  INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL
);
CREATE INDEX model_leases_replica ON model_leases(replica_id);
