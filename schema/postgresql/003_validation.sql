-- 003_validation.sql -- held-out validation rows and their loss in history; see
-- schema/sqlite/003_validation.sql.

ALTER TABLE batches ADD COLUMN split bigint NOT NULL DEFAULT 0;
ALTER TABLE models ADD COLUMN validation_rows bigint NOT NULL DEFAULT 0;
ALTER TABLE history_chunks ADD COLUMN val bigint NOT NULL DEFAULT 0;
