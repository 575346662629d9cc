/* Text that is going into the database or an export. */
#ifndef DQ_TEXT_H
#define DQ_TEXT_H

#include <glib.h>
#include <stdio.h>

/* `s` as valid UTF-8: each byte that is not part of a UTF-8 character written as \xNN (as
 * Python's "backslashreplace"), and a backslash that would read as the start of such an escape
 * written \x5C, so that two different byte strings never give the same text ("re\xE7u" of a
 * Latin-1 name, "re\x5CxE7u" of one spelled with a backslash). Text that needs neither comes back
 * unchanged. NULL for NULL. Linux paths are bytes (a Latin-1 name from an old archive); the
 * database holds text (PostgreSQL refuses invalid UTF-8, JSON exports must be valid). */
char *dq_utf8_escape_invalid(const char *s);

/* The bytes dq_utf8_escape_invalid was given back from its text: every \xNN becomes byte NN
 * (its output holds no other \x followed by two hex digits). NULL for NULL. */
char *dq_utf8_unescape(const char *s);

/* How dq_text_show writes text. */
typedef enum {
    DQ_SHOW_LINE = 0,                  /* one line: a newline as \n */
    DQ_SHOW_KEEP_NEWLINES = 1 << 0,    /* output of several lines: newlines kept */
    DQ_SHOW_KEEP_TABS = 1 << 1,        /* tabs kept (else \t) */
    DQ_SHOW_DOUBLE_BACKSLASH = 1 << 2, /* a backslash as \\, so that the shown text reads back */
    DQ_SHOW_CONTROLS_ONLY = 1 << 3,    /* only C0, DEL and C1 escaped (data: its other invisible
                                        * characters are its own) */
} DqShowFlags;

/* Untrusted text (a file name, a question, a model id, model output) made safe to print on a
 * terminal: control characters (C0, DEL, C1), and unless DQ_SHOW_CONTROLS_ONLY every other
 * character that is neither printable nor a space (format characters such as bidi overrides,
 * zero-width spaces, unassigned code points), as \uXXXX or \UXXXXXXXX, bytes that are not UTF-8
 * as \xNN; a terminal would act on them (retitle, clear, recolour the screen) or hide text.
 * At most max_chars characters, then "..." (0: no limit). len < 0: up to the NUL. */
char *dq_text_show(const char *text, gssize len, DqShowFlags flags, int max_chars);

/* One line for a person, to `to` (stderr for a message, stdout for a summary line): fmt's
 * output shown as dq_text_show shows it on one line, then a newline, in one write. The format is
 * docqa's; what it repeats (a path, a model id, a question, an option's value, a server's notice,
 * an error message quoting any of them) is not, and escaping the whole line here, rather than
 * each argument at each call, leaves no argument that can be forgotten. Text already shown is
 * shown the same again. */
void dq_print_line(FILE *to, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

#endif
