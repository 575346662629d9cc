#include "text.h"

#include <string.h>

/* A backslash that a reader of the escaped text would take for the start of \xNN. */
static gboolean looks_escaped(const char *p) {
    return p[0] == '\\' && p[1] == 'x' && g_ascii_isxdigit(p[2]) && g_ascii_isxdigit(p[3]);
}

static gboolean needs_escaping(const char *s) {
    if (!g_utf8_validate(s, -1, NULL))
        return TRUE;
    for (const char *p = strchr(s, '\\'); p != NULL; p = strchr(p + 1, '\\'))
        if (looks_escaped(p))
            return TRUE;
    return FALSE;
}

char *dq_utf8_escape_invalid(const char *s) {
    if (s == NULL)
        return NULL;
    if (!needs_escaping(s))
        return g_strdup(s);
    GString *out = g_string_sized_new(strlen(s) + 16);
    const char *p = s;
    while (*p != '\0') {
        const char *bad = NULL;
        g_utf8_validate(p, -1, &bad);
        for (const char *q = p; q < bad; q++) {
            if (looks_escaped(q))
                g_string_append(out, "\\x5C");
            else
                g_string_append_c(out, *q);
        }
        if (*bad == '\0')
            break;
        g_string_append_printf(out, "\\x%02X", (unsigned char)*bad);
        p = bad + 1;
    }
    return g_string_free(out, FALSE);
}

char *dq_utf8_unescape(const char *s) {
    if (s == NULL)
        return NULL;
    GString *out = g_string_sized_new(strlen(s));
    for (const char *p = s; *p != '\0'; p++) {
        if (looks_escaped(p)) {
            g_string_append_c(out,
                              (char)(g_ascii_xdigit_value(p[2]) * 16 + g_ascii_xdigit_value(p[3])));
            p += 3;
        } else {
            g_string_append_c(out, *p);
        }
    }
    return g_string_free(out, FALSE);
}
