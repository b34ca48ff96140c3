ALTER TABLE api_keys DROP COLUMN revoked_at;
ALTER TABLE api_keys DROP COLUMN last_used_at;
ALTER TABLE api_keys DROP COLUMN label;
ALTER TABLE accounts DROP COLUMN external_id;
DROP TABLE platform_tokens;
