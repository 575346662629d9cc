/* The CUDA backend's host-side shape decisions (model/cuda/launch_plan.h) on the CPU, against a
 * direct model of what they must do:
 * - every segment of attention_segments is taken by exactly one launch, the one of its class,
 *   and the class follows from its row count alone (decode rows, the float32 flash kernel,
 *   tensor cores);
 * - among decode rows, the group kernel takes a segment when all its rows of a KV group's heads
 *   fit a block, the per-head kernel otherwise, whatever the segment is batched with; the
 *   group kernel's runs' states hold every run and row of every segment it takes;
 * - the decode group kernel's shared memory stays within what a launch gets without an opt-in,
 *   and covers the kernel's own layout; the flash kernel's stays within what attention_init
 *   opts in to;
 * - the caching pool's size classes, and its reuse of larger blocks: once a batch's buffers are
 *   cached, any batch needing at least half of each takes no new block.
 * Batches are drawn at the real sizes: the 256M decoder (9 heads, 3 KV heads), the 2.2B one (32
 * and 32), others for the edges; 64 sequences of up to ~2000 keys. */
#include <glib.h>
#include <string.h>

#include "cuda/launch_plan.h"

/* ---- attention kernels by segment */

static void test_segment_classes(void) {
    for (int tc = 0; tc <= 1; tc++) {
        for (int nq = 1; nq <= 20000; nq += nq < 300 ? 1 : 97) {
            /* the model: up to 4 rows decode, from DQ_CUDA_TC_MIN_ROWS (64) rows tensor cores
             * when they take prompts at all, the flash kernel between */
            const DqAttClass want = nq <= 4                           ? DQ_ATT_DECODE
                                    : tc && nq >= DQ_CUDA_TC_MIN_ROWS ? DQ_ATT_TC
                                                                      : DQ_ATT_MID;
            g_assert_cmpint(dq_att_class(nq, tc), ==, want);
            /* a class's launch happens when a segment of the batch is of that class: with the
             * tensor-core kernels off, no segment is, and no launch of theirs happens */
            int takers = 0;
            for (int k = DQ_ATT_DECODE; k <= (tc ? DQ_ATT_TC : DQ_ATT_MID); k++) {
                int lo, hi;
                dq_att_class_rows((DqAttClass)k, tc, &lo, &hi);
                g_assert_cmpint(lo, <=, hi);
                if (nq >= lo && nq <= hi) {
                    takers++;
                    g_assert_cmpint(k, ==, want);
                }
            }
            g_assert_cmpint(takers, ==, 1);
        }
    }
}

typedef struct {
    int n_heads, n_kv_heads;
} Heads;

static const Heads heads[] = {
    {9, 3},                     /* SmolVLM-256M: 3 query heads a KV head */
    {32, 32},                   /* SmolVLM-2.2B: no GQA */
    {32, 8},  {15, 5}, {16, 1}, /* 16 query heads a KV head: one row a block */
    {32, 1},                    /* 32: more than a block holds, the per-head kernel only */
    {12, 2},  {6, 1},
};

/* Which decode kernel takes a segment of nq rows under plan p (0: none, 1: group, 2: per head);
 * max_q: the call's largest segment (the per-head kernel's grid). */
static int decode_taker(const DqDecodePlan *p, int q_lo, int q_hi, int max_q, int nq) {
    int takers = 0, who = 0;
    if (p->group && nq >= MAX(q_lo, 1) && nq <= p->group_hi) {
        takers++;
        who = 1;
    }
    if (p->head && nq >= p->head_lo && nq <= q_hi && nq <= max_q) {
        takers++;
        who = 2;
    }
    g_assert_cmpint(takers, <=, 1);
    return who;
}

/* Decode rows of attention_segments (q_lo 1, q_hi 4) and of attention() (0, INT_MAX: one
 * sequence length a call). */
static void check_decode_batch(const Heads *h, gboolean group, const int *nq, const int *past,
                               int n, int q_lo, int q_hi) {
    const int G = h->n_heads / h->n_kv_heads;
    int max_q = 0, kv_max = 0;
    for (int s = 0; s < n; s++) {
        max_q = MAX(max_q, nq[s]);
        kv_max = MAX(kv_max, past[s] + nq[s]);
    }
    const DqDecodePlan p =
        dq_decode_plan(q_lo, q_hi, max_q, kv_max, h->n_heads, h->n_kv_heads, group);
    g_assert_cmpint(p.part_runs, >=, 1);
    for (int s = 0; s < n; s++) {
        const int who = decode_taker(&p, q_lo, q_hi, max_q, nq[s]);
        /* the model: the group kernel when it is on and the segment's rows of the group's heads
         * fit its block, the per-head kernel else */
        const int want = group && G * nq[s] <= DQ_CUDA_DG_RMAX ? 1 : 2;
        if (who != want)
            g_error("%d heads / %d KV heads, group kernel %s: a segment of %d rows in a batch "
                    "of %d (the largest %d rows) went to kernel %d, not %d",
                    h->n_heads, h->n_kv_heads, group ? "on" : "off", nq[s], n, max_q, who, want);
        /* alone, it goes to the same one */
        const DqDecodePlan alone =
            dq_decode_plan(q_lo, q_hi, nq[s], past[s] + nq[s], h->n_heads, h->n_kv_heads, group);
        g_assert_cmpint(decode_taker(&alone, q_lo, q_hi, nq[s], nq[s]), ==, who);
        if (who == 1) {
            /* its rows in the block's registers, its runs and rows in the states */
            g_assert_cmpint(G * nq[s], <=, DQ_CUDA_DG_RMAX);
            g_assert_cmpint(nq[s], <=, p.group_q);
            g_assert_cmpint(dq_decode_runs(past[s] + nq[s]), <=, p.part_runs);
            if (p.part_runs > 1)
                g_assert_cmpint(G * nq[s], <=, p.part_rows);
        }
    }
    if (p.group) {
        g_assert_cmpint(p.part_rows, ==, G * p.group_q);
        g_assert_cmpint(p.part_rows, <=, DQ_CUDA_DG_RMAX);
    }
}

static void test_decode_launches(void) {
    GRand *rng = g_rand_new_with_seed(20261129);
    for (size_t hi = 0; hi < G_N_ELEMENTS(heads); hi++) {
        for (int group = 0; group <= 1; group++) {
            for (int round = 0; round < 300; round++) {
                const int n = g_rand_int_range(rng, 1, 65);
                int nq[64], past[64];
                /* mostly single rows (greedy steps), some verification steps of 2 to 4 */
                for (int s = 0; s < n; s++) {
                    nq[s] = g_rand_int_range(rng, 0, 4) == 0 ? g_rand_int_range(rng, 1, 5) : 1;
                    past[s] = g_rand_int_range(rng, 0, 2000);
                }
                check_decode_batch(&heads[hi], group, nq, past, n, 1, DQ_CUDA_ATT_DECODE_ROWS);
                /* attention(): one sequence length for the call */
                for (int s = 0; s < n; s++)
                    nq[s] = nq[0];
                check_decode_batch(&heads[hi], group, nq, past, n, 0, INT_MAX);
            }
        }
    }
    g_rand_free(rng);
}

/* ---- shared memory */

static void test_shared_memory(void) {
    /* The decode group kernel: head sizes up to 64 (two 32-lane chunks), every group size and
     * row count a block holds. Its layout, as the kernel carves it: the scaled queries [R][hd],
     * then either each warp's K tile [32][hd + 1] or the warps' maxima [W][R], totals [W][R]
     * and sums [W][R][hd]. */
    for (int hd = 1; hd <= 64; hd++) {
        for (int G = 1; G <= DQ_CUDA_DG_RMAX; G++) {
            for (int max_q = 1; max_q <= DQ_CUDA_ATT_DECODE_ROWS; max_q++) {
                const int R = G * max_q;
                if (R > DQ_CUDA_DG_RMAX)
                    continue;
                const size_t got = dq_decode_group_smem(hd, G, max_q);
                const size_t sq = (size_t)R * hd;
                const size_t tiles = (size_t)DQ_CUDA_DG_WARPS * 32 * (hd + 1);
                const size_t states =
                    2 * (size_t)DQ_CUDA_DG_WARPS * R + (size_t)DQ_CUDA_DG_WARPS * R * hd;
                g_assert_cmpuint(got, >=, (sq + MAX(tiles, states)) * sizeof(float));
                if (got > DQ_CUDA_SMEM_DEFAULT)
                    g_error("decode group kernel, head_dim %d, %d rows: %zu bytes of shared "
                            "memory, more than a launch gets without an opt-in",
                            hd, R, got);
            }
        }
    }
    /* The flash kernel: up to 64 dims without an opt-in; 65 .. 96 and 97 .. 128 within what
     * attention_init sets for NCH 3 and 4 (dq_flash_smem(96) and (128)). */
    for (int hd = 1; hd <= 128; hd++) {
        const size_t got = dq_flash_smem(hd);
        g_assert_cmpuint(got, ==, (32 * (size_t)hd + 32 * (size_t)(hd + 1) + 32 * (size_t)hd) * 4);
        const size_t limit = hd <= 64   ? DQ_CUDA_SMEM_DEFAULT
                             : hd <= 96 ? dq_flash_smem(96)
                                        : dq_flash_smem(128);
        g_assert_cmpuint(got, <=, limit);
    }
}

/* ---- the caching pool */

static void check_class(size_t bytes) {
    const size_t c = dq_pool_size_class(bytes), mib = (size_t)1 << 20;
    g_assert_cmpuint(c, >=, MAX(bytes, 1));
    if (bytes <= mib) {
        g_assert_cmpuint(c, >=, 256);
        g_assert_cmpuint(c & (c - 1), ==, 0); /* a power of two */
        g_assert_true(c == 256 || c < 2 * bytes);
    } else {
        g_assert_cmpuint(c % (2 * mib), ==, 0);
        g_assert_cmpuint(c, <, bytes + 2 * mib);
    }
}

static void test_pool_classes(void) {
    for (size_t b = 0; b <= ((size_t)5 << 20); b += b < 4096 ? 1 : 997)
        check_class(b);
    GRand *rng = g_rand_new_with_seed(7);
    for (int i = 0; i < 100000; i++)
        check_class((size_t)g_rand_double_range(rng, 0, (double)((size_t)16 << 30)));
    g_rand_free(rng);
    for (size_t b = 1; b < ((size_t)8 << 20); b += 4093) /* monotone */
        g_assert_cmpuint(dq_pool_size_class(b), <=, dq_pool_size_class(b + 4093));
    /* a larger cached block serves from 1 MiB up, up to twice the class asked for */
    const size_t mib = (size_t)1 << 20;
    g_assert_false(dq_pool_serves(2 * mib, mib));     /* 1 MiB classes: exact only */
    g_assert_false(dq_pool_serves(4 * mib, 4 * mib)); /* the same class: its own list */
    g_assert_true(dq_pool_serves(6 * mib, 4 * mib));
    g_assert_true(dq_pool_serves(8 * mib, 4 * mib));
    g_assert_false(dq_pool_serves(10 * mib, 4 * mib)); /* more than twice */
    g_assert_false(dq_pool_serves(2 * mib, 4 * mib));  /* smaller */
}

/* A pool as pool_get keeps it: free blocks by class; a request takes its class's block, else
 * the smallest cached one that serves it, else a new one (a cudaMalloc). */
typedef struct {
    size_t cls[256];
    int n;
    int mallocs;
} Pool;

static size_t pool_take(Pool *p, size_t bytes) {
    const size_t want = dq_pool_size_class(bytes);
    int at = -1;
    for (int i = 0; i < p->n; i++)
        if (p->cls[i] == want)
            at = i;
    if (at < 0)
        for (int i = 0; i < p->n; i++)
            if (dq_pool_serves(p->cls[i], want) && (at < 0 || p->cls[i] < p->cls[at]))
                at = i;
    if (at < 0) {
        p->mallocs++;
        return want;
    }
    const size_t got = p->cls[at];
    p->cls[at] = p->cls[--p->n];
    return got;
}

static void test_pool_batches(void) {
    /* A vision chunk's buffers for t tiles of the 2.2B geometry (729 patches of 1152, the MLP's
     * 4304, the pixels' bytes): a first batch of 32 tiles caches them; every later chunk of 17
     * to 32 tiles (at least half of each buffer) is served without a new block. */
    const size_t per_tile[] = {(size_t)729 * 1152 * 4, (size_t)729 * 4304 * 4,
                               (size_t)3 * 384 * 384 + 3 * 256 * 4, (size_t)729 * 1152 * 2};
    const int nb = G_N_ELEMENTS(per_tile);
    Pool pool = {.n = 0};
    size_t got[8];
    for (int b = 0; b < nb; b++)
        got[b] = pool_take(&pool, per_tile[b] * 32);
    g_assert_cmpint(pool.mallocs, ==, nb);
    for (int b = 0; b < nb; b++)
        pool.cls[pool.n++] = got[b];
    for (int t = 32; t >= 17; t--) {
        for (int b = 0; b < nb; b++) {
            got[b] = pool_take(&pool, per_tile[b] * t);
            g_assert_cmpuint(got[b], >=, per_tile[b] * t);
        }
        for (int b = 0; b < nb; b++)
            pool.cls[pool.n++] = got[b];
    }
    g_assert_cmpint(pool.mallocs, ==, nb);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/cuda_plan/segment_classes", test_segment_classes);
    g_test_add_func("/cuda_plan/decode_launches", test_decode_launches);
    g_test_add_func("/cuda_plan/shared_memory", test_shared_memory);
    g_test_add_func("/cuda_plan/pool_classes", test_pool_classes);
    g_test_add_func("/cuda_plan/pool_batches", test_pool_batches);
    return g_test_run();
}
