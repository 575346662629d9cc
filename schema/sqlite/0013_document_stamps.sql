-- 0013: what a file looked like when its bytes were hashed, so that ingest need not read an
-- unchanged file again.
--
-- Ingest identifies a file by (path, SHA-256 of its bytes), and hashing a whole archive every
-- night reads all of it (a 1 TB archive at ~120 MB/s takes hours). A document's stamp is the
-- file's device, inode, size, modification time and status-change time (ctime, both in
-- nanoseconds) as fstat() gave them when its bytes were hashed. When the newest version of a path
-- has a stamp and the file's is exactly the same, its bytes are taken to be that version's
-- without reading them (`docqa ingest --rehash` reads them all the same). The ctime is what makes
-- that safe: any write, truncate, rename onto the path or `touch -d` sets it to the current time,
-- and no user can set it back. Written by ingest only; a missing stamp just means the file is
-- hashed next time. dev and inode are stored as the signed 64-bit integers their bits make.
CREATE TABLE document_stamps (
    document_id INTEGER PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    dev         INTEGER NOT NULL,
    inode       INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    mtime_ns    INTEGER NOT NULL,
    ctime_ns    INTEGER NOT NULL
) STRICT;
