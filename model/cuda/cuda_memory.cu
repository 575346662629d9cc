/* The CUDA backend's memory: the caching pool of device blocks, the pinned staging ring and the
 * copies through it (tiles on their own stream), and the weights, uploaded once and converted to
 * bf16 (or kept float32 with DOCQA_CUDA_F32=1). */
#include "cuda_internal.h"

/* ---- caching pool */

size_t size_class(size_t bytes) {
    return dq_pool_size_class(bytes);
}

void pool_trim(CudaCtx *c) {
    /* Hands every cached block back to the driver (after the queued work that may use them).
     * The sync also reports a fault of that work: recorded under this name, not a later op's. */
    CK(c, cudaStreamSynchronize(c->stream));
    GHashTableIter it;
    gpointer key, val;
    g_hash_table_iter_init(&it, c->free_lists);
    while (g_hash_table_iter_next(&it, &key, &val)) {
        for (GSList *l = (GSList *)val; l != NULL; l = l->next) {
            cudaFree(l->data);
            c->pool_bytes -= GPOINTER_TO_SIZE(key);
        }
        g_slist_free((GSList *)val);
        g_hash_table_iter_remove(&it);
    }
}

void *pool_get(CudaCtx *c, size_t bytes) {
    size_t cls = size_class(bytes);
    gpointer key = GSIZE_TO_POINTER(cls);
    GSList *l = (GSList *)g_hash_table_lookup(c->free_lists, key);
    if (l == NULL && cls > ((size_t)1 << 20)) {
        /* Batches vary in size: a cached block up to twice as large serves too, so that after
         * the first large batch no cudaMalloc is needed. */
        GHashTableIter it;
        gpointer k, v;
        size_t best = 0;
        g_hash_table_iter_init(&it, c->free_lists);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            size_t kc = GPOINTER_TO_SIZE(k);
            if (v != NULL && dq_pool_serves(kc, cls) && (best == 0 || kc < best))
                best = kc;
        }
        if (best != 0) {
            key = GSIZE_TO_POINTER(best);
            l = (GSList *)g_hash_table_lookup(c->free_lists, key);
        }
    }
    void *p = NULL;
    if (l != NULL) {
        p = l->data;
        g_hash_table_insert(c->free_lists, key, g_slist_delete_link(l, l));
    } else {
        if (c->capturing) {
            /* cudaMalloc is not allowed in a stream capture: the step is redone plainly, which
             * allocates the block for the next recording. */
            record(c, cudaErrorStreamCaptureUnsupported, "a new pool block while recording");
            return NULL;
        }
        if (cudaMalloc(&p, cls) != cudaSuccess) {
            cudaGetLastError(); /* not sticky: out of memory is reported, not fatal */
            pool_trim(c);
            if (cudaMalloc(&p, cls) != cudaSuccess) {
                cudaGetLastError();
                char info[96];
                mem_info(info, sizeof info);
                g_warning("%s: out of GPU memory: a buffer of %.1f MiB is needed, %s "
                          "(%.0f MiB in docqa's pool, %.0f MiB of weights)",
                          c->label, mib(cls), info, mib(c->pool_bytes), mib(c->weight_bytes));
                return NULL;
            }
        }
        c->pool_bytes += cls;
    }
    g_hash_table_insert(c->live, p, key);
    return p;
}

gboolean pool_put(CudaCtx *c, void *p) {
    gpointer key;
    if (!g_hash_table_lookup_extended(c->live, p, NULL, &key))
        return FALSE;
    g_hash_table_remove(c->live, p);
    GSList *l = (GSList *)g_hash_table_lookup(c->free_lists, key);
    g_hash_table_insert(c->free_lists, key, g_slist_prepend(l, p));
    return TRUE;
}

/* ---- pinned ring */

/* The ring's marks and waits (staging_ring.h) are a slot's event on the main stream. While a
 * graph is recorded neither is needed: graph_begin waited for the stream, and the recorded copies
 * run at the replay, which graph_end waits for. */
static void ring_mark(void *user, int slot) {
    CudaCtx *c = (CudaCtx *)user;
    if (!c->capturing)
        CK(c, cudaEventRecord(c->ring_ev[slot], c->stream));
}

static void ring_wait(void *user, int slot) {
    CudaCtx *c = (CudaCtx *)user;
    if (!c->capturing)
        CK(c, cudaEventSynchronize(c->ring_ev[slot]));
}

extern const DqStagingRingOps ring_ops;
const DqStagingRingOps ring_ops = {ring_mark, ring_wait};

/* The ring is free again (the stream has been waited for). */
void ring_reset(CudaCtx *c) {
    staging_ring_reset(&c->ring);
}

/* Room for `bytes` in the ring (64-byte aligned) that no queued copy still reads; *ok FALSE when
 * bytes exceed the ring, or when the ring would have to wrap (and wait) while a graph is
 * recorded (recorded as the recording's failure). Once the part's copy is queued, and on the main
 * stream where it was queued on another: ring_commit. */
static size_t ring_take(CudaCtx *c, size_t bytes, gboolean *ok) {
    size_t off = 0;
    if (c->capturing && bytes <= DQ_CUDA_RING_BYTES && !staging_ring_fits(&c->ring, bytes)) {
        /* No waiting inside a capture: the recording fails instead. */
        record(c, cudaErrorStreamCaptureUnsupported, "pinned ring full while recording");
        *ok = FALSE;
        return 0;
    }
    *ok = staging_ring_take(&c->ring, bytes, &off);
    return off;
}

static void ring_commit(CudaCtx *c) {
    staging_ring_commit(&c->ring);
}

/* A device copy of a small host array, valid for the ops queued next. */
const void *stage_small(CudaCtx *c, const void *host, size_t bytes) {
    gboolean ok;
    size_t off = ring_take(c, bytes, &ok);
    if (!ok) {
        record(c, cudaErrorInvalidValue, "staging a host array larger than the pinned ring");
        return NULL;
    }
    memcpy(c->ring_host + off, host, bytes);
    CK(c, cudaMemcpyAsync(c->ring_dev + off, c->ring_host + off, bytes, cudaMemcpyHostToDevice,
                          c->stream));
    ring_commit(c);
    return c->ring_dev + off;
}

/* ---- memory ops */

float *cuda_alloc(DqBackend *be, size_t n) {
    CudaCtx *c = ctx_of(be);
    if (c->sticky != cudaSuccess)
        return NULL;
    size_t bytes = MAX(n, (size_t)1) * sizeof(float);
    float *p = (float *)pool_get(c, bytes);
    /* Zero-filled like the CPU backend's buffers. */
    if (p != NULL)
        CK(c, cudaMemsetAsync(p, 0, bytes, c->stream));
    return p;
}

void cuda_release(DqBackend *be, float *buf) {
    CudaCtx *c = ctx_of(be);
    if (buf != NULL && buf == c->px_read_buf)
        c->px_read_buf = NULL; /* whoever gets it next may use it on the main stream */
    if (buf != NULL && !pool_put(c, buf))
        g_warning("%s: release of a pointer the pool never gave out", c->label);
}

/* Pageable host memory into the pinned ring. One core copies ~5 GB/s, so a batch of 64 pages
 * (~1300 512-pixel tiles, 4 GB) took about as long to stage as the GPU took to encode it: parts
 * from 2 MB on (a tile is 3 MB) are copied by up to 4 threads, 512 KB at a time. */
#define STAGING_BLOCK ((size_t)512 << 10)

static void staging_copy(uint8_t *dst, const uint8_t *src, size_t bytes) {
    const long blocks = (long)((bytes + STAGING_BLOCK - 1) / STAGING_BLOCK);
    if (blocks < 4) {
        memcpy(dst, src, bytes);
        return;
    }
#pragma omp parallel for num_threads(4) schedule(static)
    for (long b = 0; b < blocks; b++) {
        size_t o = (size_t)b * STAGING_BLOCK;
        memcpy(dst + o, src + o, MIN(STAGING_BLOCK, bytes - o));
    }
}

void cuda_upload(DqBackend *be, float *dst, const float *src, size_t n) {
    CudaCtx *c = ctx_of(be);
    size_t bytes = n * sizeof(float);
    for (size_t done = 0; done < bytes && c->sticky == cudaSuccess;) {
        size_t part = MIN(bytes - done, DQ_CUDA_RING_SLOT);
        gboolean ok;
        size_t off = ring_take(c, part, &ok);
        if (!ok)
            break; /* recording a graph: already recorded as its failure */
        staging_copy(c->ring_host + off, (const uint8_t *)src + done, part);
        CK(c, cudaMemcpyAsync((uint8_t *)dst + done, c->ring_host + off, part,
                              cudaMemcpyHostToDevice, c->stream));
        ring_commit(c);
        done += part;
    }
}

/* Bytes [from, from + n) of the tiles laid end to end into dst, by staging_copy's threads. */
static void staging_gather(uint8_t *dst, const DqPixelTile *tiles, size_t tile_bytes, size_t from,
                           size_t n) {
    const long blocks = (long)((n + STAGING_BLOCK - 1) / STAGING_BLOCK);
#pragma omp parallel for num_threads(4) schedule(static) if (blocks >= 4)
    for (long b = 0; b < blocks; b++) {
        for (size_t i = (size_t)b * STAGING_BLOCK, end = MIN(n, i + STAGING_BLOCK); i < end;) {
            size_t g = from + i, k = g % tile_bytes, run = MIN(end - i, tile_bytes - k);
            memcpy(dst + i, tiles[g / tile_bytes].bytes + k, run);
            i += run;
        }
    }
}

/* A part of a pixel upload queued on stream s: the main stream waits for it. */
static void upload_part_done(CudaCtx *c, cudaStream_t s) {
    if (s == c->stream)
        return;
    CK(c, cudaEventRecord(c->px_copied, s));
    CK(c, cudaStreamWaitEvent(c->stream, c->px_copied, 0));
}

/* The tiles go up as they are (backend.h): dst holds each tile's tables, [n_tiles][channels]
 * [256] floats, then their bytes end to end, and patchify looks the values up. A quarter of
 * the float32 values' bytes to stage and send, half of bf16's, with nothing computed on the
 * host: staging 64 pages as float32 (4 GB for 256M) kept the GPU waiting on the host, and
 * rounding them to bf16 on the host still read all of those 4 GB. */
void cuda_upload_pixels(DqBackend *be, float *dst, const DqPixelTile *tiles, int n_tiles,
                        int channels, int tile) {
    CudaCtx *c = ctx_of(be);
    /* On the copy stream, the chunk's copies run while the main stream still encodes the chunk
     * before: they wait only for the patchify that last read dst (or, for a buffer new to the
     * uploads, for the main stream's work so far), and the main stream waits for each part.
     * Each wait follows its part's copy, before the part is committed to the ring: the events
     * the ring records on the main stream for the part's slots then cover these copies too. */
    cudaStream_t s = c->copy_stream != NULL && !c->capturing ? c->copy_stream : c->stream;
    if (s != c->stream) {
        if (dst != c->px_read_buf) {
            CK(c, cudaEventRecord(c->px_fence, c->stream));
            CK(c, cudaStreamWaitEvent(s, c->px_fence, 0));
        } else {
            CK(c, cudaStreamWaitEvent(s, c->px_read, 0));
        }
    }
    const size_t lut_bytes = sizeof(float) * 256 * channels;
    const size_t per_part = MAX(DQ_CUDA_RING_SLOT / lut_bytes, (size_t)1);
    for (int t0 = 0; t0 < n_tiles && c->sticky == cudaSuccess; t0 += (int)per_part) {
        int nt = (int)MIN((size_t)(n_tiles - t0), per_part);
        gboolean ok;
        size_t off = ring_take(c, nt * lut_bytes, &ok);
        if (!ok)
            return; /* recording a graph: already recorded as its failure */
        for (int t = 0; t < nt; t++)
            memcpy(c->ring_host + off + t * lut_bytes, tiles[t0 + t].lut, lut_bytes);
        CK(c, cudaMemcpyAsync((uint8_t *)dst + t0 * lut_bytes, c->ring_host + off, nt * lut_bytes,
                              cudaMemcpyHostToDevice, s));
        upload_part_done(c, s);
        ring_commit(c);
    }
    uint8_t *d = (uint8_t *)(dst + (size_t)n_tiles * channels * 256);
    const size_t tile_bytes = (size_t)channels * tile * tile, total = n_tiles * tile_bytes;
    for (size_t done = 0; done < total && c->sticky == cudaSuccess;) {
        size_t part = MIN(total - done, DQ_CUDA_RING_SLOT);
        gboolean ok;
        size_t off = ring_take(c, part, &ok);
        if (!ok)
            return;
        staging_gather(c->ring_host + off, tiles, tile_bytes, done, part);
        CK(c, cudaMemcpyAsync(d + done, c->ring_host + off, part, cudaMemcpyHostToDevice, s));
        upload_part_done(c, s);
        ring_commit(c);
        done += part;
    }
}

void cuda_download(DqBackend *be, float *dst, const float *src, size_t n) {
    CudaCtx *c = ctx_of(be);
    size_t bytes = n * sizeof(float);
    if (c->sticky != cudaSuccess) {
        memset(dst, 0, bytes);
        return;
    }
    if (c->capturing && bytes == 0)
        return;
    if (c->capturing) {
        /* Recorded: an async copy into the pinned download area; graph_end copies it to dst
         * after the replay. Past the area's end the recording fails, and dl_pos tells graph_end
         * how large the area must grow for the next one. */
        size_t off = c->dl_pos;
        c->dl_pos += (bytes + 63) & ~(size_t)63;
        if (c->dl_pos > c->dl_cap) {
            record(c, cudaErrorStreamCaptureUnsupported, "download area full while recording");
            return;
        }
        CK(c, cudaMemcpyAsync(c->dl_host + off, src, bytes, cudaMemcpyDeviceToHost, c->stream));
        Deferred d = {dst, off, bytes};
        g_array_append_val(c->deferred, d);
        return;
    }
    for (size_t done = 0; done < bytes;) {
        size_t part = MIN(bytes - done, DQ_CUDA_RING_BYTES);
        gboolean ok;
        size_t off = ring_take(c, part, &ok);
        CK(c, cudaMemcpyAsync(c->ring_host + off, (const uint8_t *)src + done, part,
                              cudaMemcpyDeviceToHost, c->stream));
        CK(c, cudaStreamSynchronize(c->stream));
        ring_reset(c); /* the stream is idle: the whole ring is free */
        if (c->sticky != cudaSuccess) {
            /* The copy, or an op before it, failed: zeros, as after any error, and never the
             * bytes the ring holds from another transfer. */
            memset((uint8_t *)dst + done, 0, bytes - done);
            return;
        }
        memcpy((uint8_t *)dst + done, c->ring_host + off, part);
        done += part;
    }
}

void cuda_copy(DqBackend *be, float *dst, const float *src, size_t n) {
    CudaCtx *c = ctx_of(be);
    /* After an error every op is skipped (backend_cuda.h), a copy too. */
    if (n > 0 && dst != src && c->sticky == cudaSuccess)
        CK(c, cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, c->stream));
}

/* ---- weights */

__device__ __forceinline__ float load_src(const void *src, int dtype, size_t i) {
    if (dtype == DQ_DTYPE_F32)
        return ((const float *)src)[i];
    if (dtype == DQ_DTYPE_BF16)
        return __bfloat162float(((const __nv_bfloat16 *)src)[i]);
    return __half2float(((const __half *)src)[i]);
}

__global__ void convert_to_bf16_kernel(__nv_bfloat16 *dst, const void *src, int dtype, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(load_src(src, dtype, i));
}

__global__ void convert_to_f32_kernel(float *dst, const void *src, int dtype, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = load_src(src, dtype, i);
}

gboolean is_bf16(CudaCtx *c, const DqWeight *w) {
    return g_hash_table_contains(c->bf16, w->data);
}

/* Before the first weight: does the snapshot fit? The tensors of the first tensor's folder (the
 * files safetensors_snapshot_bytes counts, else the first tensor's own file) give the need,
 * tensor by tensor (safetensors_loaded_bytes): matrices take 2 bytes a parameter on the GPU
 * (bf16), 4 with DOCQA_CUDA_F32=1. Failing here names the whole need instead of some tensor
 * midway. */
static gboolean weights_preflight(CudaCtx *c, const DqTensor *t, GError **err) {
    char *dir = g_path_get_dirname(t->file);
    /* The model's files only: another variant or a draft model beside them would overstate the
     * need and refuse a model that fits. A lone file (not a snapshot's): its own tensors. */
    DqSafeTensors *st = safetensors_snapshot_bytes(dir) > 0 ? safetensors_open_snapshot(dir, NULL)
                                                            : safetensors_open(t->file, NULL);
    /* Tensor by tensor: the first tensor's dtype taken for all of them misjudged a snapshot
     * mixing F32 and BF16 tensors (twice its need, or half). Not readable: no check here, the
     * loader says what is wrong. */
    size_t need = st != NULL ? (size_t)safetensors_loaded_bytes(st, c->f32_weights ? 4 : 2) : 0;
    safetensors_free(st);
    size_t fr = 0, total = 0;
    gboolean ok = TRUE;
    if (need > 0 && cudaMemGetInfo(&fr, &total) == cudaSuccess && need > fr)
        ok = dq_fail(err, DQ_ERR_DEVICE,
                     "%s: the weights in %s need about %.0f MiB on the GPU (%s), but only %.0f "
                     "MiB of %.0f MiB are free",
                     c->label, dir, mib(need), c->f32_weights ? "float32" : "bf16", mib(fr),
                     mib(total));
    g_free(dir);
    return ok;
}

gboolean cuda_weight_init(DqBackend *be, DqWeight *w, const DqTensor *t, int rows, int cols,
                          GError **err) {
    CudaCtx *c = ctx_of(be);
    if (!dq_weight_shape(w, t, rows, cols, err))
        return FALSE;
    if (c->sticky != cudaSuccess)
        return dq_fail(err, DQ_ERR_DEVICE, "%s", c->sticky_msg);
    if (!c->preflight_done) {
        c->preflight_done = TRUE;
        if (!weights_preflight(c, t, err))
            return FALSE;
    }
    /* Matrices (linear layers, embedding tables) in bf16: half the memory and the tensor-core
     * path; vectors (norm weights, biases) stay float32 since they cost nothing. */
    gboolean to_bf16 = rows > 1 && !c->f32_weights;
    size_t n = (size_t)t->numel, esz = dq_dtype_size(t->dtype);
    size_t bytes = n * (to_bf16 ? sizeof(__nv_bfloat16) : sizeof(float));
    void *dst = NULL;
    if (cudaMalloc(&dst, MAX(bytes, (size_t)1)) != cudaSuccess) {
        cudaGetLastError();
        pool_trim(c);
        if (cudaMalloc(&dst, MAX(bytes, (size_t)1)) != cudaSuccess) {
            cudaGetLastError();
            char info[96];
            mem_info(info, sizeof info);
            return dq_fail(err, DQ_ERR_DEVICE,
                           "%s: out of GPU memory loading tensor '%s' of %s: it needs %.1f MiB "
                           "beyond the %.0f MiB of weights loaded so far, with %s (the model's "
                           "bf16 matrices need about 2 bytes a parameter plus activations)",
                           c->label, t->name, t->file, mib(bytes), mib(c->weight_bytes), info);
        }
    }
    /* The file's bytes go up in chunks and are converted on the GPU. */
    size_t per_chunk = DQ_CUDA_LOAD_CHUNK / esz;
    for (size_t i0 = 0; i0 < n; i0 += per_chunk) {
        size_t m = MIN(per_chunk, n - i0);
        CK(c, cudaMemcpyAsync(c->load_stage, (const uint8_t *)t->data + i0 * esz, m * esz,
                              cudaMemcpyHostToDevice, c->stream));
        if (to_bf16)
            convert_to_bf16_kernel<<<grid_for(m, 256), 256, 0, c->stream>>>(
                (__nv_bfloat16 *)dst + i0, c->load_stage, (int)t->dtype, m);
        else
            convert_to_f32_kernel<<<grid_for(m, 256), 256, 0, c->stream>>>(
                (float *)dst + i0, c->load_stage, (int)t->dtype, m);
        CK_LAUNCH(c, "weight conversion");
        /* The stage is reused by the next chunk; pageable copies are not ordered with it. */
        CK(c, cudaStreamSynchronize(c->stream));
    }
    if (c->sticky != cudaSuccess) {
        cudaFree(dst);
        return dq_fail(err, DQ_ERR_DEVICE, "%s: loading tensor '%s' of %s: %s", c->label, t->name,
                       t->file, c->sticky_msg);
    }
    c->weight_bytes += bytes;
    w->data = (const float *)dst;
    w->owned = dst;
    if (to_bf16)
        g_hash_table_add(c->bf16, dst);
    return TRUE;
}

void cuda_weight_free(DqBackend *be, DqWeight *w) {
    CudaCtx *c = ctx_of(be);
    if (w->owned != NULL) {
        /* smolvlm builds some weights from alloc()ed buffers (gathered position embeddings). */
        if (!pool_put(c, w->owned)) {
            g_hash_table_remove(c->bf16, w->owned);
            CK(c, cudaStreamSynchronize(c->stream));
            cudaFree(w->owned);
        }
    }
    memset(w, 0, sizeof *w);
}
