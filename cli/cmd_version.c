#include "cli.h"

#include <stdio.h>
#ifdef DOCQA_HAVE_POSTGRES
#include <libpq-fe.h>
#endif

int cmd_version(int argc, char **argv) {
    GOptionContext *ctx = g_option_context_new("- print the version and the build's features");
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    if (!ok || !dq_cli_no_arguments("version", argc, argv))
        return DQ_EXIT_FATAL;
    printf("docqa %s\n", DOCQA_VERSION);
#ifdef DOCQA_HAVE_CUDA
    printf("cuda backend: compiled in\n");
#else
    printf("cuda backend: not compiled in\n");
#endif
#ifdef DOCQA_HAVE_POSTGRES
    printf("postgresql store: compiled in (libpq %d)\n", PQlibVersion());
#else
    printf("postgresql store: not compiled in (sqlite only)\n");
#endif
    return DQ_EXIT_OK;
}
