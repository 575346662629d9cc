#include "safetensors.h"

#include "dq_error.h"
#include "json_load.h"
#include "mapped_file.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdlib.h>
#include <string.h>

/* A safetensors header larger than this is not a model header but garbage (the real 2.2B
 * checkpoint's header is ~100 KB); refusing it early keeps a corrupt length from making the JSON
 * parser chew through gigabytes. The safetensors library's own limit. */
#define DQ_SAFETENSORS_MAX_HEADER 100000000u

struct DqSafeTensors {
    GPtrArray *files;    /* DqMappedFile *, owned */
    GHashTable *tensors; /* name -> DqTensor *, owned */
    GStringChunk *strings;
};

const char *dq_dtype_name(DqDtype dtype) {
    switch (dtype) {
    case DQ_DTYPE_F32:
        return "F32";
    case DQ_DTYPE_BF16:
        return "BF16";
    case DQ_DTYPE_F16:
        return "F16";
    }
    return "?";
}

size_t dq_dtype_size(DqDtype dtype) {
    return dtype == DQ_DTYPE_F32 ? 4 : 2;
}

float dq_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float dq_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while ((mant & 0x400u) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

void dq_convert_to_f32(float *dst, const void *src, DqDtype dtype, size_t n) {
    const uint8_t *s = src;
    switch (dtype) {
    case DQ_DTYPE_F32:
        memcpy(dst, src, n * sizeof(float));
        break;
    case DQ_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(s[2 * i] | (s[2 * i + 1] << 8));
            dst[i] = dq_bf16_to_f32(h);
        }
        break;
    case DQ_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(s[2 * i] | (s[2 * i + 1] << 8));
            dst[i] = dq_f16_to_f32(h);
        }
        break;
    }
}

static DqSafeTensors *safetensors_new(void) {
    DqSafeTensors *st = g_new0(DqSafeTensors, 1);
    st->files = g_ptr_array_new_with_free_func((GDestroyNotify)dq_mapped_file_free);
    st->tensors = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
    st->strings = g_string_chunk_new(4096);
    return st;
}

void safetensors_free(DqSafeTensors *st) {
    if (st == NULL)
        return;
    g_hash_table_destroy(st->tensors);
    g_ptr_array_free(st->files, TRUE);
    g_string_chunk_free(st->strings);
    g_free(st);
}

static gboolean json_get_u64(JsonNode *node, uint64_t *out) {
    if (node == NULL || JSON_NODE_TYPE(node) != JSON_NODE_VALUE ||
        json_node_get_value_type(node) != G_TYPE_INT64)
        return FALSE;
    gint64 v = json_node_get_int(node);
    if (v < 0)
        return FALSE;
    *out = (uint64_t)v;
    return TRUE;
}

static gboolean parse_dtype(const char *s, DqDtype *out) {
    if (strcmp(s, "F32") == 0)
        *out = DQ_DTYPE_F32;
    else if (strcmp(s, "BF16") == 0)
        *out = DQ_DTYPE_BF16;
    else if (strcmp(s, "F16") == 0)
        *out = DQ_DTYPE_F16;
    else
        return FALSE;
    return TRUE;
}

/* A tensor's byte range in the data section. */
typedef struct {
    uint64_t begin, end;
    const char *name;
} Span;

static int cmp_span(const void *a, const void *b) {
    const Span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name); /* ties: the same message on every run */
}

/* The safetensors library's rule (Metadata::validate, read_metadata): sorted by offsets, the
 * tensors lie back to back from byte 0 and end where the file ends. Without it a header could
 * point two tensors (lm_head and embed_tokens, say) at the same bytes, or leave junk after the
 * data, and be accepted where transformers refuses the file. */
static gboolean check_layout(GArray *spans, uint64_t data_len, const char *label, GError **err) {
    g_array_sort(spans, cmp_span);
    uint64_t at = 0;
    const Span *prev = NULL;
    for (guint i = 0; i < spans->len; i++) {
        const Span *s = &g_array_index(spans, Span, i);
        if (prev != NULL && s->begin < at) /* at is 0 until there is a prev */
            return dq_fail(err, DQ_ERR_FORMAT,
                           "%s: tensor '%s': data [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT
                           ") overlaps tensor '%s' [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT ")",
                           label, s->name, s->begin, s->end, prev->name, prev->begin, prev->end);
        if (s->begin > at)
            return dq_fail(err, DQ_ERR_FORMAT,
                           "%s: tensor '%s': data [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT
                           ") leaves bytes [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT
                           ") of the data section unused (tensors must lie back to back)",
                           label, s->name, s->begin, s->end, at, s->begin);
        at = s->end;
        prev = s;
    }
    if (at != data_len)
        return dq_fail(err, DQ_ERR_FORMAT,
                       "%s: %" G_GUINT64_FORMAT " bytes after the last tensor's data (the data "
                       "section has %" G_GUINT64_FORMAT ", the tensors cover %" G_GUINT64_FORMAT
                       "): the file is not fully covered",
                       label, data_len - at, data_len, at);
    return TRUE;
}

/* "__metadata__": absent, null, or a map of strings to strings (serde: Option<HashMap<String,
 * String>>). */
static gboolean check_metadata(JsonNode *meta, const char *label, GError **err) {
    if (meta == NULL || JSON_NODE_HOLDS_NULL(meta))
        return TRUE;
    if (!JSON_NODE_HOLDS_OBJECT(meta))
        return dq_fail(err, DQ_ERR_FORMAT, "%s: __metadata__ must be an object of strings", label);
    JsonObjectIter it;
    const char *key;
    JsonNode *value;
    json_object_iter_init(&it, json_node_get_object(meta));
    while (json_object_iter_next(&it, &key, &value))
        if (!JSON_NODE_HOLDS_VALUE(value) || json_node_get_value_type(value) != G_TYPE_STRING)
            return dq_fail(err, DQ_ERR_FORMAT, "%s: __metadata__ '%s' is not a string", label, key);
    return TRUE;
}

/* One file's header being read: where its tensors go, the file's name in errors, its data section
 * and the byte ranges of the tensors read so far (check_layout's input). */
typedef struct {
    DqSafeTensors *st;
    const char *label;
    const uint8_t *base; /* the data section, after the header */
    uint64_t data_len;
    GArray *spans; /* Span */
} Header;

/* The 8-byte little-endian length that opens the file, refused when it cannot be a header's. */
static gboolean read_header_length(const uint8_t *data, size_t len, const char *label,
                                   uint64_t *out, GError **err) {
    if (len < 8)
        return dq_fail(err, DQ_ERR_FORMAT, "%s: truncated: %zu bytes, no safetensors header", label,
                       len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | data[i];
    if (hlen > len - 8)
        return dq_fail(err, DQ_ERR_FORMAT,
                       "%s: header length %" G_GUINT64_FORMAT " overruns the file (%zu bytes)",
                       label, hlen, len);
    if (hlen > DQ_SAFETENSORS_MAX_HEADER)
        return dq_fail(err, DQ_ERR_FORMAT, "%s: header length %" G_GUINT64_FORMAT " is absurd",
                       label, hlen);
    if (hlen < 2)
        return dq_fail(err, DQ_ERR_FORMAT, "%s: empty safetensors header", label);
    *out = hlen;
    return TRUE;
}

/* The header's JSON, parsed as the safetensors library parses it. */
static JsonParser *parse_header_json(const uint8_t *json, uint64_t hlen, const char *label,
                                     GError **err) {
    /* json-glib wants valid UTF-8; say so rather than letting it report a byte offset only. */
    if (!g_utf8_validate((const char *)json, (gssize)hlen, NULL)) {
        dq_fail(err, DQ_ERR_FORMAT, "%s: header is not valid UTF-8", label);
        return NULL;
    }
    /* serde_json, which the safetensors library parses headers with, refuses duplicate fields
     * and nesting deeper than 128; it keeps the last of two tensors of one name, whose first
     * would then leave its bytes uncovered (refused below): docqa refuses the duplicate itself. */
    char *hlabel = g_strdup_printf("%s: header", label);
    JsonParser *parser =
        dq_json_parse((const char *)json, (gssize)hlen, hlabel, DQ_JSON_UNIQUE_KEYS, err);
    g_free(hlabel);
    return parser;
}

/* An entry's "shape": at most DQ_TENSOR_MAX_DIMS sizes, into tensor; *numel their product, and
 * *overflow set when that product does not fit 64 bits (refused with the size check, after the
 * offsets, so that each refusal keeps its place). */
static gboolean read_shape(JsonArray *shape, const Header *h, const char *name, DqTensor *tensor,
                           uint64_t *numel, gboolean *overflow, GError **err) {
    guint ndim = json_array_get_length(shape);
    if (ndim > DQ_TENSOR_MAX_DIMS)
        return dq_fail(err, DQ_ERR_UNSUPPORTED, "%s: tensor '%s': %u dims (at most %d supported)",
                       h->label, name, ndim, DQ_TENSOR_MAX_DIMS);
    *numel = 1;
    *overflow = FALSE;
    for (guint i = 0; i < ndim; i++) {
        uint64_t d;
        if (!json_get_u64(json_array_get_element(shape, i), &d) || d > (uint64_t)G_MAXINT64)
            return dq_fail(err, DQ_ERR_FORMAT, "%s: tensor '%s': shape[%u] is not a size", h->label,
                           name, i);
        tensor->shape[i] = (int64_t)d;
        if (d != 0 && *numel > G_MAXUINT64 / d)
            *overflow = TRUE;
        else
            *numel *= d;
    }
    tensor->ndim = (int)ndim;
    return TRUE;
}

/* An entry's "data_offsets": [begin, end], inside the data section. */
static gboolean read_offsets(JsonArray *offs, const Header *h, const char *name, uint64_t *begin,
                             uint64_t *end, GError **err) {
    if (json_array_get_length(offs) != 2 || !json_get_u64(json_array_get_element(offs, 0), begin) ||
        !json_get_u64(json_array_get_element(offs, 1), end) || *begin > *end)
        return dq_fail(err, DQ_ERR_FORMAT, "%s: tensor '%s': data_offsets must be [begin, end]",
                       h->label, name);
    if (*end > h->data_len)
        return dq_fail(err, DQ_ERR_FORMAT,
                       "%s: tensor '%s': data [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT
                       ") overruns the data section (%" G_GUINT64_FORMAT " bytes; file truncated?)",
                       h->label, name, *begin, *end, h->data_len);
    return TRUE;
}

/* One header entry checked and added to the tensors, its byte range to h->spans. */
static gboolean add_tensor(Header *h, const char *name, JsonNode *member, GError **err) {
    if (!JSON_NODE_HOLDS_OBJECT(member))
        return dq_fail(err, DQ_ERR_FORMAT, "%s: tensor '%s': entry is not an object", h->label,
                       name);
    JsonObject *t = json_node_get_object(member);
    JsonNode *dn = json_object_get_member(t, "dtype");
    JsonNode *sn = json_object_get_member(t, "shape");
    JsonNode *on = json_object_get_member(t, "data_offsets");
    if (dn == NULL || JSON_NODE_TYPE(dn) != JSON_NODE_VALUE ||
        json_node_get_value_type(dn) != G_TYPE_STRING || sn == NULL || !JSON_NODE_HOLDS_ARRAY(sn) ||
        on == NULL || !JSON_NODE_HOLDS_ARRAY(on))
        return dq_fail(err, DQ_ERR_FORMAT,
                       "%s: tensor '%s': needs a string dtype, a shape array and data_offsets",
                       h->label, name);
    DqTensor tensor = {0};
    const char *dtype = json_node_get_string(dn);
    if (!parse_dtype(dtype, &tensor.dtype))
        return dq_fail(err, DQ_ERR_UNSUPPORTED,
                       "%s: tensor '%s': dtype %s is not supported (F32, BF16, F16 are)", h->label,
                       name, dtype);
    uint64_t numel = 1, begin = 0, end = 0;
    gboolean overflow = FALSE;
    if (!read_shape(json_node_get_array(sn), h, name, &tensor, &numel, &overflow, err) ||
        !read_offsets(json_node_get_array(on), h, name, &begin, &end, err))
        return FALSE;
    uint64_t esize = dq_dtype_size(tensor.dtype);
    if (overflow || numel > G_MAXUINT64 / esize || numel * esize != end - begin)
        return dq_fail(err, DQ_ERR_FORMAT,
                       "%s: tensor '%s': %" G_GUINT64_FORMAT
                       " bytes of data do not match its shape "
                       "and dtype %s",
                       h->label, name, end - begin, dtype);
    if (g_hash_table_contains(h->st->tensors, name))
        return dq_fail(err, DQ_ERR_FORMAT, "%s: tensor '%s' appears twice", h->label, name);
    tensor.numel = (int64_t)numel;
    tensor.nbytes = (size_t)(end - begin);
    tensor.data = h->base + begin;
    tensor.name = g_string_chunk_insert(h->st->strings, name);
    tensor.file = g_string_chunk_insert_const(h->st->strings, h->label);
    g_hash_table_insert(h->st->tensors, (gpointer)tensor.name, g_memdup2(&tensor, sizeof tensor));
    Span span = {begin, end, tensor.name};
    g_array_append_val(h->spans, span);
    return TRUE;
}

/* The header's object: "__metadata__", then every other member a tensor. */
static gboolean add_tensors(Header *h, JsonNode *root, GError **err) {
    if (!JSON_NODE_HOLDS_OBJECT(root))
        return dq_fail(err, DQ_ERR_FORMAT, "%s: header is not a JSON object", h->label);
    JsonObject *obj = json_node_get_object(root);
    if (!check_metadata(json_object_get_member(obj, "__metadata__"), h->label, err))
        return FALSE;
    JsonObjectIter it;
    const char *name;
    JsonNode *member;
    json_object_iter_init(&it, obj);
    while (json_object_iter_next(&it, &name, &member))
        if (strcmp(name, "__metadata__") != 0 && !add_tensor(h, name, member, err))
            return FALSE;
    return TRUE;
}

/* Adds the tensors of one file image to st. `label` names the file in errors. */
static gboolean parse_into(DqSafeTensors *st, const uint8_t *data, size_t len, const char *label,
                           GError **err) {
    uint64_t hlen = 0;
    if (!read_header_length(data, len, label, &hlen, err))
        return FALSE;
    JsonParser *parser = parse_header_json(data + 8, hlen, label, err);
    if (parser == NULL)
        return FALSE;
    Header h = {st, label, data + 8 + hlen, len - 8 - hlen,
                g_array_new(FALSE, FALSE, sizeof(Span))};
    gboolean ok = add_tensors(&h, json_parser_get_root(parser), err) &&
                  check_layout(h.spans, h.data_len, label, err);
    g_array_free(h.spans, TRUE);
    g_object_unref(parser);
    return ok;
}

DqSafeTensors *safetensors_parse(const uint8_t *data, size_t len, const char *name, GError **err) {
    DqSafeTensors *st = safetensors_new();
    if (!parse_into(st, data, len, name, err)) {
        safetensors_free(st);
        return NULL;
    }
    return st;
}

static gboolean add_file(DqSafeTensors *st, const char *path, GError **err) {
    DqMappedFile *mf = dq_mapped_file_open(path, err);
    if (mf == NULL)
        return FALSE;
    g_ptr_array_add(st->files, mf);
    return parse_into(st, mf->data, mf->size, path, err);
}

DqSafeTensors *safetensors_open(const char *path, GError **err) {
    DqSafeTensors *st = safetensors_new();
    if (!add_file(st, path, err)) {
        safetensors_free(st);
        return NULL;
    }
    return st;
}

/* The index's "weight_map" object (tensor name -> shard file); NULL, with the error, when it
 * has none. */
static JsonObject *index_weight_map(JsonParser *parser, const char *index, GError **err) {
    JsonNode *root = json_parser_get_root(parser);
    if (root != NULL && JSON_NODE_HOLDS_OBJECT(root)) {
        JsonNode *n = json_object_get_member(json_node_get_object(root), "weight_map");
        if (n != NULL && JSON_NODE_HOLDS_OBJECT(n))
            return json_node_get_object(n);
    }
    dq_fail(err, DQ_ERR_FORMAT, "%s: no \"weight_map\" object", index);
    return NULL;
}

/* Each shard the weight map names, added to st once, in the order the map first names it. */
static gboolean add_shards(DqSafeTensors *st, const char *dir, const char *index, JsonObject *wm,
                           GError **err) {
    GHashTable *shards = g_hash_table_new(g_str_hash, g_str_equal);
    gboolean ok = TRUE;
    JsonObjectIter it;
    const char *tname;
    JsonNode *fnode;
    json_object_iter_init(&it, wm);
    while (ok && json_object_iter_next(&it, &tname, &fnode)) {
        const char *file =
            JSON_NODE_HOLDS_VALUE(fnode) && json_node_get_value_type(fnode) == G_TYPE_STRING
                ? json_node_get_string(fnode)
                : NULL;
        /* A shard name is a plain file name inside the snapshot; refuse paths. */
        if (file == NULL || file[0] == '\0' || strchr(file, '/') != NULL ||
            strcmp(file, "..") == 0) {
            ok = dq_fail(err, DQ_ERR_FORMAT, "%s: tensor '%s': bad shard file name", index, tname);
        } else if (!g_hash_table_contains(shards, file)) {
            g_hash_table_add(shards, (gpointer)file);
            char *path = g_build_filename(dir, file, NULL);
            ok = add_file(st, path, err);
            g_free(path);
        }
    }
    g_hash_table_destroy(shards);
    return ok;
}

/* Every tensor the index promises must be in the shard it names: that very file, not one whose
 * name merely ends the same ("ba.safetensors" for "a.safetensors"). The names are strings:
 * add_shards refused the rest. */
static gboolean tensors_as_promised(const DqSafeTensors *st, const char *index, JsonObject *wm,
                                    GError **err) {
    JsonObjectIter it;
    const char *tname;
    JsonNode *fnode;
    json_object_iter_init(&it, wm);
    while (json_object_iter_next(&it, &tname, &fnode)) {
        const DqTensor *t = safetensors_get(st, tname);
        char *shard = t != NULL ? g_path_get_basename(t->file) : NULL;
        gboolean there = shard != NULL && strcmp(shard, json_node_get_string(fnode)) == 0;
        g_free(shard);
        if (!there)
            return dq_fail(err, DQ_ERR_MODEL, "%s: tensor '%s' is not in %s", index, tname,
                           json_node_get_string(fnode));
    }
    return TRUE;
}

/* A sharded snapshot: the shards its index names, each tensor where the index says. */
static DqSafeTensors *open_sharded(const char *dir, const char *index, GError **err) {
    JsonParser *parser = dq_json_load_file(index, DQ_JSON_DEFAULT, err);
    if (parser == NULL)
        return NULL;
    DqSafeTensors *st = NULL;
    JsonObject *wm = index_weight_map(parser, index, err);
    if (wm != NULL) {
        st = safetensors_new();
        if (!add_shards(st, dir, index, wm, err) || !tensors_as_promised(st, index, wm, err))
            g_clear_pointer(&st, safetensors_free);
    }
    g_object_unref(parser);
    return st;
}

/* Whether a snapshot is sharded, in transformers' order (from_pretrained): a model.safetensors
 * that is a file wins over an index beside it, as a folder holding both (a model saved whole
 * over an older sharded save) loads the whole one there. */
static gboolean snapshot_is_sharded(const char *dir) {
    char *single = g_build_filename(dir, "model.safetensors", NULL);
    char *index = g_build_filename(dir, "model.safetensors.index.json", NULL);
    gboolean sharded =
        !g_file_test(single, G_FILE_TEST_IS_REGULAR) && g_file_test(index, G_FILE_TEST_EXISTS);
    g_free(single);
    g_free(index);
    return sharded;
}

DqSafeTensors *safetensors_open_snapshot(const char *dir, GError **err) {
    char *single = g_build_filename(dir, "model.safetensors", NULL);
    char *index = g_build_filename(dir, "model.safetensors.index.json", NULL);
    DqSafeTensors *st = NULL;
    if (snapshot_is_sharded(dir))
        st = open_sharded(dir, index, err);
    else if (g_file_test(single, G_FILE_TEST_EXISTS))
        st = safetensors_open(single, err);
    else
        dq_fail(err, DQ_ERR_MODEL, "%s: no model.safetensors and no model.safetensors.index.json",
                dir);
    g_free(single);
    g_free(index);
    return st;
}

static guint64 file_bytes(const char *dir, const char *name) {
    char *path = g_build_filename(dir, name, NULL);
    GStatBuf sb;
    guint64 n = g_stat(path, &sb) == 0 ? (guint64)sb.st_size : 0;
    g_free(path);
    return n;
}

guint64 safetensors_snapshot_bytes(const char *dir) {
    if (!snapshot_is_sharded(dir))
        return file_bytes(dir, "model.safetensors");
    char *index = g_build_filename(dir, "model.safetensors.index.json", NULL);
    guint64 total = 0;
    JsonParser *parser = dq_json_load_file(index, DQ_JSON_DEFAULT, NULL);
    JsonNode *root = parser != NULL ? json_parser_get_root(parser) : NULL;
    JsonNode *wm = root != NULL && JSON_NODE_HOLDS_OBJECT(root)
                       ? json_object_get_member(json_node_get_object(root), "weight_map")
                       : NULL;
    if (wm != NULL && JSON_NODE_HOLDS_OBJECT(wm)) {
        GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
        JsonObjectIter it;
        const char *tname;
        JsonNode *fnode;
        json_object_iter_init(&it, json_node_get_object(wm));
        while (json_object_iter_next(&it, &tname, &fnode)) {
            const char *file =
                JSON_NODE_HOLDS_VALUE(fnode) && json_node_get_value_type(fnode) == G_TYPE_STRING
                    ? json_node_get_string(fnode)
                    : NULL;
            /* as safetensors_open_snapshot: a plain file name inside the snapshot */
            if (file == NULL || file[0] == '\0' || strchr(file, '/') != NULL ||
                strcmp(file, "..") == 0 || !g_hash_table_add(seen, (gpointer)file))
                continue;
            total += file_bytes(dir, file);
        }
        g_hash_table_destroy(seen);
    }
    if (parser != NULL)
        g_object_unref(parser);
    g_free(index);
    return total;
}

static int cmp_file_base(const void *a, const void *b) {
    const DqMappedFile *x = *(DqMappedFile *const *)a, *y = *(DqMappedFile *const *)b;
    const char *bx = strrchr(x->path, '/'), *by = strrchr(y->path, '/');
    return strcmp(bx ? bx + 1 : x->path, by ? by + 1 : y->path);
}

static void checksum_u64(GChecksum *c, uint64_t v) {
    guchar le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (guchar)(v >> (8 * i));
    g_checksum_update(c, le, sizeof le);
}

/* 1024 windows of 4 KiB: 4 MiB hashed a file (~30 ms), whatever its size. */
enum { FINGERPRINT_WINDOWS = 1024, FINGERPRINT_WINDOW = 4096 };

void safetensors_fingerprint_update(const DqSafeTensors *st, GChecksum *c) {
    guint n = st->files->len;
    DqMappedFile **files = g_new(DqMappedFile *, MAX(n, 1));
    for (guint i = 0; i < n; i++)
        files[i] = g_ptr_array_index(st->files, i);
    qsort(files, n, sizeof *files, cmp_file_base); // NOLINT(bugprone-sizeof-expression): pointers
    for (guint i = 0; i < n; i++) {
        const DqMappedFile *mf = files[i];
        const char *base = strrchr(mf->path, '/');
        base = base ? base + 1 : mf->path;
        g_checksum_update(c, (const guchar *)base, (gssize)strlen(base) + 1);
        checksum_u64(c, mf->size);
        /* parse_into checked that the header's length fits the file. */
        uint64_t hlen = 0;
        for (int b = 7; b >= 0; b--)
            hlen = (hlen << 8) | mf->data[b];
        g_checksum_update(c, mf->data, (gssize)(8 + hlen));
        /* The header alone does not tell a fine-tune from its base model (same names, shapes
         * and offsets): windows spread evenly over the tensor data do, since training moves
         * nearly every weight. The tensors fill the file from the header to its end. */
        const uint8_t *data = mf->data + 8 + hlen;
        size_t len = mf->size - 8 - hlen;
        if (len <= FINGERPRINT_WINDOWS * FINGERPRINT_WINDOW) {
            if (len > 0)
                g_checksum_update(c, data, (gssize)len);
        } else {
            for (size_t w = 0; w < FINGERPRINT_WINDOWS; w++) {
                size_t at =
                    (size_t)((uint64_t)w * (len - FINGERPRINT_WINDOW) / (FINGERPRINT_WINDOWS - 1));
                g_checksum_update(c, data + at, FINGERPRINT_WINDOW);
            }
        }
    }
    g_free(files);
}

guint64 safetensors_loaded_bytes(const DqSafeTensors *st, size_t matrix_bytes) {
    guint64 total = 0;
    GHashTableIter it;
    gpointer value;
    g_hash_table_iter_init(&it, st->tensors);
    while (g_hash_table_iter_next(&it, NULL, &value)) {
        const DqTensor *t = value;
        total += (guint64)t->numel * (t->ndim >= 2 ? matrix_bytes : sizeof(float));
    }
    return total;
}

guint safetensors_count(const DqSafeTensors *st) {
    return g_hash_table_size(st->tensors);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char **safetensors_names(const DqSafeTensors *st) {
    guint n = 0;
    const char **names = (const char **)g_hash_table_get_keys_as_array(st->tensors, &n);
    qsort(names, n, sizeof *names, cmp_str);
    return names;
}

const DqTensor *safetensors_get(const DqSafeTensors *st, const char *name) {
    return g_hash_table_lookup(st->tensors, name);
}

static char *shape_str(int ndim, const int64_t *shape) {
    GString *s = g_string_new("[");
    for (int i = 0; i < ndim; i++)
        g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? ", " : "", shape[i]);
    g_string_append_c(s, ']');
    return g_string_free(s, FALSE);
}

const DqTensor *safetensors_require(const DqSafeTensors *st, const char *name, int ndim,
                                    const int64_t *shape, GError **err) {
    const DqTensor *t = safetensors_get(st, name);
    if (t == NULL) {
        const char *where = st->files->len > 0
                                ? ((DqMappedFile *)g_ptr_array_index(st->files, 0))->path
                                : "safetensors";
        dq_fail(err, DQ_ERR_MODEL, "%s: tensor '%s' is missing", where, name);
        return NULL;
    }
    gboolean same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        char *have = shape_str(t->ndim, t->shape);
        char *want = shape_str(ndim, shape);
        dq_fail(err, DQ_ERR_MODEL, "%s: tensor '%s' has shape %s, config.json implies %s", t->file,
                name, have, want);
        g_free(have);
        g_free(want);
        return NULL;
    }
    return t;
}
