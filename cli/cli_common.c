#include "cli.h"
#include "json_write.h"
#include "store.h"
#include "text.h"

#include "dq_error.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int dq_cli_fail(GError *err) {
    dq_print_line(stderr, "docqa: %s", err ? err->message : "unknown error");
    g_clear_error(&err);
    return DQ_EXIT_FATAL;
}

int dq_cli_fail_in(const char *command, gboolean args_only, GError *err) {
    if (err != NULL && (!args_only || g_error_matches(err, DQ_ERROR, DQ_ERR_ARGS)))
        g_prefix_error(&err, "%s: ", command);
    return dq_cli_fail(err);
}

char *dq_cli_shown(const char *text) {
    return dq_text_show(text, -1, DQ_SHOW_LINE, 0);
}

char *dq_cli_views_advice(const char *location) {
    gboolean hidden = FALSE;
    char *from = dq_store_location_pasteable(location, &hidden);
    char *advice = g_strdup_printf("`docqa migrate --from %s` makes docqa's views again%s", from,
                                   hidden ? " (with the password where it shows ***)" : "");
    g_free(from);
    return advice;
}

int dq_cli_put_data(const char *text) {
    static int tty = -1;
    if (tty < 0)
        tty = isatty(STDOUT_FILENO);
    if (!tty)
        return fputs(text, stdout) == EOF ? dq_cli_write_errno() : 0;
    char *shown = dq_text_show(
        text, -1, DQ_SHOW_KEEP_NEWLINES | DQ_SHOW_KEEP_TABS | DQ_SHOW_CONTROLS_ONLY, 0);
    int failed = fputs(shown, stdout) == EOF ? dq_cli_write_errno() : 0;
    g_free(shown);
    return failed;
}

/* The names ("--device", "-d") of the options whose values GLib converts from the locale's
 * charset: string options and callbacks (the decimal integers' among them). A file name or a
 * --prompt (FILENAME options) stays bytes, so it is never the value that failed. Set by
 * dq_cli_add_options: a process parses one command line. */
static GHashTable *converted_options;

static gboolean option_value_converted(const GOptionEntry *e) {
    switch (e->arg) {
    case G_OPTION_ARG_STRING:
    case G_OPTION_ARG_STRING_ARRAY:
        return TRUE;
    case G_OPTION_ARG_CALLBACK:
    case G_OPTION_ARG_INT: /* made callbacks by dq_cli_add_options */
    case G_OPTION_ARG_INT64:
        return (e->flags & (G_OPTION_FLAG_FILENAME | G_OPTION_FLAG_NO_ARG)) == 0;
    default:
        return FALSE;
    }
}

/* GLib converts a string option's value from the locale's charset and, when it cannot, says
 * only "Invalid byte sequence in conversion input": the option and its value are found here,
 * among the values GLib converts (an earlier file name that is not text in the charset is
 * passed over: GLib never converted it). */
static void print_conversion_error(const char *command, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        char *utf8 = g_locale_to_utf8(argv[i], -1, NULL, NULL, NULL);
        g_free(utf8);
        if (utf8 != NULL)
            continue;
        const char *eq = argv[i][0] == '-' ? strchr(argv[i], '=') : NULL;
        char *option = eq != NULL                       ? g_strndup(argv[i], eq - argv[i])
                       : i > 1 && argv[i - 1][0] == '-' ? g_strdup(argv[i - 1])
                                                        : NULL;
        if (converted_options != NULL &&
            (option == NULL || !g_hash_table_contains(converted_options, option))) {
            g_free(option);
            continue;
        }
        char *shown = g_strescape(eq != NULL ? eq + 1 : argv[i], NULL);
        dq_print_line(stderr,
                      "docqa: %s: %s '%s': not text in the locale's character set (%s) (see "
                      "--help)",
                      command, option != NULL ? option : "an argument", shown,
                      dq_cli_locale_charset());
        g_free(option);
        g_free(shown);
        return;
    }
    dq_print_line(stderr,
                  "docqa: %s: an argument is not text in the locale's character set (see --help)",
                  command);
}

const char *dq_cli_locale_charset(void) {
    const char *charset = NULL;
    g_get_charset(&charset);
    return charset;
}

gboolean dq_cli_parse(GOptionContext *ctx, int *argc, char ***argv) {
    GError *err = NULL;
    /* argv as given: GLib may have rearranged it by the time it fails */
    char **given = g_strdupv(*argv);
    int n_given = *argc;
    /* GLib's own --help prints and exits 0 whether or not stdout took the text: help is
     * answered here instead, through dq_cli_close_stdout like every command's output. */
    gboolean help = FALSE;
    GOptionEntry help_entries[] = {
        {"help", 'h', G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &help, NULL, NULL},
        {"help-all", '?', G_OPTION_FLAG_HIDDEN, G_OPTION_ARG_NONE, &help, NULL, NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionGroup *help_group = g_option_group_new("help", "", "", NULL, NULL);
    g_option_group_add_entries(help_group, help_entries);
    g_option_context_add_group(ctx, help_group);
    g_option_context_set_help_enabled(ctx, FALSE);
    if (n_given > 0 && g_get_prgname() == NULL) {
        /* the help's usage line: "docqa ingest [OPTION…]", not "ingest [OPTION…]" */
        char *prgname = g_strconcat("docqa ", given[0], NULL);
        g_set_prgname(prgname);
        g_free(prgname);
    }
    gboolean ok = g_option_context_parse(ctx, argc, argv, &err);
    if (ok && help) {
        char *text = g_option_context_get_help(ctx, TRUE, NULL);
        fputs(text, stdout);
        g_free(text);
        int status = dq_cli_close_stdout(given[0] ? given[0] : "help", DQ_EXIT_OK);
        g_strfreev(given);
        exit(status);
    }
    /* the command's name (argv[0]) is docqa's own, from main's table */
    const char *command = n_given > 0 && given[0] != NULL ? given[0] : "docqa";
    if (!ok && err->domain == G_CONVERT_ERROR)
        print_conversion_error(command, n_given, given);
    else if (!ok) {
        dq_print_line(stderr, "docqa: %s: %s (see --help)", command, err->message);
    }
    g_clear_error(&err);
    g_strfreev(given);
    return ok;
}

/* ---- integer options in decimal ----
 *
 * GLib reads G_OPTION_ARG_INT and G_OPTION_ARG_INT64 values with strtoll(..., 0): "010" was 8
 * and "0x10" 16, where a user (or a script moved over from Python's argparse, type=int, which
 * reads "010" as 10 and refuses "0x10") means ten, or made a typo. dq_cli_add_options hands such
 * entries to decimal_option instead, which finds where each one's value goes by its name in the
 * main group's table. */

typedef struct {
    GOptionArg arg; /* G_OPTION_ARG_INT or G_OPTION_ARG_INT64 */
    gpointer target;
} DecimalTarget;

static gboolean decimal_option(const char *name, const char *value, gpointer data, GError **err) {
    const DecimalTarget *t = g_hash_table_lookup(data, name);
    if (t == NULL) { /* an entry dq_cli_add_options did not make: a bug, said as one */
        g_set_error(err, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, "%s: no integer option", name);
        return FALSE;
    }
    const char *digits = value + (value[0] == '-' || value[0] == '+');
    gboolean decimal = digits[0] != '\0';
    for (const char *c = digits; *c != '\0' && decimal; c++)
        decimal = g_ascii_isdigit(*c);
    if (!decimal) {
        g_set_error(err, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "%s '%s': expected a whole number in decimal", name, value);
        return FALSE;
    }
    errno = 0;
    gint64 v = g_ascii_strtoll(value, NULL, 10);
    if (errno == ERANGE || (t->arg == G_OPTION_ARG_INT && (v < G_MININT || v > G_MAXINT))) {
        g_set_error(err, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE, "%s %s: out of range", name,
                    value);
        return FALSE;
    }
    if (t->arg == G_OPTION_ARG_INT)
        *(int *)t->target = (int)v;
    else
        *(gint64 *)t->target = v;
    return TRUE;
}

void dq_cli_add_options(GOptionContext *ctx, const GOptionEntry *entries, ...) {
    if (g_option_context_get_main_group(ctx) != NULL)
        g_error("dq_cli_add_options: called twice for one context"); /* the table is the group's */
    GHashTable *targets = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    GOptionGroup *group =
        g_option_group_new(NULL, NULL, NULL, targets, (GDestroyNotify)g_hash_table_unref);
    GArray *all = g_array_new(TRUE, TRUE, sizeof(GOptionEntry)); /* ends with a zeroed entry */
    if (converted_options == NULL)
        converted_options = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_hash_table_remove_all(converted_options);
    va_list ap;
    va_start(ap, entries);
    for (const GOptionEntry *list = entries; list != NULL; list = va_arg(ap, const GOptionEntry *))
        for (const GOptionEntry *e = list; e->long_name != NULL; e++) {
            GOptionEntry copy = *e;
            if (option_value_converted(e)) {
                g_hash_table_add(converted_options, g_strconcat("--", e->long_name, NULL));
                if (e->short_name != '\0')
                    g_hash_table_add(converted_options, g_strdup_printf("-%c", e->short_name));
            }
            if (e->arg == G_OPTION_ARG_INT || e->arg == G_OPTION_ARG_INT64) {
                DecimalTarget *t = g_new(DecimalTarget, 1);
                *t = (DecimalTarget){e->arg, e->arg_data};
                g_hash_table_insert(targets, g_strconcat("--", e->long_name, NULL), t);
                if (e->short_name != '\0')
                    g_hash_table_insert(targets, g_strdup_printf("-%c", e->short_name),
                                        g_memdup2(t, sizeof *t));
                copy.arg = G_OPTION_ARG_CALLBACK;
                copy.arg_data = (gpointer)decimal_option;
            }
            g_array_append_val(all, copy);
        }
    va_end(ap);
    g_option_group_add_entries(group, (const GOptionEntry *)(void *)all->data); /* copied */
    g_array_free(all, TRUE);
    g_option_context_set_main_group(ctx, group);
}

gboolean dq_cli_no_arguments(const char *command, int argc, char **argv) {
    if (argc <= 1)
        return TRUE;
    dq_print_line(stderr, "docqa: %s: unexpected argument '%s' (see --help)", command, argv[1]);
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
        dq_print_line(stderr, "docqa: %s: %s '%s': expected a whole number", command, option, text);
        return FALSE;
    }
    if (errno == ERANGE || v < min || v > max) {
        if (errno == ERANGE)
            dq_print_line(stderr, "docqa: %s: %s %s: out of range", command, option, text);
        else if (max == G_MAXINT64)
            dq_print_line(stderr, "docqa: %s: %s %s: must be at least %" G_GINT64_FORMAT, command,
                          option, text, min);
        else
            dq_print_line(stderr,
                          "docqa: %s: %s %s: must be between %" G_GINT64_FORMAT
                          " and %" G_GINT64_FORMAT,
                          command, option, text, min, max);
        return FALSE;
    }
    *out = v;
    return TRUE;
}

gboolean dq_cli_model_dir(const char *command, const char *option, const char *dir) {
    const char *why = !g_file_test(dir, G_FILE_TEST_EXISTS)   ? "no such directory"
                      : !g_file_test(dir, G_FILE_TEST_IS_DIR) ? "not a directory"
                                                              : NULL;
    if (why == NULL)
        return TRUE;
    dq_print_line(stderr, "docqa: %s: %s %s: %s (expected a SmolVLM snapshot directory)", command,
                  option, dir, why);
    return FALSE;
}

gboolean dq_cli_utf8_option(const char *command, const char *option, const char *text) {
    const char *end = NULL;
    if (text == NULL || g_utf8_validate(text, -1, &end))
        return TRUE;
    dq_print_line(stderr, "docqa: %s: %s is not valid UTF-8 (byte 0x%02x at offset %ld)", command,
                  option, (unsigned)(unsigned char)*end, (long)(end - text));
    return FALSE;
}

/* The errno of the first write or flush of stdout that failed and was noted (dq_cli_write_errno)
 * before dq_cli_close_stdout: by then the buffer it failed on is gone, and only the error flag
 * says a write failed. */
static int stdout_flush_errno;

int dq_cli_write_errno(void) {
    int e = errno != 0 ? errno : EIO;
    if (stdout_flush_errno == 0)
        stdout_flush_errno = e;
    return e;
}

gboolean dq_cli_flush_stdout(void) {
    if (fflush(stdout) == 0)
        return TRUE;
    dq_cli_write_errno();
    return FALSE;
}

int dq_cli_close_stdout(const char *command, int status) {
    gboolean failed = ferror(stdout) != 0;
    int e = !failed ? 0 : stdout_flush_errno != 0 ? stdout_flush_errno : EIO;
    if (fflush(stdout) != 0) {
        failed = TRUE;
        e = errno;
    }
    if (fclose(stdout) != 0 && !failed) {
        failed = TRUE;
        e = errno;
    }
    /* A command that already failed has said why; one message is enough. */
    if (failed && status != DQ_EXIT_FATAL) {
        dq_print_line(stderr, "docqa: %s: standard output: %s", command, g_strerror(e));
        status = DQ_EXIT_FATAL;
    }
    return status;
}

void dq_cli_json_int(JsonBuilder *b, const char *name, gint64 value) {
    json_builder_set_member_name(b, name);
    json_builder_add_int_value(b, value);
}

void dq_cli_json_string(JsonBuilder *b, const char *name, const char *value) {
    json_builder_set_member_name(b, name);
    if (value == NULL)
        json_builder_add_null_value(b);
    else
        json_builder_add_string_value(b, value);
}

void dq_cli_json_double(JsonBuilder *b, const char *name, double value, int decimals) {
    json_builder_set_member_name(b, name);
    dq_json_add_double(b, value, decimals);
}

void dq_cli_json_known_bool(JsonBuilder *b, const char *name, int value) {
    json_builder_set_member_name(b, name);
    if (value < 0)
        json_builder_add_null_value(b);
    else
        json_builder_add_boolean_value(b, value != 0);
}

int dq_cli_json_print(JsonBuilder *b, gboolean pretty) {
    JsonNode *root = json_builder_get_root(b);
    char *text = dq_json_to_text(root, pretty);
    /* json-glib (1.6 at least) escapes the control characters below U+001F but writes U+001F
     * itself raw, which JSON forbids (Python's json, jq and PostgreSQL's jsonb refuse the line).
     * A model can emit the byte (byte-level BPE), and a question can hold it. Outside strings
     * the generator writes no control character, and UTF-8 never uses 0x1f inside a multibyte
     * sequence, so every 0x1f byte is one in a string. */
    if (strchr(text, '\x1f') != NULL) {
        GString *escaped = g_string_new(text);
        g_free(text);
        g_string_replace(escaped, "\x1f", "\\u001f", 0);
        text = g_string_free(escaped, FALSE);
    }
    int failed = dq_cli_put_data(text);
    if (putchar('\n') == EOF && failed == 0)
        failed = dq_cli_write_errno();
    g_free(text);
    json_node_unref(root);
    g_object_unref(b);
    return failed;
}

/* ---- signals ---- */

/* record_only: 0 a signal ends the process, 1 it is noted, 2 it is ignored (sealed) */
static volatile sig_atomic_t noted_signal, record_only;
/* The lines the handler writes, made before any signal can come (snprintf is not
 * async-signal-safe). */
static char interrupted_line[3][160];
static const int stop_signals[] = {SIGINT, SIGTERM, SIGHUP};
static char *volatile remove_path;

const char *dq_cli_signal_name(int sig) {
    static char other[32];
    switch (sig) {
    case SIGINT:
        return "SIGINT";
    case SIGTERM:
        return "SIGTERM";
    case SIGHUP:
        return "SIGHUP";
    default:
        g_snprintf(other, sizeof other, "signal %d", sig);
        return other;
    }
}

static void on_stop_signal(int sig) {
    if (record_only) {
        if (noted_signal == 0 && record_only == 1)
            noted_signal = sig;
        return;
    }
    int saved = errno;
    if (remove_path != NULL)
        unlink(remove_path);
    for (size_t i = 0; i < G_N_ELEMENTS(stop_signals); i++)
        if (stop_signals[i] == sig) {
            ssize_t w = write(STDERR_FILENO, interrupted_line[i], strlen(interrupted_line[i]));
            (void)w;
        }
    errno = saved;
    _exit(DQ_EXIT_INTERRUPTED);
}

void dq_cli_signals_install(const char *command) {
    noted_signal = 0;
    record_only = 0;
    for (size_t i = 0; i < G_N_ELEMENTS(stop_signals); i++) {
        /* the command's name is docqa's own (main's table): nothing to escape */
        g_snprintf(interrupted_line[i], sizeof interrupted_line[i],
                   "docqa: %s: interrupted (%s) before it finished\n", command,
                   dq_cli_signal_name(stop_signals[i]));
        /* One ignored when docqa starts (nohup, trap '' HUP, a script's background job) stays
         * ignored: whoever started docqa asked for that. */
        struct sigaction sa;
        if (sigaction(stop_signals[i], NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
            continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(stop_signals[i], &sa, NULL);
    }
}

void dq_cli_signals_record(void) {
    record_only = 1;
}

int dq_cli_signal_caught(void) {
    return noted_signal;
}

void dq_cli_signals_sealed(void) {
    record_only = 2;
    noted_signal = 0;
}

void dq_cli_signals_remove_on_exit(const char *path) {
    char *old = remove_path;
    remove_path = path ? g_strdup(path) : NULL;
    g_free(old);
}
