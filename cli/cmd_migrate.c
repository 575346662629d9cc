/* docqa migrate --from LOCATION --to LOCATION: moves a whole database between stores
 * (store/store_migrate.h). Without --to: upgrades --from in place and makes docqa's views again
 * where a user dropped one (they are derived: nothing stored is lost). Page images are files and
 * are not copied: for PostgreSQL point DOCQA_PAGES at the SQLite database's <db>.pages directory
 * (or a copy of it on shared storage). */
#include "cli.h"

#include "store.h"
#include "store_migrate.h"
#include "test_point.h"
#include "text.h"

#include <stdio.h>

/* One run of the command: its two locations and the stores opened on them (closed on the way
 * out, whatever happened). */
typedef struct {
    char *from, *to;
    DqStore *src, *dst;
} Migrate;

/* The command line into m; FALSE when it is not one (the reason printed). */
static gboolean migrate_parse(Migrate *m, int *argc, char ***argv) {
    GOptionEntry entries[] = {
        {"from", 0, 0, G_OPTION_ARG_FILENAME, &m->from,
         "source: sqlite:FILE, FILE or postgresql://...", "DB"},
        {"to", 0, 0, G_OPTION_ARG_FILENAME, &m->to,
         "destination (created and migrated; must be empty); without it, --from is upgraded "
         "in place and docqa's views (v_answers, v_current_answers, v_progress, documents_current) "
         "made again "
         "where dropped",
         "DB"},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = g_option_context_new("- move a database between SQLite and PostgreSQL");
    dq_cli_add_options(ctx, entries, NULL);
    g_option_context_set_description(
        ctx, "Copies documents (with their stat stamps), pages, questions, jobs, job errors, "
             "answers, the answers they superseded and the answers' commit counter, ids kept, in "
             "one transaction on the destination. Example:\n"
             "  docqa migrate --from sqlite:docqa.db --to postgresql://user@host/docqa\n"
             "Page images stay files: give PostgreSQL workers DOCQA_PAGES=<docqa.db>.pages (on "
             "storage every worker mounts).");
    gboolean ok = dq_cli_parse(ctx, argc, argv);
    g_option_context_free(ctx);
    return ok && dq_cli_no_arguments("migrate", *argc, *argv);
}

/* In place: the schema upgraded (opening does it) and docqa's views made again. */
static int migrate_in_place(Migrate *m) {
    GError *err = NULL;
    char **made = NULL;
    int version = 0;
    if ((m->src = dq_store_open_existing(m->from, &err)) == NULL)
        return dq_cli_fail_in("migrate", FALSE, err);
    if (!dq_store_restore_views(m->src, &made, &err) ||
        !dq_store_read_schema_version(m->src, &version, &err)) {
        g_strfreev(made);
        return dq_cli_fail(err);
    }
    dq_cli_signals_record(); /* done: the report of it is printed whole */
    dq_test_point("migrate:restored");
    char *list = g_strjoinv(", ", made);
    dq_print_line(stdout, "%s: schema version %d; %s%s", dq_store_path(m->src), version,
                  made[0] != NULL ? "views made again: " : "docqa's views are all there", list);
    g_free(list);
    g_strfreev(made);
    return DQ_EXIT_OK;
}

/* The whole of --from copied into the empty --to. */
static int migrate_copy(Migrate *m) {
    if (g_strcmp0(m->from, m->to) == 0) {
        dq_print_line(stderr, "docqa: migrate: --from and --to are the same database");
        return DQ_EXIT_FATAL;
    }
    GError *err = NULL;
    gint64 rows = 0;
    if ((m->src = dq_store_open_existing(m->from, &err)) == NULL ||
        (m->dst = dq_store_open(m->to, &err)) == NULL)
        return dq_cli_fail_in("migrate", FALSE, err);
    if (!dq_store_copy(m->src, m->dst, &rows, &err))
        return dq_cli_fail(err);
    dq_cli_signals_record(); /* committed: the report of it is printed whole */
    dq_test_point("migrate:stored");
    dq_print_line(stdout, "migrated %" G_GINT64_FORMAT " row%s from %s to %s", rows,
                  rows == 1 ? "" : "s", dq_store_path(m->src), dq_store_path(m->dst));
    /* Said here, not only at exit: "standard output: ..." alone reads as a migrate that failed,
     * and a run again is refused (the copy is not empty). */
    if (fflush(stdout) != 0) {
        int e = dq_cli_write_errno();
        dq_print_line(stderr,
                      "docqa: migrate: standard output: %s (the copy was made all the same: %s "
                      "holds the %" G_GINT64_FORMAT " row%s of %s, committed)",
                      g_strerror(e), dq_store_path(m->dst), rows, rows == 1 ? "" : "s",
                      dq_store_path(m->src));
        return DQ_EXIT_FATAL;
    }
    return DQ_EXIT_OK;
}

int cmd_migrate(int argc, char **argv) {
    Migrate m = {0};
    int rc = DQ_EXIT_FATAL;
    if (migrate_parse(&m, &argc, &argv)) { /* otherwise it printed why */
        if (m.from == NULL)
            dq_print_line(stderr,
                          "docqa: migrate: give --from DB (and --to DB to copy it; see --help)");
        else
            rc = m.to == NULL ? migrate_in_place(&m) : migrate_copy(&m);
    }
    dq_store_close(m.dst);
    dq_store_close(m.src);
    g_free(m.from);
    g_free(m.to);
    return rc;
}
