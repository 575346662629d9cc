/* Text that is going into the database or an export. */
#ifndef DQ_TEXT_H
#define DQ_TEXT_H

#include <glib.h>

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

#endif
