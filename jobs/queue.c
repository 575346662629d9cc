/* Asking: questions x pages -> jobs, with the idempotency key of queue.h. Crash-test hooks. */
#include "queue.h"

#include "dq_error.h"
#include "json_load.h"
#include "resources.h"
#include "test_point.h"
#include "text.h"

#include <errno.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- settings and keys ---- */

char *queue_generation_settings_json(const DqGenerationSettings *gs, GError **err) {
    const char *prompt = gs->prompt ? gs->prompt : "docvqa";
    int max_new = gs->max_new_tokens > 0 ? gs->max_new_tokens : 64;
    /* A prompt name becomes a resource path: keep it a plain name. */
    for (const char *c = prompt; *c; c++)
        if (!g_ascii_isalnum(*c) && *c != '_' && *c != '-') {
            dq_fail(err, DQ_ERR_ARGS, "prompt '%s': not a prompt template name", prompt);
            return NULL;
        }
    char *rpath = g_strdup_printf("configs/prompts/%s.txt", prompt);
    GBytes *b = dq_resource_get(rpath, NULL);
    g_free(rpath);
    if (b == NULL) {
        /* The templates are compiled into docqa: name the ones there are. */
        char **names = dq_resource_list("configs/prompts", NULL);
        GString *known = g_string_new(NULL);
        for (char **n = names; n && *n; n++)
            if (g_str_has_suffix(*n, ".txt"))
                g_string_append_printf(known, "%s%.*s", known->len ? ", " : "",
                                       (int)(strlen(*n) - 4), *n);
        dq_fail(err, DQ_ERR_ARGS, "prompt '%s': no such prompt template (built in: %s)", prompt,
                known->str);
        g_string_free(known, TRUE);
        g_strfreev(names);
        return NULL;
    }
    g_bytes_unref(b);
    /* Fixed key order, no spaces: the text is hashed into job keys. */
    return g_strdup_printf("{\"do_sample\":false,\"max_new_tokens\":%d,\"prompt\":\"%s\"}", max_new,
                           prompt);
}

char *queue_job_key(const char *document_sha256, int page_number, const char *question,
                    const char *model_id, const char *render_settings,
                    const char *generation_settings) {
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    char page[32];
    g_snprintf(page, sizeof(page), "%d", page_number);
    const char *parts[] = {"docqa-job-v1",  document_sha256,    page, question, model_id,
                           render_settings, generation_settings};
    for (size_t i = 0; i < G_N_ELEMENTS(parts); i++) {
        const char *p = parts[i] ? parts[i] : "";
        /* NUL separators: no two different tuples hash the same bytes. */
        g_checksum_update(c, (const guchar *)p, (gssize)strlen(p) + 1);
    }
    char *key = g_strdup(g_checksum_get_string(c));
    g_checksum_free(c);
    return key;
}

char *queue_model_id(const char *model) {
    /* Lexically, against the working directory: "." or "DIR/./" name the directory, not ".",
     * and a symlink keeps the name the user gave it. */
    char *canonical = g_canonicalize_filename(model, NULL);
    char *id = g_path_get_basename(canonical);
    g_free(canonical);
    return id;
}

char *queue_page_image_path(const char *db_path, const char *image_sha256) {
    /* The layout has one home, store.h, shared with ingest (which writes the images). */
    char *dir = dq_store_page_dir_for(db_path, NULL);
    if (dir == NULL)
        return NULL;
    char *path = dq_store_page_path(dir, image_sha256);
    g_free(dir);
    return path;
}

/* ---- --where ---- */

static gboolean where_refuse(GError **err, const char *expr, const char *why) {
    return dq_fail(err, DQ_ERR_ARGS,
                   "--where '%s': %s (give one SQL expression over the columns of documents, "
                   "e.g. \"path LIKE '%%/2024/%%'\")",
                   expr, why);
}

static gboolean is_name_byte(char c) {
    return g_ascii_isalnum(c) || c == '_' || (guchar)c >= 0x80;
}

gboolean queue_check_where(const char *expr, GError **err) {
    /* SQLite would say `near ")": syntax error`, about a parenthesis the user never wrote. */
    if (expr[strspn(expr, " \t\n\r\f\v")] == '\0')
        return where_refuse(err, expr, "an empty expression");
    int depth = 0;
    for (const char *p = expr; *p; p++) {
        switch (*p) {
        case '\'':
        case '"':
        case '`': {
            const char quote = *p;
            /* PostgreSQL's E'...' takes \' as a quote inside the string, SQLite does not: where
             * it ends would depend on the database. */
            gboolean escapes = quote == '\'' && p > expr && (p[-1] == 'E' || p[-1] == 'e') &&
                               (p - 1 == expr || !is_name_byte(p[-2]));
            /* A doubled quote inside reads as closing and reopening: the same as an escape. */
            for (p++; *p && *p != quote; p++)
                if (escapes && *p == '\\')
                    return where_refuse(err, expr, "backslash escapes (E'...') are not allowed");
            if (*p == '\0')
                return where_refuse(err, expr, "a quote is never closed");
            break;
        }
        case '[':
            /* SQLite's [name]; on PostgreSQL the same text is a subscript, so only a name is safe
             * to skip over. */
            for (p++; *p && *p != ']'; p++)
                if (strchr("'\"`();$", *p) != NULL || (p[0] == '-' && p[1] == '-') ||
                    (p[0] == '/' && p[1] == '*'))
                    return where_refuse(err, expr, "[...] may hold a column name only");
            if (*p == '\0')
                return where_refuse(err, expr, "a '[' is never closed");
            break;
        case '-':
        case '/':
            if (p[1] == (*p == '-' ? '-' : '*'))
                return where_refuse(err, expr, "SQL comments ('--', '/*') are not allowed");
            break;
        case ';':
            return where_refuse(err, expr, "';' is not allowed: one expression only");
        case '$':
            return where_refuse(err, expr, "'$' is not allowed");
        case '(':
            depth++;
            break;
        case ')':
            if (--depth < 0)
                return where_refuse(err, expr, "a ')' closes a parenthesis it did not open");
            break;
        default:
            break;
        }
    }
    if (depth > 0)
        return where_refuse(err, expr, "a '(' is never closed");
    return TRUE;
}

/* ---- questions ---- */

/* At most this many characters of a question are quoted in an error message. */
#define QUOTE_MAX_CHARS 60

/* A question for an error message, one line whatever it holds: invisible and control characters
 * as \uXXXX (or \n, \t), bytes that are not UTF-8 as \xNN. */
static char *escape_question(const char *text, gsize len) {
    return dq_text_show(text, (gssize)len, DQ_SHOW_DOUBLE_BACKSLASH, QUOTE_MAX_CHARS);
}

static gboolean is_trimmed(gunichar c) {
    /* g_unichar_isspace leaves out \v, NEL and the invisible ZWSP and BOM (U+FEFF, also what a
     * byte order mark pasted into a line becomes). */
    return g_unichar_isspace(c) || c == '\v' || c == 0x85 || c == 0x200B || c == 0xFEFF;
}

char *queue_question_normalize(const char *text, gssize len, const char *source, GError **err) {
    gsize n = len < 0 ? strlen(text) : (gsize)len;
    const char *bad = NULL;
    const char *problem = NULL;
    if (memchr(text, '\0', n) != NULL) // NOLINT(bugprone-not-null-terminated-result): a search
        problem = "holds a NUL character";
    else if (!g_utf8_validate(text, (gssize)n, &bad))
        problem = "is not UTF-8 text";
    if (problem == NULL) {
        const char *start = text, *stop = text + n;
        while (start < stop && is_trimmed(g_utf8_get_char(start)))
            start = g_utf8_next_char(start);
        while (stop > start) {
            const char *prev = g_utf8_prev_char(stop);
            if (!is_trimmed(g_utf8_get_char(prev)))
                break;
            stop = prev;
        }
        /* "<image>" is where the page goes in the prompt (model/prompt.c counts the markers). */
        if (stop > start && g_strstr_len(start, stop - start, "<image>") != NULL)
            problem = "holds \"<image>\", the marker of the page image in the model's prompt: "
                      "the model would be given one image for two markers (reword it)";
        else if (stop > start)
            return g_strndup(start, stop - start);
        else
            problem = "is empty (nothing but whitespace)";
    }
    char *shown = escape_question(text, n);
    dq_fail(err, DQ_ERR_ARGS, "%s '%s': the question %s", source, shown, problem);
    g_free(shown);
    return NULL;
}

char *queue_question_quote(const char *question) {
    return escape_question(question, strlen(question));
}

/* ---- asking ---- */

/* The n_res of a page's render settings (canonical JSON written by ingest); 0 when it has none. */
static int settings_n_res(GHashTable *cache, const char *settings) {
    gpointer v;
    if (g_hash_table_lookup_extended(cache, settings, NULL, &v))
        return GPOINTER_TO_INT(v);
    int n_res = 0;
    JsonParser *p = json_parser_new();
    if (json_parser_load_from_data(p, settings, -1, NULL) &&
        JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
        JsonObject *o = json_node_get_object(json_parser_get_root(p));
        JsonNode *n = json_object_get_member(o, "n_res");
        if (n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64)
            n_res = (int)json_node_get_int(n);
    }
    g_object_unref(p);
    g_hash_table_insert(cache, g_strdup(settings), GINT_TO_POINTER(n_res));
    return n_res;
}

/* The pages to ask about, out of every page row of the selected documents (ordered by document):
 * of each document whose file is still there, the pages of one rendering (the one whose pages
 * ingest added last, at n_res when given: page ids grow as pages are added, and a rendering
 * done again keeps its rows), those with an image, each content once. Counts what it leaves
 * out in res. Returns the chosen DqAskPage* (owned by `pages`). */
static GPtrArray *choose_pages(GPtrArray *pages, int n_res, DqAskResult *res) {
    GPtrArray *chosen = g_ptr_array_new();
    GHashTable *n_res_of = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    GHashTable *content = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    for (guint first = 0; first < pages->len;) {
        const DqAskPage *head = g_ptr_array_index(pages, first);
        guint end = first;
        while (end < pages->len &&
               ((DqAskPage *)g_ptr_array_index(pages, end))->document_id == head->document_id)
            end++;
        if (head->document_gone) {
            res->gone_documents++;
            first = end;
            continue;
        }
        const DqAskPage *newest = NULL;
        for (guint i = first; i < end; i++) {
            const DqAskPage *p = g_ptr_array_index(pages, i);
            if ((n_res == 0 || settings_n_res(n_res_of, p->render_settings) == n_res) &&
                (newest == NULL || p->page_id > newest->page_id))
                newest = p;
        }
        if (newest == NULL)
            res->no_rendering_documents++;
        for (guint i = first; i < end; i++) {
            DqAskPage *p = g_ptr_array_index(pages, i);
            if (newest == NULL || strcmp(p->render_settings, newest->render_settings) != 0) {
                int n = settings_n_res(n_res_of, p->render_settings);
                if (n >= 1 && n <= 64)
                    res->other_n_res |= G_GUINT64_CONSTANT(1) << (n - 1);
                if (newest != NULL)
                    res->other_renderings++;
                continue;
            }
            if (!p->usable) {
                res->failed_pages++;
                continue;
            }
            char *key = g_strdup_printf("%s\n%d\n%s", p->document_sha256 ? p->document_sha256 : "",
                                        p->page_number, p->render_settings);
            gpointer at;
            if (g_hash_table_lookup_extended(content, key, NULL, &at)) {
                /* Documents come in id order: this one was ingested last, its path is the one
                 * v_answers names for the new jobs. */
                res->same_content++;
                chosen->pdata[GPOINTER_TO_UINT(at)] = p;
                g_free(key);
                continue;
            }
            g_hash_table_insert(content, key, GUINT_TO_POINTER(chosen->len));
            g_ptr_array_add(chosen, p);
        }
        first = end;
    }
    g_hash_table_destroy(content);
    g_hash_table_destroy(n_res_of);
    return chosen;
}

/* The request's refusals before anything is read: no question, a --where that is not one
 * condition. */
static gboolean ask_request_ok(const DqAskRequest *req, GError **err) {
    if (req->n_questions == 0)
        return dq_fail(err, DQ_ERR_ARGS, "no question given");
    for (int i = 0; i < req->n_where; i++)
        if (!queue_check_where(req->where_sql[i], err))
            return FALSE;
    return TRUE;
}

/* Distinct normalized questions, in the order first given: the same question twice would make
 * the same job key twice, the second counted as "already asked" (counted in res->duplicates
 * instead). NULL when one is missing or not a question. */
static GPtrArray *distinct_questions(const DqAskRequest *req, DqAskResult *res, GError **err) {
    GPtrArray *questions = g_ptr_array_new_with_free_func(g_free);
    GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
    for (int i = 0; i < req->n_questions; i++) {
        char *source = g_strdup_printf("question %d", i + 1);
        char *q =
            req->questions[i] ? queue_question_normalize(req->questions[i], -1, source, err) : NULL;
        if (q == NULL && req->questions[i] == NULL)
            dq_fail(err, DQ_ERR_ARGS, "%s is missing", source);
        g_free(source);
        if (q == NULL) {
            g_hash_table_destroy(seen);
            g_ptr_array_free(questions, TRUE);
            return NULL;
        }
        if (g_hash_table_contains(seen, q)) {
            res->duplicates++;
            g_free(q);
            continue;
        }
        g_hash_table_add(seen, q);
        g_ptr_array_add(questions, q);
    }
    g_hash_table_destroy(seen);
    return questions;
}

/* One ask's jobs being made: a job for each chosen page and question, the strings they point to
 * owned here. */
typedef struct {
    const DqAskRequest *req;
    GPtrArray *questions; /* distinct_questions */
    char *settings;       /* the generation settings, as canonical JSON */
    GPtrArray *keys;      /* the jobs' keys */
    GArray *jobs;         /* DqNewJob */
} Ask;

/* Every question on every chosen page, page by page. */
static void ask_add_jobs(Ask *a, const GPtrArray *chosen) {
    int max_attempts = a->req->settings.max_attempts > 0 ? a->req->settings.max_attempts : 3;
    for (guint p = 0; p < chosen->len; p++) {
        const DqAskPage *page = g_ptr_array_index(chosen, p);
        for (guint q = 0; q < a->questions->len; q++) {
            char *key = queue_job_key(page->document_sha256, page->page_number,
                                      g_ptr_array_index(a->questions, q), a->req->model_id,
                                      page->render_settings, a->settings);
            g_ptr_array_add(a->keys, key);
            /* The questions are stored with the jobs, in their transaction: an ask stopped
             * before it commits leaves no question behind, which export, cancel and requeue
             * would take for one that was asked. */
            DqNewJob j = {
                .page_id = page->page_id,
                .question = g_ptr_array_index(a->questions, q),
                .model_id = a->req->model_id,
                .generation_settings = a->settings,
                .job_key = key,
                .max_attempts = max_attempts,
            };
            g_array_append_val(a->jobs, j);
        }
    }
}

gboolean queue_ask(DqStore *s, const DqAskRequest *req, DqAskResult *res, GError **err) {
    memset(res, 0, sizeof(*res));
    if (!ask_request_ok(req, err))
        return FALSE;
    Ask a = {.req = req, .questions = distinct_questions(req, res, err)};
    if (a.questions == NULL)
        return FALSE;
    gboolean ok = FALSE;
    GPtrArray *pages = NULL, *chosen = NULL;
    a.settings = queue_generation_settings_json(&req->settings, err);
    a.keys = g_ptr_array_new_with_free_func(g_free);
    a.jobs = g_array_new(FALSE, TRUE, sizeof(DqNewJob));
    if (a.settings == NULL)
        goto out;
    pages = store_jobs_select_pages(s, req->document_ids, req->n_document_ids, req->where_sql,
                                    req->n_where, err);
    if (pages == NULL)
        goto out;
    chosen = choose_pages(pages, req->n_res, res);
    ask_add_jobs(&a, chosen);
    if (!store_jobs_enqueue(s, (const DqNewJob *)a.jobs->data, (int)a.jobs->len, &res->added, err))
        goto out;
    res->pages = (int)chosen->len;
    res->questions = (int)a.questions->len;
    res->existing = (int)a.jobs->len - res->added;
    ok = TRUE;
out:
    if (chosen)
        g_ptr_array_free(chosen, TRUE);
    if (pages)
        g_ptr_array_free(pages, TRUE);
    g_array_free(a.jobs, TRUE);
    g_ptr_array_free(a.keys, TRUE);
    g_ptr_array_free(a.questions, TRUE);
    g_free(a.settings);
    return ok;
}

static const char *json_kind(JsonNode *n) {
    if (JSON_NODE_HOLDS_OBJECT(n))
        return "object";
    if (JSON_NODE_HOLDS_NULL(n))
        return "null";
    if (JSON_NODE_HOLDS_ARRAY(n))
        return "list";
    GType t = json_node_get_value_type(n);
    return t == G_TYPE_STRING ? "string" : t == G_TYPE_BOOLEAN ? "boolean" : "number";
}

/* A line of nothing but whitespace: a separator in a file of lines, not an empty question. */
static gboolean is_blank(const char *text, gsize n) {
    if (memchr(text, '\0', n) != NULL || !g_utf8_validate(text, (gssize)n, NULL))
        return FALSE;
    for (const char *p = text; p < text + n; p = g_utf8_next_char(p))
        if (!is_trimmed(g_utf8_get_char(p)))
            return FALSE;
    return TRUE;
}

/* A questions file whole, at most DQ_JSON_MAX_FILE_BYTES (64 MiB: far more questions than anyone
 * asks, and a 3 GB stream no longer takes the process down); a file must be a regular one (a
 * FIFO or a device such as /dev/zero is refused without being read), while "-" reads standard
 * input, whatever it is, up to the same cap. */
static char *read_all(const char *path, const char *name, gsize *len, GError **err) {
    if (strcmp(path, "-") != 0) {
        size_t n = 0;
        char *text = dq_file_read_regular(path, DQ_JSON_MAX_FILE_BYTES, &n, err);
        *len = n;
        return text;
    }
    GByteArray *buf = g_byte_array_new();
    guint8 chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
        if (buf->len + got > DQ_JSON_MAX_FILE_BYTES) {
            dq_fail(err, DQ_ERR_LIMIT, "%s: more than the %zu MiB allowed for questions", name,
                    DQ_JSON_MAX_FILE_BYTES >> 20);
            g_byte_array_free(buf, TRUE);
            return NULL;
        }
        g_byte_array_append(buf, chunk, (guint)got);
    }
    if (ferror(stdin)) {
        dq_fail(err, DQ_ERR_IO, "%s: %s", name, g_strerror(errno));
        g_byte_array_free(buf, TRUE);
        return NULL;
    }
    *len = buf->len;
    g_byte_array_append(buf, (const guint8 *)"", 1); /* NUL-terminated, like g_file_get_contents */
    return (char *)g_byte_array_free(buf, FALSE);
}

/* The 1-based line of a byte offset, for messages. */
static int line_of(const char *text, const char *at) {
    int line = 1;
    for (const char *p = text; p < at; p++)
        line += *p == '\n';
    return line;
}

static gboolean read_json_list(const char *name, const char *text, gsize len, GPtrArray *out,
                               GError **err) {
    char *label = g_strdup_printf("%s: not a JSON list of strings", name);
    /* \u0000 and lone surrogates are refused below, naming the element rather than the line */
    JsonParser *parser = dq_json_parse(text, (gssize)len, label, DQ_JSON_NUL_CHECKED, err);
    gboolean ok = FALSE;
    g_free(label);
    if (parser == NULL)
        return FALSE;
    JsonNode *root = json_parser_get_root(parser);
    if (!JSON_NODE_HOLDS_ARRAY(root)) {
        dq_fail(err, DQ_ERR_FORMAT, "%s: a JSON %s, expected a list of strings", name,
                json_kind(root));
        goto out;
    }
    JsonArray *arr = json_node_get_array(root);
    for (guint i = 0; i < json_array_get_length(arr); i++) {
        JsonNode *n = json_array_get_element(arr, i);
        if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
            dq_fail(err, DQ_ERR_FORMAT, "%s: element %u of the list is not a string", name, i + 1);
            goto out;
        }
    }
    /* Every string in the text is an element now: the n-th literal is element n. It is shown
     * as written in the file, escapes and all. */
    DqJsonBadEscape bad;
    if (dq_json_find_bad_escape(text, len, TRUE, &bad)) {
        char *shown = escape_question(bad.text, bad.text_len);
        if (bad.problem == DQ_JSON_ESCAPE_NUL)
            dq_fail(err, DQ_ERR_ARGS, "%s element %u \"%s\": the question holds a NUL character",
                    name, bad.string, shown);
        else
            dq_fail(err, DQ_ERR_ARGS,
                    "%s element %u \"%s\": %.6s is half of a UTF-16 surrogate pair without its "
                    "other half, not a character",
                    name, bad.string, shown, text + bad.offset);
        g_free(shown);
        goto out;
    }
    for (guint i = 0; i < json_array_get_length(arr); i++) {
        char *source = g_strdup_printf("%s element %u", name, i + 1);
        char *q = queue_question_normalize(json_array_get_string_element(arr, i), -1, source, err);
        g_free(source);
        if (q == NULL)
            goto out;
        g_ptr_array_add(out, q);
    }
    ok = TRUE;
out:
    g_object_unref(parser);
    return ok;
}

/* The encoding a byte order mark at the start of text names, when it is not UTF-8's: such a
 * file read as UTF-8 is NUL bytes between letters. UTF-32's marks begin with UTF-16's. */
static const char *foreign_bom(const char *text, gsize len) {
    const unsigned char *b = (const unsigned char *)text;
    if (len >= 4 && ((b[0] == 0xFF && b[1] == 0xFE && b[2] == 0 && b[3] == 0) ||
                     (b[0] == 0 && b[1] == 0 && b[2] == 0xFE && b[3] == 0xFF)))
        return "UTF-32";
    if (len >= 2 && ((b[0] == 0xFF && b[1] == 0xFE) || (b[0] == 0xFE && b[1] == 0xFF)))
        return "UTF-16";
    return NULL;
}

/* The encoding text is in when it starts without a byte order mark but with the NUL bytes
 * UTF-16 or UTF-32 put beside an ASCII letter (what Python's "utf-16-le" writes, and some
 * export tools): no UTF-8 question holds a NUL, so nothing readable is refused for it. */
static const char *foreign_unmarked(const char *text, gsize len) {
    const unsigned char *b = (const unsigned char *)text;
    if (len < 4)
        return NULL;
    if ((b[0] != 0 && b[1] == 0 && b[2] == 0 && b[3] == 0) ||
        (b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] != 0))
        return "UTF-32";
    if ((b[0] != 0 && b[1] == 0 && b[2] != 0 && b[3] == 0) ||
        (b[0] == 0 && b[1] != 0 && b[2] == 0 && b[3] != 0))
        return "UTF-16";
    return NULL;
}

/* A line whose first non-space character is '#' is a comment. */
static gboolean is_comment(const char *text, gsize n) {
    gsize i = 0;
    while (i < n && g_ascii_isspace(text[i]))
        i++;
    return i < n && text[i] == '#';
}

char **queue_read_questions(const char *path, GError **err) {
    const char *name = strcmp(path, "-") == 0 ? "standard input" : path;
    gsize len = 0;
    char *text = read_all(path, name, &len, err);
    if (text == NULL)
        return NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    const char *foreign = foreign_bom(text, len);
    if (foreign != NULL) {
        dq_fail(err, DQ_ERR_FORMAT, "%s: the file is %s; save it as UTF-8", name, foreign);
        goto fail;
    }
    if ((foreign = foreign_unmarked(text, len)) != NULL) {
        dq_fail(err, DQ_ERR_FORMAT,
                "%s: the file looks like %s without a byte order mark (NUL bytes beside its "
                "letters); save it as UTF-8",
                name, foreign);
        goto fail;
    }
    /* Editors on Windows start UTF-8 files with a byte order mark: not part of the text. */
    const char *body = text;
    if (len >= 3 && memcmp(body, "\xEF\xBB\xBF", 3) == 0) {
        body += 3;
        len -= 3;
    }
    const char *p = body;
    while (p < body + len && g_ascii_isspace(*p))
        p++;
    if (p < body + len && *p == '[') {
        const char *bad = NULL;
        if (!g_utf8_validate(body, (gssize)len, &bad)) {
            dq_fail(err, DQ_ERR_FORMAT, "%s line %d: %s", name, line_of(body, bad),
                    *bad == '\0' ? "a NUL byte" : "not UTF-8 text");
            goto fail;
        }
        if (!read_json_list(name, body, len, out, err))
            goto fail;
    } else if (p < body + len && *p == '{') {
        /* Read as lines, a JSON object (or one a line) would ask its own syntax as questions. */
        dq_fail(err, DQ_ERR_FORMAT,
                "%s line %d: looks like JSON lines/object; give a JSON list of strings or one "
                "question a line",
                name, line_of(body, p));
        goto fail;
    } else {
        /* One question a line, as written: quotes are part of the question, a CSV's commas
         * too (no format is guessed); blank lines and '#' comments are skipped. A line ends at
         * LF, CRLF or a lone CR (old Mac files, some exports): read up to LF only, a file of
         * CR-ended lines would be one question holding every line. */
        int line = 1;
        for (const char *l = body; l <= body + len; line++) {
            const char *stop = l;
            while (stop < body + len && *stop != '\n' && *stop != '\r')
                stop++;
            if (!is_blank(l, (gsize)(stop - l)) && !is_comment(l, (gsize)(stop - l))) {
                char *source = g_strdup_printf("%s line %d", name, line);
                char *q = queue_question_normalize(l, stop - l, source, err);
                g_free(source);
                if (q == NULL)
                    goto fail;
                g_ptr_array_add(out, q);
            }
            l = stop + 1 + (stop + 1 < body + len && stop[0] == '\r' && stop[1] == '\n');
        }
    }
    if (out->len == 0) {
        dq_fail(err, DQ_ERR_FORMAT, "%s: no questions in it", name);
        goto fail;
    }
    g_free(text);
    g_ptr_array_add(out, NULL);
    return (char **)g_ptr_array_free(out, FALSE);
fail:
    g_free(text);
    g_ptr_array_free(out, TRUE);
    return NULL;
}

/* ---- crash-test hooks ---- */

typedef struct {
    pid_t pid; /* the process that parsed the variable: forked children parse it again */
    gboolean set;
    char *point;
    int nth;
    double probability; /* random:<p> */
    int hits;
} KillSpec;

static KillSpec kill_spec;

/* Points are reached on several threads (the heartbeat's, the answerer's preprocessing ones). */
G_LOCK_DEFINE_STATIC(kill_spec);

static KillSpec *kill_spec_get(void) {
    G_LOCK(kill_spec);
    if (kill_spec.pid != getpid()) {
        g_free(kill_spec.point);
        memset(&kill_spec, 0, sizeof(kill_spec));
        kill_spec.pid = getpid();
        /* Forked siblings must not draw the same "random" kill moments. */
        g_random_set_seed((guint32)getpid() ^ (guint32)g_get_monotonic_time());
        const char *v = g_getenv("DOCQA_TEST_KILL_AT");
        if (v != NULL && *v) {
            kill_spec.set = TRUE;
            const char *colon = strrchr(v, ':');
            /* Point names contain ':' themselves; a trailing ":<number>" is the count. */
            char *end = NULL;
            double num = colon ? g_ascii_strtod(colon + 1, &end) : 0;
            gboolean has_num = colon && end && *end == '\0' && end != colon + 1;
            kill_spec.point = has_num ? g_strndup(v, (gsize)(colon - v)) : g_strdup(v);
            if (strcmp(kill_spec.point, "random") == 0)
                kill_spec.probability = has_num ? num : 0.05;
            else
                kill_spec.nth = has_num && num >= 1 ? (int)num : 1;
        }
    }
    G_UNLOCK(kill_spec);
    return &kill_spec;
}

static QueueTestCallback test_callback;
static void *test_callback_user;

void queue_test_set_callback(QueueTestCallback fn, void *user) {
    test_callback = fn;
    test_callback_user = user;
}

void queue_test_point(const char *point) {
    if (test_callback != NULL)
        test_callback(point, test_callback_user);
    dq_test_point(point);
    KillSpec *k = kill_spec_get();
    if (!k->set)
        return;
    if (k->probability > 0) {
        if (g_random_double() < k->probability)
            raise(SIGKILL);
        return;
    }
    if (strcmp(point, k->point) == 0 && ++k->hits >= k->nth)
        raise(SIGKILL);
}

void queue_test_hooks_install(void) {
    store_jobs_set_test_hook(kill_spec_get()->set || test_callback != NULL ||
                                     g_getenv("DOCQA_TEST_PAUSE_AT") != NULL
                                 ? queue_test_point
                                 : NULL);
}
