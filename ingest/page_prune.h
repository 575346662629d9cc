/* docqa prune: reclaiming the page store's space.
 *
 * The page store only grows: every version of a file keeps its pages, and a file gone from disk
 * keeps them too. Prune removes the page files no live page needs (store_documents.h: a page
 * of a current document, or one with a job not finished), and files no page row names at all
 * (left by an ingest killed between writing a file and committing its row). Rows are never
 * deleted: answers stay readable; a job requeued about a pruned page fails saying so.
 *
 * The race with ingest, and why it is safe (git gc's rule): ingest finds a page file stored
 * already (or writes it) in a worker, and commits the row naming it later, in the parent. A
 * prune between the two would see a file no row names. So ingest touches such a file when it
 * finds it and again just before its row commits (page_store_touch), and prune removes only files
 * whose modification time is older than the grace period as of the moment before it read which
 * pages are live, measured by the page store's own clock (a file it writes there: on a share,
 * the server's time, whatever the machines' clocks say). A row committed after prune read the
 * live pages was touched at most the grace period before that moment, so its file is too new to
 * go. The one gap left, a touch between prune's look at a file and its removal, is closed by
 * removing in two steps: renamed aside, looked at again (touched meanwhile: put back), then
 * unlinked; a file left aside between the two steps (prune killed, or the power lost) is put
 * back by the next prune, as its page may have become live meanwhile. A row whose file was removed
 * before the touch at its commit fails as store_failed instead of naming nothing, and the next
 * ingest renders it again. */
#ifndef DQ_PAGE_PRUNE_H
#define DQ_PAGE_PRUNE_H

#include "store.h"

#include <glib.h>
#include <signal.h>

/* The default grace period: past --doc-timeout's default (an hour) with room to spare, so that
 * a document rendering now keeps the files its workers wrote before its rows commit. */
#define DQ_PRUNE_DEFAULT_GRACE_S (24 * 3600)
/* Below it prune warns: an ingest's commit may wait a minute for the database after its touch
 * (the busy timeout), and the margin covers a loaded machine and a share's clock. */
#define DQ_PRUNE_SAFE_GRACE_S 600

typedef struct {
    gint64 grace_s;              /* files younger than this are kept */
    gboolean dry_run;            /* count what would go, remove nothing */
    volatile sig_atomic_t *stop; /* set by a signal: stop between files (NULL: never) */
} DqPruneOptions;

typedef struct {
    gint64 files;                        /* page files found in the store */
    gint64 files_removed, bytes_removed; /* removed (dry_run: would be) */
    gint64 orphans_removed;              /* of those, named by no page row */
    gint64 files_kept_live, bytes_kept;  /* kept: a live page names them (bytes: every file kept) */
    gint64 files_kept_shared;            /* of those, named by a page no longer live too */
    gint64 files_kept_recent;            /* kept: not needed, but newer than the grace period */
    gint64 files_not_removed; /* could not be removed or looked at: kept (said on stderr each) */
    gboolean interrupted;     /* stopped by opt->stop before every file was seen */
} DqPruneSummary;

/* Prunes the page store of `store` (<db>.pages, or $DOCQA_PAGES for PostgreSQL). FALSE with an
 * error naming the folder when the store is missing, cannot be read, or (unless dry_run) cannot
 * be written; a file that cannot be removed is said on stderr and counted. */
gboolean dq_page_store_prune(DqStore *store, const DqPruneOptions *opt, DqPruneSummary *sum,
                             GError **err);

#endif
