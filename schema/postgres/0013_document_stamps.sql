-- 0013: what a file looked like when its bytes were hashed, so that ingest need not read an
-- unchanged file again (see schema/sqlite/0013_document_stamps.sql for why ctime makes it safe).
CREATE TABLE document_stamps (
    document_id bigint PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    dev         bigint NOT NULL,
    inode       bigint NOT NULL,
    bytes       bigint NOT NULL,
    mtime_ns    bigint NOT NULL,
    ctime_ns    bigint NOT NULL
);
