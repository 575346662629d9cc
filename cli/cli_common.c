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

gboolean dq_cli_no_arguments(const char *command, int argc, char **argv) {
    if (argc <= 1)
        return TRUE;
    fprintf(stderr, "docqa: %s: unexpected argument '%s' (see --help)\n", command, argv[1]);
    return FALSE;
}

void dq_cli_json_string(JsonBuilder *b, const char *name, const char *value) {
    json_builder_set_member_name(b, name);
    if (value == NULL)
        json_builder_add_null_value(b);
    else
        json_builder_add_string_value(b, value);
}

void dq_cli_json_known_bool(JsonBuilder *b, const char *name, int value) {
    json_builder_set_member_name(b, name);
    if (value < 0)
        json_builder_add_null_value(b);
    else
        json_builder_add_boolean_value(b, value != 0);
}
