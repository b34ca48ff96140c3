-- Consecutive quota watcher passes in which a database could not be measured (its host
-- answered, but not for it). It keeps its last size meanwhile; past
-- quota.max_unmeasured_passes its account counts as over quota (README, "Tenant isolation").
ALTER TABLE databases ADD COLUMN unmeasured_passes INTEGER NOT NULL DEFAULT 0;
