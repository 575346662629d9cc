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

/* SIGINT, SIGTERM and SIGHUP (Ctrl-C, kill, systemctl stop, a closed terminal) end every command
 * with exit status 130. Installed by main before the command runs: a signal then ends the
 * process at once with "docqa: <command>: interrupted (SIGTERM) before it finished" on stderr.
 * That is safe anywhere a command has not yet committed its work, because a transaction cut
 * short is rolled back (by SQLite at the next open, by the PostgreSQL server when the connection
 * drops): a command's change is stored whole or not at all. run and ingest install their own
 * handlers while they work (they stop their workers and keep what is done). A signal ignored
 * when docqa starts (nohup) stays ignored, there too. */
void dq_cli_signals_install(const char *command);

/* Once a command's work is committed (or run's and ingest's is over), what is left is to report
 * it: from then on a signal is only noted, the report is printed whole, and main turns the exit
 * status into 130, saying so. */
void dq_cli_signals_record(void);

/* The signal noted since dq_cli_signals_record, 0 if none. */
int dq_cli_signal_caught(void);

/* For a command whose outcome a last step seals (export's checkpoint moved past its rows): from
 * then on a signal changes nothing, and one noted since dq_cli_signals_record is forgotten, so
 * that its exit status (0) says the step was done, and 130 that it was not. */
void dq_cli_signals_sealed(void);

/* "SIGINT", "SIGTERM", "SIGHUP" (else "signal N"). */
const char *dq_cli_signal_name(int sig);

/* A temporary file of the command's (NULL: none) that a signal ending it at once removes. */
void dq_cli_signals_remove_on_exit(const char *path);

/* Prints "docqa: <message>" for err (and frees it), its control characters escaped
 * (dq_print_line); returns DQ_EXIT_FATAL. */
int dq_cli_fail(GError *err);

/* dq_cli_fail for an error in what the user gave `command` (an option's value, a questions
 * file): "docqa: <command>: <message>", as the option checks below print theirs. Only errors
 * of DQ_ERR_ARGS when args_only: those of the database are the database's. */
int dq_cli_fail_in(const char *command, gboolean args_only, GError *err);

/* Untrusted text (a file name, a model id, an error message holding them) for a message or a
 * summary line: one line, control and invisible characters escaped (dq_text_show), so that a
 * file named with terminal escapes cannot retitle or clear the user's terminal. Free it. */
char *dq_cli_shown(const char *text);

/* What a reader says when a view of docqa's is missing: "`docqa migrate --from LOCATION` makes
 * docqa's views again", the location one to paste (dq_store_location_pasteable), and where its
 * password was hidden, to put it back. g_free. */
char *dq_cli_views_advice(const char *location);

/* Data for standard output (an answer, an export's rows): its exact bytes when stdout is not a
 * terminal (a pipe, a file: the data is the user's); on a terminal, control characters other
 * than newline and tab escaped as \uXXXX, as the terminal would act on them. Returns 0, or the
 * errno of the write that failed (EIO where it left none), taken at once: a caller that checks
 * later would find errno changed by whatever ran in between. */
int dq_cli_put_data(const char *text);

/* Parses argv with ctx (argv[0]: the command's name); on a usage error prints "docqa:
 * <command>: <what is wrong> (see --help)" (a value GLib could not convert from the locale's
 * charset is named with its option). -h, --help and --help-all print the help on stdout and exit:
 * 0, or 2 when stdout could not take it (dq_cli_close_stdout). */
gboolean dq_cli_parse(GOptionContext *ctx, int *argc, char ***argv);

/* Adds the NULL-terminated list of entry arrays to ctx's main options; once per context (it
 * makes the main group). G_OPTION_ARG_INT and G_OPTION_ARG_INT64 entries take decimal only, as
 * Python's int() does: "010" is 10, a sign is allowed (each command checks its own range), and
 * anything else ("0x10", "1e3", "12 ", "") is a usage error naming the option and the value,
 * where GLib's own parser read octal and hex. */
void dq_cli_add_options(GOptionContext *ctx, const GOptionEntry *entries,
                        ...) G_GNUC_NULL_TERMINATED;

/* For a command that takes options only: FALSE, with "docqa: <command>: unexpected argument"
 * printed, when argv holds anything after the parsed options (a path typed without its --db
 * would otherwise be ignored while the command acts on the default database). */
gboolean dq_cli_no_arguments(const char *command, int argc, char **argv);

/* An integer option taken as text, so that a value given is told from none (text NULL: *out is
 * left alone, TRUE). FALSE, with "docqa: <command>: <option> <text>: ..." printed, unless text
 * is a whole decimal number in [min, max] (no silent clamping of huge values). */
gboolean dq_cli_int_option(const char *command, const char *option, const char *text, gint64 min,
                           gint64 max, gint64 *out);

/* The largest --n-res (ingest, generate): 64 x tile is past transformers' 4096 px cap for
 * every tile size, so nothing a user could want is refused. */
#define DQ_CLI_MAX_N_RES 64

/* A free-text option taken as bytes (G_OPTION_ARG_FILENAME, so that the locale's charset does
 * not matter): FALSE, with "docqa: <command>: <option> is not valid UTF-8 (...)" printed, unless
 * text is NULL or UTF-8. */
gboolean dq_cli_utf8_option(const char *command, const char *option, const char *text);

/* After a command: flushes and closes stdout. A write to it that failed (a full disk, a closed
 * pipe) turns an exit status of 0 or 1 into DQ_EXIT_FATAL with "docqa: <command>: standard
 * output: <reason>" printed: results a user did not get must not look delivered. */
int dq_cli_close_stdout(const char *command, int status);

/* fflush(stdout) before something else is written elsewhere (stderr, a child process); a failure's
 * errno is kept for dq_cli_close_stdout's message, as ferror() keeps none. FALSE when it failed. */
gboolean dq_cli_flush_stdout(void);

/* Called at once after a write to stdout failed, before anything else can change errno: keeps
 * the first failure's errno for dq_cli_close_stdout and returns this one's (EIO where the call
 * left errno 0). */
int dq_cli_write_errno(void);

/* --model DIR (or DOCQA_MODEL, named by `option`) before any work: FALSE, with "docqa:
 * <command>: <option> <dir>: not a directory (expected a SmolVLM snapshot directory)" printed
 * (or "no such directory"), unless dir is a directory; one message for every command. */
gboolean dq_cli_model_dir(const char *command, const char *option, const char *dir);

/* The locale's character set, as GLib sees it (g_get_charset). */
const char *dq_cli_locale_charset(void);

/* A JSON member holding an integer. */
void dq_cli_json_int(JsonBuilder *b, const char *name, gint64 value);

/* A JSON member holding a floating-point number, rounded to `decimals` places as the text
 * output shows it (null where not finite); dq_cli_json_print writes it with the fewest digits
 * that read back as that number (common/json_write.h): 66.7, not 66.700000000000003. */
void dq_cli_json_double(JsonBuilder *b, const char *name, double value, int decimals);

/* JSON members for values a database may not know: a string (null for NULL), and a boolean
 * held as 1 / 0 (null for -1). */
void dq_cli_json_string(JsonBuilder *b, const char *name, const char *value);
void dq_cli_json_known_bool(JsonBuilder *b, const char *name, int value);

/* Writes b's document and a newline to standard output (pretty: indented, for a person; its
 * floating-point numbers as dq_json_to_text writes them) and frees b, through dq_cli_put_data (on a
 * terminal DEL and C1 characters, which JSON may hold raw, become \u escapes: the same JSON). Write
 * errors are found by dq_cli_close_stdout; returns 0 or the first failed write's errno, as
 * dq_cli_put_data does, for a caller that must stop at once (export). */
int dq_cli_json_print(JsonBuilder *b, gboolean pretty);

int cmd_version(int argc, char **argv);
int cmd_ingest(int argc, char **argv);
int cmd_ask(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_requeue(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_migrate(int argc, char **argv);

#endif
