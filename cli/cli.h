/* The `docqa` command line: main.c dispatches to one cmd_<name>() per subcommand. A subcommand
 * parses its options (GOptionContext), calls the stage libraries and turns their GError into one
 * readable line on stderr and an exit status. No pipeline logic lives in cli/. */
#ifndef DQ_CLI_H
#define DQ_CLI_H

#include <glib.h>
#include <json-glib/json-glib.h>

/* Exit statuses shared by every subcommand. */
enum {
    DQ_EXIT_OK = 0,      /* everything asked for was done */
    DQ_EXIT_PARTIAL = 1, /* ran, but some inputs failed (they are recorded) */
    DQ_EXIT_FATAL = 2,   /* could not run: bad arguments, unusable model or database */
    DQ_EXIT_INTERRUPTED = 130,
};

typedef int (*DqCommandFn)(int argc, char **argv);

/* Prints "docqa: <message>" for err (and frees it); returns DQ_EXIT_FATAL. */
int dq_cli_fail(GError *err);

/* Parses argv with ctx; on a usage error prints it with the subcommand's help hint. */
gboolean dq_cli_parse(GOptionContext *ctx, int *argc, char ***argv);

/* For a command that takes options only: FALSE, with "docqa: <command>: unexpected argument"
 * printed, when argv holds anything after the parsed options (a path typed without its --db
 * would otherwise be ignored while the command acts on the default database). */
gboolean dq_cli_no_arguments(const char *command, int argc, char **argv);

/* An integer option taken as text, so that a value given is told from none (text NULL: *out is
 * left alone, TRUE). FALSE, with "docqa: <command>: <option> <text>: ..." printed, unless text
 * is a whole decimal number in [min, max] (no silent clamping of huge values). */
gboolean dq_cli_int_option(const char *command, const char *option, const char *text, gint64 min,
                           gint64 max, gint64 *out);

/* JSON members for values a database may not know: a string (null for NULL), and a boolean
 * held as 1 / 0 (null for -1). */
void dq_cli_json_string(JsonBuilder *b, const char *name, const char *value);
void dq_cli_json_known_bool(JsonBuilder *b, const char *name, int value);

int cmd_version(int argc, char **argv);
int cmd_ingest(int argc, char **argv);
int cmd_ask(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_requeue(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_migrate(int argc, char **argv);

#endif
