/* SmolVLM chat template recognition and rendering (see chat_template.h). */
#include "chat_template.h"

#include "dq_error.h"
#include "json_load.h"

#include <json-glib/json-glib.h>
#include <string.h>

/* The template of SmolVLM-Instruct, -256M-Instruct and -500M-Instruct (chat_template.json). */
static const char SMOLVLM_TEMPLATE[] =
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}"
    "{% endif %}";

struct DqChatTemplate {
    char *source;
};

/* Canonical form for comparison: text outside tags verbatim; inside {{ }} and {% %} tags,
 * whitespace outside string literals is dropped and double quotes become single quotes. Inside
 * a string, the other quote and a backslash are marked with a backslash (SmolVLM's template has
 * neither): else "a']['b" would read as 'a']['b', a string for several lookups. */
static char *template_canonical(const char *t) {
    GString *out = g_string_new(NULL);
    const char *p = t;
    while (*p) {
        if (p[0] == '{' && (p[1] == '{' || p[1] == '%')) {
            char close = p[1] == '{' ? '}' : '%';
            g_string_append_len(out, p, 2);
            p += 2;
            char quote = 0;
            while (*p && !(quote == 0 && p[0] == close && p[1] == '}')) {
                if (quote) {
                    if (*p == '\\' || (*p != quote && (*p == '\'' || *p == '"')))
                        g_string_append_c(out, '\\');
                    g_string_append_c(out, *p == quote ? '\'' : *p);
                    if (*p == quote)
                        quote = 0;
                } else if (*p == '\'' || *p == '"') {
                    quote = *p;
                    g_string_append_c(out, '\'');
                } else if (!g_ascii_isspace(*p)) {
                    g_string_append_c(out, *p);
                }
                p++;
            }
            if (*p) {
                g_string_append_len(out, p, 2);
                p += 2;
            }
        } else {
            g_string_append_c(out, *p++);
        }
    }
    return g_string_free(out, FALSE);
}

DqChatTemplate *chat_template_from_string(const char *template_text, const char *source,
                                          GError **err) {
    char *a = template_canonical(template_text);
    char *b = template_canonical(SMOLVLM_TEMPLATE);
    gboolean known = strcmp(a, b) == 0;
    g_free(a);
    g_free(b);
    if (!known) {
        dq_fail(err, DQ_ERR_UNSUPPORTED,
                "%s: unsupported chat template (docqa renders only the SmolVLM template)", source);
        return NULL;
    }
    DqChatTemplate *t = g_new0(DqChatTemplate, 1);
    t->source = g_strdup(source);
    return t;
}

/* Reads member "chat_template" of a JSON file; FALSE with err set when the file is unreadable
 * or malformed, TRUE with *text NULL when the member is absent. */
static gboolean json_template(const char *path, char **text, GError **err) {
    *text = NULL;
    /* An empty or non-object file fails here as transformers' json.load fails on it, rather
     * than letting the next file's template stand in for it. */
    JsonParser *parser = dq_json_load_file(path, DQ_JSON_DEFAULT, err);
    JsonObject *root = parser != NULL ? dq_json_root_object(parser, path, err) : NULL;
    if (root != NULL) {
        JsonNode *n = json_object_get_member(root, "chat_template");
        if (n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING)
            *text = g_strdup(json_node_get_string(n));
        else if (n != NULL) {
            /* a list of named templates (tokenizer_config.json of some models) */
            dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: chat_template is not a single string", path);
            g_object_unref(parser);
            return FALSE;
        }
    }
    if (parser != NULL)
        g_object_unref(parser);
    return root != NULL;
}

DqChatTemplate *chat_template_load(const char *snapshot_dir, GError **err) {
    static const char *const files[] = {"chat_template.jinja", "chat_template.json",
                                        "tokenizer_config.json"};
    for (size_t i = 0; i < G_N_ELEMENTS(files); i++) {
        char *path = g_build_filename(snapshot_dir, files[i], NULL);
        char *text = NULL;
        gboolean ok = TRUE;
        if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
            g_free(path);
            continue;
        }
        if (i == 0) {
            size_t len = 0;
            text = dq_file_read_regular(path, DQ_JSON_MAX_FILE_BYTES, &len, err);
            ok = text != NULL;
            /* transformers renders what follows a NUL byte too; a C string would end there */
            if (ok && strlen(text) != len) {
                dq_fail(err, DQ_ERR_UNSUPPORTED,
                        "%s: unsupported chat template: a NUL byte at offset %zu", path,
                        strlen(text));
                g_free(text);
                ok = FALSE;
            }
        } else {
            ok = json_template(path, &text, err);
        }
        g_free(path);
        if (!ok)
            return NULL;
        if (text == NULL)
            continue; /* a JSON file without "chat_template": look further */
        char *source = g_build_filename(snapshot_dir, files[i], NULL);
        DqChatTemplate *t = chat_template_from_string(text, source, err);
        g_free(source);
        g_free(text);
        return t;
    }
    dq_fail(err, DQ_ERR_MODEL,
            "%s: no chat template (chat_template.jinja, chat_template.json or "
            "tokenizer_config.json)",
            snapshot_dir);
    return NULL;
}

void chat_template_free(DqChatTemplate *t) {
    if (t == NULL)
        return;
    g_free(t->source);
    g_free(t);
}

const char *chat_template_source(const DqChatTemplate *t) {
    return t->source;
}

char *chat_template_render_user(const DqChatTemplate *t, int n_images, const char *user_text,
                                gboolean add_generation_prompt) {
    (void)t;
    GString *s = g_string_new("<|im_start|>User");
    /* {% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}} */
    g_string_append(s, n_images > 0 ? ":" : ": ");
    for (int i = 0; i < n_images; i++)
        g_string_append(s, "<image>");
    g_string_append(s, user_text ? user_text : "");
    g_string_append(s, "<end_of_utterance>\n");
    if (add_generation_prompt)
        g_string_append(s, "Assistant:");
    return g_string_free(s, FALSE);
}
