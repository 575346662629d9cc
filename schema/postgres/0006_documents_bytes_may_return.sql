-- 0006 (PostgreSQL): a path's bytes may come back to those of an older version; see
-- schema/sqlite/0006_documents_bytes_may_return.sql for why. (path, version) stays unique.

ALTER TABLE documents DROP CONSTRAINT documents_path_sha256_key;
