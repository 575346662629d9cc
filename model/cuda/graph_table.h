/* The CUDA backend's table of kept step graphs (cuda_graph.cu, graph_exec_for), apart from
 * CUDA so that it is tested on the CPU (tests/model/test_staging_ring.c).
 *
 * A recorded step is looked up by the caller's key and the recording's node count: the key
 * names the step's shape as the model sees it (segments, rows, logits), which does not say
 * everything the backend records (a decode sequence whose keys span more than one run of 256
 * adds a merge kernel a layer). Matched by key alone, a recording of the other shape had its
 * update refused and replaced the kept graph, and steps alternating between two such shapes
 * built a graph each time. Up to DQ_GRAPH_TABLE_KEPT graphs are kept; beyond, the least
 * recently used one makes room. Entries stay dense: [0, n) are in use.
 *
 * Header-only (static inline), plain C: the executable graph is an opaque pointer here.
 */
#ifndef DQ_CUDA_GRAPH_TABLE_H
#define DQ_CUDA_GRAPH_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define DQ_GRAPH_TABLE_KEPT 16

typedef struct {
    uint64_t key;
    size_t nodes;
    void *exec; /* cudaGraphExec_t */
    uint64_t used_at;
} DqGraphEntry;

typedef struct {
    DqGraphEntry e[DQ_GRAPH_TABLE_KEPT];
    int n;
    uint64_t clock;
} DqGraphTable;

/* The graph kept for a recording of `key` with `nodes` nodes, or NULL. */
static inline DqGraphEntry *dq_graph_table_find(DqGraphTable *t, uint64_t key, size_t nodes) {
    for (int i = 0; i < t->n; i++)
        if (t->e[i].key == key && t->e[i].nodes == nodes)
            return &t->e[i];
    return NULL;
}

/* The entry was used now (a replay). */
static inline void dq_graph_table_touch(DqGraphTable *t, DqGraphEntry *e) {
    e->used_at = ++t->clock;
}

/* An entry for a new graph: a free one, else the least recently used, whose exec (still set)
 * the caller destroys before dq_graph_table_set. */
static inline DqGraphEntry *dq_graph_table_take(DqGraphTable *t) {
    if (t->n < DQ_GRAPH_TABLE_KEPT) {
        DqGraphEntry *e = &t->e[t->n++];
        memset(e, 0, sizeof *e);
        return e;
    }
    DqGraphEntry *old = &t->e[0];
    for (int i = 1; i < t->n; i++)
        if (t->e[i].used_at < old->used_at)
            old = &t->e[i];
    return old;
}

static inline void dq_graph_table_set(DqGraphTable *t, DqGraphEntry *e, uint64_t key, size_t nodes,
                                      void *exec) {
    e->key = key;
    e->nodes = nodes;
    e->exec = exec;
    dq_graph_table_touch(t, e);
}

/* Drops an entry (its exec already destroyed): the last one takes its place. */
static inline void dq_graph_table_remove(DqGraphTable *t, DqGraphEntry *e) {
    *e = t->e[--t->n];
    memset(&t->e[t->n], 0, sizeof t->e[0]);
}

#endif
