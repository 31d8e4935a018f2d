-- 007_job_queue.sql -- the job queue: what a job's resumption needs, and cancels from afar. See
-- schema/sqlite/007_job_queue.sql for why.

ALTER TABLE jobs ADD COLUMN start_step bigint;
ALTER TABLE jobs ADD COLUMN loss_before double precision;
ALTER TABLE jobs ADD COLUMN cancel_requested integer NOT NULL DEFAULT 0;
CREATE INDEX jobs_queue ON jobs(status, id);
