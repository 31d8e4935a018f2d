-- 006_model_leases.sql -- a training run holds its model's lease; every commit checks it. See
-- schema/sqlite/006_model_leases.sql for why.

CREATE TABLE model_leases (
    model_id    bigint PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
    replica_id  bigint NOT NULL,
    epoch       bigint NOT NULL,
    expires_ms  bigint NOT NULL
);
CREATE INDEX model_leases_replica ON model_leases(replica_id);
