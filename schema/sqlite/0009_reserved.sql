-- 0009: reserved for the document-identity change (fix/document-identity), whose migration 0009
-- replaces this file when both are merged. Migrations are numbered without gaps, and 0010
-- follows. Nothing to do.
SELECT 1;
