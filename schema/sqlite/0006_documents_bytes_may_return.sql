-- 0006: a path's bytes may come back to those of an older version.
--
-- UNIQUE (path, sha256) made a file restored to older bytes (an undone edit, a file that was
-- unreadable for a while) impossible to record again: ingest found the old version and called
-- the file unchanged, and documents_current kept showing the newer version the file no longer
-- holds. Now the newest version of a path is what its bytes are compared with, and older bytes
-- coming back are a new version (version + 1); (path, version) stays unique.
--
-- SQLite cannot drop a table constraint: the table is rebuilt. docqa applies migrations with
-- foreign keys off and checks them before committing (SQLite's documented procedure), so
-- dropping the old table neither cascades into pages nor breaks their references, and the
-- legacy rename leaves the views that name `documents` as they are (they name the new table).

CREATE TABLE documents_new (
    id            INTEGER PRIMARY KEY,
    path          TEXT    NOT NULL,
    version       INTEGER NOT NULL DEFAULT 1,
    sha256        TEXT,
    bytes         INTEGER NOT NULL,
    mtime         INTEGER NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('pdf', 'tiff', 'unknown')),
    page_count    INTEGER,
    status        TEXT    NOT NULL CHECK (status IN ('ok', 'partial', 'failed')),
    error_code    TEXT,
    error_message TEXT,
    ingested_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (path, version)
) STRICT;
INSERT INTO documents_new (id, path, version, sha256, bytes, mtime, kind, page_count, status,
                           error_code, error_message, ingested_at)
SELECT id, path, version, sha256, bytes, mtime, kind, page_count, status, error_code,
       error_message, ingested_at
FROM documents;
DROP TABLE documents;
PRAGMA legacy_alter_table = ON;
ALTER TABLE documents_new RENAME TO documents;
PRAGMA legacy_alter_table = OFF;
CREATE INDEX documents_sha256 ON documents (sha256);
