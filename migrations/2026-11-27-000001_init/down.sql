DROP TABLE jobs;
DROP TABLE databases;
DROP TABLE api_keys;
DROP TABLE accounts;
