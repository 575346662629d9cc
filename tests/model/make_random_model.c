/* Writes a random-weight SmolVLM snapshot with the real dimensions, for benchmarks and for
 * exercising the loader on full-size tensors (untied lm_head, 30/24 decoder layers, 9 or 32
 * heads, 12/27 vision layers). The output text is garbage.
 *
 *   make_random_model SRC_CONFIG_DIR TOKENIZER_DIR OUT_DIR [f32|bf16] [seed]
 *
 * SRC_CONFIG_DIR gives config.json, generation_config.json, preprocessor_config.json and
 * processor_config.json; TOKENIZER_DIR the tokenizer files. Weights as transformers'
 * make_random_model.py draws them: normal(0, text initializer_range) for matrices, norm weights
 * 1, every other vector 0. scripts/make-random-model.sh picks the folders for 256m / 2.2b.
 */
#include "config.h"
#include "dq_error.h"
#include "safetensors.h"

#include <glib/gstdio.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *name;
    int ndim;
    int64_t shape[4];
    int64_t numel;
    int kind; /* 0 matrix (random), 1 norm weight (ones), 2 bias (zeros) */
} Spec;

static void add(GArray *specs, int kind, int ndim, const int64_t *shape, const char *fmt, ...)
    G_GNUC_PRINTF(5, 6);

static void add(GArray *specs, int kind, int ndim, const int64_t *shape, const char *fmt, ...) {
    Spec s = {.ndim = ndim, .kind = kind, .numel = 1};
    va_list ap;
    va_start(ap, fmt);
    s.name = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    for (int i = 0; i < ndim; i++) {
        s.shape[i] = shape[i];
        s.numel *= shape[i];
    }
    g_array_append_val(specs, s);
    // cppcheck-suppress memleak -- specs owns s.name
}

#define M(r, c, ...) add(specs, 0, 2, (const int64_t[]){(r), (c)}, __VA_ARGS__)
#define NORM(n, ...) add(specs, 1, 1, (const int64_t[]){(n)}, __VA_ARGS__)
#define BIAS(n, ...) add(specs, 2, 1, (const int64_t[]){(n)}, __VA_ARGS__)

/* The tensors Idefics3ForConditionalGeneration saves, with the names and shapes smolvlm.c binds. */
static GArray *model_specs(const SmolvlmConfig *c) {
    GArray *specs = g_array_new(FALSE, FALSE, sizeof(Spec));
    int Dv = c->vision_hidden, Iv = c->vision_intermediate, p = c->patch_size;
    int Dt = c->text_hidden, It = c->text_intermediate, hd = c->head_dim;
    const char *vp = "model.vision_model", *tp = "model.text_model";
    add(specs, 0, 4, (const int64_t[]){Dv, c->vision_channels, p, p},
        "%s.embeddings.patch_embedding.weight", vp);
    BIAS(Dv, "%s.embeddings.patch_embedding.bias", vp);
    M(c->num_patches, Dv, "%s.embeddings.position_embedding.weight", vp);
    for (int l = 0; l < c->vision_layers; l++) {
        const char *e = "encoder.layers";
        NORM(Dv, "%s.%s.%d.layer_norm1.weight", vp, e, l);
        BIAS(Dv, "%s.%s.%d.layer_norm1.bias", vp, e, l);
        const char *proj[] = {"q_proj", "k_proj", "v_proj", "out_proj"};
        for (int i = 0; i < 4; i++) {
            M(Dv, Dv, "%s.%s.%d.self_attn.%s.weight", vp, e, l, proj[i]);
            BIAS(Dv, "%s.%s.%d.self_attn.%s.bias", vp, e, l, proj[i]);
        }
        NORM(Dv, "%s.%s.%d.layer_norm2.weight", vp, e, l);
        BIAS(Dv, "%s.%s.%d.layer_norm2.bias", vp, e, l);
        M(Iv, Dv, "%s.%s.%d.mlp.fc1.weight", vp, e, l);
        BIAS(Iv, "%s.%s.%d.mlp.fc1.bias", vp, e, l);
        M(Dv, Iv, "%s.%s.%d.mlp.fc2.weight", vp, e, l);
        BIAS(Dv, "%s.%s.%d.mlp.fc2.bias", vp, e, l);
    }
    NORM(Dv, "%s.post_layernorm.weight", vp);
    BIAS(Dv, "%s.post_layernorm.bias", vp);
    M(Dt, c->connector_in, "model.connector.modality_projection.proj.weight");
    M(c->vocab_size, Dt, "%s.embed_tokens.weight", tp);
    for (int l = 0; l < c->text_layers; l++) {
        NORM(Dt, "%s.layers.%d.input_layernorm.weight", tp, l);
        M(c->text_heads * hd, Dt, "%s.layers.%d.self_attn.q_proj.weight", tp, l);
        M(c->text_kv_heads * hd, Dt, "%s.layers.%d.self_attn.k_proj.weight", tp, l);
        M(c->text_kv_heads * hd, Dt, "%s.layers.%d.self_attn.v_proj.weight", tp, l);
        M(Dt, c->text_heads * hd, "%s.layers.%d.self_attn.o_proj.weight", tp, l);
        NORM(Dt, "%s.layers.%d.post_attention_layernorm.weight", tp, l);
        M(It, Dt, "%s.layers.%d.mlp.gate_proj.weight", tp, l);
        M(It, Dt, "%s.layers.%d.mlp.up_proj.weight", tp, l);
        M(Dt, It, "%s.layers.%d.mlp.down_proj.weight", tp, l);
    }
    NORM(Dt, "%s.norm.weight", tp);
    if (!c->tie_word_embeddings)
        M(c->vocab_size, Dt, "lm_head.weight");
    return specs;
}

static uint64_t rng_state;

static double normal(void) {
    /* xorshift64* + Box-Muller: plenty for benchmark weights. */
    static int have = 0;
    static double spare;
    if (have) {
        have = 0;
        return spare;
    }
    double u, v;
    do {
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        u = (double)((rng_state * 2685821657736338717ull) >> 11) * 0x1.0p-53;
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        v = (double)((rng_state * 2685821657736338717ull) >> 11) * 0x1.0p-53;
    } while (u <= 0);
    double r = sqrt(-2 * log(u));
    spare = r * sin(2 * M_PI * v);
    have = 1;
    return r * cos(2 * M_PI * v);
}

static gboolean copy_file(const char *src_dir, const char *out_dir, const char *name,
                          GError **err) {
    char *src = g_build_filename(src_dir, name, NULL);
    char *dst = g_build_filename(out_dir, name, NULL);
    char *data = NULL;
    gsize len = 0;
    gboolean ok = g_file_get_contents(src, &data, &len, err) &&
                  g_file_set_contents(dst, data, (gssize)len, err);
    g_free(data);
    g_free(src);
    g_free(dst);
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s SRC_CONFIG_DIR TOKENIZER_DIR OUT_DIR [f32|bf16] [seed]\n",
                argv[0]);
        return 2;
    }
    const char *src = argv[1], *tok = argv[2], *out = argv[3];
    gboolean bf16 = argc > 4 && strcmp(argv[4], "bf16") == 0;
    rng_state =
        argc > 5 ? strtoull(argv[5], NULL, 10) * 2 + 88172645463325252ull : 88172645463325252ull;
    GError *err = NULL;
    SmolvlmConfig cfg;
    if (!smolvlm_config_load(src, &cfg, &err)) {
        fprintf(stderr, "make_random_model: %s\n", err->message);
        return 2;
    }
    /* initializer_range of text_config (transformers initialises every matrix with it). */
    double std = 0.02;
    char *cjson = NULL;
    char *cpath = g_build_filename(src, "config.json", NULL);
    if (g_file_get_contents(cpath, &cjson, NULL, NULL)) {
        const char *tc = strstr(cjson, "\"text_config\"");
        const char *ir = tc ? strstr(tc, "\"initializer_range\"") : NULL;
        if (ir != NULL)
            std = g_ascii_strtod(strchr(ir, ':') + 1, NULL);
    }
    g_mkdir_with_parents(out, 0755);
    const char *cfg_files[] = {"config.json", "generation_config.json", "preprocessor_config.json",
                               "processor_config.json"};
    const char *tok_files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                               "added_tokens.json", "chat_template.json"};
    for (size_t i = 0; i < G_N_ELEMENTS(cfg_files); i++)
        if (!copy_file(src, out, cfg_files[i], &err))
            goto fail;
    for (size_t i = 0; i < G_N_ELEMENTS(tok_files); i++)
        if (!copy_file(tok, out, tok_files[i], &err))
            goto fail;

    GArray *specs = model_specs(&cfg);
    size_t esize = bf16 ? 2 : 4;
    GString *h = g_string_new("{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0, params = 0;
    for (guint i = 0; i < specs->len; i++) {
        Spec *s = &g_array_index(specs, Spec, i);
        g_string_append_printf(h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", s->name,
                               bf16 ? "BF16" : "F32");
        for (int d = 0; d < s->ndim; d++)
            g_string_append_printf(h, "%s%" G_GINT64_FORMAT, d ? "," : "", s->shape[d]);
        g_string_append_printf(h,
                               "],\"data_offsets\":[%" G_GUINT64_FORMAT ",%" G_GUINT64_FORMAT "]}",
                               off, off + (uint64_t)s->numel * esize);
        off += (uint64_t)s->numel * esize;
        params += (uint64_t)s->numel;
    }
    g_string_append_c(h, '}');
    while ((h->len + 8) % 8 != 0) /* data section 8-byte aligned, as safetensors pads */
        g_string_append_c(h, ' ');
    char *path = g_build_filename(out, "model.safetensors", NULL);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        fprintf(stderr, "make_random_model: %s: cannot create\n", path);
        return 2;
    }
    uint64_t hl = h->len;
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(hl >> (8 * i));
    /* Every write checked: one that fails (a full disk) and the next that succeeds would leave
     * a file short of a chunk that fclose alone does not tell. */
    gboolean wrote = fwrite(le, 1, 8, f) == 8 && fwrite(h->str, 1, h->len, f) == h->len;
    enum { CHUNK = 1 << 16 };
    float *fb = g_new(float, CHUNK);
    uint16_t *hb = g_new(uint16_t, CHUNK);
    for (guint i = 0; i < specs->len; i++) {
        Spec *s = &g_array_index(specs, Spec, i);
        for (int64_t done = 0; wrote && done < s->numel;) {
            int n = (int)MIN((int64_t)CHUNK, s->numel - done);
            for (int k = 0; k < n; k++)
                fb[k] = s->kind == 0 ? (float)(normal() * std) : s->kind == 1 ? 1.0f : 0.0f;
            if (bf16) {
                for (int k = 0; k < n; k++)
                    hb[k] = dq_f32_bf16(fb[k]);
                wrote = fwrite(hb, 2, (size_t)n, f) == (size_t)n;
            } else {
                wrote = fwrite(fb, 4, (size_t)n, f) == (size_t)n;
            }
            done += n;
        }
    }
    if (fclose(f) != 0 || !wrote) {
        fprintf(stderr, "make_random_model: %s: write failed\n", path);
        return 2;
    }
    printf("wrote %s: %.1fM parameters, %s, %.0f MB\n", out, params / 1e6, bf16 ? "bf16" : "f32",
           (double)(8 + hl + off) / 1e6);
    return 0;
fail:
    fprintf(stderr, "make_random_model: %s\n", err->message);
    return 2;
}
