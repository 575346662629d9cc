#include "cli.h"

#include <errno.h>
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

gboolean dq_cli_int_option(const char *command, const char *option, const char *text, gint64 min,
                           gint64 max, gint64 *out) {
    if (text == NULL)
        return TRUE;
    char *end = NULL;
    errno = 0;
    gint64 v = g_ascii_strtoll(text, &end, 10);
    if (end == text || *end != '\0' || g_ascii_isspace(*text)) {
        fprintf(stderr, "docqa: %s: %s '%s': expected a whole number\n", command, option, text);
        return FALSE;
    }
    if (errno == ERANGE || v < min || v > max) {
        if (errno == ERANGE)
            fprintf(stderr, "docqa: %s: %s %s: out of range\n", command, option, text);
        else if (max == G_MAXINT64)
            fprintf(stderr, "docqa: %s: %s %s: must be at least %" G_GINT64_FORMAT "\n", command,
                    option, text, min);
        else
            fprintf(stderr,
                    "docqa: %s: %s %s: must be between %" G_GINT64_FORMAT " and %" G_GINT64_FORMAT
                    "\n",
                    command, option, text, min, max);
        return FALSE;
    }
    *out = v;
    return TRUE;
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
