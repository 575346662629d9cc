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

int cmd_migrate(int argc, char **argv) {
    char *from = NULL, *to = NULL;
    GOptionEntry entries[] = {
        {"from", 0, 0, G_OPTION_ARG_FILENAME, &from,
         "source: sqlite:FILE, FILE or postgresql://...", "DB"},
        {"to", 0, 0, G_OPTION_ARG_FILENAME, &to,
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
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    int rc = DQ_EXIT_FATAL;
    GError *err = NULL;
    DqStore *src = NULL, *dst = NULL;
    if (!ok || !dq_cli_no_arguments("migrate", argc, argv))
        goto out;
    if (from == NULL) {
        dq_print_line(stderr,
                      "docqa: migrate: give --from DB (and --to DB to copy it; see --help)");
        goto out;
    }
    if (to == NULL) {
        /* In place: the schema upgraded (opening does it) and docqa's views made again. */
        char **made = NULL;
        int version = 0;
        if ((src = dq_store_open_existing(from, &err)) == NULL) {
            rc = dq_cli_fail_in("migrate", FALSE, err);
            goto out;
        }
        if (!dq_store_restore_views(src, &made, &err) ||
            !dq_store_read_schema_version(src, &version, &err)) {
            g_strfreev(made);
            rc = dq_cli_fail(err);
            goto out;
        }
        dq_cli_signals_record();
        char *list = g_strjoinv(", ", made);
        dq_print_line(stdout, "%s: schema version %d; %s%s", dq_store_path(src), version,
                      made[0] != NULL ? "views made again: " : "docqa's views are all there", list);
        g_free(list);
        g_strfreev(made);
        rc = DQ_EXIT_OK;
        goto out;
    }
    if (g_strcmp0(from, to) == 0) {
        dq_print_line(stderr, "docqa: migrate: --from and --to are the same database");
        goto out;
    }
    gint64 rows = 0;
    if ((src = dq_store_open_existing(from, &err)) == NULL ||
        (dst = dq_store_open(to, &err)) == NULL) {
        rc = dq_cli_fail_in("migrate", FALSE, err);
        goto out;
    }
    if (!dq_store_copy(src, dst, &rows, &err)) {
        rc = dq_cli_fail(err);
        goto out;
    }
    dq_cli_signals_record(); /* committed: the report of it is printed whole */
    dq_test_point("migrate:stored");
    dq_print_line(stdout, "migrated %" G_GINT64_FORMAT " row%s from %s to %s", rows,
                  rows == 1 ? "" : "s", dq_store_path(src), dq_store_path(dst));
    rc = DQ_EXIT_OK;
out:
    dq_store_close(dst);
    dq_store_close(src);
    g_free(from);
    g_free(to);
    return rc;
}
