/* Decode steps recorded as CUDA graphs (DOCQA_CUDA_GRAPHS=1; the design notes are in
 * backend_cuda.cu). */
#include "cuda_internal.h"

/* ---- recorded steps: CUDA graphs */

void graph_exec_drop(DqGraphEntry *e) {
    if (e->exec != NULL)
        cudaGraphExecDestroy((cudaGraphExec_t)e->exec);
    e->exec = NULL;
}

gboolean cuda_graph_begin(DqBackend *be, uint64_t key) {
    CudaCtx *c = ctx_of(be);
    if (!c->graphs_on || c->capturing || c->sticky != cudaSuccess)
        return FALSE;
    /* The stream idle and the ring empty: nothing recorded will need to wait for earlier work,
     * and the pinned bytes that recorded uploads read stay as written until the replay. A
     * recorded patchify marks no buffer: the next upload waits for the whole stream. */
    c->px_read_buf = NULL;
    CK(c, cudaStreamSynchronize(c->stream));
    if (c->sticky != cudaSuccess)
        return FALSE;
    ring_reset(c);
    if (c->dl_host == NULL || c->dl_need > c->dl_cap) {
        size_t cap = MAX(c->dl_need + c->dl_need / 4, DQ_CUDA_DL_MIN_BYTES);
        if (c->dl_host != NULL)
            cudaFreeHost(c->dl_host);
        c->dl_cap = 0;
        if (cudaHostAlloc((void **)&c->dl_host, cap, cudaHostAllocDefault) != cudaSuccess) {
            cudaGetLastError();
            c->dl_host = NULL;
            g_warning("%s: no pinned memory for a download area of %.1f MiB: CUDA graphs off",
                      c->label, mib(cap));
            c->graphs_on = FALSE;
            return FALSE;
        }
        c->dl_cap = cap;
    }
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        cudaGetLastError();
        g_warning("%s: stream capture refused (%s): CUDA graphs off", c->label,
                  cudaGetErrorString(e));
        c->graphs_on = FALSE;
        return FALSE;
    }
    c->capturing = TRUE;
    c->cap_err = cudaSuccess;
    c->cap_msg[0] = '\0';
    c->cap_key = key;
    c->cap_inv.half = 0;
    c->dl_pos = 0;
    g_array_set_size(c->deferred, 0);
    return TRUE;
}

/* The graph for the recorded key and node count, updated to `graph` or instantiated from it;
 * NULL on failure (the message in c->cap_msg). */
static cudaGraphExec_t graph_exec_for(CudaCtx *c, cudaGraph_t graph) {
    size_t nodes = 0;
    if (cudaGraphGetNodes(graph, NULL, &nodes) != cudaSuccess) {
        cudaGetLastError();
        nodes = 0; /* matched by key alone: at worst an update refused */
    }
    DqGraphEntry *slot = dq_graph_table_find(&c->graphs, c->cap_key, nodes);
    if (slot != NULL) {
        cudaGraphExec_t kept = (cudaGraphExec_t)slot->exec;
#if CUDART_VERSION >= 12000
        cudaGraphExecUpdateResultInfo info;
        cudaError_t e = cudaGraphExecUpdate(kept, graph, &info);
#else
        cudaGraphNode_t bad = NULL;
        cudaGraphExecUpdateResult info;
        cudaError_t e = cudaGraphExecUpdate(kept, graph, &bad, &info);
#endif
        if (e == cudaSuccess) {
            c->gstats.updated++;
            dq_graph_table_touch(&c->graphs, slot);
            return kept;
        }
        /* Refused (a changed kernel, another topology of as many nodes): a new one. */
        cudaGetLastError();
        c->gstats.update_refused++;
    } else {
        slot = dq_graph_table_take(&c->graphs); /* the least recently used when full */
    }
    graph_exec_drop(slot);
    cudaGraphExec_t exec = NULL;
    cudaError_t e = cudaGraphInstantiateWithFlags(&exec, graph, 0);
    if (e != cudaSuccess) {
        cudaGetLastError();
        g_snprintf(c->cap_msg, sizeof c->cap_msg, "cudaGraphInstantiate: %s",
                   cudaGetErrorString(e));
        dq_graph_table_remove(&c->graphs, slot); /* no exec: not kept */
        return NULL;
    }
    c->gstats.instantiated++;
    dq_graph_table_set(&c->graphs, slot, c->cap_key, nodes, exec);
    return exec;
}

gboolean cuda_graph_end(DqBackend *be, gboolean run) {
    CudaCtx *c = ctx_of(be);
    if (!c->capturing)
        return FALSE;
    c->capturing = FALSE;
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    if (e != cudaSuccess && c->cap_err == cudaSuccess) {
        c->cap_err = e;
        g_snprintf(c->cap_msg, sizeof c->cap_msg, "cudaStreamEndCapture: %s",
                   cudaGetErrorString(e));
    }
    if (c->dl_pos > c->dl_cap)
        c->dl_need = c->dl_pos; /* the next graph_begin grows the area */
    cudaGraphExec_t exec = NULL;
    if (run && c->cap_err == cudaSuccess && graph != NULL)
        exec = graph_exec_for(c, graph);
    if (graph != NULL)
        cudaGraphDestroy(graph);
    cudaGetLastError(); /* a failed capture's errors are not the stream's */
    if (!run)
        return FALSE;
    if (exec == NULL) {
        c->gstats.failed++;
        if (++c->graph_failures >= DQ_CUDA_GRAPH_MAX_FAILURES) {
            g_warning("%s: recording a step as a CUDA graph failed %d times in a row (last: %s): "
                      "CUDA graphs off for this backend",
                      c->label, c->graph_failures, c->cap_msg[0] ? c->cap_msg : "no graph");
            c->graphs_on = FALSE;
        }
        return FALSE;
    }
    c->graph_failures = 0;
    CK(c, cudaGraphLaunch(exec, c->stream));
    CK(c, cudaStreamSynchronize(c->stream));
    c->gstats.replayed++;
    if (c->cap_inv.half != 0 && c->sticky == cudaSuccess)
        c->inv_rope = c->cap_inv; /* the recorded table copy has run */
    for (guint i = 0; i < c->deferred->len; i++) {
        const Deferred *d = &g_array_index(c->deferred, Deferred, i);
        if (c->sticky != cudaSuccess)
            memset(d->dst, 0, d->bytes);
        else
            memcpy(d->dst, c->dl_host + d->off, d->bytes);
    }
    g_array_set_size(c->deferred, 0);
    return TRUE;
}
