#include "text.h"

#include <stdarg.h>
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

char *dq_text_show(const char *text, gssize len, DqShowFlags flags, int max_chars) {
    if (text == NULL)
        return NULL;
    GString *out = g_string_new(NULL);
    const char *p = text, *end = text + (len < 0 ? (gssize)strlen(text) : len);
    for (int n = 0; p < end; n++) {
        if (n == max_chars && max_chars > 0) {
            g_string_append(out, "...");
            break;
        }
        /* g_utf8_get_char_validated takes a NUL for the end of the text */
        gunichar c = *p == '\0' ? 0 : g_utf8_get_char_validated(p, end - p);
        if (c == (gunichar)-1 || c == (gunichar)-2) {
            g_string_append_printf(out, "\\x%02x", (guchar)*p++);
            continue;
        }
        const char *next = g_utf8_next_char(p);
        gboolean control = c < 0x20 || (c >= 0x7f && c <= 0x9f);
        if (c == '\n' && (flags & DQ_SHOW_KEEP_NEWLINES))
            g_string_append_c(out, '\n');
        else if (c == '\n')
            g_string_append(out, "\\n");
        else if (c == '\t' && (flags & DQ_SHOW_KEEP_TABS))
            g_string_append_c(out, '\t');
        else if (c == '\t')
            g_string_append(out, "\\t");
        else if (c == '\\' && (flags & DQ_SHOW_DOUBLE_BACKSLASH))
            g_string_append(out, "\\\\");
        else if ((flags & DQ_SHOW_CONTROLS_ONLY)
                     ? !control
                     : c == ' ' || (g_unichar_isprint(c) && !g_unichar_isspace(c)))
            g_string_append_len(out, p, next - p);
        else
            g_string_append_printf(out, c > 0xFFFF ? "\\U%08x" : "\\u%04x", c);
        p = next;
    }
    return g_string_free(out, FALSE);
}

void dq_print_line(FILE *to, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *shown = dq_text_show(text, -1, DQ_SHOW_LINE, 0);
    /* One write: workers share the terminal, and their lines must not interleave mid-line. */
    char *line = g_strconcat(shown, "\n", NULL);
    fputs(line, to);
    g_free(line);
    g_free(shown);
    g_free(text);
}
