-- 007_job_queue.sql -- the job queue: what a job's resumption needs, and cancels from afar.
--
-- Jobs wait 'queued' until a replica claims one (oldest first) and marks it 'running' with its
-- replica_id. A replica that dies leaves its jobs 'running' under a replica id with no live
-- heartbeat: another claims them and resumes each from the model's last committed step. The
-- call itself is request_json; start_step and loss_before, recorded by the run's first commit,
-- say where the call began, so the resumed run makes exactly the updates and result the
-- uninterrupted one would have. cancel_requested is set by DELETE /v1/jobs/{id} on a replica
-- that is not running the job; the running one looks for it every fraction of a second.

ALTER TABLE jobs ADD COLUMN start_step INTEGER;
ALTER TABLE jobs ADD COLUMN loss_before REAL;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_queue ON jobs(status, id);
