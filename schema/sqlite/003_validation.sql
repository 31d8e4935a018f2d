-- 003_validation.sql -- held-out validation rows and their loss in history.
--
-- A batch belongs to a split: 0 = train (what training reads), 1 = validation (evaluated, never
-- trained on). models.rows keeps counting train rows; validation_rows counts the others.
-- A history chunk's `val` says what each record carries after grad_norm (and before a per-record
-- learning_rate): 0 nothing, 1 val_loss float64, 2 val_loss and val_accuracy float64; a NaN
-- value is absent. Rows recorded while the model had no validation rows keep 0.

ALTER TABLE batches ADD COLUMN split INTEGER NOT NULL DEFAULT 0;
ALTER TABLE models ADD COLUMN validation_rows INTEGER NOT NULL DEFAULT 0;
ALTER TABLE history_chunks ADD COLUMN val INTEGER NOT NULL DEFAULT 0;
