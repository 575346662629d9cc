/* Asking: questions x pages -> jobs, with the idempotency key of queue.h. Crash-test hooks. */
#include "queue.h"

#include "dq_error.h"
#include "resources.h"

#include <json-glib/json-glib.h>
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
            dq_fail(err, DQ_ERR_ARGS, "prompt '%s': use a name from configs/prompts/", prompt);
            return NULL;
        }
    char *rpath = g_strdup_printf("configs/prompts/%s.txt", prompt);
    GBytes *b = dq_resource_get(rpath, err);
    g_free(rpath);
    if (b == NULL) {
        dq_error_prefix(err, "prompt '%s'", prompt);
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
    char *trimmed = g_strdup(model);
    size_t n = strlen(trimmed);
    while (n > 1 && trimmed[n - 1] == '/')
        trimmed[--n] = '\0';
    char *id = g_path_get_basename(trimmed);
    g_free(trimmed);
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

/* ---- asking ---- */

gboolean queue_ask(DqStore *s, const DqAskRequest *req, DqAskResult *res, GError **err) {
    memset(res, 0, sizeof(*res));
    if (req->n_questions == 0)
        return dq_fail(err, DQ_ERR_ARGS, "no question given");
    for (int i = 0; i < req->n_questions; i++) {
        const char *q = req->questions[i];
        while (q != NULL && g_ascii_isspace(*q))
            q++;
        if (q == NULL || *q == '\0')
            return dq_fail(err, DQ_ERR_ARGS, "question %d is empty", i + 1);
    }
    char *settings = queue_generation_settings_json(&req->settings, err);
    if (settings == NULL)
        return FALSE;
    gboolean ok = FALSE;
    GArray *qids = g_array_new(FALSE, FALSE, sizeof(gint64));
    GPtrArray *keys = g_ptr_array_new_with_free_func(g_free);
    GArray *jobs = g_array_new(FALSE, TRUE, sizeof(DqNewJob));
    GPtrArray *pages =
        store_jobs_select_pages(s, req->document_ids, req->n_document_ids, req->where_sql,
                                req->n_where, &res->failed_pages, err);
    if (pages == NULL)
        goto out;
    for (int i = 0; i < req->n_questions; i++) {
        gint64 id;
        if (!store_jobs_question_id(s, req->questions[i], &id, err))
            goto out;
        g_array_append_val(qids, id);
    }
    int max_attempts = req->settings.max_attempts > 0 ? req->settings.max_attempts : 3;
    for (guint p = 0; p < pages->len; p++) {
        const DqAskPage *page = g_ptr_array_index(pages, p);
        for (int q = 0; q < req->n_questions; q++) {
            char *key = queue_job_key(page->document_sha256, page->page_number, req->questions[q],
                                      req->model_id, page->render_settings, settings);
            g_ptr_array_add(keys, key);
            DqNewJob j = {
                .page_id = page->page_id,
                .question_id = g_array_index(qids, gint64, q),
                .model_id = req->model_id,
                .generation_settings = settings,
                .job_key = key,
                .max_attempts = max_attempts,
            };
            g_array_append_val(jobs, j);
        }
    }
    if (!store_jobs_enqueue(s, (const DqNewJob *)jobs->data, (int)jobs->len, &res->added, err))
        goto out;
    res->pages = (int)pages->len;
    res->questions = req->n_questions;
    res->existing = (int)jobs->len - res->added;
    ok = TRUE;
out:
    if (pages)
        g_ptr_array_free(pages, TRUE);
    g_array_free(jobs, TRUE);
    g_ptr_array_free(keys, TRUE);
    g_array_free(qids, TRUE);
    g_free(settings);
    return ok;
}

char **queue_read_questions(const char *path, GError **err) {
    char *text = NULL;
    gsize len = 0;
    GError *e = NULL;
    if (!g_file_get_contents(path, &text, &len, &e)) {
        dq_fail(err, DQ_ERR_IO, "%s: %s", path, e->message);
        g_error_free(e);
        return NULL;
    }
    if (!g_utf8_validate(text, (gssize)len, NULL)) {
        dq_fail(err, DQ_ERR_FORMAT, "%s: not UTF-8 text", path);
        g_free(text);
        return NULL;
    }
    GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
    const char *p = text;
    while (g_ascii_isspace(*p))
        p++;
    if (*p == '[') {
        JsonParser *parser = json_parser_new();
        if (!json_parser_load_from_data(parser, text, (gssize)len, &e)) {
            dq_fail(err, DQ_ERR_FORMAT, "%s: not a JSON list: %s", path, e->message);
            g_error_free(e);
            g_object_unref(parser);
            goto fail;
        }
        JsonNode *root = json_parser_get_root(parser);
        JsonArray *arr = JSON_NODE_HOLDS_ARRAY(root) ? json_node_get_array(root) : NULL;
        for (guint i = 0; arr && i < json_array_get_length(arr); i++) {
            JsonNode *n = json_array_get_element(arr, i);
            if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
                dq_fail(err, DQ_ERR_FORMAT, "%s: element %u of the list is not a string", path,
                        i + 1);
                g_object_unref(parser);
                goto fail;
            }
            char *q = g_strstrip(g_strdup(json_node_get_string(n)));
            if (*q)
                g_ptr_array_add(out, q);
            else
                g_free(q);
        }
        g_object_unref(parser);
        if (arr == NULL) {
            dq_fail(err, DQ_ERR_FORMAT, "%s: expected a JSON list of strings", path);
            goto fail;
        }
    } else {
        char **lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l; l++) {
            char *q = g_strstrip(g_strdup(*l));
            if (*q)
                g_ptr_array_add(out, q);
            else
                g_free(q);
        }
        g_strfreev(lines);
    }
    if (out->len == 0) {
        dq_fail(err, DQ_ERR_FORMAT, "%s: no questions in the file", path);
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

static KillSpec *kill_spec_get(void) {
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
    return &kill_spec;
}

void queue_test_point(const char *point) {
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
    store_jobs_set_test_hook(kill_spec_get()->set ? queue_test_point : NULL);
}
