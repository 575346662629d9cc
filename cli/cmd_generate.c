/* docqa generate: one prompt (with images) through the model; the conformance entry point.
 *
 *   docqa generate --model DIR [--image FILE]... (--prompt TEXT | --raw-prompt TEXT)
 *                  [--max-new-tokens N] [--n-res N] [--no-split] [--ignore-eos]
 *                  [--device cpu|cpu-ref|cuda[:i]] [--weights stored|int8|bf16]
 *                  [--draft none|int8] [--json]
 *                  [--dump-logits FILE]
 *                  [--sample [--temperature T] [--top-p P] [--top-k K] [--seed S]]
 *
 * Without --json the answer text is printed (special tokens skipped). --json prints one object:
 * input_ids, output_ids, text, tiles (tiles per image, global tile included), grid (rows, cols
 * per image; 0, 0 for the single-tile form), timings_ms (preprocess, vision, prefill, decode),
 * cpu_ms (the process's CPU time in the same stages, all threads: on shared cores wall time grows
 * and CPU time hardly), decode_tokens_per_s, draft (guessed, taken: the --draft's guesses and those
 * the model made too), peak_rss_mb, finish_reason. --dump-logits writes the last prompt position's
 * logits, vocab_size little-endian float32 values.
 *
 * Length: the sequence (prompt and new tokens) holds at most the model's max_position_embeddings
 * tokens. A prompt that fills them is refused before any model work; a --max-new-tokens beyond
 * them is not (transformers does not refuse it, and generation usually ends at eos long before):
 * generation stops at the last position, with finish_reason "positions" and a note on stderr.
 */
#include "backend_cuda.h"
#include "cli.h"

#include "clock.h"
#include "dq_error.h"
#include "mapped_file.h"
#include "pipeline.h"
#include "test_point.h"
#include "text.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *model_dir;
    char **images;
    char *prompt;
    char *raw_prompt;
    int max_new_tokens;
    int n_res; /* 0: the snapshot's */
    gboolean no_split;
    gboolean ignore_eos;
    char *device;
    char *weights; /* NULL, "stored", "int8" or "bf16" (SmolvlmOptions) */
    char *draft;   /* NULL, "none" or "int8" (SmolvlmOptions) */
    gboolean json;
    char *dump_logits;
    gboolean sample;
    double temperature;
    double top_p;
    int top_k;
    gint64 seed;
    /* As given (NULL: not given): numbers are checked after parsing, so that a value given is
     * told from the default and none is clamped silently. */
    char *max_new_tokens_text;
    char *n_res_text;
    char *temperature_text;
    char *top_p_text;
    char *top_k_text;
    char *seed_text;
} GenerateArgs;

/* FALSE, with a message naming the option, unless text is a finite number > min and <= max. */
/* A number in (min, max], or [min, max] when min_included. */
static gboolean parse_double(const char *option, const char *text, double min,
                             gboolean min_included, double max, const char *range, double *out) {
    if (text == NULL)
        return TRUE;
    char *end = NULL;
    double v = g_ascii_strtod(text, &end);
    if (end == text || *end != '\0' || !isfinite(v) || v < min || (v == min && !min_included) ||
        v > max) {
        dq_print_line(stderr, "docqa: generate: %s %s: must be %s", option, text, range);
        return FALSE;
    }
    *out = v;
    return TRUE;
}

/* The --dump-logits file, opened before any model work so that a path that cannot be written
 * fails at once. A regular file is written beside its place and renamed over it when complete:
 * a run that fails leaves whatever was there untouched. Anything else (a device, a FIFO) is
 * written directly. */
typedef struct {
    const char *path;
    char *tmp; /* NULL: writing path itself */
    FILE *f;
} DumpFile;

static gboolean dump_open(DumpFile *d, const char *path, GError **err) {
    d->path = path;
    d->tmp = NULL;
    GStatBuf st;
    if (g_stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        if ((d->f = fopen(path, "wb")) == NULL)
            return dq_fail(err, DQ_ERR_IO, "generate: --dump-logits %s: cannot open: %s", path,
                           g_strerror(errno));
        return TRUE;
    }
    d->tmp = g_strconcat(path, ".XXXXXX", NULL);
    int fd = g_mkstemp_full(d->tmp, O_WRONLY, 0666);
    if (fd < 0 || (d->f = fdopen(fd, "wb")) == NULL) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            g_unlink(d->tmp);
        }
        g_clear_pointer(&d->tmp, g_free);
        return dq_fail(err, DQ_ERR_IO, "generate: --dump-logits %s: cannot create: %s", path,
                       g_strerror(e));
    }
    /* Ctrl-C while the model works must not leave the temporary behind */
    dq_cli_signals_remove_on_exit(d->tmp);
    return TRUE;
}

/* Writes and closes; FALSE (and the temporary removed) on any failure. A regular file is written,
 * fsynced, renamed, and its folder fsynced, as the page store writes pages: the name must not
 * point at a file whose bytes a crash can still lose, nor the rename be lost once reported. */
static gboolean dump_finish(DumpFile *d, const float *logits, int n, GError **err) {
    int e = 0;
    const char *what = "write failed";
    for (int i = 0; i < n && e == 0; i++) {
        /* The file format is little-endian whatever the host is. */
        guint32 bits;
        memcpy(&bits, &logits[i], sizeof bits);
        bits = GUINT32_TO_LE(bits);
        if (fwrite(&bits, sizeof bits, 1, d->f) != 1)
            e = errno;
    }
    if (e == 0 && fflush(d->f) != 0)
        e = errno;
    if (e == 0 && d->tmp != NULL && fsync(fileno(d->f)) != 0)
        e = errno;
    if (fclose(d->f) != 0 && e == 0)
        e = errno;
    d->f = NULL;
    if (e == 0 && d->tmp != NULL && g_rename(d->tmp, d->path) != 0) {
        e = errno;
        what = "cannot rename into place";
    }
    if (e != 0 && d->tmp != NULL)
        g_unlink(d->tmp);
    if (e == 0 && d->tmp != NULL) {
        char *dir = g_path_get_dirname(d->path);
        if ((e = dq_sync_folder(dir, NULL)) != 0)
            what = "written, but its folder cannot be synced (a crash may lose it)";
        g_free(dir);
    }
    g_clear_pointer(&d->tmp, g_free);
    dq_cli_signals_remove_on_exit(NULL);
    if (e != 0)
        return dq_fail(err, DQ_ERR_IO, "generate: --dump-logits %s: %s: %s", d->path, what,
                       g_strerror(e));
    return TRUE;
}

/* A run that failed: the temporary goes, the file's old content stays. */
static void dump_abandon(DumpFile *d) {
    if (d->f != NULL)
        (void)fclose(d->f); /* abandoned: its bytes are not wanted */
    d->f = NULL;
    if (d->tmp != NULL)
        g_unlink(d->tmp);
    g_clear_pointer(&d->tmp, g_free);
    dq_cli_signals_remove_on_exit(NULL);
}

static void add_int_array(JsonBuilder *b, const char *name, const int32_t *v, int n) {
    json_builder_set_member_name(b, name);
    json_builder_begin_array(b);
    for (int i = 0; i < n; i++)
        json_builder_add_int_value(b, v[i]);
    json_builder_end_array(b);
}

static void print_json(const SmolvlmPrompt *prompt, const DqGenerateResult *res, const char *text,
                       const DqGenerateTimings *tm) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    add_int_array(b, "input_ids", prompt->input_ids, prompt->n_input_ids);
    add_int_array(b, "output_ids", res->output_ids, res->n_output_ids);
    json_builder_set_member_name(b, "text");
    json_builder_add_string_value(b, text);
    json_builder_set_member_name(b, "stopped_on_eos");
    json_builder_add_boolean_value(b, res->stopped_on_eos);
    json_builder_set_member_name(b, "finish_reason");
    json_builder_add_string_value(b, res->stopped_on_eos         ? "eos"
                                     : res->stopped_on_positions ? "positions"
                                                                 : "length");
    json_builder_set_member_name(b, "tiles");
    json_builder_begin_array(b);
    for (int i = 0; i < prompt->n_images; i++)
        json_builder_add_int_value(b, prompt->images[i]->n_tiles);
    json_builder_end_array(b);
    json_builder_set_member_name(b, "grid");
    json_builder_begin_array(b);
    for (int i = 0; i < prompt->n_images; i++) {
        json_builder_begin_object(b);
        dq_cli_json_int(b, "rows", prompt->images[i]->rows);
        dq_cli_json_int(b, "cols", prompt->images[i]->cols);
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "timings_ms");
    json_builder_begin_object(b);
    const struct {
        const char *name;
        double ms, cpu_ms;
    } stages[] = {{"preprocess", prompt->preprocess_ms, prompt->preprocess_cpu_ms},
                  {"vision", tm->vision_ms, tm->vision_cpu_ms},
                  {"prefill", tm->prefill_ms, tm->prefill_cpu_ms},
                  {"decode", tm->decode_ms, tm->decode_cpu_ms}};
    /* No text shows them: to the microsecond, finer than the clocks' noise. */
    for (size_t i = 0; i < G_N_ELEMENTS(stages); i++)
        dq_cli_json_double(b, stages[i].name, stages[i].ms, 3);
    json_builder_end_object(b);
    json_builder_set_member_name(b, "cpu_ms");
    json_builder_begin_object(b);
    for (size_t i = 0; i < G_N_ELEMENTS(stages); i++)
        dq_cli_json_double(b, stages[i].name, stages[i].cpu_ms, 3);
    json_builder_end_object(b);
    /* the first token comes from the prefill; a step may give several (--draft) */
    int decoded = MAX(res->n_output_ids - 1, 0);
    dq_cli_json_double(b, "decode_tokens_per_s",
                       tm->decode_ms > 0 ? decoded / (tm->decode_ms / 1000.0) : 0.0, 2);
    json_builder_set_member_name(b, "draft");
    json_builder_begin_object(b);
    dq_cli_json_int(b, "guessed", tm->draft_tokens);
    dq_cli_json_int(b, "taken", tm->draft_accepted);
    json_builder_end_object(b);
    dq_cli_json_double(b, "peak_rss_mb", dq_peak_rss_mb(), 1);
    json_builder_end_object(b);
    dq_cli_json_print(b, FALSE);
}

static int run_generate(GenerateArgs *a) {
    GError *err = NULL;
    int n_images = a->images ? (int)g_strv_length(a->images) : 0;
    DqImage **images = g_new0(DqImage *, n_images > 0 ? n_images : 1);
    SmolvlmPipeline *p = NULL;
    SmolvlmPrompt prompt = {0};
    DqGenerateResult res = {0};
    DumpFile dump = {0};
    int status = DQ_EXIT_FATAL;

    if (a->dump_logits != NULL && !dump_open(&dump, a->dump_logits, &err))
        goto out;
    for (int i = 0; i < n_images; i++)
        if ((images[i] = dq_image_load(a->images[i], DQ_EXIF_APPLY, &err)) == NULL)
            goto out;
    SmolvlmOptions mopts = {.device = a->device, .weights = a->weights, .draft = a->draft};
    if ((p = smolvlm_pipeline_open(a->model_dir, &mopts, &err)) == NULL)
        goto out;
    SmolvlmPrepareOptions popts = {.n_res = a->n_res, .no_split = a->no_split};
    if (!smolvlm_prompt_build(p, (const DqImage *const *)images, n_images, a->prompt, a->raw_prompt,
                              &popts, &prompt, &err))
        goto out;

    SmolvlmRequest req;
    smolvlm_request_init(p, &prompt, &req);
    if (a->max_new_tokens > 0)
        req.options.max_new_tokens = a->max_new_tokens;
    req.options.ignore_eos = a->ignore_eos;
    if (a->sample) {
        req.options.do_sample = TRUE;
        if (a->temperature > 0)
            req.options.temperature = a->temperature;
        if (a->top_p >= 0)
            req.options.top_p = a->top_p;
        if (a->top_k >= 0)
            req.options.top_k = a->top_k;
        req.options.seed = (uint64_t)a->seed;
    } else {
        req.options.do_sample = FALSE;
    }
    req.want_logits = a->dump_logits != NULL;
    dq_test_point("generate:prepared");
    DqGenerateTimings tm = {0};
    if (!smolvlm_generate(p->model, &req, 1, &res, &tm, &err))
        goto out;
    if (dump.f != NULL &&
        !dump_finish(&dump, res.last_logits, smolvlm_config(p->model)->vocab_size, &err))
        goto out;
    if (res.stopped_on_positions)
        dq_print_line(
            stderr,
            "docqa: generate: note: stopped after %d new token%s: the sequence reached the "
            "model's %d positions (--max-new-tokens %d)",
            res.n_output_ids, res.n_output_ids == 1 ? "" : "s",
            smolvlm_config(p->model)->max_position_embeddings, req.options.max_new_tokens);
    char *text = tokenizer_decode_text(p->tok, res.output_ids, (size_t)res.n_output_ids);
    if (a->json)
        print_json(&prompt, &res, text, &tm);
    else {
        dq_cli_put_data(g_strstrip(text));
        putchar('\n');
    }
    g_free(text);
    status = DQ_EXIT_OK;
out:
    if (err != NULL)
        status = dq_cli_fail(err);
    dump_abandon(&dump);
    dq_generate_result_clear(&res);
    smolvlm_prompt_clear(&prompt);
    smolvlm_pipeline_free(p);
    for (int i = 0; i < n_images; i++)
        dq_image_free(images[i]);
    g_free(images);
    return status;
}

/* Refusals of the command line as a whole, before any number is read: a stray argument, no
 * model, not one prompt, a device that cannot be (before the model's minutes of loading). */
static gboolean generate_check_arguments(const GenerateArgs *a, int argc, char **argv) {
    GError *err = NULL;
    if (argc > 1)
        dq_fail(&err, DQ_ERR_ARGS, "unexpected argument '%s'", argv[1]);
    else if (a->model_dir == NULL)
        dq_fail(&err, DQ_ERR_ARGS, "--model DIR is required");
    else if (a->model_dir[0] == '\0')
        dq_fail(&err, DQ_ERR_ARGS, "--model '': an empty folder name");
    else if ((a->prompt == NULL) == (a->raw_prompt == NULL))
        dq_fail(&err, DQ_ERR_ARGS, "give exactly one of --prompt and --raw-prompt");
    else if (a->device != NULL && !dq_device_parse(a->device, &(int){0}, &err))
        g_prefix_error(&err, "--device: "); /* before the model's minutes of loading */
    if (err == NULL)
        return TRUE;
    dq_print_line(stderr, "docqa: generate: %s (see --help)", err->message);
    g_error_free(err);
    return FALSE;
}

static gboolean generate_parse(GenerateArgs *a, int argc, char **argv) {
    GOptionEntry entries[] = {
        {"model", 'm', 0, G_OPTION_ARG_FILENAME, &a->model_dir, "SmolVLM snapshot folder", "DIR"},
        {"image", 'i', 0, G_OPTION_ARG_FILENAME_ARRAY, &a->images,
         "an image (PNG or JPEG); repeat for several, in prompt order", "FILE"},
        /* FILENAME: the bytes as given, checked as UTF-8 below whatever the locale (GLib would
         * convert from the locale's charset, refusing UTF-8 under LC_ALL=C, with a message
         * that names no option). */
        {"prompt", 'p', 0, G_OPTION_ARG_FILENAME, &a->prompt,
         "the user's text (UTF-8); templated with the images before it", "TEXT"},
        {"raw-prompt", 0, 0, G_OPTION_ARG_FILENAME, &a->raw_prompt,
         "an already templated prompt (UTF-8); each <image> stands for the next image", "TEXT"},
        {"max-new-tokens", 0, 0, G_OPTION_ARG_STRING, &a->max_new_tokens_text,
         "most tokens to generate, 1 to 2147483647 (default: generation_config.json's, else "
         "256); generation also stops where prompt and new tokens fill the model's "
         "max_position_embeddings",
         "N"},
        {"n-res", 0, 0, G_OPTION_ARG_STRING, &a->n_res_text,
         "resize so the longest edge is N x tile, 1 to 64 as in ingest (at most 4096 px as in "
         "transformers; default: the snapshot's)",
         "N"},
        {"no-split", 0, 0, G_OPTION_ARG_NONE, &a->no_split, "one tile an image (no splitting)",
         NULL},
        {"ignore-eos", 0, 0, G_OPTION_ARG_NONE, &a->ignore_eos,
         "generate exactly max-new-tokens tokens", NULL},
        {"device", 'd', 0, G_OPTION_ARG_STRING, &a->device, "cpu, cpu-ref or cuda[:i]", "DEV"},
        {"weights", 0, 0, G_OPTION_ARG_STRING, &a->weights,
         "stored (default); int8: the decoder's matrices quantized at load; bf16: every matrix "
         "as bf16, products in bf16 where the CPU has AVX512-BF16 (device cpu; both approximate: "
         "faster decode, bf16 faster vision and prefill)",
         "W"},
        {"draft", 0, 0, G_OPTION_ARG_STRING, &a->draft,
         "none (default); int8: speculative decoding, an int8 copy of the decoder guessing tokens "
         "that the model checks (the same tokens, greedy or sampled, in fewer passes over the "
         "weights; "
         "device cpu)",
         "D"},
        {"json", 0, 0, G_OPTION_ARG_NONE, &a->json, "print one JSON object", NULL},
        {"dump-logits", 0, 0, G_OPTION_ARG_FILENAME, &a->dump_logits,
         "write the last prompt position's logits (float32 LE)", "FILE"},
        {"sample", 0, 0, G_OPTION_ARG_NONE, &a->sample,
         "sample instead of greedy decoding (the four options below apply to sampling only; "
         "without --sample a note says they have no effect)",
         NULL},
        {"temperature", 0, 0, G_OPTION_ARG_STRING, &a->temperature_text,
         "sampling temperature, > 0", "T"},
        {"top-p", 0, 0, G_OPTION_ARG_STRING, &a->top_p_text,
         "nucleus sampling mass, in [0, 1] (0: the best token only)", "P"},
        {"top-k", 0, 0, G_OPTION_ARG_STRING, &a->top_k_text,
         "keep the K most likely tokens (0: off)", "K"},
        {"seed", 0, 0, G_OPTION_ARG_STRING, &a->seed_text, "sampling seed", "S"},
        {NULL, 0, 0, 0, NULL, NULL, NULL}};
    GOptionContext *ctx = g_option_context_new("- run one prompt through the model");
    dq_cli_add_options(ctx, entries, NULL);
    gboolean ok = dq_cli_parse(ctx, &argc, &argv);
    g_option_context_free(ctx);
    return ok && generate_check_arguments(a, argc, argv);
}

/* The options given as text, checked and read: the model folder, the prompts as UTF-8, the
 * numbers in their ranges; the first refusal is the one said. */
static gboolean generate_read_values(GenerateArgs *a) {
    gint64 max_new = 0, top_k = -1, n_res = 0;
    if (!dq_cli_model_dir("generate", "--model", a->model_dir) ||
        !dq_cli_utf8_option("generate", "--prompt", a->prompt) ||
        !dq_cli_utf8_option("generate", "--raw-prompt", a->raw_prompt) ||
        !dq_cli_int_option("generate", "--max-new-tokens", a->max_new_tokens_text, 1, G_MAXINT,
                           &max_new) ||
        !dq_cli_int_option("generate", "--n-res", a->n_res_text, 1, DQ_CLI_MAX_N_RES, &n_res) ||
        !dq_cli_int_option("generate", "--top-k", a->top_k_text, 0, G_MAXINT, &top_k) ||
        !dq_cli_int_option("generate", "--seed", a->seed_text, G_MININT64, G_MAXINT64, &a->seed) ||
        !parse_double("--temperature", a->temperature_text, 0, FALSE, INFINITY, "> 0",
                      &a->temperature) ||
        /* 0 is TopPLogitsWarper's too: it keeps at least the best token. */
        !parse_double("--top-p", a->top_p_text, 0, TRUE, 1, "in [0, 1]", &a->top_p))
        return FALSE;
    a->max_new_tokens = (int)max_new;
    a->n_res = (int)n_res;
    a->top_k = (int)top_k;
    return TRUE;
}

/* Sampling options given without --sample are said, not refused: greedy decoding is what was
 * asked for, the rest is only unused. */
static void note_unused_sampling(const GenerateArgs *a) {
    if (a->sample)
        return;
    GString *unused = g_string_new(NULL);
    const char *given[][2] = {{"--temperature", a->temperature_text},
                              {"--top-p", a->top_p_text},
                              {"--top-k", a->top_k_text},
                              {"--seed", a->seed_text}};
    for (size_t i = 0; i < G_N_ELEMENTS(given); i++)
        if (given[i][1] != NULL)
            g_string_append_printf(unused, "%s%s", unused->len ? ", " : "", given[i][0]);
    if (unused->len > 0)
        dq_print_line(stderr,
                      "docqa: generate: note: %s %s no effect without --sample (greedy decoding)",
                      unused->str, strchr(unused->str, ',') ? "have" : "has");
    g_string_free(unused, TRUE);
}

static void generate_args_clear(GenerateArgs *a) {
    g_free(a->model_dir);
    g_strfreev(a->images);
    g_free(a->prompt);
    g_free(a->raw_prompt);
    g_free(a->device);
    g_free(a->weights);
    g_free(a->draft);
    g_free(a->dump_logits);
    g_free(a->max_new_tokens_text);
    g_free(a->n_res_text);
    g_free(a->temperature_text);
    g_free(a->top_p_text);
    g_free(a->top_k_text);
    g_free(a->seed_text);
}

int cmd_generate(int argc, char **argv) {
    GenerateArgs a = {.max_new_tokens = 0, .top_k = -1, .top_p = -1, .device = NULL};
    int status = DQ_EXIT_FATAL;
    if (generate_parse(&a, argc, argv) && generate_read_values(&a)) {
        note_unused_sampling(&a);
        status = run_generate(&a);
    }
    generate_args_clear(&a);
    return status;
}
