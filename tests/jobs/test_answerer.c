/* The SmolVLM answerer's streaming form (answerer.h) with the tiny snapshot from ../shared/models:
 * requests submitted at once, more than the model's slots, answered continuously (preprocessing
 * on one thread, or on a pool of four as a GPU worker has, a page's tiles and vision features
 * shared by its questions) give exactly the answers each gets alone; a missing or undecodable
 * page fails only its own request, with its tag; freeing with requests in flight shuts the
 * preprocessing threads down cleanly. */
#include "answerer.h"
#include "dq_error.h"
#include "testutil.h"

#include <glib/gstdio.h>
#include <string.h>

#define MAX_NEW 6

static char *fixture(const char *name) {
    return g_build_filename(dq_test_source_dir(), "tests", "fixtures", "images", name, NULL);
}

static DqAnswerer *open_answerer(int batch, int prep_threads) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL)
        return NULL;
    char *snap = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
    GError *err = NULL;
    DqSmolvlmAnswererOptions o = {.device = "cpu", .prep_threads = prep_threads};
    DqAnswerer *a = dq_answerer_open_smolvlm(snap, &o, &err);
    dq_assert_no_error(err);
    g_free(snap);
    a->batch = batch;
    return a;
}

/* Polls until `n` requests came back; results[tag] (tags are 0..n-1). */
static void drain(DqAnswerer *a, int n, DqAnswerResult *results) {
    DqAnswerDone *done = g_new0(DqAnswerDone, n);
    int got = 0, polls = 0;
    while (got < n) {
        int k = a->poll(a, done, n);
        g_assert_cmpint(++polls, <, 10000);
        for (int i = 0; i < k; i++) {
            g_assert_cmpint(done[i].tag, >=, 0);
            g_assert_cmpint(done[i].tag, <, n);
            g_assert_null(results[done[i].tag].text);
            g_assert_null(results[done[i].tag].error);
            results[done[i].tag] = done[i].result;
        }
        got += k;
    }
    g_assert_cmpint(a->poll(a, done, n), ==, 0); /* nothing left in flight */
    g_free(done);
}

static void test_stream_matches_alone(gconstpointer data) {
    DqAnswerer *a = open_answerer(2, GPOINTER_TO_INT(data));
    if (a == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    char *dir = dq_test_tmpdir();
    char *page = fixture("portrait_page.png"), *banner = fixture("banner_wide.png");
    char *missing = g_build_filename(dir, "missing.png", NULL);
    char *garbage = g_build_filename(dir, "garbage.png", NULL);
    g_assert_true(g_file_set_contents(garbage, "\x89PNG\r\n\x1a\nnot really", -1, NULL));
    /* a page file overwritten with something that is no image at all */
    char *overwritten = g_build_filename(dir, "overwritten.png", NULL);
    g_assert_true(g_file_set_contents(overwritten, "some text\n", -1, NULL));
    const char *tmpl = "{question} Answer briefly.";
    /* more tokens with the page than the tiny model's 8192 positions */
    GString *too_long = g_string_new(NULL);
    for (int i = 0; i < 9000; i++)
        g_string_append(too_long, "why ");
    DqAnswerRequest reqs[] = {
        {page, "What is the title?", tmpl, MAX_NEW, 1},
        {page, "Who signed it?", tmpl, MAX_NEW, 1},
        {missing, "What is the title?", tmpl, MAX_NEW, 1},
        {banner, "What is the title?", tmpl, MAX_NEW, 1},
        {page, "What is the date?", tmpl, MAX_NEW, 1},
        {garbage, "What is it?", tmpl, MAX_NEW, 1},
        {banner, "Who wrote it?", tmpl, 3, 1},
        {overwritten, "What is it?", tmpl, MAX_NEW, 1},
        {page, too_long->str, tmpl, MAX_NEW, 1},
        /* asked with a bare model id, nothing checked it: prompt + INT_MAX once overflowed */
        {page, "What is the title?", tmpl, G_MAXINT, 1},
    };
    int n = G_N_ELEMENTS(reqs);
    GError *err = NULL;

    /* Alone: each request through a fresh one-slot answerer (no tiles or features kept). */
    DqAnswerResult *alone = g_new0(DqAnswerResult, n);
    for (int i = 0; i < n; i++) {
        DqAnswerer *one = open_answerer(1, 1);
        DqAnswerResult r[1] = {{0}};
        g_assert_true(one->submit(one, &reqs[i], 0, &err));
        drain(one, 1, r);
        alone[i] = r[0];
        dq_answerer_free(one);
    }

    /* All at once into two slots. */
    for (int i = 0; i < n; i++)
        g_assert_true(a->submit(a, &reqs[i], i, &err));
    DqAnswerResult *res = g_new0(DqAnswerResult, n);
    drain(a, n, res);
    for (int i = 0; i < n; i++) {
        if (i == 2 || i == 5 || i == 7) {
            /* Bad pages fail alone, as input errors (their jobs fail without retries). */
            g_assert_nonnull(res[i].error);
            g_assert_true(res[i].error->code == DQ_ERR_IO || res[i].error->code == DQ_ERR_FORMAT);
            g_assert_nonnull(strstr(res[i].error->message, reqs[i].image_path));
            g_assert_cmpint(res[i].error->code, ==, alone[i].error->code);
            continue;
        }
        if (i == 8 || i == 9) {
            /* A question the model cannot take fails alone as a bad request (its job is not
             * retried), and its batch-mates get their answers (checked with them below). */
            g_assert_error(res[i].error, DQ_ERROR, DQ_ERR_ARGS);
            g_assert_nonnull(strstr(res[i].error->message, "too long"));
            continue;
        }
        g_assert_no_error(res[i].error);
        g_test_message("%d: '%s'", i, res[i].text);
        g_assert_cmpstr(res[i].text, ==, alone[i].text);
        g_assert_cmpint(res[i].generated_tokens, ==, alone[i].generated_tokens);
        g_assert_cmpint(res[i].generated_tokens, <=, reqs[i].max_new_tokens);
        g_assert_cmpint(res[i].prompt_tokens, ==, alone[i].prompt_tokens);
        g_assert_cmpint(res[i].prompt_tokens, >, 0);
        g_assert_cmpfloat(res[i].ms_total, >, 0);
    }
    for (int i = 0; i < n; i++) {
        dq_answer_result_clear(&res[i]);
        dq_answer_result_clear(&alone[i]);
    }
    /* Freed with requests in flight and in preprocessing: no hang, nothing leaked (ASan). */
    for (int i = 0; i < n; i++)
        g_assert_true(a->submit(a, &reqs[i], i, &err));
    DqAnswerDone done[16];
    int k = a->poll(a, done, 16);
    for (int i = 0; i < k; i++)
        dq_answer_result_clear(&done[i].result);
    dq_answerer_free(a);
    g_free(res);
    g_free(alone);
    g_unlink(garbage);
    g_unlink(overwritten);
    g_rmdir(dir);
    g_free(page);
    g_free(banner);
    g_free(missing);
    g_free(garbage);
    g_free(overwritten);
    g_string_free(too_long, TRUE);
    g_free(dir);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_data_func("/answerer/stream-matches-alone", GINT_TO_POINTER(1),
                         test_stream_matches_alone);
    /* A GPU worker's pool on the CPU: questions about one page taken by several threads at
     * once share its tiles; the answers are the same. */
    g_test_add_data_func("/answerer/stream-matches-alone-4-threads", GINT_TO_POINTER(4),
                         test_stream_matches_alone);
    return g_test_run();
}
