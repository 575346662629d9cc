/* The SmolVLM answerer's streaming form (answerer.h) with the tiny snapshot from ../shared/models:
 * requests submitted at once, more than the model's slots, answered continuously (preprocessing
 * on one thread, or on a pool of four as a GPU worker has, a page's tiles and vision features
 * shared by its questions) give exactly the answers each gets alone; a missing or undecodable
 * page fails only its own request, with its tag; freeing with requests in flight shuts the
 * preprocessing threads down cleanly; a request withdrawn wherever it is (in the model, being
 * prepared, waiting) never comes back and changes no other answer. */
#include "answerer.h"
#include "dq_error.h"
#include "queue.h"
#include "testutil.h"

#include <glib/gstdio.h>
#include <omp.h>
#include <string.h>

#define MAX_NEW 6

static char *fixture(const char *name) {
    return g_build_filename(dq_test_source_dir(), "tests", "fixtures", "images", name, NULL);
}

/* A PNG of w x h pixels as far as a decoder reads before its pixels: signature, IHDR, and the
 * start of an IDAT (libpng checks the chunk CRCs, so they are computed). */
static void write_png_header(const char *path, guint32 w, guint32 h) {
    guint8 b[8 + 25 + 8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n',
                            0,    0,   0,   13,  'I',  'H',  'D',  'R'};
    guint8 *ihdr = b + 16;
    for (int i = 0; i < 4; i++) {
        ihdr[i] = (guint8)(w >> (24 - 8 * i));
        ihdr[4 + i] = (guint8)(h >> (24 - 8 * i));
    }
    ihdr[8] = 8; /* 8-bit RGB */
    ihdr[9] = 2;
    guint32 crc = 0xFFFFFFFFu;
    for (int i = 12; i < 12 + 4 + 13; i++) {
        crc ^= b[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    crc ^= 0xFFFFFFFFu;
    for (int i = 0; i < 4; i++)
        b[29 + i] = (guint8)(crc >> (24 - 8 * i));
    memcpy(b + 33, "\0\0\x10\0IDAT", 8);
    g_assert_true(g_file_set_contents(path, (const char *)b, sizeof b, NULL));
}

/* A page store file: <dir>/<sha>.png holding `bytes_of`'s bytes, named for `named_for`'s. */
static char *store_file(const char *dir, const char *named_for, const char *bytes_of, char **sha) {
    char *data = NULL, *own = NULL;
    gsize len = 0, own_len = 0;
    g_assert_true(g_file_get_contents(named_for, &own, &own_len, NULL));
    *sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)own, own_len);
    g_assert_true(g_file_get_contents(bytes_of, &data, &len, NULL));
    char *name = g_strdup_printf("%s.png", *sha);
    char *path = g_build_filename(dir, name, NULL);
    g_assert_true(g_file_set_contents(path, data, (gssize)len, NULL));
    g_free(name);
    g_free(data);
    g_free(own);
    return path;
}

static DqAnswerer *open_answerer_with(int batch, int prep_threads, gint64 prefix_cache_mb) {
    const char *shared = dq_test_shared_dir();
    if (shared == NULL)
        return NULL;
    char *snap = g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL);
    GError *err = NULL;
    DqSmolvlmAnswererOptions o = {
        .device = "cpu", .prep_threads = prep_threads, .prefix_cache_mb = prefix_cache_mb};
    DqAnswerer *a = dq_answerer_open_smolvlm(snap, &o, &err);
    dq_assert_no_error(err);
    g_free(snap);
    a->batch = batch;
    return a;
}

static DqAnswerer *open_answerer(int batch, int prep_threads) {
    return open_answerer_with(batch, prep_threads, 0);
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
    /* A page as the page store holds it, named by its SHA-256 and checked against it; another
     * page's PNG put in its place; a PNG too large for the decoders. */
    char *page_sha = NULL, *swapped_sha = NULL;
    char *stored = store_file(dir, page, page, &page_sha);
    char *subdir = g_build_filename(dir, "swapped", NULL);
    g_assert_cmpint(g_mkdir(subdir, 0755), ==, 0);
    char *swapped = store_file(subdir, page, banner, &swapped_sha);
    char *huge = g_build_filename(dir, "huge.png", NULL);
    write_png_header(huge, 30000, 30000);
    /* more tokens with the page than the tiny model's 8192 positions */
    GString *too_long = g_string_new(NULL);
    for (int i = 0; i < 9000; i++)
        g_string_append(too_long, "why ");
    DqAnswerRequest reqs[] = {
        {page, "What is the title?", tmpl, MAX_NEW, 1, NULL},
        {page, "Who signed it?", tmpl, MAX_NEW, 1, NULL},
        {missing, "What is the title?", tmpl, MAX_NEW, 1, NULL},
        {banner, "What is the title?", tmpl, MAX_NEW, 1, NULL},
        {page, "What is the date?", tmpl, MAX_NEW, 1, NULL},
        {garbage, "What is it?", tmpl, MAX_NEW, 1, NULL},
        {banner, "Who wrote it?", tmpl, 3, 1, NULL},
        {overwritten, "What is it?", tmpl, MAX_NEW, 1, NULL},
        {page, too_long->str, tmpl, MAX_NEW, 1, NULL},
        /* asked with a bare model id, nothing checked it: prompt + INT_MAX once overflowed */
        {page, "What is the title?", tmpl, G_MAXINT, 1, NULL},
        {stored, "What is the title?", tmpl, MAX_NEW, 1, page_sha},
        {swapped, "What is the title?", tmpl, MAX_NEW, 1, swapped_sha},
        {huge, "What is it?", tmpl, MAX_NEW, 1, NULL},
        /* a second image marker in the prompt: transformers' processor fails on it too */
        {page, "Where is <image> on it?", tmpl, MAX_NEW, 1, NULL},
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
        if (i == 2 || i == 5 || i == 7 || i == 11 || i == 12) {
            /* Bad pages fail alone, as input errors (their jobs fail without retries): missing,
             * undecodable, not the page their name says, too large to decode. */
            g_assert_nonnull(res[i].error);
            g_test_message("%d: %s", i, res[i].error->message);
            g_assert_true(res[i].error->code == DQ_ERR_IO || res[i].error->code == DQ_ERR_FORMAT);
            g_assert_nonnull(strstr(res[i].error->message, reqs[i].image_path));
            g_assert_cmpint(res[i].error->code, ==, alone[i].error->code);
            if (i == 11)
                g_assert_nonnull(strstr(res[i].error->message, "does not match its page"));
            if (i == 12)
                g_assert_nonnull(strstr(res[i].error->message, "30000x30000"));
            continue;
        }
        if (i == 8 || i == 9 || i == 13) {
            /* A question the model cannot take fails alone as a bad request (its job is not
             * retried), and its batch-mates get their answers (checked with them below); the
             * message is about the question, not the page. */
            g_assert_error(res[i].error, DQ_ERROR, DQ_ERR_ARGS);
            g_test_message("%d: %s", i, res[i].error->message);
            g_assert_nonnull(
                strstr(res[i].error->message, i == 13 ? "<image> markers" : "too long"));
            if (i != 13)
                g_assert_nonnull(strstr(res[i].error->message, "max_position_embeddings"));
            g_assert_null(strstr(res[i].error->message, reqs[i].image_path));
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
    /* The page checked against its SHA-256 is answered as the same page unchecked. */
    g_assert_cmpstr(res[10].text, ==, res[0].text);
    /* The page's later questions took its prompt's first rows from an earlier one (the prefix
     * cache), which answered alone had none to take from. */
    int prefix_taken = 0;
    for (int i = 0; i < n; i++) {
        g_assert_cmpint(alone[i].prefix_tokens, ==, 0);
        g_assert_cmpint(res[i].prefix_tokens, <, MAX(res[i].prompt_tokens, 1));
        prefix_taken += res[i].prefix_tokens > 0;
    }
    g_assert_cmpint(prefix_taken, >=, 3);
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
    g_unlink(stored);
    g_unlink(swapped);
    g_unlink(huge);
    g_rmdir(subdir);
    g_rmdir(dir);
    g_free(stored);
    g_free(swapped);
    g_free(huge);
    g_free(subdir);
    g_free(page_sha);
    g_free(swapped_sha);
    g_free(page);
    g_free(banner);
    g_free(missing);
    g_free(garbage);
    g_free(overwritten);
    g_string_free(too_long, TRUE);
    g_free(dir);
}

/* Where the requests are, told by the answerer's test points (queue.h): with one preprocessing
 * thread, requests are prepared and enter the model in the order they were submitted, so the
 * n-th "answerer:prepare" is the n-th request submitted, and so on. The thread is held at the
 * `hold_at`-th request it takes, until the test lets it go. */
typedef struct {
    GMutex lock;
    GCond cond;
    int taken, prepared, admitted;
    int hold_at;
    gboolean holding, released;
} Watch;

static void watch_point(const char *point, void *user) {
    Watch *w = user;
    g_mutex_lock(&w->lock);
    if (strcmp(point, "answerer:prepare") == 0 && ++w->taken == w->hold_at) {
        w->holding = TRUE;
        g_cond_broadcast(&w->cond);
        while (!w->released)
            g_cond_wait(&w->cond, &w->lock);
    } else if (strcmp(point, "answerer:prepared") == 0) {
        w->prepared++;
        g_cond_broadcast(&w->cond);
    } else if (strcmp(point, "answerer:admitted") == 0) {
        w->admitted++;
    }
    g_mutex_unlock(&w->lock);
}

/* Requests withdrawn wherever they are: one in the model beside a batch-mate (its slot is
 * refilled), one on the preprocessing thread, one waiting for it. Neither comes back from poll;
 * the others' answers are byte for byte those they get alone (a request's tokens never depend on
 * its batch-mates, so also not on one leaving). */
static void test_withdraw(void) {
    DqAnswerer *a = open_answerer(2, 1);
    if (a == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    char *page = fixture("portrait_page.png"), *banner = fixture("banner_wide.png");
    const char *tmpl = "{question} Answer briefly.";
    DqAnswerRequest reqs[] = {
        {page, "What is the title?", tmpl, MAX_NEW, 1, NULL},   /* withdrawn in the model */
        {page, "Who signed it?", tmpl, MAX_NEW, 1, NULL},       /* its batch-mate */
        {banner, "What is the title?", tmpl, MAX_NEW, 1, NULL}, /* takes its slot */
        {page, "What is the date?", tmpl, MAX_NEW, 1, NULL},    /* withdrawn being prepared */
        {banner, "Who wrote it?", tmpl, MAX_NEW, 1, NULL},      /* withdrawn waiting for that */
        {page, "What is the total?", tmpl, MAX_NEW, 1, NULL},
    };
    enum { N = G_N_ELEMENTS(reqs) };
    GError *err = NULL;
    DqAnswerResult alone[N] = {{0}};
    for (int i = 0; i < N; i++) {
        DqAnswerer *one = open_answerer(1, 1);
        g_assert_true(one->submit(one, &reqs[i], 0, &err));
        drain(one, 1, &alone[i]);
        dq_answerer_free(one);
        g_assert_no_error(alone[i].error);
    }
    /* Both are still decoding after their first step (when the first is withdrawn). */
    g_assert_cmpint(alone[0].generated_tokens, >, 2);
    g_assert_cmpint(alone[1].generated_tokens, >, 2);

    Watch w = {.hold_at = 4};
    g_mutex_init(&w.lock);
    g_cond_init(&w.cond);
    queue_test_set_callback(watch_point, &w);
    for (int i = 0; i < N; i++)
        g_assert_true(a->submit(a, &reqs[i], i, &err));
    /* The first two prepared before the first poll: they enter the model together. */
    g_mutex_lock(&w.lock);
    while (w.prepared < 2)
        g_cond_wait(&w.cond, &w.lock);
    g_mutex_unlock(&w.lock);
    DqAnswerDone done[N];
    DqAnswerResult res[N] = {{0}};
    gboolean returned[N] = {FALSE};
    int got = 0, polls = 0;
    gboolean withdrew_in_model = FALSE, withdrew_in_prep = FALSE;
    while (got < 3) {
        int k = a->poll(a, done, N);
        g_assert_cmpint(++polls, <, 10000);
        for (int i = 0; i < k; i++) {
            gint64 tag = done[i].tag;
            g_assert_true(tag == 1 || tag == 2 || tag == 5);
            g_assert_false(returned[tag]);
            returned[tag] = TRUE;
            res[tag] = done[i].result;
            got++;
        }
        if (!withdrew_in_model) {
            /* After one step beside its batch-mate, request 0 is mid-answer in a slot. */
            g_mutex_lock(&w.lock);
            g_assert_cmpint(w.admitted, ==, 2);
            g_mutex_unlock(&w.lock);
            g_assert_false(returned[0] || returned[1]);
            g_assert_true(a->withdraw(a, 0));
            withdrew_in_model = TRUE;
        }
        g_mutex_lock(&w.lock);
        if (w.holding && !withdrew_in_prep) {
            /* Request 3 is on the preprocessing thread, request 4 waits for it. */
            g_assert_true(a->withdraw(a, 3));
            g_assert_true(a->withdraw(a, 4));
            withdrew_in_prep = TRUE;
            w.released = TRUE;
            g_cond_broadcast(&w.cond);
        }
        g_mutex_unlock(&w.lock);
    }
    g_assert_true(withdrew_in_prep);
    g_assert_cmpint(a->poll(a, done, N), ==, 0); /* nothing left in flight */
    queue_test_set_callback(NULL, NULL);
    /* The freed slots took the next requests; those withdrawn early never entered. */
    g_assert_cmpint(w.admitted, ==, 4);
    for (int i = 0; i < N; i++) {
        if (i == 0 || i == 3 || i == 4) {
            g_assert_false(returned[i]);
            continue;
        }
        g_assert_no_error(res[i].error);
        g_test_message("%d: '%s'", i, res[i].text);
        g_assert_cmpstr(res[i].text, ==, alone[i].text);
        g_assert_cmpint(res[i].generated_tokens, ==, alone[i].generated_tokens);
        g_assert_cmpint(res[i].prompt_tokens, ==, alone[i].prompt_tokens);
    }
    /* Nothing to withdraw once returned, or never submitted. */
    g_assert_false(a->withdraw(a, 1));
    g_assert_false(a->withdraw(a, 0));
    g_assert_false(a->withdraw(a, 99));
    /* Withdrawn and freed at once, still in the queues: nothing leaked (ASan), no hang. */
    for (int i = 0; i < 3; i++)
        g_assert_true(a->submit(a, &reqs[i], i, &err));
    g_assert_true(a->withdraw(a, 2));
    g_assert_true(a->withdraw(a, 0));
    dq_answerer_free(a);
    for (int i = 0; i < N; i++) {
        dq_answer_result_clear(&res[i]);
        dq_answer_result_clear(&alone[i]);
    }
    g_mutex_clear(&w.lock);
    g_cond_clear(&w.cond);
    g_free(page);
    g_free(banner);
}

/* The threads of this process named `name` (a thread's OpenMP team inherits its name). */
static int threads_named(const char *name) {
    GDir *d = g_dir_open("/proc/self/task", 0, NULL);
    g_assert_nonnull(d);
    int n = 0;
    for (const char *tid; (tid = g_dir_read_name(d)) != NULL;) {
        char *path = g_build_filename("/proc/self/task", tid, "comm", NULL), *comm = NULL;
        if (g_file_get_contents(path, &comm, NULL, NULL) && strcmp(g_strchomp(comm), name) == 0)
            n++;
        g_free(comm);
        g_free(path);
    }
    g_dir_close(d);
    return n;
}

/* On the CPU the model's OpenMP team has every core: the one preprocessing thread resamples a
 * page on its own thread, not on a second team of every core beside the model's (it once did,
 * 4 busy threads on 2 cores). The test runs with OMP_NUM_THREADS=2 (CMakeLists.txt), so a team
 * would be there on any machine. */
static void test_cpu_prep_no_team(void) {
    DqAnswerer *a = open_answerer(1, 0);
    if (a == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    g_assert_cmpint(omp_get_max_threads(), >=, 2);
    char *page = fixture("portrait_page.png");
    /* N=2: 850x1100 -> 791x1024, rows enough for the resampler's parallel loops */
    DqAnswerRequest r = {page, "What is the title?", "{question}", 2, 2, NULL};
    GError *err = NULL;
    DqAnswerResult res[1] = {{0}};
    g_assert_true(a->submit(a, &r, 0, &err));
    drain(a, 1, res);
    g_assert_no_error(res[0].error);
    /* the preprocessing thread itself, and no team workers it started */
    g_assert_cmpint(threads_named("preprocess"), ==, 1);
    dq_answer_result_clear(&res[0]);
    dq_answerer_free(a);
    g_free(page);
}

/* --prefix-cache: a page's questions one after another take the first question's prompt rows,
 * and answer as with the cache off, where none takes any. */
static void test_prefix_cache(void) {
    DqAnswerer *on = open_answerer_with(1, 1, 0), *off = open_answerer_with(1, 1, -1);
    if (on == NULL || off == NULL) {
        g_test_skip("../shared (tiny models) not found");
        return;
    }
    char *page = fixture("portrait_page.png");
    const char *tmpl = "{question} Answer briefly.";
    DqAnswerRequest reqs[] = {{page, "What is the title?", tmpl, MAX_NEW, 2, NULL},
                              {page, "Who signed it?", tmpl, MAX_NEW, 2, NULL},
                              {page, "What is the title?", tmpl, MAX_NEW, 2, NULL}};
    GError *err = NULL;
    for (int i = 0; i < 3; i++) {
        DqAnswerResult r_on[1] = {{0}}, r_off[1] = {{0}};
        g_assert_true(on->submit(on, &reqs[i], 0, &err));
        drain(on, 1, r_on);
        g_assert_true(off->submit(off, &reqs[i], 0, &err));
        drain(off, 1, r_off);
        g_assert_no_error(r_on[0].error);
        g_assert_cmpstr(r_on[0].text, ==, r_off[0].text);
        g_assert_cmpint(r_off[0].prefix_tokens, ==, 0);
        if (i == 0)
            g_assert_cmpint(r_on[0].prefix_tokens, ==, 0);
        else
            g_assert_cmpint(r_on[0].prefix_tokens, >, r_on[0].prompt_tokens / 2);
        dq_answer_result_clear(&r_on[0]);
        dq_answer_result_clear(&r_off[0]);
    }
    dq_answerer_free(on);
    dq_answerer_free(off);
    g_free(page);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_data_func("/answerer/stream-matches-alone", GINT_TO_POINTER(1),
                         test_stream_matches_alone);
    /* A GPU worker's pool on the CPU: questions about one page taken by several threads at
     * once share its tiles; the answers are the same. */
    g_test_add_data_func("/answerer/stream-matches-alone-4-threads", GINT_TO_POINTER(4),
                         test_stream_matches_alone);
    g_test_add_func("/answerer/withdraw", test_withdraw);
    g_test_add_func("/answerer/cpu-prep-no-team", test_cpu_prep_no_team);
    g_test_add_func("/answerer/prefix-cache", test_prefix_cache);
    return g_test_run();
}
