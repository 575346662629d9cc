#include "json_write.h"

#include <math.h>
#include <string.h>

void dq_json_add_double(JsonBuilder *b, double value, int decimals) {
    if (!isfinite(value)) {
        json_builder_add_null_value(b);
        return;
    }
    char buf[G_ASCII_DTOSTR_BUF_SIZE + 320]; /* "%.*f" of 1e308 has 309 digits */
    char format[16];
    g_snprintf(format, sizeof format, "%%.%df", CLAMP(decimals, 0, 17));
    /* The C locale's '.', whatever LC_NUMERIC says. */
    g_ascii_formatd(buf, sizeof buf, format, value);
    json_builder_add_double_value(b, g_ascii_strtod(buf, NULL));
}

const char *dq_json_number(double value, char *buf) {
    int p = 1;
    for (; p < 17; p++) {
        char format[8];
        g_snprintf(format, sizeof format, "%%.%dg", p);
        g_ascii_formatd(buf, G_ASCII_DTOSTR_BUF_SIZE, format, value);
        if (g_ascii_strtod(buf, NULL) == value)
            break;
    }
    if (p == 17)
        g_ascii_formatd(buf, G_ASCII_DTOSTR_BUF_SIZE, "%.17g", value);
    /* %g turns to an exponent once the digits run out (120 -> 1.2e+02): positional where that
     * stays short, as json-glib wrote it. */
    if (strchr(buf, 'e') != NULL && value != 0) {
        int exp10 = (int)floor(log10(fabs(value)));
        if (exp10 >= -5 && exp10 < 17) {
            char format[8], positional[G_ASCII_DTOSTR_BUF_SIZE];
            g_snprintf(format, sizeof format, "%%.%df", MAX(0, p - 1 - exp10));
            g_ascii_formatd(positional, sizeof positional, format, value);
            if (g_ascii_strtod(positional, NULL) == value) /* log10 off by one: keep %g's */
                memcpy(buf, positional, sizeof positional);
        }
    }
    /* A whole number keeps its ".0", so that a reader takes it for a float as before. */
    if (strpbrk(buf, ".e") == NULL)
        strcat(buf, ".0");
    return buf;
}

char *dq_json_to_text(JsonNode *root, gboolean pretty) {
    JsonGenerator *g = json_generator_new();
    json_generator_set_root(g, root);
    json_generator_set_pretty(g, pretty);
    char *text = json_generator_to_data(g, NULL);
    g_object_unref(g);
    /* Outside strings (json-glib's own output: valid JSON), a number with '.' or an exponent
     * is a double json-glib wrote with 17 digits. */
    GString *out = g_string_sized_new(strlen(text) + 1);
    gboolean in_string = FALSE;
    for (const char *p = text; *p;) {
        if (in_string) {
            if (*p == '\\' && p[1] != '\0') {
                g_string_append_len(out, p, 2);
                p += 2;
                continue;
            }
            in_string = *p != '"';
            g_string_append_c(out, *p++);
            continue;
        }
        if (*p == '"') {
            in_string = TRUE;
            g_string_append_c(out, *p++);
            continue;
        }
        if (*p != '-' && !g_ascii_isdigit(*p)) {
            g_string_append_c(out, *p++);
            continue;
        }
        size_t n = strspn(p, "-+.0123456789eE");
        if (memchr(p, '.', n) == NULL && memchr(p, 'e', n) == NULL && memchr(p, 'E', n) == NULL) {
            g_string_append_len(out, p, (gssize)n);
        } else {
            char buf[G_ASCII_DTOSTR_BUF_SIZE];
            g_string_append(out, dq_json_number(g_ascii_strtod(p, NULL), buf));
        }
        p += n;
    }
    g_free(text);
    return g_string_free(out, FALSE);
}
