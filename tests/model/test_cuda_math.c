/* The CUDA backend's reductions (model/cuda/kernel_math.h) on the CPU, driven as the kernels
 * drive them:
 * - decode attention: a row's keys split into runs of DQ_CUDA_DECODE_SPLIT (a block each), each
 *   run's tiles of 32 keys dealt to DG_WARPS warps in turn, each warp's online softmax state,
 *   the warps' states merged, then the runs' states: the result is the softmax-weighted sum of
 *   the values, computed here directly in double;
 * - argmax_rows: a block's threads each scan their stride, warps merge by butterfly shuffles,
 *   then warp 0 merges the warps: the id is what the CPU's dq_argmax gives, for rows with NaN,
 *   ties, infinities and signed zeros.
 * The kernels' layout (warps, tiles, lanes) is mirrored here; their memory traffic is tested on
 * a GPU (test_backend_cuda). */
#include <glib.h>
#include <math.h>
#include <string.h>

#include "backend.h"
#include "cuda/kernel_math.h"

#define DG_WARPS 4 /* cuda_attention.cu: warps of attn_decode_group_kernel */
#define TILE     32

/* A partial softmax state of one row over some keys, one value dim. */
typedef struct {
    float m, l, t;
} State;

/* A warp's online update over keys [j0, j0 + 32) ∩ [.., visible), as softmax_step does: the
 * tile's max, the correction of the old state, the new terms. */
static void warp_tile(State *st, const float *sc, const float *val, int j0, int visible) {
    float tmax = -INFINITY;
    for (int j = j0; j < j0 + TILE && j < visible; j++)
        tmax = fmaxf(tmax, sc[j]);
    if (tmax == -INFINITY)
        return; /* no visible key in the tile */
    float mnew = fmaxf(st->m, tmax), corr = expf(st->m - mnew), psum = 0.0f, pv = 0.0f;
    for (int j = j0; j < j0 + TILE && j < visible; j++) {
        float p = expf(sc[j] - mnew);
        psum += p;
        pv += p * val[j];
    }
    st->l = st->l * corr + psum;
    st->t = st->t * corr + pv;
    st->m = mnew;
}

/* One row's decode attention as the group and merge kernels compute it, for one value dim. */
static float decode_row(const float *sc, const float *val, int kv_end, int visible) {
    int runs = dq_decode_runs(kv_end);
    float rm[64], rl[64], rt[64];
    g_assert_cmpint(runs, <=, 64);
    for (int z = 0; z < runs; z++) {
        int j_lo = z * DQ_CUDA_DECODE_SPLIT, j_hi = MIN(kv_end, j_lo + DQ_CUDA_DECODE_SPLIT);
        float wm[DG_WARPS], wl[DG_WARPS], wt[DG_WARPS];
        for (int w = 0; w < DG_WARPS; w++) {
            State st = {-INFINITY, 0.0f, 0.0f};
            for (int j0 = j_lo + w * TILE; j0 < j_hi; j0 += DG_WARPS * TILE)
                warp_tile(&st, sc, val, j0, MIN(visible, j_hi));
            wm[w] = st.m;
            wl[w] = st.l;
            wt[w] = st.t;
        }
        dq_merge_states(wm, wl, 1, wt, 1, DG_WARPS, &rm[z], &rl[z], &rt[z]);
    }
    if (runs == 1) /* the group kernel writes the result itself */
        return rl[0] > 0.0f ? rt[0] / rl[0] : 0.0f;
    float mt, lt, t;
    dq_merge_states(rm, rl, 1, rt, 1, runs, &mt, &lt, &t);
    return lt > 0.0f ? t / lt : 0.0f;
}

static double softmax_ref(const float *sc, const float *val, int visible) {
    double mx = -INFINITY, l = 0.0, t = 0.0;
    for (int j = 0; j < visible; j++)
        mx = MAX(mx, (double)sc[j]);
    if (visible == 0 || mx == -INFINITY)
        return 0.0;
    for (int j = 0; j < visible; j++) {
        double e = exp((double)sc[j] - mx);
        l += e;
        t += e * val[j];
    }
    return t / l;
}

/* Rows of every length around the tile and run boundaries, with scores spread wide enough that
 * the running max moves between tiles, warps and runs, and rows that see only some keys
 * (causal rows of a multi-row segment). */
static void test_decode_merge(void) {
    GRand *rng = g_rand_new_with_seed(7);
    const int lens[] = {1, 2, 31, 32, 33, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1000, 4097};
    float *sc = g_new(float, 5000), *val = g_new(float, 5000);
    int checked = 0;
    for (size_t li = 0; li < G_N_ELEMENTS(lens); li++) {
        int n = lens[li];
        for (int rep = 0; rep < 20; rep++) {
            double spread = rep % 4 == 0 ? 30.0 : 4.0; /* some rows dominated by a few keys */
            for (int j = 0; j < n; j++) {
                sc[j] = (float)g_rand_double_range(rng, -spread, spread);
                val[j] = (float)g_rand_double_range(rng, -2.0, 2.0);
            }
            if (rep == 1) /* the max at the very end: every earlier state is rescaled */
                sc[n - 1] = 40.0f;
            int visible = rep % 3 == 2 ? MAX(1, n - g_rand_int_range(rng, 0, MIN(n, 300))) : n;
            double want = softmax_ref(sc, val, visible);
            float got = decode_row(sc, val, n, visible);
            g_assert_cmpfloat_with_epsilon(got, want, 1e-5 * MAX(1.0, fabs(want)));
            checked++;
        }
    }
    g_assert_cmpint(checked, ==, 20 * (int)G_N_ELEMENTS(lens));
    g_free(sc);
    g_free(val);
    g_rand_free(rng);
}

/* States that saw no key count for nothing, wherever they are; a row with no key at all gives
 * a zero total (the kernels then write 0). */
static void test_merge_empty_states(void) {
    const float m[] = {-INFINITY, 1.0f, -INFINITY, 3.0f}, l[] = {0.0f, 2.0f, 0.0f, 1.0f},
                t[] = {NAN, 4.0f, NAN, -1.0f}; /* an empty state's sums are never read */
    float mt, lt, tt;
    dq_merge_states(m, l, 1, t, 1, 4, &mt, &lt, &tt);
    g_assert_cmpfloat(mt, ==, 3.0f);
    g_assert_cmpfloat_with_epsilon(lt, 2.0f * expf(-2.0f) + 1.0f, 1e-6);
    g_assert_cmpfloat_with_epsilon(tt, 4.0f * expf(-2.0f) - 1.0f, 1e-6);
    const float none[] = {-INFINITY, -INFINITY};
    dq_merge_states(none, l, 1, t, 1, 2, &mt, &lt, &tt);
    g_assert_cmpfloat(lt, ==, 0.0f);
    g_assert_cmpfloat(tt, ==, 0.0f);
    /* strided as the kernels lay states out: ms and ts apart */
    const float sm[] = {1.0f, 9.0f, 2.0f, 9.0f}, sl[] = {1.0f, 9.0f, 1.0f, 9.0f};
    const float st[] = {1.0f, 9.0f, 9.0f, 2.0f, 9.0f, 9.0f};
    dq_merge_states(sm, sl, 2, st, 3, 2, &mt, &lt, &tt);
    g_assert_cmpfloat(mt, ==, 2.0f);
    g_assert_cmpfloat_with_epsilon(lt, expf(-1.0f) + 1.0f, 1e-6);
    g_assert_cmpfloat_with_epsilon(tt, expf(-1.0f) + 2.0f, 1e-6);
    g_assert_cmpint(dq_decode_runs(0), ==, 1);
    g_assert_cmpint(dq_decode_runs(DQ_CUDA_DECODE_SPLIT), ==, 1);
    g_assert_cmpint(dq_decode_runs(DQ_CUDA_DECODE_SPLIT + 1), ==, 2);
}

/* argmax_rows_kernel's reduction for one row with a block of `threads` (a multiple of 32). A
 * shuffle step reads every lane's value from before the step, as __shfl_xor_sync does. */
static int argmax_block(const float *x, int cols, int threads) {
    float v[1024];
    int id[1024];
    g_assert_cmpint(threads, <=, 1024);
    for (int t = 0; t < threads; t++)
        dq_argmax_stride(x, cols, t, threads, &v[t], &id[t]);
    int n_warps = threads / 32;
    float sv[32];
    int si[32];
    for (int w = 0; w < n_warps; w++) {
        float *wv = v + w * 32;
        int *wi = id + w * 32;
        for (int o = 16; o > 0; o >>= 1) {
            float ov[32];
            int oi[32];
            for (int lane = 0; lane < 32; lane++) {
                ov[lane] = wv[lane ^ o];
                oi[lane] = wi[lane ^ o];
            }
            for (int lane = 0; lane < 32; lane++)
                dq_argmax_merge(&wv[lane], &wi[lane], ov[lane], oi[lane]);
        }
        sv[w] = wv[0];
        si[w] = wi[0];
    }
    float fv[32];
    int fi[32];
    for (int lane = 0; lane < 32; lane++) {
        // cppcheck-suppress uninitvar -- read below n_warps only, all set
        fv[lane] = lane < n_warps ? sv[lane] : 0.0f;
        // cppcheck-suppress uninitvar -- the same
        fi[lane] = lane < n_warps ? si[lane] : -1;
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov[32];
        int oi[32];
        for (int lane = 0; lane < 32; lane++) {
            ov[lane] = fv[lane ^ o];
            oi[lane] = fi[lane ^ o];
        }
        for (int lane = 0; lane < 32; lane++)
            dq_argmax_merge(&fv[lane], &fi[lane], ov[lane], oi[lane]);
    }
    return dq_argmax_result(x, fi[0]);
}

static void test_argmax(void) {
    GRand *rng = g_rand_new_with_seed(11);
    const int cols_list[] = {1, 5, 31, 32, 33, 255, 256, 257, 1000, 49280};
    const int threads_list[] = {32, 256, 1024};
    float *x = g_new(float, 49280);
    int checked = 0;
    for (size_t ci = 0; ci < G_N_ELEMENTS(cols_list); ci++) {
        int cols = cols_list[ci];
        for (int kind = 0; kind < 9; kind++) {
            for (int j = 0; j < cols; j++)
                x[j] = (float)g_rand_double_range(rng, -5.0, 5.0);
            switch (kind) {
            case 1: /* ties: the first maximum wins, wherever the threads are */
                for (int j = 0; j < cols; j += 3)
                    x[j] = 7.0f;
                break;
            case 2: /* NaN sprinkled: never taken */
                for (int j = 1; j < cols; j += 2)
                    x[j] = NAN;
                break;
            case 3: /* NaN first: dq_argmax stays at 0 */
                x[0] = NAN;
                break;
            case 4: /* NaN only */
                for (int j = 0; j < cols; j++)
                    x[j] = NAN;
                break;
            case 5: /* -inf only: 0 */
                for (int j = 0; j < cols; j++)
                    x[j] = -INFINITY;
                break;
            case 6: /* signed zeros compare equal: the first */
                for (int j = 0; j < cols; j++)
                    x[j] = j % 2 ? -0.0f : 0.0f;
                x[cols - 1] = -0.0f;
                break;
            case 7: /* +inf late and early */
                x[cols - 1] = INFINITY;
                x[cols / 2] = INFINITY;
                break;
            case 8: /* NaN everywhere but one value */
                for (int j = 0; j < cols; j++)
                    x[j] = NAN;
                x[cols - 1] = -3.0f;
                if (cols > 1)
                    x[0] = -4.0f;
                break;
            }
            int want = dq_argmax(x, cols);
            for (size_t ti = 0; ti < G_N_ELEMENTS(threads_list); ti++) {
                int got = argmax_block(x, cols, threads_list[ti]);
                if (got != want)
                    g_error("cols %d, case %d, %d threads: %d, dq_argmax %d", cols, kind,
                            threads_list[ti], got, want);
                checked++;
            }
        }
    }
    g_assert_cmpint(checked, ==, 10 * 9 * 3);
    g_free(x);
    g_rand_free(rng);
}

int main(int argc, char **argv) {
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/cuda_math/decode-merge", test_decode_merge);
    g_test_add_func("/cuda_math/merge-empty-states", test_merge_empty_states);
    g_test_add_func("/cuda_math/argmax", test_argmax);
    return g_test_run();
}
