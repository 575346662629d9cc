#include "config.h"

#include "dq_error.h"
#include "json_load.h"

#include <json-glib/json-glib.h>
#include <limits.h>
#include <math.h>
#include <string.h>

/* Member access with a default; a member of the wrong JSON type is an error, not a silent
 * default (a string "512" where a number belongs is a broken snapshot). */
typedef struct {
    const char *label; /* file name for messages */
    const char *scope; /* "text_config", ... */
    GError **err;
    gboolean failed;
} Reader;

static JsonNode *member(JsonObject *o, const char *key) {
    if (o == NULL || !json_object_has_member(o, key))
        return NULL;
    JsonNode *n = json_object_get_member(o, key);
    return JSON_NODE_HOLDS_NULL(n) ? NULL : n;
}

static void bad(Reader *r, const char *key, const char *what) {
    if (!r->failed)
        dq_fail(r->err, DQ_ERR_FORMAT, "%s: %s%s%s must be %s", r->label, r->scope ? r->scope : "",
                r->scope ? "." : "", key, what);
    r->failed = TRUE;
}

static int get_int(Reader *r, JsonObject *o, const char *key, int def) {
    JsonNode *n = member(o, key);
    if (n == NULL)
        return def;
    if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64) {
        gint64 v = json_node_get_int(n);
        if (v >= G_MININT && v <= G_MAXINT)
            return (int)v;
        bad(r, key, "a 32-bit integer");
        return def;
    }
    bad(r, key, "an integer");
    return def;
}

static double get_double(Reader *r, JsonObject *o, const char *key, double def) {
    JsonNode *n = member(o, key);
    if (n == NULL)
        return def;
    if (JSON_NODE_HOLDS_VALUE(n)) {
        GType t = json_node_get_value_type(n);
        if (t == G_TYPE_INT64)
            return (double)json_node_get_int(n);
        if (t == G_TYPE_DOUBLE)
            return json_node_get_double(n);
    }
    bad(r, key, "a number");
    return def;
}

static gboolean get_bool(Reader *r, JsonObject *o, const char *key, gboolean def) {
    JsonNode *n = member(o, key);
    if (n == NULL)
        return def;
    if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN)
        return json_node_get_boolean(n);
    bad(r, key, "true or false");
    return def;
}

static const char *get_string(Reader *r, JsonObject *o, const char *key, const char *def) {
    JsonNode *n = member(o, key);
    if (n == NULL)
        return def;
    if (JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING)
        return json_node_get_string(n);
    bad(r, key, "a string");
    return def;
}

static JsonObject *get_object(Reader *r, JsonObject *o, const char *key) {
    JsonNode *n = member(o, key);
    if (n == NULL)
        return NULL;
    if (JSON_NODE_HOLDS_OBJECT(n))
        return json_node_get_object(n);
    bad(r, key, "an object");
    return NULL;
}

/* eos_token_id is an int or a list of ints. */
static void get_eos(Reader *r, JsonObject *o, SmolvlmConfig *cfg) {
    JsonNode *n = member(o, "eos_token_id");
    if (n == NULL)
        return;
    if (JSON_NODE_HOLDS_ARRAY(n)) {
        JsonArray *a = json_node_get_array(n);
        guint len = json_array_get_length(a);
        if (len > DQ_MAX_EOS_IDS) {
            bad(r, "eos_token_id", "a list of at most 8 ids");
            return;
        }
        cfg->n_eos = 0;
        for (guint i = 0; i < len; i++) {
            JsonNode *e = json_array_get_element(a, i);
            if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_INT64) {
                bad(r, "eos_token_id", "an id or a list of ids");
                return;
            }
            /* As get_int: an id past 32 bits would wrap to another (maybe real) token. */
            gint64 id = json_node_get_int(e);
            if (id < G_MININT || id > G_MAXINT) {
                bad(r, "eos_token_id", "a list of 32-bit integers");
                return;
            }
            cfg->eos_ids[cfg->n_eos++] = (int)id;
        }
        return;
    }
    cfg->eos_ids[0] = get_int(r, o, "eos_token_id", -1);
    cfg->n_eos = 1;
}

/* transformers' ACT2CLS names (activations.py, 4.57.6) and what each computes; both towers take
 * any (Idefics3VisionMLP: fc2(act(fc1(x))); LlamaMLP: down(act(gate(x)) * up(x))). GELU's tanh
 * approximation 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))): gelu_pytorch_tanh and
 * gelu_python_tanh (GELUTanh, torch's kernel or the formula), gelu_new and gelu_accurate (the
 * formula, the same torch ops in the same order), gelu_fast (sqrt(2/pi) rounded to 0.7978845608:
 * a relative 4e-12). GELU itself: gelu and gelu_python (torch's kernel or the formula). gelu_10:
 * that GELU clipped to [-10, 10]. silu and swish: nn.SiLU. Left out: prelu (nn.PReLU) and xielu,
 * activations with learned parameters of their own (mlp.act_fn.weight, alpha_p, ...), which
 * docqa does not read. */
static const struct {
    const char *name;
    SmolvlmAct act;
} ACTIVATIONS[] = {
    {"gelu_pytorch_tanh", DQ_ACT_GELU_TANH},
    {"gelu_python_tanh", DQ_ACT_GELU_TANH},
    {"gelu_new", DQ_ACT_GELU_TANH},
    {"gelu_accurate", DQ_ACT_GELU_TANH},
    {"gelu_fast", DQ_ACT_GELU_TANH},
    {"gelu", DQ_ACT_GELU_ERF},
    {"gelu_python", DQ_ACT_GELU_ERF},
    {"gelu_10", DQ_ACT_GELU_10},
    {"silu", DQ_ACT_SILU},
    {"swish", DQ_ACT_SILU},
    {"quick_gelu", DQ_ACT_QUICK_GELU},
    {"relu", DQ_ACT_RELU},
    {"relu6", DQ_ACT_RELU6},
    {"relu2", DQ_ACT_RELU2},
    {"leaky_relu", DQ_ACT_LEAKY_RELU},
    {"sigmoid", DQ_ACT_SIGMOID},
    {"tanh", DQ_ACT_TANH},
    {"mish", DQ_ACT_MISH},
    {"laplace", DQ_ACT_LAPLACE},
    {"linear", DQ_ACT_LINEAR},
};

/* hidden_act's activation, or an error naming the key (r's scope) and why. */
static void get_activation(Reader *r, JsonObject *o, const char *def, SmolvlmAct *act) {
    const char *name = get_string(r, o, "hidden_act", def);
    if (r->failed)
        return;
    for (size_t i = 0; i < G_N_ELEMENTS(ACTIVATIONS); i++) {
        if (strcmp(name, ACTIVATIONS[i].name) == 0) {
            *act = ACTIVATIONS[i].act;
            return;
        }
    }
    gboolean learned = strcmp(name, "prelu") == 0 || strcmp(name, "xielu") == 0;
    dq_fail(r->err, DQ_ERR_UNSUPPORTED,
            "%s: %s.hidden_act '%s' is not supported (%s; every other name of transformers' "
            "ACT2CLS is)",
            r->label, r->scope, name,
            learned ? "an activation with learned parameters, which docqa does not read"
                    : "not an activation transformers knows");
    r->failed = TRUE;
}

/* A number rope_scaling must hold for its type: transformers' validation raises KeyError when the
 * key is missing, and the table's arithmetic fails on a null. */
static double need_number(Reader *r, JsonObject *rs, const char *key, const char *type) {
    if (!json_object_has_member(rs, key)) {
        char *what =
            g_strdup_printf("given for \"%s\" (transformers refuses it without one)", type);
        bad(r, key, what);
        g_free(what);
        return 0;
    }
    if (member(rs, key) == NULL) {
        bad(r, key, "a number, not null");
        return 0;
    }
    double v = get_double(r, rs, key, 0);
    if (!r->failed && !isfinite(v))
        bad(r, key, "finite");
    return v;
}

/* An optional number read as Python's `rope_scaling.get(key) or default`: absent, null and 0 all
 * take the default. */
static double number_or(Reader *r, JsonObject *rs, const char *key, double def) {
    double v = get_double(r, rs, key, 0);
    if (!r->failed && !isfinite(v))
        bad(r, key, "finite");
    return v != 0 ? v : def;
}

/* _compute_yarn_parameters' get_mscale. */
static double yarn_mscale(double scale, double mscale) {
    return scale <= 1 ? 1.0 : 0.1 * mscale * log(scale) + 1.0;
}

/* yarn's keys (all optional but factor), with the defaults and the Python truthiness
 * _compute_yarn_parameters gives them; what would make it raise (a log of a non-positive number, a
 * division by zero) is refused here, naming the key. */
static void read_yarn(Reader *r, JsonObject *rs, SmolvlmConfig *c) {
    c->rope_original_max_pos = number_or(r, rs, "original_max_position_embeddings", 0);
    c->rope_beta_fast = number_or(r, rs, "beta_fast", 32);
    c->rope_beta_slow = number_or(r, rs, "beta_slow", 1);
    /* .get("truncate", True): a null is None, falsy */
    c->rope_truncate = json_object_has_member(rs, "truncate") && member(rs, "truncate") == NULL
                           ? FALSE
                           : get_bool(r, rs, "truncate", TRUE);
    double mscale = number_or(r, rs, "mscale", 0);
    double mscale_all_dim = number_or(r, rs, "mscale_all_dim", 0);
    if (r->failed)
        return;
    double max_pos = c->rope_original_max_pos != 0 ? c->rope_original_max_pos
                                                   : (double)c->max_position_embeddings;
    if (!(max_pos > 0))
        bad(r, "original_max_position_embeddings", "positive (yarn takes its logarithm)");
    else if (!(c->rope_beta_fast > 0))
        bad(r, "beta_fast", "positive (yarn takes its logarithm)");
    else if (!(c->rope_beta_slow > 0))
        bad(r, "beta_slow", "positive (yarn takes its logarithm)");
    else if (c->rope_theta == 1.0) {
        dq_fail(r->err, DQ_ERR_MODEL,
                "%s: text_config.rope_theta 1 does not work with rope_scaling \"yarn\" (it "
                "divides by log(rope_theta))",
                r->label);
        r->failed = TRUE;
    }
    if (r->failed)
        return;
    if (member(rs, "attention_factor") != NULL) {
        c->rope_attention_factor = get_double(r, rs, "attention_factor", 1.0);
        if (!r->failed && !isfinite(c->rope_attention_factor))
            bad(r, "attention_factor", "finite");
    } else if (mscale != 0 && mscale_all_dim != 0) {
        double den = yarn_mscale(c->rope_factor, mscale_all_dim);
        if (den == 0)
            bad(r, "mscale_all_dim", "a value that does not make the attention factor divide by 0");
        else
            c->rope_attention_factor = yarn_mscale(c->rope_factor, mscale) / den;
    } else
        c->rope_attention_factor = yarn_mscale(c->rope_factor, 1);
}

/* text_config.rope_scaling: LlamaRotaryEmbedding's type is "rope_type", or the legacy "type",
 * which LlamaConfig copies over "rope_type" when both are there; transformers refuses a
 * rope_scaling without either, and each type's required keys. "default" is plain RoPE. "dynamic"
 * (NTK) keeps plain RoPE's frequencies until a sequence grows past max_position_embeddings, which a
 * docqa sequence never does (generation stops there), so it is plain RoPE too. "linear", "llama3"
 * and "yarn" change the frequencies (and yarn scales cos/sin): read here, computed by rope.c.
 * "longrope" (two factor lists switched by sequence length) and unknown types are refused, naming
 * the type. A factor must be positive: 0 makes transformers' frequencies infinite (NaN logits). */
static void check_rope_scaling(Reader *r, JsonObject *tc, SmolvlmConfig *c) {
    c->rope_type = DQ_ROPE_DEFAULT;
    c->rope_factor = 1.0;
    c->rope_attention_factor = 1.0;
    JsonObject *rs = get_object(r, tc, "rope_scaling");
    if (rs == NULL)
        return;
    const char *scope = r->scope;
    r->scope = "text_config.rope_scaling";
    const char *type = get_string(r, rs, "type", get_string(r, rs, "rope_type", NULL));
    if (r->failed) {
        r->scope = scope;
        return;
    }
    if (type == NULL)
        bad(r, "rope_type", "given (transformers refuses a rope_scaling without it)");
    else if (strcmp(type, "dynamic") == 0) {
        if (member(rs, "factor") == NULL)
            bad(r, "factor", "given for \"dynamic\" (transformers refuses it without one)");
        else
            get_double(r, rs, "factor", 1.0);
    } else if (strcmp(type, "linear") == 0 || strcmp(type, "llama3") == 0 ||
               strcmp(type, "yarn") == 0) {
        c->rope_type =
            type[0] == 'l' ? (type[1] == 'i' ? DQ_ROPE_LINEAR : DQ_ROPE_LLAMA3) : DQ_ROPE_YARN;
        c->rope_factor = need_number(r, rs, "factor", type);
        if (!r->failed && !(c->rope_factor > 0))
            bad(r, "factor", "positive");
        if (!r->failed && c->rope_type == DQ_ROPE_LLAMA3) {
            c->rope_low_freq_factor = need_number(r, rs, "low_freq_factor", type);
            c->rope_high_freq_factor = need_number(r, rs, "high_freq_factor", type);
            c->rope_original_max_pos = need_number(r, rs, "original_max_position_embeddings", type);
            /* old_context_len / low_freq_factor: a Python ZeroDivisionError */
            if (!r->failed && c->rope_low_freq_factor == 0)
                bad(r, "low_freq_factor", "other than 0 (transformers divides by it)");
            if (!r->failed && c->rope_high_freq_factor == 0)
                bad(r, "high_freq_factor", "other than 0 (transformers divides by it)");
        }
        if (!r->failed && c->rope_type == DQ_ROPE_YARN)
            read_yarn(r, rs, c);
    } else if (strcmp(type, "default") != 0) {
        dq_fail(r->err, DQ_ERR_UNSUPPORTED,
                "%s: text_config.rope_scaling '%s' is not supported (docqa runs rope_scaling "
                "null, \"default\", \"dynamic\", \"linear\", \"llama3\" and \"yarn\")",
                r->label, type);
        r->failed = TRUE;
    }
    r->scope = scope;
}

static JsonParser *parse_json(const char *json, const char *label, JsonObject **root,
                              GError **err) {
    JsonParser *p = dq_json_parse(json, -1, label, DQ_JSON_DEFAULT, err);
    if (p == NULL)
        return NULL;
    if ((*root = dq_json_root_object(p, label, err)) == NULL) {
        g_object_unref(p);
        return NULL;
    }
    return p;
}

/* Upper bounds on config.json's sizes: several times the largest open models' (Llama 3.1 405B:
 * 126 layers, hidden 16384, MLP 53248, 128 heads; vocabularies up to ~256k), and small enough
 * that every product the forward pass forms from them (heads x head_dim, layers x sizes, the
 * tables allocated per layer before any tensor is seen) fits an int and a sane allocation. A
 * broken snapshot's 2147483647 layers is refused here, naming the key, instead of failing to
 * allocate 600 GB. */
#define MAX_LAYERS       1024
#define MAX_HIDDEN       65536
#define MAX_INTERMEDIATE (1 << 20)
#define MAX_HEADS        1024
#define MAX_HEAD_DIM     1024
#define MAX_VOCAB        (1 << 22)
/* Only a bound on a sequence's length (nothing is allocated by it): real models go to 10M. */
#define MAX_POSITIONS (1 << 28)

/* Checks the values the forward pass relies on, and derives the geometry from them (after the
 * checks, so that no product of unchecked sizes can overflow). */
static gboolean check(SmolvlmConfig *c, const char *label, GError **err) {
#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return dq_fail(err, DQ_ERR_MODEL, __VA_ARGS__);                                        \
    } while (0)
#define RANGE(value, lo, hi, key)                                                                  \
    REQUIRE((value) >= (lo) && (value) <= (hi), "%s: %s %d is outside %d..%d", label, key,         \
            (value), (lo), (hi))
    RANGE(c->vision_hidden, 1, MAX_HIDDEN, "vision_config.hidden_size");
    RANGE(c->vision_intermediate, 1, MAX_INTERMEDIATE, "vision_config.intermediate_size");
    RANGE(c->vision_layers, 1, MAX_LAYERS, "vision_config.num_hidden_layers");
    RANGE(c->vision_heads, 1, MAX_HEADS, "vision_config.num_attention_heads");
    /* the image processor makes RGB tiles: a model taking other channels would read past them */
    REQUIRE(c->vision_channels == 3, "%s: vision_config.num_channels %d is not supported (3: RGB)",
            label, c->vision_channels);
    REQUIRE(c->vision_hidden % c->vision_heads == 0,
            "%s: vision hidden_size %d is not a multiple of num_attention_heads %d", label,
            c->vision_hidden, c->vision_heads);
    REQUIRE(c->patch_size > 0 && c->image_size >= c->patch_size && c->image_size <= 8192,
            "%s: vision image_size %d / patch_size %d are not usable", label, c->image_size,
            c->patch_size);
    c->patches_per_side = c->image_size / c->patch_size; /* floor: 384/14 = 27, 6 px unused */
    c->num_patches = c->patches_per_side * c->patches_per_side; /* <= 8192^2 */
    REQUIRE(c->scale_factor > 0 && c->patches_per_side % c->scale_factor == 0,
            "%s: %d patches a side are not divisible by scale_factor %d", label,
            c->patches_per_side, c->scale_factor);
    /* scale_factor <= patches_per_side <= 8192 now: the products below fit in 64 bits */
    int64_t sf2 = (int64_t)c->scale_factor * c->scale_factor;
    int64_t connector_in = (int64_t)c->vision_hidden * sf2;
    REQUIRE(connector_in <= INT_MAX,
            "%s: vision hidden_size %d x scale_factor %d squared is too large for a connector",
            label, c->vision_hidden, c->scale_factor);
    c->tokens_per_tile = (int)(c->num_patches / sf2);
    c->connector_in = (int)connector_in;
    RANGE(c->text_hidden, 1, MAX_HIDDEN, "text_config.hidden_size");
    RANGE(c->text_intermediate, 1, MAX_INTERMEDIATE, "text_config.intermediate_size");
    RANGE(c->text_layers, 1, MAX_LAYERS, "text_config.num_hidden_layers");
    RANGE(c->text_heads, 1, MAX_HEADS, "text_config.num_attention_heads");
    RANGE(c->text_kv_heads, 1, MAX_HEADS, "text_config.num_key_value_heads");
    RANGE(c->head_dim, 1, MAX_HEAD_DIM, "text_config.head_dim");
    RANGE(c->vocab_size, 1, MAX_VOCAB, "text_config.vocab_size");
    REQUIRE(c->head_dim % 2 == 0, "%s: head_dim %d must be even for rotary embeddings", label,
            c->head_dim);
    REQUIRE(c->text_heads % c->text_kv_heads == 0,
            "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", label,
            c->text_heads, c->text_kv_heads);
    RANGE(c->max_position_embeddings, 1, MAX_POSITIONS, "text_config.max_position_embeddings");
    /* isfinite: 1e400 parses as infinity. 0 is what transformers computes too, x * rsqrt(mean(x^2))
     * and (x - mean) / sqrt(var): NaN for a row of zeros (or a constant row in the LayerNorm), as
     * in every backend here. A negative eps makes the norm of any row smaller than it NaN: a broken
     * file, which transformers runs without a word. */
    REQUIRE(isfinite(c->rms_norm_eps) && c->rms_norm_eps >= 0 && c->rms_norm_eps < 1 &&
                isfinite(c->vision_layer_norm_eps) && c->vision_layer_norm_eps >= 0 &&
                c->vision_layer_norm_eps < 1,
            "%s: text_config.rms_norm_eps %g and vision_config.layer_norm_eps %g must be in [0, 1)",
            label, c->rms_norm_eps, c->vision_layer_norm_eps);
    REQUIRE(isfinite(c->rope_theta) && c->rope_theta > 0,
            "%s: text_config.rope_theta %g must be positive and finite", label, c->rope_theta);
#undef RANGE
#undef REQUIRE
    return TRUE;
}

/* What transformers refuses in a generation config: GenerationConfig.validate() raises on
 * max_new_tokens <= 0 when the file is loaded; the sampling warpers raise on a temperature
 * (other than 1) that is not positive, a top_k (other than 0) that is not, a top_p (below 1) that
 * is negative, once generate() samples. Every request would fail: say so at load, naming the
 * file. (top_p above 1 means no nucleus filter to both.) */
static gboolean check_generation(const SmolvlmConfig *c, gboolean has_max_new_tokens,
                                 const char *label, GError **err) {
    if (has_max_new_tokens && c->max_new_tokens <= 0)
        return dq_fail(err, DQ_ERR_MODEL, "%s: max_new_tokens %d must be greater than 0", label,
                       c->max_new_tokens);
    if (!c->do_sample)
        return TRUE; /* transformers only warns about sampling values it will not use */
    if (c->temperature != 1.0 && !(c->temperature > 0))
        return dq_fail(err, DQ_ERR_MODEL,
                       "%s: temperature %g must be positive when do_sample is true", label,
                       c->temperature);
    if (c->top_k < 0)
        return dq_fail(err, DQ_ERR_MODEL,
                       "%s: top_k %d must be positive (or 0: off) when do_sample is true", label,
                       c->top_k);
    if (!(c->top_p >= 0))
        return dq_fail(err, DQ_ERR_MODEL,
                       "%s: top_p %g must not be negative when do_sample is true", label, c->top_p);
    return TRUE;
}

/* config.json's label -> generation_config.json's: the file beside it when the label is a path
 * to config.json, else "label (generation_config.json)". */
static char *generation_label(const char *label) {
    char *base = g_path_get_basename(label);
    char *dir = g_path_get_dirname(label);
    char *g = strcmp(base, "config.json") == 0
                  ? g_build_filename(dir, "generation_config.json", NULL)
                  : g_strdup_printf("%s (generation_config.json)", label);
    g_free(base);
    g_free(dir);
    return g;
}

/* transformers' AutoConfig picks the architecture by model_type: "llava" builds a
 * LlavaConfig and AutoModelForVision2Seq another model over these tensors, "smolvlm" SmolVLM's
 * own classes; without one it fails ("Should have a `model_type` key"). Checked first: the
 * sizes of another architecture's config would only give misleading errors (the reads
 * below report nothing once r.failed is set). */
static void check_model_type(Reader *r, JsonObject *root) {
    const char *model_type = get_string(r, root, "model_type", NULL);
    if (!r->failed && model_type == NULL) {
        dq_fail(r->err, DQ_ERR_UNSUPPORTED,
                "%s: model_type is missing (transformers needs it to pick the architecture; "
                "docqa runs \"idefics3\", SmolVLM's)",
                r->label);
        r->failed = TRUE;
    } else if (!r->failed && strcmp(model_type, "idefics3") != 0) {
        dq_fail(r->err, DQ_ERR_UNSUPPORTED,
                "%s: model_type '%s' is not supported (docqa runs \"idefics3\", "
                "Idefics3ForConditionalGeneration: SmolVLM-256M/500M-Instruct and "
                "SmolVLM-Instruct)",
                r->label, model_type);
        r->failed = TRUE;
    }
}

/* Idefics3VisionConfig defaults. */
static void read_vision_config(Reader *r, JsonObject *vc, SmolvlmConfig *cfg) {
    r->scope = "vision_config";
    cfg->vision_hidden = get_int(r, vc, "hidden_size", 1152);
    cfg->vision_intermediate = get_int(r, vc, "intermediate_size", 3072);
    cfg->vision_layers = get_int(r, vc, "num_hidden_layers", 12);
    cfg->vision_heads = get_int(r, vc, "num_attention_heads", 16);
    cfg->vision_channels = get_int(r, vc, "num_channels", 3);
    cfg->image_size = get_int(r, vc, "image_size", 224);
    cfg->patch_size = get_int(r, vc, "patch_size", 32);
    cfg->vision_layer_norm_eps = get_double(r, vc, "layer_norm_eps", 1e-6);
    get_activation(r, vc, "gelu_pytorch_tanh", &cfg->vision_act);
}

/* LlamaConfig defaults when text_config is given; Idefics3Config builds a default Llama with
 * rms_norm_eps 1e-5 when it is absent. Returns text_config's eos_token_id. */
static int read_text_config(Reader *r, JsonObject *tc, SmolvlmConfig *cfg) {
    r->scope = "text_config";
    /* Idefics3Config builds the decoder that text_config.model_type names ("llama" when absent):
     * "qwen2" or "mistral" would be another decoder (biases, sliding windows) over these
     * tensors. vision_config.model_type is not read: Idefics3Config builds its own vision
     * config whatever it says ("idefics3" in the real files, "idefics3_vision" when saved by
     * transformers 4.57). */
    const char *text_type = get_string(r, tc, "model_type", "llama");
    if (!r->failed && strcmp(text_type, "llama") != 0) {
        dq_fail(r->err, DQ_ERR_UNSUPPORTED,
                "%s: text_config.model_type '%s' is not supported (\"llama\" is, SmolVLM's "
                "decoder)",
                r->label, text_type);
        r->failed = TRUE;
    }
    cfg->text_hidden = get_int(r, tc, "hidden_size", 4096);
    cfg->text_intermediate = get_int(r, tc, "intermediate_size", 11008);
    cfg->text_layers = get_int(r, tc, "num_hidden_layers", 32);
    cfg->text_heads = get_int(r, tc, "num_attention_heads", 32);
    cfg->text_kv_heads = get_int(r, tc, "num_key_value_heads", cfg->text_heads);
    cfg->head_dim =
        get_int(r, tc, "head_dim", cfg->text_heads > 0 ? cfg->text_hidden / cfg->text_heads : 0);
    cfg->vocab_size = get_int(r, tc, "vocab_size", 32000);
    cfg->max_position_embeddings = get_int(r, tc, "max_position_embeddings", 2048);
    cfg->rms_norm_eps = get_double(r, tc, "rms_norm_eps", tc != NULL ? 1e-6 : 1e-5);
    cfg->rope_theta = get_double(r, tc, "rope_theta", 10000.0);
    cfg->tie_word_embeddings = get_bool(r, tc, "tie_word_embeddings", FALSE);
    int text_eos = get_int(r, tc, "eos_token_id", 2);
    get_activation(r, tc, "silu", &cfg->text_act);
    if (!r->failed)
        check_rope_scaling(r, tc, cfg);
    /* LlamaAttention's q/k/v/o_proj and LlamaMLP's gate/up/down_proj take biases when these
     * are true (LlamaConfig's defaults: false) */
    cfg->attention_bias = get_bool(r, tc, "attention_bias", FALSE);
    cfg->mlp_bias = get_bool(r, tc, "mlp_bias", FALSE);

    /* LlamaRotaryEmbedding rotates int(head_dim * partial_rotary_factor) dimensions, but its
     * apply_rotary_pos_emb multiplies whole heads: transformers 4.57.6 fails on any other value
     * than 1.0 (and on null), so docqa, which rotates every dimension, must not run one. */
    if (!r->failed && tc != NULL && json_object_has_member(tc, "partial_rotary_factor") &&
        (member(tc, "partial_rotary_factor") == NULL ||
         get_double(r, tc, "partial_rotary_factor", 1.0) != 1.0)) {
        bad(r, "partial_rotary_factor", "1.0 or absent (every dimension of a head rotates)");
    }
    return text_eos;
}

/* Idefics3Config's own members, beside vision_config and text_config. */
static void read_top_level(Reader *r, JsonObject *root, JsonObject *tc, SmolvlmConfig *cfg) {
    r->scope = NULL;
    /* Unlike head_dim's or pad_token_id's, a null scale_factor is not a default: Idefics3Config
     * keeps None and transformers fails on it. */
    if (!r->failed && root != NULL && json_object_has_member(root, "scale_factor") &&
        member(root, "scale_factor") == NULL)
        bad(r, "scale_factor", "an integer, not null");
    cfg->scale_factor = get_int(r, root, "scale_factor", 2);
    cfg->image_token_id = get_int(r, root, "image_token_id", 128257);
    cfg->pad_token_id = get_int(r, root, "pad_token_id", get_int(r, tc, "pad_token_id", -1));
}

/* generation_config.json over the defaults in cfg (`label`: config.json's). */
static gboolean read_generation_config(const char *generation_json, const char *label,
                                       SmolvlmConfig *cfg, GError **err) {
    char *glabel = generation_label(label);
    JsonObject *g = NULL;
    JsonParser *gp = parse_json(generation_json, glabel, &g, err);
    if (gp == NULL) {
        g_free(glabel);
        return FALSE;
    }
    Reader gr = {.label = glabel, .err = err};
    cfg->n_eos = 0; /* an explicit file without eos_token_id means: no eos */
    get_eos(&gr, g, cfg);
    /* generate() starts from bos_token_id only when given no prompt, and docqa's always has
     * one (the fixtures' README: it is unused). Read only to refuse what transformers refuses
     * there: its tensor conversion fails on a string or an object (a float, or an id past 32
     * bits, which no vocabulary here has, is refused too, as every id is). */
    (void)get_int(&gr, g, "bos_token_id", -1);
    cfg->do_sample = get_bool(&gr, g, "do_sample", FALSE);
    cfg->temperature = get_double(&gr, g, "temperature", 1.0);
    cfg->top_p = get_double(&gr, g, "top_p", 1.0);
    cfg->top_k = get_int(&gr, g, "top_k", 50);
    cfg->max_new_tokens = get_int(&gr, g, "max_new_tokens", -1);
    /* -1 stands for "unset" in cfg: a file's -1 must not read as absent */
    gboolean ok =
        !gr.failed && check_generation(cfg, member(g, "max_new_tokens") != NULL, glabel, err);
    g_object_unref(gp);
    g_free(glabel);
    return ok;
}

gboolean smolvlm_config_parse(const char *config_json, const char *generation_json,
                              const char *label, SmolvlmConfig *cfg, GError **err) {
    memset(cfg, 0, sizeof *cfg);
    JsonObject *root = NULL;
    JsonParser *p = parse_json(config_json, label, &root, err);
    if (p == NULL)
        return FALSE;
    /* One reader for every step: once a member is refused the later reads report nothing, so
     * the first refusal stays the one reported. */
    Reader r = {.label = label, .err = err};
    check_model_type(&r, root);
    JsonObject *vc = get_object(&r, root, "vision_config");
    JsonObject *tc = get_object(&r, root, "text_config");
    read_vision_config(&r, vc, cfg);
    int text_eos = read_text_config(&r, tc, cfg);
    read_top_level(&r, root, tc, cfg);
    g_object_unref(p);
    if (r.failed)
        return FALSE;

    /* GenerationConfig defaults; without generation_config.json transformers derives it from the
     * model config (eos = text_config.eos_token_id). */
    cfg->eos_ids[0] = text_eos;
    cfg->n_eos = 1;
    cfg->do_sample = FALSE;
    cfg->temperature = 1.0;
    cfg->top_p = 1.0;
    cfg->top_k = 50;
    cfg->max_new_tokens = -1;
    if (generation_json != NULL && !read_generation_config(generation_json, label, cfg, err))
        return FALSE;
    return check(cfg, label, err);
}

gboolean smolvlm_config_load(const char *dir, SmolvlmConfig *cfg, GError **err) {
    char *cpath = g_build_filename(dir, "config.json", NULL);
    char *gpath = g_build_filename(dir, "generation_config.json", NULL);
    char *cjson = NULL, *gjson = NULL;
    gboolean ok = FALSE;
    if ((cjson = dq_file_read_regular(cpath, DQ_JSON_MAX_FILE_BYTES, NULL, err)) == NULL)
        goto out;
    if (g_file_test(gpath, G_FILE_TEST_EXISTS) &&
        (gjson = dq_file_read_regular(gpath, DQ_JSON_MAX_FILE_BYTES, NULL, err)) == NULL)
        goto out;
    ok = smolvlm_config_parse(cjson, gjson, cpath, cfg, err);
out:
    g_free(cjson);
    g_free(gjson);
    g_free(cpath);
    g_free(gpath);
    return ok;
}

gboolean smolvlm_config_is_eos(const SmolvlmConfig *cfg, int id) {
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_ids[i] == id)
            return TRUE;
    return FALSE;
}
