#include "cli.h"

#include <stdio.h>

int dq_cli_fail(GError *err) {
    fprintf(stderr, "docqa: %s\n", err ? err->message : "unknown error");
    g_clear_error(&err);
    return DQ_EXIT_FATAL;
}

gboolean dq_cli_parse(GOptionContext *ctx, int *argc, char ***argv) {
    GError *err = NULL;
    if (!g_option_context_parse(ctx, argc, argv, &err)) {
        fprintf(stderr, "docqa: %s (see --help)\n", err->message);
        g_error_free(err);
        return FALSE;
    }
    return TRUE;
}
