/* libFuzzer target: how a postgresql:// location is shown in messages
 * (store_pg_display_location): libpq's parse of it without the password, or, where libpq cannot
 * parse it, the text with passwords hidden by pattern. The oracle: what is shown never depends on
 * the password. Input: user, NUL, password, NUL, the rest (host, port, database, query); the
 * location is postgresql://user:password@rest, or, when the input starts with 'Q', rest with
 * password=... added to its query. It is shown again with the password's every byte made 'x':
 * both must read the same. Password bytes that change how a URI splits (@ / ? # % : & =, the
 * host lists' comma, controls) are not tried: they move the password into the host or
 * database, or split it into hosts and ports (a comma shows as a second host, its text
 * hidden); `[` and `]` are, though a `]` closes an IPv6 `[` opened in the rest. Nor are user names
 * holding @ / ? or #, which end the user part early and put the "password" in the host, the
 * path or the query, where it is no password. A rest holding @ is tried with password=...:
 * libpq then takes what comes before the @ for the user, even a ?, and the query after it for
 * the host, password and all. */
#include "store_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *location(gboolean query, const char *user, const char *pw, const char *rest) {
    if (query)
        return g_strconcat("postgresql://", rest, strchr(rest, '?') ? "&" : "?", "password=", pw,
                           NULL);
    return g_strconcat("postgresql://", user, ":", pw, "@", rest, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* user NUL password NUL rest: a copy with its own NUL at the end */
    char *text = g_malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    const char *user = text;
    const char *pw = memchr(text, '\0', size) ? text + strlen(text) + 1 : NULL;
    const char *rest = pw != NULL && pw <= text + size ? pw + strlen(pw) + 1 : NULL;
    if (rest == NULL || rest > text + size || *pw == '\0') {
        g_free(text);
        return 0;
    }
    gboolean query = user[0] == 'Q';
    if (strpbrk(user, "@/?#") != NULL) {
        g_free(text);
        return 0;
    }
    for (const char *c = pw; *c; c++)
        if ((unsigned char)*c < ' ' || (unsigned char)*c >= 0x7f || strchr("@/?#%:&=,", *c)) {
            g_free(text);
            return 0;
        }
    char *blank = g_strdup(pw);
    memset(blank, 'x', strlen(blank));
    char *with = location(query, user, pw, rest), *without = location(query, user, blank, rest);
    char *a = store_pg_display_location(with), *b = store_pg_display_location(without);
    if (strcmp(a, b) != 0)
        abort(); /* the password shows through */
    g_free(a);
    g_free(b);
    g_free(with);
    g_free(without);
    g_free(blank);
    g_free(text);
    return 0;
}
