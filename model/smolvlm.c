/* SmolVLM forward pass over the backend interface. See smolvlm.h for the data flow, and
 * ../shared/fixtures/README.md pitfalls 25-35 for the transformers details reproduced here. */
#include "smolvlm.h"

#include "backend_cuda.h"
#include "dq_error.h"
#include "mapped_file.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

/* Tiles encoded per vision batch where the backend does not say (DqBackend.vision_tile_chunk):
 * bounds the activations (256M: 32 tiles x 1024 patches x 3072 MLP floats = 400 MB) while
 * keeping a GPU's products large. Tiles are independent, so the chunking never changes a
 * result. */
#define DQ_VISION_TILE_CHUNK 32

typedef struct {
    DqWeight ln1_w, ln1_b;       /* [Dv] */
    DqWeight q_w, k_w, v_w, o_w; /* [Dv, Dv] */
    DqWeight q_b, k_b, v_b, o_b; /* [Dv] */
    DqWeight ln2_w, ln2_b;       /* [Dv] */
    DqWeight fc1_w, fc1_b;       /* [Iv, Dv], [Iv] */
    DqWeight fc2_w, fc2_b;       /* [Dv, Iv], [Dv] */
} VisionLayer;

typedef struct {
    DqWeight in_norm;      /* [Dt] */
    DqWeight q_w;          /* [H * hd, Dt] */
    DqWeight k_w, v_w;     /* [Hkv * hd, Dt] */
    DqWeight o_w;          /* [Dt, H * hd] */
    DqWeight post_norm;    /* [Dt] */
    DqWeight gate_w, up_w; /* [It, Dt] */
    DqWeight down_w;       /* [Dt, It] */
    /* text_config.attention_bias: [H * hd], [Hkv * hd] x 2, [Dt]; mlp_bias: [It] x 2, [Dt]
     * (data NULL without; the draft has none of its own) */
    DqWeight q_b, k_b, v_b, o_b;
    DqWeight gate_b, up_b, down_b;
} TextLayer;

/* How bind() prepares a tensor: as the snapshot stores it (weight_init), int8 blocks
 * (weight_init_q8) or bf16 (weight_init_bf16). */
typedef enum { BIND_STORED, BIND_INT8, BIND_BF16 } BindAs;

struct Smolvlm {
    char *dir;
    SmolvlmConfig cfg;
    DqRope rope; /* the decoder's RoPE table, from cfg (its scaling included) */
    DqSafeTensors *st;
    DqBackend *be;
    /* vision */
    DqWeight patch_w;              /* [Dv, 3 * p * p] (conv weight [Dv, 3, p, p] flattened) */
    DqWeight patch_b;              /* [Dv] */
    DqWeight pos_emb;              /* [P, Dv] position_embedding.weight */
    DqWeight pos_full;             /* [P, Dv] its rows at a full tile's position ids */
    VisionLayer *vl;               /* [vision_layers] */
    DqWeight post_ln_w, post_ln_b; /* [Dv] */
    /* connector */
    DqWeight proj; /* [Dt, Dv * s * s] */
    /* text */
    DqWeight embed; /* [V, Dt] */
    TextLayer *tl;  /* [text_layers] */
    DqWeight norm;  /* [Dt] */
    DqWeight lm_head_own;
    const DqWeight *lm_head; /* [V, Dt]: &lm_head_own, or &embed when tied */
    gboolean binding_table;  /* bind(): the tensor is an embedding table (not populated) */
    SmolvlmTraceFn trace;
    void *trace_user;
    BindAs weights;  /* --weights: the matrices bound as BIND_INT8 or BIND_BF16, or none */
    BindAs bind_as;  /* how bind() prepares what it binds (set around the matrices) */
    gboolean kv_f16; /* the KV caches hold float16 (approximate weights, on a backend that can) */
    /* The draft (SmolvlmOptions.draft): int8 copies of the decoder's matrices; its norms are
     * the model's (NULL in draft_tl). binding_draft: bind() leaves the mapping alone, which the
     * model proper reads. */
    gboolean want_draft, binding_draft;
    TextLayer *draft_tl;
    DqWeight draft_lm_head;
};

struct SmolvlmKV {
    int len, capacity;
    float *k; /* [layers, capacity, Hkv * hd], float32 or float16 (kv_cache_layer) */
    float *v;
};

typedef struct LogitRow {
    int row;
    float *dst;     /* logits [V], or NULL: */
    int32_t *token; /* the greedy pick of them */
} LogitRow;

struct SmolvlmWorkspace {
    int max_rows;
    float *x;                /* [max_rows, Dt]  residual stream (the forward's input) */
    float *xn;               /* [max_rows, Dt]  normed / projected */
    float *q;                /* [max_rows, H * hd] */
    float *k;                /* [max_rows, Hkv * hd] */
    float *v;                /* [max_rows, Hkv * hd] */
    float *attn;             /* [max_rows, H * hd] */
    float *gate;             /* [max_rows, It] */
    float *up;               /* [max_rows, It] */
    float *last;             /* [max_rows, Dt]  last rows of segments that want logits */
    float *logits;           /* [logit_rows, V] ([max_rows, V] is too much for a prefill) */
    int logit_rows;          /* rows a lm_head product (logit_rows_for) */
    struct LogitRow *want;   /* host [max_rows]: rows that want logits or a token */
    int32_t *pos;            /* host [max_rows] positions */
    DqAttnSegment *att_segs; /* host [max_rows]: a segment has at least one row */
};

/* Logit rows computed per lm_head product: a decode step's rows (a GPU's 64 requests) in few
 * products, each within the backend's row-invariant bound, so that a row's logits do not depend
 * on its batch-mates; 8 where the backend promises none (the reference). */
#define DQ_LOGIT_ROWS 64

static int logit_rows_for(const DqBackend *be) {
    return be->matmul_row_invariant_max > 0 ? MIN(DQ_LOGIT_ROWS, be->matmul_row_invariant_max) : 8;
}

/* ---- weights */

static gboolean bind(Smolvlm *m, DqWeight *w, int rows, int cols, int ndim, const int64_t *shape,
                     GError **err, const char *fmt, ...) G_GNUC_PRINTF(8, 9);

static gboolean bind(Smolvlm *m, DqWeight *w, int rows, int cols, int ndim, const int64_t *shape,
                     GError **err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *name = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    const DqTensor *t = safetensors_require(m->st, name, ndim, shape, err);
    gboolean ok = t != NULL;
    if (ok) {
        DqBackend *be = m->be;
        ok = m->bind_as == BIND_INT8   ? be->weight_init_q8(be, w, t, rows, cols, err)
             : m->bind_as == BIND_BF16 ? be->weight_init_bf16(be, w, t, rows, cols, err)
                                       : be->weight_init(be, w, t, rows, cols, err);
    }
    if (ok) {
        size_t bytes = (size_t)t->numel * dq_dtype_size(t->dtype);
        if (m->binding_draft)
            ; /* the model proper's tensor: as it left it */
        else if (w->owned != NULL)
            dq_mapped_release(t->data, bytes); /* the backend keeps its own copy */
        else if (!m->binding_table)
            dq_mapped_populate(t->data, bytes); /* used as mapped: read it in at load */
    }
    g_free(name);
    return ok;
}

/* An embedding table: looked up a row at a time, so left to page in as rows are used. */
static gboolean bind_table(Smolvlm *m, DqWeight *w, int rows, int cols, GError **err,
                           const char *fmt, const char *prefix) {
    m->binding_table = TRUE;
    gboolean ok = bind(m, w, rows, cols, 2, (const int64_t[]){rows, cols}, err, fmt, prefix);
    m->binding_table = FALSE;
    return ok;
}

#define BIND2(w, r, c, ...) bind(m, (w), (r), (c), 2, (const int64_t[]){(r), (c)}, err, __VA_ARGS__)
#define BIND1(w, n, ...)    bind(m, (w), 1, (n), 1, (const int64_t[]){(n)}, err, __VA_ARGS__)

void smolvlm_vision_position_ids(int n_side, int nb_h, int nb_w, int32_t *ids) {
    /* transformers buckets fractional patch coordinates k / nb on the boundaries j / n_side,
     * j = 1 .. n_side - 1. The goldens (transformers 4.57.6 + torch 2.15) show a coordinate
     * that falls exactly on a boundary going to the lower bucket, also for full tiles (patch
     * (r, c) of a full 32x32 or 27x27 tile uses position (max(r-1,0), max(c-1,0))), i.e. the
     * bucket is the number of boundaries strictly below k / nb, in exact arithmetic. */
    for (int r = 0; r < nb_h; r++)
        for (int c = 0; c < nb_w; c++) {
            int br = r == 0 ? 0 : MIN(n_side - 1, (r * n_side + nb_h - 1) / nb_h - 1);
            int bc = c == 0 ? 0 : MIN(n_side - 1, (c * n_side + nb_w - 1) / nb_w - 1);
            ids[r * nb_w + c] = br * n_side + bc;
        }
}

/* After an alloc that gave NULL: TRUE (err set) when the backend kept a device error, FALSE (err
 * untouched, for the caller's "out of memory") otherwise. A GPU that kept an error refuses every
 * alloc after it (backend_cuda.h); "out of memory" then would hide the device's error and make a
 * failure that cannot clear look like one that may. */
static gboolean alloc_failed_on_device(DqBackend *be, GError **err) {
    return !dq_backend_cuda_check(be, err);
}

/* pos_full = position_embedding rows at a full tile's position ids. */
static gboolean gather_positions(Smolvlm *m, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    int P = c->num_patches, n = c->patches_per_side;
    int32_t *ids = g_new(int32_t, P);
    smolvlm_vision_position_ids(n, n, n, ids);
    float *buf = m->be->alloc(m->be, (size_t)P * c->vision_hidden);
    if (buf == NULL) {
        g_free(ids);
        return !alloc_failed_on_device(m->be, err) &&
               dq_fail(err, DQ_ERR_LIMIT, "out of memory for position embeddings");
    }
    m->be->embed(m->be, buf, &m->pos_emb, ids, P);
    m->pos_full = (DqWeight){.rows = P, .cols = c->vision_hidden, .data = buf, .owned = buf};
    g_free(ids);
    return TRUE;
}

/* The patch embedding and the position embeddings (looked up once: pos_full). */
static gboolean bind_vision_embeddings(Smolvlm *m, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    int Dv = c->vision_hidden, p = c->patch_size;
    const char *vp = "model.vision_model";
    /* --weights bf16: every matrix a product uses, vision and text (the norm vectors and
     * biases stay as weight_init keeps them); int8: the decoder's (bind_text_layer). */
    m->bind_as = m->weights == BIND_BF16 ? BIND_BF16 : BIND_STORED;
    if (!bind(m, &m->patch_w, Dv, c->vision_channels * p * p, 4,
              (const int64_t[]){Dv, c->vision_channels, p, p}, err,
              "%s.embeddings.patch_embedding.weight", vp))
        return FALSE;
    m->bind_as = BIND_STORED; /* position embeddings: a table looked up */
    return BIND1(&m->patch_b, Dv, "%s.embeddings.patch_embedding.bias", vp) &&
           BIND2(&m->pos_emb, c->num_patches, Dv, "%s.embeddings.position_embedding.weight", vp) &&
           gather_positions(m, err);
}

static gboolean bind_vision_layer(Smolvlm *m, int l, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    int Dv = c->vision_hidden, Iv = c->vision_intermediate;
    const char *vp = "model.vision_model", *e = "encoder.layers";
    VisionLayer *L = &m->vl[l];
    return BIND1(&L->ln1_w, Dv, "%s.%s.%d.layer_norm1.weight", vp, e, l) &&
           BIND1(&L->ln1_b, Dv, "%s.%s.%d.layer_norm1.bias", vp, e, l) &&
           BIND2(&L->q_w, Dv, Dv, "%s.%s.%d.self_attn.q_proj.weight", vp, e, l) &&
           BIND1(&L->q_b, Dv, "%s.%s.%d.self_attn.q_proj.bias", vp, e, l) &&
           BIND2(&L->k_w, Dv, Dv, "%s.%s.%d.self_attn.k_proj.weight", vp, e, l) &&
           BIND1(&L->k_b, Dv, "%s.%s.%d.self_attn.k_proj.bias", vp, e, l) &&
           BIND2(&L->v_w, Dv, Dv, "%s.%s.%d.self_attn.v_proj.weight", vp, e, l) &&
           BIND1(&L->v_b, Dv, "%s.%s.%d.self_attn.v_proj.bias", vp, e, l) &&
           BIND2(&L->o_w, Dv, Dv, "%s.%s.%d.self_attn.out_proj.weight", vp, e, l) &&
           BIND1(&L->o_b, Dv, "%s.%s.%d.self_attn.out_proj.bias", vp, e, l) &&
           BIND1(&L->ln2_w, Dv, "%s.%s.%d.layer_norm2.weight", vp, e, l) &&
           BIND1(&L->ln2_b, Dv, "%s.%s.%d.layer_norm2.bias", vp, e, l) &&
           BIND2(&L->fc1_w, Iv, Dv, "%s.%s.%d.mlp.fc1.weight", vp, e, l) &&
           BIND1(&L->fc1_b, Iv, "%s.%s.%d.mlp.fc1.bias", vp, e, l) &&
           BIND2(&L->fc2_w, Dv, Iv, "%s.%s.%d.mlp.fc2.weight", vp, e, l) &&
           BIND1(&L->fc2_b, Dv, "%s.%s.%d.mlp.fc2.bias", vp, e, l);
}

/* The encoder's layers, its last norm and the connector's projection. */
static gboolean bind_vision(Smolvlm *m, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    int Dv = c->vision_hidden, Dt = c->text_hidden, s2 = c->scale_factor * c->scale_factor;
    const char *vp = "model.vision_model";
    if (!bind_vision_embeddings(m, err))
        return FALSE;
    m->vl = g_new0(VisionLayer, c->vision_layers);
    m->bind_as = m->weights == BIND_BF16 ? BIND_BF16 : BIND_STORED;
    for (int l = 0; l < c->vision_layers; l++)
        if (!bind_vision_layer(m, l, err))
            return FALSE;
    return BIND1(&m->post_ln_w, Dv, "%s.post_layernorm.weight", vp) &&
           BIND1(&m->post_ln_b, Dv, "%s.post_layernorm.bias", vp) &&
           BIND2(&m->proj, Dt, Dv * s2, "model.connector.modality_projection.proj.weight");
}

static gboolean bind_text_layer(Smolvlm *m, int l, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    int Dt = c->text_hidden, It = c->text_intermediate, hd = c->head_dim;
    int qd = c->text_heads * hd, kvd = c->text_kv_heads * hd;
    const char *tp = "model.text_model";
    TextLayer *L = &m->tl[l];
    m->bind_as = m->weights;
    if (!BIND1(&L->in_norm, Dt, "%s.layers.%d.input_layernorm.weight", tp, l) ||
        !BIND2(&L->q_w, qd, Dt, "%s.layers.%d.self_attn.q_proj.weight", tp, l) ||
        !BIND2(&L->k_w, kvd, Dt, "%s.layers.%d.self_attn.k_proj.weight", tp, l) ||
        !BIND2(&L->v_w, kvd, Dt, "%s.layers.%d.self_attn.v_proj.weight", tp, l) ||
        !BIND2(&L->o_w, Dt, qd, "%s.layers.%d.self_attn.o_proj.weight", tp, l) ||
        !BIND1(&L->post_norm, Dt, "%s.layers.%d.post_attention_layernorm.weight", tp, l) ||
        !BIND2(&L->gate_w, It, Dt, "%s.layers.%d.mlp.gate_proj.weight", tp, l) ||
        !BIND2(&L->up_w, It, Dt, "%s.layers.%d.mlp.up_proj.weight", tp, l) ||
        !BIND2(&L->down_w, Dt, It, "%s.layers.%d.mlp.down_proj.weight", tp, l))
        return FALSE;
    /* biases as stored, whatever --weights makes of the matrices (as the vision's) */
    m->bind_as = BIND_STORED;
    if (c->attention_bias && (!BIND1(&L->q_b, qd, "%s.layers.%d.self_attn.q_proj.bias", tp, l) ||
                              !BIND1(&L->k_b, kvd, "%s.layers.%d.self_attn.k_proj.bias", tp, l) ||
                              !BIND1(&L->v_b, kvd, "%s.layers.%d.self_attn.v_proj.bias", tp, l) ||
                              !BIND1(&L->o_b, Dt, "%s.layers.%d.self_attn.o_proj.bias", tp, l)))
        return FALSE;
    if (c->mlp_bias && (!BIND1(&L->gate_b, It, "%s.layers.%d.mlp.gate_proj.bias", tp, l) ||
                        !BIND1(&L->up_b, It, "%s.layers.%d.mlp.up_proj.bias", tp, l) ||
                        !BIND1(&L->down_b, Dt, "%s.layers.%d.mlp.down_proj.bias", tp, l)))
        return FALSE;
    m->bind_as = m->weights;
    return TRUE;
}

/* The token embeddings, the decoder's layers and its last norm. */
static gboolean bind_text(Smolvlm *m, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    int Dt = c->text_hidden;
    const char *tp = "model.text_model";
    m->bind_as = BIND_STORED;
    if (!bind_table(m, &m->embed, c->vocab_size, Dt, err, "%s.embed_tokens.weight", tp))
        return FALSE;
    m->tl = g_new0(TextLayer, c->text_layers);
    for (int l = 0; l < c->text_layers; l++)
        if (!bind_text_layer(m, l, err))
            return FALSE;
    m->bind_as = BIND_STORED;
    return BIND1(&m->norm, Dt, "%s.norm.weight", tp);
}

static gboolean bind_lm_head(Smolvlm *m, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    int Dt = c->text_hidden;
    const char *tp = "model.text_model";
    /* Tied or not, transformers refuses an lm_head.weight of another shape ("size mismatch for
     * weight"), and so do we. */
    if (safetensors_get(m->st, "lm_head.weight") != NULL &&
        safetensors_require(m->st, "lm_head.weight", 2, (const int64_t[]){c->vocab_size, Dt},
                            err) == NULL)
        return FALSE;
    /* int8 and bf16: lm_head too (a fifth of the decoder's bytes at 256M; measured on the
     * fixtures, quantizing it moved the worst logits cosine only from 0.99936 to 0.99935); when
     * tied, a quantized (bf16: rounded, or mapped if stored so) copy of embed_tokens, whose
     * lookups stay exact. */
    if (m->weights != BIND_STORED && c->tie_word_embeddings) {
        m->bind_as = m->weights;
        gboolean ok = BIND2(&m->lm_head_own, c->vocab_size, Dt, "%s.embed_tokens.weight", tp);
        m->bind_as = BIND_STORED;
        m->lm_head = &m->lm_head_own;
        return ok;
    }
    /* transformers ties lm_head to embed_tokens when text_config.tie_word_embeddings is true,
     * whatever values the file holds (the tiny snapshots have no lm_head.weight at all). Null
     * unties, as false does (PreTrainedModel reads it through getattr(..., True), which finds
     * None); untied without lm_head.weight, transformers 4.57.6 warns "newly initialized" and
     * draws it from N(0, initializer_range) at every load: no answer to reproduce. */
    if (c->tie_word_embeddings) {
        m->lm_head = &m->embed;
        return TRUE;
    }
    if (safetensors_get(m->st, "lm_head.weight") == NULL)
        return dq_fail(err, DQ_ERR_MODEL,
                       "%s: tensor 'lm_head.weight' is missing and config.json's "
                       "text_config.tie_word_embeddings is not true (false, null or "
                       "absent: lm_head is its own tensor, which transformers would draw at "
                       "random at every load)",
                       m->dir);
    m->bind_as = m->weights;
    gboolean ok = BIND2(&m->lm_head_own, c->vocab_size, Dt, "lm_head.weight");
    m->bind_as = BIND_STORED;
    if (!ok)
        return FALSE;
    m->lm_head = &m->lm_head_own;
    return TRUE;
}

static gboolean bind_all(Smolvlm *m, GError **err) {
    return bind_vision(m, err) && bind_text(m, err) && bind_lm_head(m, err);
}

/* The draft's matrices: the decoder's linear layers and lm_head (embed_tokens when tied), as
 * int8 blocks. */
static gboolean bind_draft(Smolvlm *m, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    int Dt = c->text_hidden, It = c->text_intermediate, hd = c->head_dim;
    int qd = c->text_heads * hd, kvd = c->text_kv_heads * hd;
    const char *tp = "model.text_model";
    m->draft_tl = g_new0(TextLayer, c->text_layers);
    m->binding_draft = TRUE;
    m->bind_as = BIND_INT8;
    gboolean ok = TRUE;
    for (int l = 0; ok && l < c->text_layers; l++) {
        TextLayer *L = &m->draft_tl[l];
        ok = BIND2(&L->q_w, qd, Dt, "%s.layers.%d.self_attn.q_proj.weight", tp, l) &&
             BIND2(&L->k_w, kvd, Dt, "%s.layers.%d.self_attn.k_proj.weight", tp, l) &&
             BIND2(&L->v_w, kvd, Dt, "%s.layers.%d.self_attn.v_proj.weight", tp, l) &&
             BIND2(&L->o_w, Dt, qd, "%s.layers.%d.self_attn.o_proj.weight", tp, l) &&
             BIND2(&L->gate_w, It, Dt, "%s.layers.%d.mlp.gate_proj.weight", tp, l) &&
             BIND2(&L->up_w, It, Dt, "%s.layers.%d.mlp.up_proj.weight", tp, l) &&
             BIND2(&L->down_w, Dt, It, "%s.layers.%d.mlp.down_proj.weight", tp, l);
    }
    if (ok)
        ok = c->tie_word_embeddings
                 ? BIND2(&m->draft_lm_head, c->vocab_size, Dt, "%s.embed_tokens.weight", tp)
                 : BIND2(&m->draft_lm_head, c->vocab_size, Dt, "lm_head.weight");
    m->bind_as = BIND_STORED;
    m->binding_draft = FALSE;
    return ok;
}

static void free_weight(Smolvlm *m, DqWeight *w) {
    if (w->data != NULL)
        m->be->weight_free(m->be, w);
}

void smolvlm_free(Smolvlm *m) {
    if (m == NULL)
        return;
    if (m->be != NULL) {
        free_weight(m, &m->patch_w);
        free_weight(m, &m->patch_b);
        free_weight(m, &m->pos_emb);
        free_weight(m, &m->pos_full);
        for (int l = 0; m->vl != NULL && l < m->cfg.vision_layers; l++) {
            DqWeight *w = (DqWeight *)&m->vl[l];
            for (size_t i = 0; i < sizeof(VisionLayer) / sizeof(DqWeight); i++)
                free_weight(m, &w[i]);
        }
        free_weight(m, &m->post_ln_w);
        free_weight(m, &m->post_ln_b);
        free_weight(m, &m->proj);
        free_weight(m, &m->embed);
        for (int l = 0; m->tl != NULL && l < m->cfg.text_layers; l++) {
            DqWeight *w = (DqWeight *)&m->tl[l];
            for (size_t i = 0; i < sizeof(TextLayer) / sizeof(DqWeight); i++)
                free_weight(m, &w[i]);
        }
        free_weight(m, &m->norm);
        free_weight(m, &m->lm_head_own);
        for (int l = 0; m->draft_tl != NULL && l < m->cfg.text_layers; l++) {
            DqWeight *w = (DqWeight *)&m->draft_tl[l];
            for (size_t i = 0; i < sizeof(TextLayer) / sizeof(DqWeight); i++)
                free_weight(m, &w[i]);
        }
        free_weight(m, &m->draft_lm_head);
        dq_backend_free(m->be);
    }
    g_free(m->vl);
    g_free(m->tl);
    g_free(m->draft_tl);
    safetensors_free(m->st);
    g_free(m->dir);
    g_free(m);
}

static gboolean draft_option(Smolvlm *m, const char *device, const SmolvlmOptions *opts,
                             GError **err) {
    const char *draft = opts != NULL ? opts->draft : NULL;
    if (draft == NULL || strcmp(draft, "none") == 0)
        return TRUE;
    if (strcmp(draft, "int8") != 0)
        return dq_fail(err, DQ_ERR_ARGS, "unknown draft '%s' (expected none or int8)", draft);
    if (m->be->weight_init_q8 == NULL || m->be->matmul_row_invariant_max < 2)
        return dq_fail(err, DQ_ERR_ARGS,
                       "draft int8: device %s has no int8 kernels or no row-invariant products "
                       "to check guesses with (use cpu)",
                       device);
    if (m->weights == BIND_INT8)
        return dq_fail(err, DQ_ERR_ARGS,
                       "draft int8: the weights are int8 already (a draft needs weights stored "
                       "or bf16)");
    m->want_draft = TRUE;
    return TRUE;
}

static gboolean weights_option(Smolvlm *m, const char *device, const SmolvlmOptions *opts,
                               GError **err) {
    const char *weights = opts != NULL ? opts->weights : NULL;
    if (weights == NULL || strcmp(weights, "stored") == 0) {
        m->kv_f16 = m->be->kv_f16 && m->be->kv_f16_stored && m->be->attention_segments != NULL;
        return TRUE;
    }
    if (strcmp(weights, "int8") == 0) {
        if (m->be->weight_init_q8 == NULL)
            return dq_fail(err, DQ_ERR_ARGS,
                           "weights int8: device %s has no int8 kernels (use cpu)", device);
        m->weights = BIND_INT8;
    } else if (strcmp(weights, "bf16") == 0) {
        if (m->be->weight_init_bf16 == NULL)
            return dq_fail(err, DQ_ERR_ARGS,
                           "weights bf16: device %s has no bf16 products option (use cpu)", device);
        m->weights = BIND_BF16;
    } else
        return dq_fail(err, DQ_ERR_ARGS, "unknown weights '%s' (expected stored, int8 or bf16)",
                       weights);
    /* Approximate already, these modes also take float16 KV caches: half what a decode step
     * streams from them, which at long prompts is as much as the int8 weights (cpu_q8.h). */
    m->kv_f16 = m->be->kv_f16 && m->be->attention_segments != NULL &&
                g_strcmp0(g_getenv("DOCQA_KV_F16"), "0") != 0; /* 0: float32, to compare */
    return TRUE;
}

Smolvlm *smolvlm_open(const char *dir, const SmolvlmOptions *opts, GError **err) {
    DqBackend *given = opts != NULL ? opts->backend : NULL;
    const char *device = opts != NULL && opts->device != NULL ? opts->device
                         : given != NULL                      ? given->name
                                                              : "cpu";
    int cuda_index; /* a bad device name fails before anything is loaded */
    if (given == NULL && !dq_device_parse(device, &cuda_index, err))
        return NULL;
    if (dir == NULL || *dir == '\0') { /* "" would be the current folder */
        if (given != NULL)
            dq_backend_free(given);
        dq_fail(err, DQ_ERR_ARGS, "the model folder's name is empty");
        return NULL;
    }
    Smolvlm *m = g_new0(Smolvlm, 1);
    m->be = given; /* owned from here, freed with m even when opening fails */
    m->dir = g_strdup(dir);
    if (!smolvlm_config_load(dir, &m->cfg, err))
        goto fail;
    dq_rope_init(&m->rope, &m->cfg);
    m->st = safetensors_open_snapshot(dir, err);
    if (m->st == NULL)
        goto fail;
    if (given == NULL)
        m->be = dq_backend_open_device(device, err); /* cpu, or cuda:I (backend_cuda.h) */
    if (m->be == NULL || !weights_option(m, device, opts, err) ||
        !draft_option(m, device, opts, err) || !bind_all(m, err) ||
        (m->want_draft && !bind_draft(m, err)))
        goto fail;
    return m;
fail:
    smolvlm_free(m);
    return NULL;
}

/* One of the snapshot's JSON files into the fingerprint (smolvlm.h), bytes as they are; an
 * optional file that is not there as its name and a size of all ones. */
static gboolean fingerprint_file(GChecksum *c, const char *dir, const char *name, gboolean optional,
                                 GError **err) {
    char *path = g_build_filename(dir, name, NULL);
    if (optional && !g_file_test(path, G_FILE_TEST_EXISTS)) {
        g_free(path);
        static const guchar absent[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
        g_checksum_update(c, (const guchar *)name, (gssize)strlen(name) + 1);
        g_checksum_update(c, absent, sizeof absent);
        return TRUE;
    }
    DqMappedFile *mf = dq_mapped_file_open(path, err);
    g_free(path);
    if (mf == NULL)
        return FALSE;
    guchar le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (guchar)((guint64)mf->size >> (8 * i));
    g_checksum_update(c, (const guchar *)name, (gssize)strlen(name) + 1);
    g_checksum_update(c, le, sizeof le);
    if (mf->size > 0)
        g_checksum_update(c, mf->data, (gssize)mf->size);
    dq_mapped_file_free(mf);
    return TRUE;
}

static char *fingerprint(const char *dir, const DqSafeTensors *st, GError **err) {
    static const char version[] = "docqa-snapshot-v1";
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    g_checksum_update(c, (const guchar *)version, sizeof version); /* its NUL too */
    /* Every file a load reads, in this order: each can change an answer (the chat template and
     * the processor's sizes the prompt, generation_config the decoding). */
    static const struct {
        const char *name;
        gboolean optional;
    } files[] = {{"config.json", FALSE},
                 {"generation_config.json", TRUE},
                 {"preprocessor_config.json", TRUE},
                 {"processor_config.json", TRUE},
                 {"chat_template.json", TRUE},
                 {"tokenizer.json", FALSE},
                 {"tokenizer_config.json", TRUE}};
    gboolean ok = TRUE;
    for (size_t i = 0; ok && i < G_N_ELEMENTS(files); i++)
        ok = fingerprint_file(c, dir, files[i].name, files[i].optional, err);
    char *hex = NULL;
    if (ok) {
        safetensors_fingerprint_update(st, c);
        hex = g_strdup(g_checksum_get_string(c));
    }
    g_checksum_free(c);
    return hex;
}

char *smolvlm_fingerprint(const Smolvlm *m, GError **err) {
    return fingerprint(m->dir, m->st, err);
}

char *smolvlm_snapshot_fingerprint(const char *dir, GError **err) {
    DqSafeTensors *st = safetensors_open_snapshot(dir, err);
    if (st == NULL)
        return NULL;
    char *hex = fingerprint(dir, st, err);
    safetensors_free(st);
    return hex;
}

const SmolvlmConfig *smolvlm_config(const Smolvlm *m) {
    return &m->cfg;
}

DqBackend *smolvlm_backend(const Smolvlm *m) {
    return m->be;
}

const char *smolvlm_dir(const Smolvlm *m) {
    return m->dir;
}

void smolvlm_set_trace(Smolvlm *m, SmolvlmTraceFn fn, void *user) {
    m->trace = fn;
    m->trace_user = user;
}

static void trace(Smolvlm *m, const char *name, int index, const float *buf, int rows, int cols) {
    if (m->trace == NULL)
        return;
    size_t n = (size_t)rows * cols;
    float *host = g_new(float, n > 0 ? n : 1);
    m->be->download(m->be, host, buf, n);
    m->trace(m->trace_user, name, index, host, rows, cols);
    g_free(host);
}

/* Allocates n backend buffers of the given sizes; all or nothing. */
static gboolean alloc_many(DqBackend *be, GError **err, int n, float ***bufs, const size_t *sizes) {
    for (int i = 0; i < n; i++) {
        *bufs[i] = be->alloc(be, sizes[i]);
        if (*bufs[i] == NULL) {
            for (int j = 0; j < i; j++) {
                be->release(be, *bufs[j]);
                *bufs[j] = NULL;
            }
            if (alloc_failed_on_device(be, err))
                return FALSE;
            return dq_fail(err, DQ_ERR_LIMIT,
                           "out of %s memory: a buffer of %zu floats (%.1f MiB) of activations",
                           be->name, sizes[i], (double)sizes[i] * sizeof(float) / 1048576.0);
        }
    }
    return TRUE;
}

/* ---- vision encoder + connector */

/* The calls a product over T tiles takes: one (rows: all of them) where the backend's products
 * are row-invariant, else one a tile. */
static int tile_calls(DqBackend *be, int T, int rows_per_tile, int *rows) {
    gboolean merged =
        be->matmul_row_invariant_min > 0 && rows_per_tile >= be->matmul_row_invariant_min;
    *rows = merged ? T * rows_per_tile : rows_per_tile;
    return merged ? 1 : T;
}

/* y = x . w^T (+ b) tile by tile (rows_per_tile rows each): a tile's products have the same
 * shapes whatever else is in the batch, so its features are bit-identical alone or batched
 * (OpenBLAS's sgemm rounding depends on the row count). 1024 or 729 rows keep the GEMMs large.
 * A backend whose rounding does not depend on the row count (matmul_row_invariant_min) gets all
 * tiles in one call: one pass over the weight, and threads over every row. */
/* scratch (y's size): y += the product instead (dq_matmul_add: the residual add). */
static void tile_product(DqBackend *be, float *y, const float *x, const DqWeight *w,
                         const DqWeight *b, int T, int rows_per_tile, float *scratch) {
    int rows, calls = tile_calls(be, T, rows_per_tile, &rows);
    for (int t = 0; t < calls; t++) {
        float *yt = y + (size_t)t * rows * w->rows;
        const float *xt = x + (size_t)t * rows * w->cols;
        if (scratch != NULL)
            dq_matmul_add(be, yt, xt, w, b, rows, scratch + (size_t)t * rows * w->rows);
        else
            be->matmul(be, yt, xt, w, b, rows);
    }
}

static void tile_matmul(DqBackend *be, float *y, const float *x, const DqWeight *w,
                        const DqWeight *b, int T, int rows_per_tile) {
    tile_product(be, y, x, w, b, T, rows_per_tile, NULL);
}

/* tiles [T, 3, S, S] (backend) -> features [T * S_tok, Dt] (backend). */
/* A vision chunk's activations, for up to a chunk of tiles, allocated once for all the chunks of
 * a call: fresh memory costs its page faults and zeroing on first touch (perf: 4-5% of a 256M
 * page's time in the kernel zeroing pages; 21 tiles take 727 MB), which a call of many chunks
 * (a batch of pages) paid for every chunk. Every op writes all of its output before anything
 * reads it, so what an earlier chunk left never reaches a result. */
typedef struct {
    float *patches; /* [T*P, 3*p*p] */
    float *h;       /* [T*P, Dv] residual stream */
    float *xn;      /* [T*P, Dv] */
    float *q;       /* [T*P, Dv]; later the pixel-shuffled [T*S_tok, Dv*s*s] */
    float *k, *v;   /* [T*P, Dv] */
    float *attn;    /* [T*P, Dv] */
    float *mlp;     /* [T*P, Iv] */
} VisionBufs;

static gboolean vision_bufs_alloc(Smolvlm *m, VisionBufs *b, int tiles, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    size_t n = (size_t)tiles * c->num_patches, Dv = c->vision_hidden;
    size_t F = (size_t)c->vision_channels * c->patch_size * c->patch_size;
    float **bufs[] = {&b->patches, &b->h, &b->xn, &b->q, &b->k, &b->v, &b->attn, &b->mlp};
    const size_t sizes[] = {n * F,  n * Dv, n * Dv, n * Dv,
                            n * Dv, n * Dv, n * Dv, n * c->vision_intermediate};
    return alloc_many(m->be, err, G_N_ELEMENTS(bufs), bufs, sizes);
}

static void vision_bufs_free(Smolvlm *m, VisionBufs *b) {
    float *bufs[] = {b->patches, b->h, b->xn, b->q, b->k, b->v, b->attn, b->mlp};
    for (size_t i = 0; i < G_N_ELEMENTS(bufs); i++)
        m->be->release(m->be, bufs[i]);
}

static void encode_chunk(Smolvlm *m, const VisionBufs *b, const float *px, int T, int tile0,
                         float *features) {
    const SmolvlmConfig *c = &m->cfg;
    DqBackend *be = m->be;
    int P = c->num_patches, Dv = c->vision_hidden, Iv = c->vision_intermediate;
    int heads = c->vision_heads, hd = Dv / heads, s = c->scale_factor;
    int n = T * P; /* rows: every patch of every tile */
    float *patches = b->patches, *h = b->h, *xn = b->xn, *q = b->q, *k = b->k, *v = b->v;
    float *attn = b->attn, *mlp = b->mlp;

    /* Patch conv as a GEMM (with 384/14 the last 6 pixel rows/cols are never read), then
     * position embeddings (a full tile's bucketed ids, see smolvlm_vision_position_ids). */
    be->patchify(be, patches, px, T, c->vision_channels, c->image_size, c->patch_size);
    tile_matmul(be, h, patches, &m->patch_w, &m->patch_b, T, P);
    be->add_broadcast(be, h, &m->pos_full, T);
    trace(m, "vision_patch_embeds", tile0, h, n, Dv);

    DqAttention att = {
        .n_seq = T,
        .n_q = P,
        .n_kv = P,
        .n_heads = heads,
        .n_kv_heads = heads,
        .head_dim = hd,
        .q_stride = Dv,
        .kv_stride = Dv,
        .q_seq_stride = (size_t)P * Dv,
        .kv_seq_stride = (size_t)P * Dv,
        .causal = FALSE,
        .scale = 1.0f / sqrtf((float)hd),
        .bf16_products = m->weights == BIND_BF16,
    };
    float eps = (float)c->vision_layer_norm_eps;
    for (int l = 0; l < c->vision_layers; l++) {
        const VisionLayer *L = &m->vl[l];
        /* h += out_proj(attention(LN1(h))), each tile on its own */
        be->layernorm(be, xn, h, &L->ln1_w, &L->ln1_b, n, Dv, eps);
        const DqWeight *qkv_w[3] = {&L->q_w, &L->k_w, &L->v_w},
                       *qkv_b[3] = {&L->q_b, &L->k_b, &L->v_b};
        int rows, calls = tile_calls(be, T, P, &rows);
        for (int t = 0; t < calls; t++) {
            const size_t o = (size_t)t * rows * Dv; /* the call's first row, in q, k, v and xn */
            float *qkv[3] = {q + o, k + o, v + o};
            dq_matmul_many(be, qkv, xn + o, qkv_w, qkv_b, 3, rows);
        }
        be->attention(be, attn, q, k, v, &att);
        tile_product(be, h, attn, &L->o_w, &L->o_b, T, P, xn);
        /* h += fc2(act(fc1(LN2(h)))); fc1's output in mlp, xn the scratch once read. The tanh
         * GELU, SmolVLM's, may be fused into the products; any other activation is an op of its
         * own. */
        be->layernorm(be, xn, h, &L->ln2_w, &L->ln2_b, n, Dv, eps);
        for (int t = 0; t < calls; t++) {
            const size_t o = (size_t)t * rows * Dv;
            float *hidden = mlp + (size_t)t * rows * Iv;
            if (c->vision_act != DQ_ACT_GELU_TANH) {
                be->matmul(be, hidden, xn + o, &L->fc1_w, &L->fc1_b, rows);
                be->act(be, hidden, (size_t)rows * Iv, c->vision_act);
                dq_matmul_add(be, h + o, hidden, &L->fc2_w, &L->fc2_b, rows, xn + o);
            } else {
                dq_mlp_gelu_add(be, h + o, xn + o, &L->fc1_w, &L->fc1_b, &L->fc2_w, &L->fc2_b, rows,
                                hidden, xn + o);
            }
        }
    }
    be->layernorm(be, xn, h, &m->post_ln_w, &m->post_ln_b, n, Dv, eps);
    trace(m, "vision_last_hidden", tile0, xn, n, Dv);

    /* Connector: pixel shuffle [T, P, Dv] -> [T, S_tok, Dv*s*s] (into q), then proj. */
    be->pixel_shuffle(be, q, xn, T, c->patches_per_side, Dv, s);
    tile_matmul(be, features, q, &m->proj, NULL, T, c->tokens_per_tile);
}

/* Identical tiles by their hashes (computed with the tiles, off this path), confirmed byte for
 * byte with their tables: a hash only ever decides which tiles are compared. Hashing here, before
 * the vision encoder could start, cost ~0.2 ms a 512-pixel float32 tile (3 MB), ~0.3 s for a
 * GPU's batch of 64 pages, and sampling first still read a line in 32 of every tile. */
static gboolean same_tile(const DqPixelTile *a, const DqPixelTile *b, int channels, size_t bytes) {
    return (a->lut == b->lut || memcmp(a->lut, b->lut, sizeof(float) * 256 * channels) == 0) &&
           memcmp(a->bytes, b->bytes, bytes) == 0;
}

/* tiles[t] -> its first identical tile; returns the number of distinct tiles.
 *
 * The comparisons are the cost: a GPU's batch of 64 pages holds hundreds of copies of blank
 * tiles, 786 KB each at 512 pixels, and nothing is queued on the GPU while they are compared
 * (~45 ms a batch on one core). So each tile is first compared, on every core, with the first
 * tile of its hash; only a tile that differs from it (a collision, or the same bytes under
 * another table) then walks, in tile order, the other distinct tiles of its hash. That gives
 * what comparing tile after tile in order would. */
static int find_duplicates(const DqPixelTile *tiles, int n_tiles, int channels, size_t tile_bytes,
                           int *first) {
    /* hash -> 1 + the first distinct tile with it; next[t]: the next distinct tile with t's */
    GHashTable *heads = g_hash_table_new(g_int64_hash, g_int64_equal);
    int *next = g_new(int, MAX(n_tiles, 1));
    int *cand = g_new(int, MAX(n_tiles, 1)); /* tiles whose hash an earlier tile has */
    int n_cand = 0;
    for (int t = 0; t < n_tiles; t++) {
        next[t] = -1;
        first[t] = GPOINTER_TO_INT(g_hash_table_lookup(heads, &tiles[t].hash)) - 1;
        if (first[t] >= 0)
            cand[n_cand++] = t;
        else
            g_hash_table_insert(heads, (gpointer)&tiles[t].hash, GINT_TO_POINTER(t + 1));
    }
    g_hash_table_destroy(heads);
    /* first[t] of a candidate: its hash's first tile, kept where they are the same (else -1) */
#pragma omp parallel for schedule(dynamic, 2) if (n_cand >= 8)
    for (int i = 0; i < n_cand; i++) {
        int t = cand[i];
        if (!same_tile(&tiles[first[t]], &tiles[t], channels, tile_bytes))
            first[t] = -1 - first[t];
    }
    int distinct = n_tiles - n_cand, c = 0;
    for (int t = 0; t < n_tiles; t++) {
        if (c < n_cand && cand[c] == t)
            c++;
        else
            first[t] = t; /* the first of its hash */
        if (first[t] >= 0)
            continue;
        int head = -1 - first[t], last = head;
        first[t] = t;
        for (int u = next[head]; u >= 0 && first[t] == t; last = u, u = next[u])
            if (same_tile(&tiles[u], &tiles[t], channels, tile_bytes))
                first[t] = u;
        if (first[t] == t) {
            next[last] = t;
            distinct++;
        }
    }
    g_free(cand);
    g_free(next);
    return distinct;
}

static gboolean encode_distinct(Smolvlm *m, const DqPixelTile *tiles, int n_tiles, float *features,
                                GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    DqBackend *be = m->be;
    int chunk =
        MIN(n_tiles, be->vision_tile_chunk > 0 ? be->vision_tile_chunk : DQ_VISION_TILE_CHUNK);
    float *px =
        be->alloc(be, dq_pixel_buffer_floats(MAX(chunk, 1), c->vision_channels, c->image_size));
    if (px == NULL)
        return !alloc_failed_on_device(be, err) &&
               dq_fail(err, DQ_ERR_LIMIT, "out of memory for %d tiles", chunk);
    VisionBufs bufs;
    if (!vision_bufs_alloc(m, &bufs, MAX(chunk, 1), err)) {
        be->release(be, px);
        return FALSE;
    }
    for (int t0 = 0; t0 < n_tiles; t0 += chunk) {
        int T = MIN(chunk, n_tiles - t0);
        dq_upload_pixels(be, px, tiles + t0, T, c->vision_channels, c->image_size);
        encode_chunk(m, &bufs, px, T, t0,
                     features + (size_t)t0 * c->tokens_per_tile * c->text_hidden);
    }
    vision_bufs_free(m, &bufs);
    be->release(be, px);
    return TRUE;
}

/* Identical tiles (the blank margins of a page, a repeated letterhead) go through the encoder
 * once: a tile's features depend on its pixels alone, so the copies are what encoding them
 * again would give. */
gboolean smolvlm_encode_tiles(Smolvlm *m, const DqPixelTile *tiles, int n_tiles, float *features,
                              int *n_distinct, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    DqBackend *be = m->be;
    size_t tile_bytes = (size_t)c->vision_channels * c->image_size * c->image_size;
    size_t feat_floats = (size_t)c->tokens_per_tile * c->text_hidden;
    int *first = g_new(int, MAX(n_tiles, 1));
    /* (Traces number the tiles they dump: keep every tile when tracing.) */
    int distinct = m->trace != NULL
                       ? n_tiles
                       : find_duplicates(tiles, n_tiles, c->vision_channels, tile_bytes, first);
    gboolean ok;
    if (distinct == n_tiles) {
        ok = encode_distinct(m, tiles, n_tiles, features, err);
    } else {
        DqPixelTile *uniq = g_new(DqPixelTile, distinct);
        int *slot = g_new(int, n_tiles); /* tile -> its row in the distinct features */
        for (int t = 0, u = 0; t < n_tiles; t++) {
            if (first[t] == t) {
                slot[t] = u;
                uniq[u++] = tiles[t];
            } else {
                slot[t] = slot[first[t]];
            }
        }
        float *uf = be->alloc(be, (size_t)distinct * feat_floats);
        ok = uf != NULL
                 ? encode_distinct(m, uniq, distinct, uf, err)
                 : !alloc_failed_on_device(be, err) &&
                       dq_fail(err, DQ_ERR_LIMIT, "out of memory for %d tiles' features", distinct);
        /* A copy a run of tiles whose rows follow each other in uf too (a page's distinct
         * tiles): a launch each on a GPU, where a batch of 64 pages has 1344 tiles. */
        for (int t = 0; ok && t < n_tiles;) {
            int run = 1;
            while (t + run < n_tiles && slot[t + run] == slot[t] + run)
                run++;
            be->copy(be, features + (size_t)t * feat_floats, uf + (size_t)slot[t] * feat_floats,
                     (size_t)run * feat_floats);
            t += run;
        }
        if (uf != NULL)
            be->release(be, uf);
        g_free(uniq);
        g_free(slot);
    }
    g_free(first);
    if (n_distinct != NULL)
        *n_distinct = distinct;
    if (ok)
        trace(m, "image_features", -1, features, n_tiles * c->tokens_per_tile, c->text_hidden);
    return ok;
}

/* ---- decoder */

/* Values a cache of `capacity` positions holds, each layer's keys (or values) [capacity, kvd]. */
static size_t kv_values(const Smolvlm *m, int capacity) {
    const SmolvlmConfig *c = &m->cfg;
    return (size_t)c->text_layers * capacity * c->text_kv_heads * c->head_dim;
}

SmolvlmKV *smolvlm_kv_new(Smolvlm *m, int capacity, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    if (capacity <= 0 || capacity > c->max_position_embeddings) {
        dq_fail(err, DQ_ERR_LIMIT,
                "%s: a sequence of %d positions exceeds max_position_embeddings %d", m->dir,
                capacity, c->max_position_embeddings);
        return NULL;
    }
    SmolvlmKV *kv = g_new0(SmolvlmKV, 1);
    kv->capacity = capacity;
    size_t values = kv_values(m, capacity);
    size_t n = m->kv_f16 ? (values + 1) / 2 : values; /* floats to allocate */
    kv->k = m->be->alloc(m->be, n);
    kv->v = m->be->alloc(m->be, n);
    if (kv->k == NULL || kv->v == NULL) {
        smolvlm_kv_free(m, kv);
        if (!alloc_failed_on_device(m->be, err))
            dq_fail(
                err, DQ_ERR_LIMIT,
                "%s: out of %s memory for a KV cache of %d positions (%.1f MiB: 2 x %zu floats)",
                m->dir, m->be->name, capacity, 2.0 * (double)n * sizeof(float) / 1048576.0, n);
        return NULL;
    }
    return kv;
}

/* Layer l's part of a cache: [capacity, kvd] values of 4 or 2 bytes. */
static float *kv_cache_layer(const Smolvlm *m, float *cache, const SmolvlmKV *kv, int l, int kvd) {
    size_t at = (size_t)l * kv->capacity * kvd;
    return m->kv_f16 ? (float *)(void *)((uint16_t *)(void *)cache + at) : cache + at;
}

void smolvlm_kv_free(Smolvlm *m, SmolvlmKV *kv) {
    if (kv == NULL)
        return;
    if (kv->k != NULL)
        m->be->release(m->be, kv->k);
    if (kv->v != NULL)
        m->be->release(m->be, kv->v);
    g_free(kv);
}

int smolvlm_kv_len(const SmolvlmKV *kv) {
    return kv->len;
}

void smolvlm_kv_truncate(SmolvlmKV *kv, int len) {
    kv->len = CLAMP(len, 0, kv->len);
}

size_t smolvlm_kv_bytes(const Smolvlm *m, int capacity) {
    return 2 * kv_values(m, capacity) * (m->kv_f16 ? sizeof(uint16_t) : sizeof(float));
}

gboolean smolvlm_kv_copy_prefix(Smolvlm *m, SmolvlmKV *dst, const SmolvlmKV *src, int rows,
                                GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    int kvd = c->text_kv_heads * c->head_dim;
    if (rows < 0 || rows > src->len || rows > dst->capacity)
        return dq_fail(err, DQ_ERR_ARGS,
                       "KV copy: %d positions from a cache of %d into one of capacity %d", rows,
                       src->len, dst->capacity);
    /* float16 caches are copied as float pairs: a layer's part starts at an even value */
    if (m->kv_f16 && ((size_t)rows * kvd % 2 != 0 || (size_t)kvd % 2 != 0))
        return dq_fail(err, DQ_ERR_ARGS, "KV copy: float16 rows of %d values", kvd);
    size_t n = (size_t)rows * kvd; /* values a layer */
    size_t floats = m->kv_f16 ? n / 2 : n;
    for (int l = 0; l < c->text_layers && n > 0; l++) {
        m->be->copy(m->be, kv_cache_layer(m, dst->k, dst, l, kvd),
                    kv_cache_layer(m, src->k, src, l, kvd), floats);
        m->be->copy(m->be, kv_cache_layer(m, dst->v, dst, l, kvd),
                    kv_cache_layer(m, src->v, src, l, kvd), floats);
    }
    dst->len = rows;
    return TRUE;
}

void smolvlm_workspace_free(Smolvlm *m, SmolvlmWorkspace *ws) {
    if (ws == NULL)
        return;
    float *bufs[] = {ws->x,    ws->xn,   ws->q,  ws->k,    ws->v,
                     ws->attn, ws->gate, ws->up, ws->last, ws->logits};
    for (size_t i = 0; i < G_N_ELEMENTS(bufs); i++)
        if (bufs[i] != NULL)
            m->be->release(m->be, bufs[i]);
    g_free(ws->pos);
    g_free(ws->att_segs);
    g_free(ws->want);
    g_free(ws);
}

SmolvlmWorkspace *smolvlm_workspace_new(Smolvlm *m, int max_rows, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    SmolvlmWorkspace *ws = g_new0(SmolvlmWorkspace, 1);
    ws->max_rows = max_rows;
    ws->logit_rows = logit_rows_for(m->be);
    size_t R = (size_t)MAX(max_rows, 1);
    size_t qd = (size_t)c->text_heads * c->head_dim, kvd = (size_t)c->text_kv_heads * c->head_dim;
    float **bufs[] = {&ws->x,    &ws->xn,   &ws->q,  &ws->k,    &ws->v,
                      &ws->attn, &ws->gate, &ws->up, &ws->last, &ws->logits};
    const size_t sizes[] = {R * c->text_hidden,
                            R * c->text_hidden,
                            R * qd,
                            R * kvd,
                            R * kvd,
                            R * qd,
                            R * c->text_intermediate,
                            R * c->text_intermediate,
                            R * c->text_hidden,
                            (size_t)ws->logit_rows * c->vocab_size};
    if (!alloc_many(m->be, err, G_N_ELEMENTS(bufs), bufs, sizes)) {
        g_free(ws);
        return NULL;
    }
    ws->pos = g_new0(int32_t, R);
    ws->att_segs = g_new0(DqAttnSegment, R);
    ws->want = g_new0(LogitRow, R);
    return ws;
}

gboolean smolvlm_embed(Smolvlm *m, SmolvlmWorkspace *ws, int row0, const int32_t *ids, int n,
                       const float *features, int n_features, int *cursor, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    DqBackend *be = m->be;
    int Dt = c->text_hidden;
    if (row0 < 0 || n < 0 || row0 + n > ws->max_rows)
        return dq_fail(err, DQ_ERR_ARGS, "embed: rows %d..%d outside the workspace (%d)", row0,
                       row0 + n, ws->max_rows);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return dq_fail(err, DQ_ERR_ARGS,
                           "input id %d at position %d is outside the "
                           "vocabulary (%d)",
                           ids[i], i, c->vocab_size);
    float *x = ws->x + (size_t)row0 * Dt; /* [n, Dt] */
    /* Runs of text ids go through embed_tokens; each <image> id takes the next feature row
     * (masked_scatter order: all tiles of all images in prompt order). */
    const int32_t image_id = features != NULL ? c->image_token_id : -1;
    for (int i = 0; i < n;) {
        int j = i;
        gboolean image = ids[i] == image_id;
        while (j < n && (ids[j] == image_id) == image)
            j++;
        if (image) {
            if (*cursor + (j - i) > n_features)
                return dq_fail(err, DQ_ERR_ARGS,
                               "the prompt has more <image> tokens than the images give "
                               "features (%d)",
                               n_features);
            be->copy(be, x + (size_t)i * Dt, features + (size_t)*cursor * Dt, (size_t)(j - i) * Dt);
            *cursor += j - i;
        } else {
            be->embed(be, x + (size_t)i * Dt, &m->embed, ids + i, j - i);
        }
        i = j;
    }
    return TRUE;
}

/* y = x . w^T for each segment's rows separately: a request's products then have the same
 * shapes whether it runs alone or beside others, so its results are bit-identical either way
 * (OpenBLAS's sgemm rounding depends on the row count). Prompts are long, so the GEMMs stay
 * large; decode rows are one a segment and go through GEMV anyway. */
/* ys[i] = x . ws[i]^T + bs[i] for count (<= SEG_PRODUCTS_MAX) weights of x's width
 * (dq_matmul_many; bs[i] NULL: no bias); scratch (count 1, y's size): y += the product instead
 * (dq_matmul_add: the residual add). */
#define SEG_PRODUCTS_MAX 3
static void seg_products(DqBackend *be, const SmolvlmSegment *segs, int n_segs, float *const *ys,
                         const float *x, const DqWeight *const *ws, const DqWeight *const *bs,
                         int count, float *scratch) {
    const DqWeight *w = ws[0]; /* the weights share their width (x's) */
    /* Runs of segments go into one call where the backend promises it changes nothing
     * (backend.h): consecutive short segments (the decode step's rows) up to `inv` rows in all,
     * consecutive long ones (prompts) of at least `from` rows each, any number. */
    int inv = be->matmul_row_invariant_max, from = be->matmul_row_invariant_min;
    int share = 0; /* rows a call in the current run of short segments aims at */
    for (int s = 0, r = 0; s < n_segs;) {
        int rows = segs[s].n_rows, e = s + 1;
        if (rows <= inv && share == 0) {
            /* A run of short segments goes in as few calls as `inv` allows, of even sizes: 64
             * decode rows under a bound of 63 as 32 + 32, not 63 + 1, whose 1-row call costs
             * a whole pass over the weight. */
            int run = 0;
            for (int t = s; t < n_segs && segs[t].n_rows <= inv; t++)
                run += segs[t].n_rows;
            int calls = (run + inv - 1) / inv;
            share = (run + calls - 1) / calls;
        }
        if (rows <= inv) {
            while (e < n_segs && segs[e].n_rows <= inv && rows + segs[e].n_rows <= share)
                rows += segs[e++].n_rows;
            if (e == n_segs || segs[e].n_rows > inv)
                share = 0; /* the run ends here */
        } else if (from > 0 && rows >= from)
            while (e < n_segs && segs[e].n_rows >= from)
                rows += segs[e++].n_rows;
        const float *xr = x + (size_t)r * w->cols;
        float *yr[SEG_PRODUCTS_MAX];
        for (int i = 0; i < count; i++)
            yr[i] = ys[i] + (size_t)r * ws[i]->rows;
        if (scratch != NULL)
            dq_matmul_add(be, yr[0], xr, w, bs[0], rows, scratch + (size_t)r * w->rows);
        else if (count == 1)
            be->matmul(be, yr[0], xr, w, bs[0], rows);
        else
            dq_matmul_many(be, yr, xr, ws, bs, count, rows);
        r += rows;
        s = e;
    }
}

static void seg_product(DqBackend *be, const SmolvlmSegment *segs, int n_segs, float *y,
                        const float *x, const DqWeight *w, const DqWeight *b, float *scratch) {
    seg_products(be, segs, n_segs, &y, x, &w, &b, 1, scratch);
}

/* A layer's bias as the ops take it: NULL when the config has none. */
static const DqWeight *bias_of(const DqWeight *b) {
    return b->data != NULL ? b : NULL;
}

int smolvlm_steps_max(const Smolvlm *m) {
    return m->be->matmul_row_invariant_max;
}

int smolvlm_prompt_split_min(const Smolvlm *m) {
    const SmolvlmConfig *c = &m->cfg;
    if (m->be->prompt_split_min == NULL)
        return 0;
    DqAttention shape = {.n_heads = c->text_heads,
                         .n_kv_heads = c->text_kv_heads,
                         .head_dim = c->head_dim,
                         .kv_f16 = m->kv_f16,
                         .bf16_products = m->weights == BIND_BF16};
    return MAX(m->be->prompt_split_min(m->be, &shape), 0);
}

gboolean smolvlm_has_draft(const Smolvlm *m) {
    return m->draft_tl != NULL;
}

/* lm_head over up to ws->logit_rows chosen rows of xn: w[i] = (row, and its host destination:
 * logits, or the token argmax_rows picks). */
static void logits_out(Smolvlm *m, SmolvlmWorkspace *ws, const float *xn, const DqWeight *lm_head,
                       const LogitRow *w, int n) {
    DqBackend *be = m->be;
    const size_t V = (size_t)m->cfg.vocab_size, Dt = (size_t)m->cfg.text_hidden;
    g_assert(n <= ws->logit_rows);
    if (n == 0)
        return;
    /* Rows next to each other in one copy: a decode step's rows are all of xn. */
    for (int i = 0, j; i < n; i = j) {
        for (j = i + 1; j < n && w[j].row == w[i].row + (j - i);)
            j++;
        be->copy(be, ws->last + (size_t)i * Dt, xn + (size_t)w[i].row * Dt, (size_t)(j - i) * Dt);
    }
    be->matmul(be, ws->logits, ws->last, lm_head, NULL, n); /* [n, V] */
    /* One download (or argmax_rows) per run of destinations side by side (the generator's
     * slots): each waits for the device, and a 64-page step had 64. Straight into them: a
     * recorded step fills its downloads' destinations only when it is replayed. */
    for (int i = 0, j; i < n; i = j) {
        if (w[i].dst != NULL) {
            for (j = i + 1; j < n && w[j].dst == w[i].dst + (size_t)(j - i) * V;)
                j++;
            be->download(be, w[i].dst, ws->logits + (size_t)i * V, (size_t)(j - i) * V);
        } else {
            for (j = i + 1; j < n && w[j].dst == NULL && w[j].token == w[i].token + (j - i);)
                j++;
            be->argmax_rows(be, w[i].token, ws->logits + (size_t)i * V, j - i, (int)V);
        }
    }
}

/* Checks that each segment's rows fit its cache (and, as steps, the backend) and sets their
 * positions. The rows of the call in all, or -1 with err set. */
static int forward_rows(Smolvlm *m, SmolvlmWorkspace *ws, const SmolvlmSegment *segs, int n_segs,
                        GError **err) {
    const int Dt = m->cfg.text_hidden;
    int n = 0; /* rows in this call */
    for (int s = 0; s < n_segs; s++) {
        const SmolvlmKV *kv = segs[s].kv;
        if (segs[s].n_rows <= 0 || kv->len + segs[s].n_rows > kv->capacity) {
            dq_fail(err, DQ_ERR_LIMIT,
                    "segment %d: %d new rows do not fit its KV cache "
                    "(%d of %d used)",
                    s, segs[s].n_rows, kv->len, kv->capacity);
            return -1;
        }
        if (segs[s].steps && segs[s].n_rows > MAX(1, smolvlm_steps_max(m))) {
            dq_fail(err, DQ_ERR_ARGS,
                    "segment %d: %d rows computed as steps, the backend keeps at most %d "
                    "rows row-invariant",
                    s, segs[s].n_rows, smolvlm_steps_max(m));
            return -1;
        }
        for (int i = 0; i < segs[s].n_rows; i++)
            ws->pos[n + i] = kv->len + i; /* positions simply continue (pitfall 29) */
        if (m->trace != NULL)
            trace(m, "inputs_embeds", s, ws->x + (size_t)n * Dt, segs[s].n_rows, Dt);
        n += segs[s].n_rows;
    }
    if (n > ws->max_rows) {
        dq_fail(err, DQ_ERR_ARGS, "forward: %d rows exceed the workspace (%d)", n, ws->max_rows);
        return -1;
    }
    return n;
}

/* Layer l's attention segments in ws->att_segs; returns how many. A steps segment's rows
 * attend as one-row segments would, one after another: so marked where the backend takes that,
 * else as such segments. */
static int attention_segments(const Smolvlm *m, SmolvlmWorkspace *ws, const SmolvlmSegment *segs,
                              int n_segs, int l, int kvd) {
    int n_att = 0;
    for (int s = 0, r = 0; s < n_segs; r += segs[s].n_rows, s++) {
        const SmolvlmKV *kv = segs[s].kv;
        DqAttnSegment g = {.k_cache = kv_cache_layer(m, kv->k, kv, l, kvd),
                           .v_cache = kv_cache_layer(m, kv->v, kv, l, kvd),
                           .row0 = r,
                           .n_q = segs[s].n_rows,
                           .n_past = kv->len};
        if (!segs[s].steps || m->be->attention_steps) {
            g.steps = segs[s].steps;
            ws->att_segs[n_att++] = g;
            continue;
        }
        for (int i = 0; i < segs[s].n_rows; i++, g.row0++, g.n_past++) {
            g.n_q = 1;
            ws->att_segs[n_att++] = g;
        }
    }
    return n_att;
}

/* Decoder layer l over the call's n rows of ws->x: `L` its products' weights (the model's or
 * the draft's), `N` the model's layer. */
static void text_layer(Smolvlm *m, SmolvlmWorkspace *ws, const SmolvlmSegment *segs, int n_segs,
                       int n, int l, const TextLayer *L, const TextLayer *N,
                       const DqAttention *att) {
    const SmolvlmConfig *c = &m->cfg;
    DqBackend *be = m->be;
    const int Dt = c->text_hidden, It = c->text_intermediate, hd = c->head_dim;
    const int H = c->text_heads, Hkv = c->text_kv_heads;
    const float eps = (float)c->rms_norm_eps;
    float *x = ws->x;       /* [n, Dt] residual stream */
    float *xn = ws->xn;     /* [n, Dt] */
    float *q = ws->q;       /* [n, H*hd] */
    float *k = ws->k;       /* [n, Hkv*hd] */
    float *v = ws->v;       /* [n, Hkv*hd] */
    float *attn = ws->attn; /* [n, H*hd] */
    float *gate = ws->gate; /* [n, It] */
    float *up = ws->up;     /* [n, It] */
    /* x += o_proj(causal GQA attention(rope(q), rope(k), v)) of RMSNorm(x) */
    be->rmsnorm(be, xn, x, &N->in_norm, n, Dt, eps);
    float *qkv[3] = {q, k, v};
    const DqWeight *qkv_w[3] = {&L->q_w, &L->k_w, &L->v_w};
    const DqWeight *qkv_b[3] = {bias_of(&N->q_b), bias_of(&N->k_b), bias_of(&N->v_b)};
    seg_products(be, segs, n_segs, qkv, xn, qkv_w, qkv_b, 3, NULL);
    be->rope(be, q, ws->pos, n, H, hd, &m->rope);
    be->rope(be, k, ws->pos, n, Hkv, hd, &m->rope);
    int n_att = attention_segments(m, ws, segs, n_segs, l, Hkv * hd);
    dq_attention_segments(be, attn, q, k, v, ws->att_segs, n_att, att);
    seg_product(be, segs, n_segs, x, attn, &L->o_w, bias_of(&N->o_b), xn);
    /* x += down(act(gate(RMSNorm(x))) * up(RMSNorm(x))); SiLU, SmolVLM's, and tanh's GELU
     * take their fast paths */
    be->rmsnorm(be, xn, x, &N->post_norm, n, Dt, eps);
    float *gate_up[2] = {gate, up};
    const DqWeight *gate_up_w[2] = {&L->gate_w, &L->up_w};
    const DqWeight *gate_up_b[2] = {bias_of(&N->gate_b), bias_of(&N->up_b)};
    seg_products(be, segs, n_segs, gate_up, xn, gate_up_w, gate_up_b, 2, NULL);
    if (c->text_act == DQ_ACT_SILU) {
        be->silu_mul(be, gate, up, (size_t)n * It);
    } else {
        if (c->text_act == DQ_ACT_GELU_TANH)
            be->gelu_tanh(be, gate, (size_t)n * It);
        else
            be->act(be, gate, (size_t)n * It, c->text_act);
        be->mul(be, gate, up, (size_t)n * It);
    }
    seg_product(be, segs, n_segs, x, gate, &L->down_w, bias_of(&N->down_b), xn);
}

/* lm_head on the last row of each segment that wants logits (every row of a steps
 * segment); returns how many rows it gave. */
static int segment_logits(Smolvlm *m, SmolvlmWorkspace *ws, const SmolvlmSegment *segs, int n_segs,
                          const float *xn, const DqWeight *lm_head) {
    const int Dt = m->cfg.text_hidden;
    const size_t V = (size_t)m->cfg.vocab_size;
    LogitRow *want = ws->want;
    int n_want = 0;
    for (int s = 0, r = 0; s < n_segs; r += segs[s].n_rows, s++) {
        if (m->trace != NULL)
            trace(m, "decoder_last_hidden", s, xn + (size_t)r * Dt, segs[s].n_rows, Dt);
        if (segs[s].logits == NULL && segs[s].token == NULL)
            continue;
        int first = segs[s].steps ? 0 : segs[s].n_rows - 1;
        for (int i = first; i < segs[s].n_rows; i++)
            want[n_want++] = segs[s].logits != NULL
                                 ? (LogitRow){r + i, segs[s].logits + (size_t)(i - first) * V, NULL}
                                 : (LogitRow){r + i, NULL, segs[s].token + (i - first)};
    }
    /* in products of even sizes: 64 rows under a bound of 63 as 32 + 32, not 63 + 1 */
    const int chunks = (n_want + ws->logit_rows - 1) / ws->logit_rows;
    for (int ch = 0, done = 0; ch < chunks; ch++) {
        int take = (n_want - done) / (chunks - ch);
        logits_out(m, ws, xn, lm_head, want + done, take);
        done += take;
    }
    return n_want;
}

static gboolean forward(Smolvlm *m, SmolvlmWorkspace *ws, const SmolvlmSegment *segs, int n_segs,
                        gboolean draft, GError **err) {
    const SmolvlmConfig *c = &m->cfg;
    DqBackend *be = m->be;
    int hd = c->head_dim, H = c->text_heads, Hkv = c->text_kv_heads;
    int n = forward_rows(m, ws, segs, n_segs, err); /* rows in this call */
    if (n < 0)
        return FALSE;
    DqAttention att = {.n_seq = 1,
                       .n_heads = H,
                       .n_kv_heads = Hkv,
                       .head_dim = hd,
                       .q_stride = H * hd,
                       .kv_stride = Hkv * hd,
                       .causal = TRUE,
                       .scale = 1.0f / sqrtf((float)hd),
                       .kv_f16 = m->kv_f16,
                       .bf16_products = m->weights == BIND_BF16};
    if (draft && m->draft_tl == NULL)
        return dq_fail(err, DQ_ERR_ARGS, "%s: the model was opened without a draft", m->dir);
    const TextLayer *layers = draft ? m->draft_tl : m->tl;
    for (int l = 0; l < c->text_layers; l++)
        /* the norms and biases are the model's: the draft has none of its own */
        text_layer(m, ws, segs, n_segs, n, l, &layers[l], &m->tl[l], &att);
    be->rmsnorm(be, ws->xn, ws->x, &m->norm, n, c->text_hidden, (float)c->rms_norm_eps);
    int n_want =
        segment_logits(m, ws, segs, n_segs, ws->xn, draft ? &m->draft_lm_head : m->lm_head);
    for (int s = 0; s < n_segs; s++)
        segs[s].kv->len += segs[s].n_rows;
    /* Ops return nothing and a GPU keeps its first error, after which it gives zeros: results
     * that came back (their downloads waited for the device) are the model's only without one. */
    return n_want == 0 || dq_backend_cuda_check(be, err);
}

gboolean smolvlm_forward(Smolvlm *m, SmolvlmWorkspace *ws, const SmolvlmSegment *segs, int n_segs,
                         GError **err) {
    return forward(m, ws, segs, n_segs, FALSE, err);
}

gboolean smolvlm_forward_draft(Smolvlm *m, SmolvlmWorkspace *ws, const SmolvlmSegment *segs,
                               int n_segs, GError **err) {
    return forward(m, ws, segs, n_segs, TRUE, err);
}

gboolean smolvlm_forward_step(Smolvlm *m, SmolvlmWorkspace *ws, const SmolvlmSegment *segs,
                              int n_segs, GError **err) {
    DqBackend *be = m->be;
    if (be->graph_begin == NULL || be->graph_end == NULL || m->trace != NULL || n_segs <= 0)
        return smolvlm_forward(m, ws, segs, n_segs, err);
    /* The recorded ops depend on the number of attention segments (a steps segment's rows are
     * one each) and of rows (the merged matmuls, one download a logits row); the KV lengths and
     * buffers are mere arguments, updated in place from step to step. */
    int rows = 0, n_logits = 0, n_att = 0, n_tokens = 0;
    int *lens = g_new(int, n_segs);
    for (int s = 0; s < n_segs; s++) {
        rows += segs[s].n_rows;
        n_att += segs[s].steps ? segs[s].n_rows : 1;
        n_logits += segs[s].logits == NULL && segs[s].token == NULL ? 0
                    : segs[s].steps                                 ? segs[s].n_rows
                                                                    : 1;
        if (segs[s].logits == NULL && segs[s].token != NULL)
            n_tokens += segs[s].steps ? segs[s].n_rows : 1;
        lens[s] = segs[s].kv->len;
    }
    /* Tokens or logits, all of them: where the two kinds mix, their order would change the
     * recorded ops, so such a step (sampled and greedy requests together) runs plainly. */
    uint64_t key = (uint64_t)n_att | (uint64_t)rows << 24 | (uint64_t)n_logits << 48 |
                   (uint64_t)(n_tokens > 0) << 63;
    gboolean ok;
    if ((n_tokens > 0 && n_tokens < n_logits) || !be->graph_begin(be, key)) {
        ok = smolvlm_forward(m, ws, segs, n_segs, err);
    } else {
        ok = smolvlm_forward(m, ws, segs, n_segs, err);
        /* On a failed forward (bad arguments: nothing was recorded) the recording is dropped.
         * A failed recording ran nothing, so the workspace still holds the step's inputs: only
         * the KV lengths, which forward advanced on the host, are put back before the redo. */
        if (!be->graph_end(be, ok) && ok) {
            for (int s = 0; s < n_segs; s++)
                segs[s].kv->len = lens[s];
            ok = smolvlm_forward(m, ws, segs, n_segs, err);
        }
    }
    g_free(lens);
    return ok && dq_backend_cuda_check(be, err); /* a replayed step's results came back now */
}
