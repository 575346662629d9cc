/* Damaged snapshot folders, file by file: each copy of the tiny snapshot has one file replaced
 * (the others are links to the originals), and opening the pipeline must fail with one message
 * naming the file and what is wrong: no crash, no hang, no huge allocation. The damages are the
 * exploratory tester's (deep JSON, FIFOs, devices, empty files, processor files that do not fit
 * config.json, an lm_head of the wrong shape). */
#include "dq_error.h"
#include "pipeline.h"
#include "testutil.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const FILES[] = {
    "added_tokens.json",      "chat_template.json",      "config.json",
    "generation_config.json", "model.safetensors",       "preprocessor_config.json",
    "processor_config.json",  "special_tokens_map.json", "tokenizer.json",
    "tokenizer_config.json",
};

static char *tiny_dir(void) {
    const char *shared = dq_test_shared_dir();
    return shared ? g_build_filename(shared, "models", "tiny-smolvlm-b512", NULL) : NULL;
}

/* A folder of links to the tiny snapshot's files but `name`, which the caller then makes. */
static char *snapshot_without(const char *name) {
    char *src = tiny_dir();
    char *dir = dq_test_tmpdir();
    for (size_t i = 0; i < G_N_ELEMENTS(FILES); i++) {
        if (strcmp(FILES[i], name) == 0)
            continue;
        char *from = g_build_filename(src, FILES[i], NULL);
        char *to = g_build_filename(dir, FILES[i], NULL);
        g_assert_cmpint(symlink(from, to), ==, 0);
        g_free(from);
        g_free(to);
    }
    g_free(src);
    return dir;
}

static char *snapshot_with(const char *name, const char *content, gssize len) {
    char *dir = snapshot_without(name);
    char *path = g_build_filename(dir, name, NULL);
    g_assert_true(g_file_set_contents(path, content, len, NULL));
    g_free(path);
    return dir;
}

/* The original file with `from` replaced by `to` once. */
static char *snapshot_edited(const char *name, const char *from, const char *to) {
    char *tiny = tiny_dir();
    char *src = g_build_filename(tiny, name, NULL);
    char *text = dq_test_read_file(src, NULL);
    g_assert_nonnull(strstr(text, from));
    GString *s = g_string_new(text);
    g_string_replace(s, from, to, 1);
    char *dir = snapshot_with(name, s->str, (gssize)s->len);
    g_string_free(s, TRUE);
    g_free(text);
    g_free(src);
    g_free(tiny);
    return dir;
}

/* Opening fails within the alarm (a FIFO used to block forever) with a message holding
 * `name` (the file, relative to the folder) and `needle`. */
static void expect_refused(const char *dir, const char *name, const char *needle) {
    GError *err = NULL;
    alarm(60);
    SmolvlmPipeline *p = smolvlm_pipeline_open(dir, NULL, &err);
    alarm(0);
    g_assert_null(p);
    g_assert_nonnull(err);
    char *path = g_build_filename(dir, name, NULL);
    if (strstr(err->message, path) == NULL || strstr(err->message, needle) == NULL)
        g_error("error '%s' does not name %s and say '%s'", err->message, path, needle);
    /* the path once: "Failed to open file X" used to repeat it */
    g_assert_null(strstr(strstr(err->message, path) + strlen(path), path));
    g_free(path);
    g_error_free(err);
}

static gboolean have_shared(void) {
    if (dq_test_shared_dir() != NULL)
        return TRUE;
    g_test_skip("../shared (tiny models) not found");
    return FALSE;
}

static const char *const JSON_FILES[] = {
    "chat_template.json",       "config.json",           "generation_config.json",
    "preprocessor_config.json", "processor_config.json", "tokenizer.json",
};

/* json-glib parses recursively: these overflowed the stack (SIGSEGV). */
static void test_deep_json(void) {
    if (!have_shared())
        return;
    GString *deep = g_string_new(NULL);
    for (int i = 0; i < 2000000; i++)
        g_string_append(deep, "{\"a\":");
    for (size_t i = 0; i < G_N_ELEMENTS(JSON_FILES); i++) {
        char *dir = snapshot_with(JSON_FILES[i], deep->str, (gssize)deep->len);
        expect_refused(dir, JSON_FILES[i], ": JSON nested deeper than 128 levels");
        g_free(dir);
    }
    g_string_free(deep, TRUE);
    /* the safetensors header: {"a": [[[...]]]} */
    GString *h = g_string_new("{\"a\":");
    for (int i = 0; i < 100000; i++)
        g_string_append_c(h, '[');
    for (int i = 0; i < 100000; i++)
        g_string_append_c(h, ']');
    g_string_append_c(h, '}');
    GByteArray *st = g_byte_array_new();
    guint8 le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (guint8)((guint64)h->len >> (8 * i));
    g_byte_array_append(st, le, 8);
    g_byte_array_append(st, (const guint8 *)h->str, h->len);
    char *dir = snapshot_with("model.safetensors", (const char *)st->data, st->len);
    expect_refused(dir, "model.safetensors", ": header: JSON nested deeper than 128 levels");
    g_free(dir);
    g_byte_array_free(st, TRUE);
    g_string_free(h, TRUE);
}

/* FIFOs blocked open() forever; /dev/zero grew memory without bound. */
static void test_special_files(void) {
    if (!have_shared())
        return;
    for (size_t i = 0; i <= G_N_ELEMENTS(JSON_FILES); i++) {
        const char *name = i < G_N_ELEMENTS(JSON_FILES) ? JSON_FILES[i] : "model.safetensors";
        char *dir = snapshot_without(name);
        char *path = g_build_filename(dir, name, NULL);
        g_assert_cmpint(mkfifo(path, 0600), ==, 0);
        expect_refused(dir, name, ": a FIFO, not a regular file");
        g_assert_cmpint(unlink(path), ==, 0);
        g_assert_cmpint(symlink("/dev/zero", path), ==, 0);
        expect_refused(dir, name, ": a device, not a regular file");
        g_free(path);
        g_free(dir);
    }
    /* a 2 GB sparse config.json was read whole */
    char *dir = snapshot_with("config.json", "{}", -1);
    char *path = g_build_filename(dir, "config.json", NULL);
    g_assert_cmpint(truncate(path, (off_t)2 << 30), ==, 0);
    expect_refused(dir, "config.json", ": 2147483648 bytes, more than the 64 MiB allowed");
    g_free(path);
    g_free(dir);
}

static void test_inconsistent_files(void) {
    if (!have_shared())
        return;
    /* transformers' AutoProcessor fails on an empty chat_template.json (JSONDecodeError); it
     * used to be skipped for tokenizer_config.json's template */
    char *dir = snapshot_with("chat_template.json", "", 0);
    expect_refused(dir, "chat_template.json", ": empty, not a JSON document");
    g_free(dir);
    /* processor files that do not fit config.json failed request by request */
    dir =
        snapshot_edited("processor_config.json", "\"image_seq_len\": 64", "\"image_seq_len\": 63");
    expect_refused(dir, "processor_config.json",
                   ": image_seq_len 63, but config.json gives 64 tokens a tile (image_size 512 / "
                   "patch_size 16 = 32 patches a side, / scale_factor 4, squared)");
    g_free(dir);
    dir = snapshot_without("processor_config.json");
    expect_refused(dir, "processor_config.json",
                   " is missing, and Idefics3Processor's default image_seq_len is 169, but "
                   "config.json gives 64 tokens a tile");
    g_free(dir);
    dir = snapshot_edited("preprocessor_config.json", "\"longest_edge\": 512",
                          "\"longest_edge\": 384");
    expect_refused(dir, "preprocessor_config.json",
                   ": max_image_size.longest_edge 384, but config.json's vision_config.image_size "
                   "is 512");
    g_free(dir);
    /* generation_config.json: transformers raises on max_new_tokens 0; it became 256 */
    dir = snapshot_edited("generation_config.json", "\"pad_token_id\": 2",
                          "\"pad_token_id\": 2, \"max_new_tokens\": 0");
    expect_refused(dir, "generation_config.json", ": max_new_tokens 0 must be greater than 0");
    g_free(dir);
    /* another architecture's config loaded as SmolVLM; transformers builds a LlavaConfig */
    dir = snapshot_edited("config.json", "\"model_type\": \"idefics3\",",
                          "\"model_type\": \"llava\",");
    expect_refused(dir, "config.json", ": model_type 'llava' is not supported");
    g_free(dir);
    /* 2147483647 layers: a 600 GB allocation before any tensor was checked */
    dir = snapshot_edited("config.json", "\"num_hidden_layers\": 2",
                          "\"num_hidden_layers\": 2147483647");
    expect_refused(dir, "config.json", ": text_config.num_hidden_layers 2147483647 is outside");
    g_free(dir);
}

/* json-glib decodes \u0000 to a NUL byte and the string ends there: SmolVLM's template followed
 * by "\u0000junk" was taken for SmolVLM's, while transformers renders the junk too. */
static void test_nul_in_json(void) {
    if (!have_shared())
        return;
    char *dir = snapshot_edited("chat_template.json", "{{ 'Assistant:' }}{% endif %}\"",
                                "{{ 'Assistant:' }}{% endif %}\\u0000junk\"");
    expect_refused(dir, "chat_template.json",
                   ": line 2: a string under key \"chat_template\" holds \\u0000 (U+0000): docqa "
                   "cannot keep a NUL character inside a string");
    g_free(dir);
    /* an added token that would have been "<repo_name>" */
    dir = snapshot_edited("tokenizer.json", "\"content\":\"<repo_name>\"",
                          "\"content\":\"<repo_name>\\u0000junk\"");
    expect_refused(dir, "tokenizer.json",
                   ": line 1: a string under key \"content\" holds \\u0000 (U+0000)");
    g_free(dir);
    /* an escaped backslash, then the letters u0000: no NUL */
    dir = snapshot_edited("config.json", "\"model_type\": \"idefics3\",",
                          "\"model_type\": \"idefics3\", \"_note\": \"C:\\\\u0000\",");
    GError *err = NULL;
    SmolvlmPipeline *p = smolvlm_pipeline_open(dir, NULL, &err);
    dq_assert_no_error(err);
    smolvlm_pipeline_free(p);
    g_free(dir);
}

/* The prompt ids of one question without an image. */
static int32_t *question_ids(SmolvlmPipeline *p, int *n) {
    SmolvlmPrompt prompt = {0};
    GError *err = NULL;
    g_assert_true(smolvlm_prompt_build(p, NULL, 0, "What is the date?", NULL, NULL, &prompt, &err));
    dq_assert_no_error(err);
    *n = prompt.n_input_ids;
    int32_t *ids = g_memdup2(prompt.input_ids, sizeof(int32_t) * (size_t)prompt.n_input_ids);
    smolvlm_prompt_clear(&prompt);
    return ids;
}

static const char EOU_ENTRY[] =
    ",{\"id\":49279,\"content\":\"<end_of_utterance>\",\"single_word\":false,\"lstrip\":false,"
    "\"rstrip\":false,\"normalized\":false,\"special\":true}";

/* tokenizer.json against the model: transformers looks every id up in the embedding (an id past
 * vocab_size fails there, "index out of range", once a prompt holds it), and Idefics3Processor
 * adds <end_of_utterance>, <image> and <fake_token_around_image> where the file lacks them. */
static void test_tokenizer_vs_model(void) {
    if (!have_shared())
        return;
    /* an added token past the embedding, numbered as tokenizers numbers it */
    char *dir = snapshot_edited("tokenizer.json", "\"special\":true}],\"normalizer\"",
                                "\"special\":true},{\"id\":49280,\"content\":\"<zzz>\","
                                "\"normalized\":false,\"special\":true}],\"normalizer\"");
    expect_refused(dir, "tokenizer.json",
                   ": token '<zzz>' has id 49280, but config.json's text_config.vocab_size is "
                   "49280 (the model has no embedding for it)");
    g_free(dir);
    /* a word of the vocabulary past it */
    dir = snapshot_edited("tokenizer.json", "\"\xc4\xa0hello\":33662,", "\"\xc4\xa0hello\":70000,");
    expect_refused(dir, "tokenizer.json", ": token '\xc4\xa0hello' has id 70000");
    g_free(dir);

    /* no <end_of_utterance>: Python adds it as 49279, the prompt's ids are the intact file's
     * (docqa used to tokenize the chat template's "<end_of_utterance>" as text) */
    char *tiny = tiny_dir();
    GError *err = NULL;
    SmolvlmPipeline *whole = smolvlm_pipeline_open(tiny, NULL, &err);
    dq_assert_no_error(err);
    dir = snapshot_edited("tokenizer.json", EOU_ENTRY, "");
    SmolvlmPipeline *p = smolvlm_pipeline_open(dir, NULL, &err);
    dq_assert_no_error(err);
    g_assert_cmpint(tokenizer_added_token_id(p->tok, "<end_of_utterance>"), ==, 49279);
    g_assert_true(tokenizer_is_special(p->tok, 49279));
    g_assert_cmpint(tokenizer_special_ids(p->tok)->end_of_utterance, ==, 49279);
    int n_want = 0, n_got = 0;
    int32_t *want = question_ids(whole, &n_want);
    int32_t *got = question_ids(p, &n_got);
    g_assert_cmpmem(got, sizeof(int32_t) * (size_t)n_got, want, sizeof(int32_t) * (size_t)n_want);
    g_free(want);
    g_free(got);
    smolvlm_pipeline_free(p);
    smolvlm_pipeline_free(whole);
    g_free(dir);
    g_free(tiny);
}

/* A processor token missing from tokenizer.json that Idefics3Processor would add past the
 * embedding (the file's last id taken by another token) is refused naming that token and the id
 * it would get, not as a token of the file; one the file has past it, as a token of the file. */
static void test_processor_token_past_vocab(void) {
    if (!have_shared())
        return;
    const char *eou_taken =
        ",{\"id\":49279,\"content\":\"<zzz>\",\"single_word\":false,\"lstrip\":false,"
        "\"rstrip\":false,\"normalized\":false,\"special\":true}";
    char *dir = snapshot_edited("tokenizer.json", EOU_ENTRY, eou_taken);
    expect_refused(dir, "tokenizer.json",
                   "tokenizer.json has no added token <end_of_utterance>: Idefics3Processor adds "
                   "it as id 49280, but config.json's text_config.vocab_size is 49280");
    g_free(dir);
    /* the file's own <end_of_utterance> past it, after <zzz>: a token of the file's */
    char *both = g_strconcat(eou_taken, EOU_ENTRY, NULL);
    char *at = strstr(both, "49279,\"content\":\"<end_of_utterance>");
    g_assert_nonnull(at);
    memcpy(at, "49280", 5);
    dir = snapshot_edited("tokenizer.json", EOU_ENTRY, both);
    g_free(both);
    expect_refused(dir, "tokenizer.json",
                   ": token '<end_of_utterance>' has id 49280, but config.json's "
                   "text_config.vocab_size is 49280");
    g_free(dir);
}

/* The tiny snapshot's model.safetensors with one more F32 tensor appended (header and data). */
static GByteArray *with_extra_tensor(const char *name, const char *shape, size_t nbytes) {
    char *tiny = tiny_dir();
    char *src = g_build_filename(tiny, "model.safetensors", NULL);
    g_free(tiny);
    size_t len = 0;
    char *bytes = dq_test_read_file(src, &len);
    guint64 hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | (guint8)bytes[i];
    GString *h = g_string_new_len(bytes + 8, (gssize)hlen);
    while (h->str[h->len - 1] == ' ')
        g_string_truncate(h, h->len - 1);
    g_assert_cmpint(h->str[h->len - 1], ==, '}');
    g_string_truncate(h, h->len - 1);
    size_t data = len - 8 - hlen;
    g_string_append_printf(h,
                           ",\"%s\":{\"dtype\":\"F32\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}}",
                           name, shape, data, data + nbytes);
    GByteArray *out = g_byte_array_new();
    guint8 le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (guint8)((guint64)h->len >> (8 * i));
    g_byte_array_append(out, le, 8);
    g_byte_array_append(out, (const guint8 *)h->str, h->len);
    g_byte_array_append(out, (const guint8 *)bytes + 8 + hlen, data);
    guint8 *zeros = g_malloc0(nbytes);
    g_byte_array_append(out, zeros, nbytes);
    g_free(zeros);
    g_string_free(h, TRUE);
    g_free(bytes);
    g_free(src);
    return out;
}

/* tie_word_embeddings: transformers ties lm_head to embed_tokens whatever values the file's
 * lm_head.weight holds, but refuses one of another shape ("size mismatch for weight"). */
static void test_tied_lm_head(void) {
    if (!have_shared())
        return;
    GByteArray *bad = with_extra_tensor("lm_head.weight", "[2]", 8);
    char *dir = snapshot_with("model.safetensors", (const char *)bad->data, bad->len);
    expect_refused(dir, "model.safetensors",
                   ": tensor 'lm_head.weight' has shape [2], config.json implies [49280, 64]");
    g_free(dir);
    g_byte_array_free(bad, TRUE);
    GByteArray *good = with_extra_tensor("lm_head.weight", "[49280,64]", (size_t)49280 * 64 * 4);
    dir = snapshot_with("model.safetensors", (const char *)good->data, good->len);
    GError *err = NULL;
    SmolvlmPipeline *p = smolvlm_pipeline_open(dir, NULL, &err);
    dq_assert_no_error(err);
    smolvlm_pipeline_free(p);
    g_free(dir);
    g_byte_array_free(good, TRUE);
}

/* "" is the current folder to open(): refused, not read from wherever docqa runs. */
static void test_empty_name(void) {
    GError *err = NULL;
    g_assert_null(smolvlm_pipeline_open("", NULL, &err));
    g_assert_error(err, DQ_ERROR, DQ_ERR_ARGS);
    g_assert_cmpstr(err->message, ==, "the model folder's name is empty");
    g_error_free(err);
}

static void update_le64(GChecksum *c, guint64 v) {
    guchar le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (guchar)(v >> (8 * i));
    g_checksum_update(c, le, 8);
}

/* smolvlm.h's recipe, written out again from its comment for a one-file snapshot: a change to
 * it would make every stored answer's snapshot look like another one to `docqa run`. */
static char *recipe_fingerprint(const char *dir) {
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    g_checksum_update(c, (const guchar *)"docqa-snapshot-v1", 18);
    const char *names[] = {
        "config.json",           "generation_config.json", "preprocessor_config.json",
        "processor_config.json", "chat_template.json",     "tokenizer.json",
        "tokenizer_config.json", "model.safetensors"};
    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        char *path = g_build_filename(dir, names[i], NULL);
        g_checksum_update(c, (const guchar *)names[i], (gssize)strlen(names[i]) + 1);
        if (!g_file_test(path, G_FILE_TEST_EXISTS)) { /* an optional file: size all ones */
            update_le64(c, G_MAXUINT64);
            g_free(path);
            continue;
        }
        size_t len = 0;
        char *bytes = dq_test_read_file(path, &len);
        update_le64(c, len);
        if (strcmp(names[i], "model.safetensors") != 0) {
            g_checksum_update(c, (const guchar *)bytes, (gssize)len);
        } else { /* its header's length and the header, then the tensor data in windows */
            guint64 hlen = 0;
            for (int b = 7; b >= 0; b--)
                hlen = (hlen << 8) | (guchar)bytes[b];
            g_checksum_update(c, (const guchar *)bytes, (gssize)(8 + hlen));
            const guchar *data = (const guchar *)bytes + 8 + hlen;
            guint64 data_len = len - 8 - hlen;
            g_assert_cmpuint(data_len, >, 1024 * 4096); /* the windows, not the whole */
            for (guint64 w = 0; w < 1024; w++)
                g_checksum_update(c, data + w * (data_len - 4096) / 1023, 4096);
        }
        g_free(bytes);
        g_free(path);
    }
    char *hex = g_strdup(g_checksum_get_string(c));
    g_checksum_free(c);
    return hex;
}

static char *fingerprint_of(const char *dir) {
    GError *err = NULL;
    char *fp = smolvlm_snapshot_fingerprint(dir, &err);
    dq_assert_no_error(err);
    g_assert_cmpuint(strlen(fp), ==, 64);
    return fp;
}

/* answers.model_fingerprint: the same snapshot under another folder name is the same; another
 * config.json, tokenizer.json, chat template, generation_config.json, a processor_config.json
 * taken away, a safetensors header (bf16 weights) or weights changed where the windows read
 * them (a fine-tune keeps the header) is another; what the loaded model hashes is what the
 * folder hashes. */
static void test_fingerprint(void) {
    if (!have_shared())
        return;
    char *tiny = tiny_dir();
    char *fp = fingerprint_of(tiny);
    char *want = recipe_fingerprint(tiny);
    g_assert_cmpstr(fp, ==, want);
    g_free(want);
    char *renamed = snapshot_without(""); /* every file linked from another folder */
    char *same = fingerprint_of(renamed);
    g_assert_cmpstr(same, ==, fp);
    g_free(same);
    GError *err = NULL;
    SmolvlmPipeline *p = smolvlm_pipeline_open(renamed, NULL, &err);
    dq_assert_no_error(err);
    char *loaded = smolvlm_fingerprint(p->model, &err);
    dq_assert_no_error(err);
    g_assert_cmpstr(loaded, ==, fp);
    g_free(loaded);
    smolvlm_pipeline_free(p);
    g_free(renamed);

    enum { N_OTHERS = 8 };
    char *dirs[N_OTHERS];
    dirs[0] = snapshot_edited("config.json", "\"max_position_embeddings\": 8192",
                              "\"max_position_embeddings\": 4096");
    char *tok_path = g_build_filename(tiny, "tokenizer.json", NULL);
    size_t len = 0;
    char *tok = dq_test_read_file(tok_path, &len);
    char *tok2 = g_strconcat(tok, "\n", NULL);
    dirs[1] = snapshot_with("tokenizer.json", tok2, (gssize)len + 1);
    const char *shared = dq_test_shared_dir();
    dirs[2] = g_build_filename(shared, "models", "tiny-smolvlm-b512-bf16", NULL);
    /* Weights changed in place, the header as it was: the first and the last byte of the tensor
     * data are in the first and the last window. */
    char *st_path = g_build_filename(tiny, "model.safetensors", NULL);
    char *st = dq_test_read_file(st_path, &len);
    st[len - 1] ^= 0x40;
    dirs[3] = snapshot_with("model.safetensors", st, (gssize)len);
    st[len - 1] ^= 0x40;
    guint64 hlen = 0;
    for (int b = 7; b >= 0; b--)
        hlen = (hlen << 8) | (guchar)st[b];
    st[8 + hlen] ^= 0x01;
    dirs[4] = snapshot_with("model.safetensors", st, (gssize)len);
    dirs[5] = snapshot_without("processor_config.json");
    dirs[6] = snapshot_edited("generation_config.json", "}", ", \"max_new_tokens\": 7}");
    dirs[7] = snapshot_edited("chat_template.json", "Assistant", "Bot");
    for (int i = 0; i < N_OTHERS; i++) {
        char *other = fingerprint_of(dirs[i]);
        if (strcmp(other, fp) == 0)
            g_error("snapshot %d hashes as the tiny one", i);
        char *r = recipe_fingerprint(dirs[i]); /* every variant by the same recipe */
        g_assert_cmpstr(other, ==, r);
        g_free(r);
        g_free(other);
        g_free(dirs[i]);
    }
    g_free(st);
    g_free(st_path);
    g_free(tok);
    g_free(tok2);
    g_free(tok_path);

    /* What it cannot hash is an error naming the file. */
    char *no_tok = snapshot_without("tokenizer.json");
    g_assert_null(smolvlm_snapshot_fingerprint(no_tok, &err));
    g_assert_nonnull(err);
    char *missing = g_build_filename(no_tok, "tokenizer.json", NULL);
    g_assert_nonnull(strstr(err->message, missing));
    g_clear_error(&err);
    g_free(missing);
    g_free(no_tok);
    g_free(fp);
    g_free(tiny);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/snapshot/deep-json", test_deep_json);
    g_test_add_func("/snapshot/special-files", test_special_files);
    g_test_add_func("/snapshot/inconsistent-files", test_inconsistent_files);
    g_test_add_func("/snapshot/nul-in-json", test_nul_in_json);
    g_test_add_func("/snapshot/tied-lm-head", test_tied_lm_head);
    g_test_add_func("/snapshot/tokenizer-vs-model", test_tokenizer_vs_model);
    g_test_add_func("/snapshot/processor-token-past-vocab", test_processor_token_past_vocab);
    g_test_add_func("/snapshot/empty-name", test_empty_name);
    g_test_add_func("/snapshot/fingerprint", test_fingerprint);
    return g_test_run();
}
