#include "text.h"

#include <string.h>

char *dq_utf8_escape_invalid(const char *s) {
    if (s == NULL)
        return NULL;
    if (g_utf8_validate(s, -1, NULL))
        return g_strdup(s);
    GString *out = g_string_sized_new(strlen(s) + 16);
    const char *p = s;
    while (*p != '\0') {
        const char *bad = NULL;
        g_utf8_validate(p, -1, &bad);
        g_string_append_len(out, p, bad - p);
        if (*bad == '\0')
            break;
        g_string_append_printf(out, "\\x%02X", (unsigned char)*bad);
        p = bad + 1;
    }
    return g_string_free(out, FALSE);
}
