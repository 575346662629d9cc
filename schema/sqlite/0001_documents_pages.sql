-- 0001: documents and their pages, written by `docqa ingest`.
--
-- A document row is one version of one file: re-ingesting the same bytes (same sha256 at the
-- same path) adds nothing; changed bytes at the same path add a new row (version + 1) and keep
-- the old one, so answers already given about the old version stay attached to what was asked.
-- `documents_current` shows the newest version of every path.
--
-- Page images live in a content-addressed store beside the database file:
--   <database>.pages/<sha256[0:2]>/<sha256[2:4]>/<sha256>.png
-- where sha256 is the SHA-256 of the PNG file's bytes (pages.image_sha256). Identical pages are
-- stored once; a PNG is renamed into place before the row that names it commits.

CREATE TABLE documents (
    id            INTEGER PRIMARY KEY,
    path          TEXT    NOT NULL,               -- absolute path at ingest time
    version       INTEGER NOT NULL DEFAULT 1,     -- 1, 2, ... per path, in ingest order
    sha256        TEXT,                           -- hex SHA-256 of the bytes; NULL if unreadable
    bytes         INTEGER NOT NULL,
    mtime         INTEGER NOT NULL,               -- file modification time, Unix seconds
    kind          TEXT    NOT NULL CHECK (kind IN ('pdf', 'tiff', 'unknown')),
    page_count    INTEGER,                        -- NULL when the file could not be opened
    status        TEXT    NOT NULL CHECK (status IN ('ok', 'partial', 'failed')),
    error_code    TEXT,                           -- e.g. 'encrypted', 'damaged', see README
    error_message TEXT,
    ingested_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    UNIQUE (path, sha256),
    UNIQUE (path, version)
) STRICT;
CREATE INDEX documents_sha256 ON documents (sha256);

CREATE TABLE pages (
    id              INTEGER PRIMARY KEY,
    document_id     INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    page_number     INTEGER NOT NULL CHECK (page_number >= 1),
    width           INTEGER,                      -- pixels of the stored page image
    height          INTEGER,
    source_width    REAL,                         -- PDF: points after /Rotate (CropBox);
    source_height   REAL,                         -- TIFF: pixels after Orientation
    render_settings TEXT    NOT NULL,             -- canonical JSON: n_res, tile, longest_edge
    image_sha256    TEXT,                         -- content address in the page store
    -- 'partial': an image exists but the decoder reported an error (an incomplete TIFF strip)
    status          TEXT    NOT NULL CHECK (status IN ('ok', 'partial', 'failed')),
    error_code      TEXT,
    error_message   TEXT,
    UNIQUE (document_id, page_number, render_settings)
) STRICT;
CREATE INDEX pages_image_sha256 ON pages (image_sha256);

-- The newest version of every ingested path.
CREATE VIEW documents_current AS
SELECT d.*
FROM documents d
WHERE d.version = (SELECT max(version) FROM documents d2 WHERE d2.path = d.path);
