/* JSON that docqa writes: json-glib builds and generates it, and here its floating-point numbers
 * are written as people read them.
 *
 * json-glib (1.6) writes every double with 17 significant digits (g_ascii_dtostr), so the 66.7
 * that v_progress rounds percent_done to comes out as 66.700000000000003, which a script
 * comparing it with the text (or with sqlite3's 66.7) finds different. A number is rounded to
 * the decimals its text shows (dq_json_add_double) and written with the fewest digits that
 * read back as the same double (dq_json_to_text): 66.7, lossless. */
#ifndef DQ_JSON_WRITE_H
#define DQ_JSON_WRITE_H

#include <glib.h>
#include <json-glib/json-glib.h>

/* Adds `value` rounded to `decimals` places as printf's "%.*f" rounds it (the number the text
 * shows), or null where it is not finite (JSON has no NaN or infinity: json-glib would write
 * "nan", which no parser reads). */
void dq_json_add_double(JsonBuilder *b, double value, int decimals);

/* The document `root` as json-glib generates it (pretty: indented), every number with a
 * fraction or an exponent rewritten with the fewest significant digits that read back as the
 * same double ("66.7"; a whole one keeps json-glib's ".0": "120.0"). g_free the result. */
char *dq_json_to_text(JsonNode *root, gboolean pretty);

/* One number's text as dq_json_to_text writes it. `buf` holds G_ASCII_DTOSTR_BUF_SIZE bytes. */
const char *dq_json_number(double value, char *buf);

#endif
