ALTER TABLE databases DROP COLUMN unmeasured_passes;
