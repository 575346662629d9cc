-- 0001: documents and their pages, written by `docqa ingest`.
--
-- A document row is one version of one file: re-ingesting the same bytes (same sha256 at the
-- same path) adds nothing; changed bytes at the same path add a new row and keep the old one,
-- so answers already given about the old version stay attached to what was asked.

CREATE TABLE documents (
    id            INTEGER PRIMARY KEY,
    path          TEXT    NOT NULL,               -- absolute path at ingest time
    sha256        TEXT    NOT NULL,               -- hex SHA-256 of the file's bytes
    bytes         INTEGER NOT NULL,
    mtime         INTEGER NOT NULL,               -- file modification time, Unix seconds
    kind          TEXT    NOT NULL CHECK (kind IN ('pdf', 'tiff', 'unknown')),
    page_count    INTEGER,                        -- NULL when the file could not be opened
    status        TEXT    NOT NULL CHECK (status IN ('ok', 'partial', 'failed')),
    error_code    TEXT,                           -- e.g. 'encrypted', 'damaged', see README
    error_message TEXT,
    ingested_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (path, sha256)
) STRICT;
CREATE INDEX documents_sha256 ON documents (sha256);

CREATE TABLE pages (
    id              INTEGER PRIMARY KEY,
    document_id     INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    page_number     INTEGER NOT NULL CHECK (page_number >= 1),
    width           INTEGER,                      -- pixels of the stored page image
    height          INTEGER,
    render_settings TEXT    NOT NULL,             -- canonical JSON: n_res, tile, dpi, ...
    image_sha256    TEXT,                         -- content address in the page store
    status          TEXT    NOT NULL CHECK (status IN ('ok', 'failed')),
    error_code      TEXT,
    error_message   TEXT,
    UNIQUE (document_id, page_number, render_settings)
) STRICT;
