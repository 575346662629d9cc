/* Pillow 12.x LANCZOS resize of 8-bit RGB (src/libImaging/Resample.c), bit for bit.
 *
 * Separable: a horizontal pass (only when the width changes) whose result is rounded and clipped
 * to uint8, then a vertical pass (only when the height changes). Per output coordinate the
 * Lanczos-3 weights are computed in double, normalised to sum 1, then converted to signed
 * 22-bit fixed point; a pixel is clip8((2^21 + sum in * k) >> 22) accumulated in int32.
 * Weights that would fall outside the image are dropped, not mirrored.
 *
 * Pillow 13 changed the pass order for some shrinks (vertical first); transformers 4.57 with
 * Pillow 12.3 is the reference, so this always runs horizontal first.
 */
#include "image.h"

#include <math.h>
#include <string.h>

#define PRECISION_BITS 22

typedef struct {
    int out_size;
    int ksize;      /* taps allocated per output coordinate */
    int *first;     /* [out_size] first input coordinate */
    int *count;     /* [out_size] taps actually used */
    int32_t *coeff; /* [out_size][ksize] fixed-point weights */
} LanczosTable;

static double sinc(double x) {
    if (x == 0.0)
        return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

static double lanczos3(double x) {
    if (-3.0 <= x && x < 3.0)
        return sinc(x) * sinc(x / 3.0);
    return 0.0;
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis (box = the whole axis). The
 * exact operation order matters: it decides the last bit of the fixed-point weights. */
static void lanczos_table_init(LanczosTable *t, int in_size, int out_size) {
    double scale = (double)in_size / (double)out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 3.0 * filterscale;
    double ss = 1.0 / filterscale;
    int ksize = (int)ceil(support) * 2 + 1;

    t->out_size = out_size;
    t->ksize = ksize;
    t->first = g_new(int, out_size);
    t->count = g_new(int, out_size);
    t->coeff = g_new0(int32_t, (size_t)out_size * (size_t)ksize);
    double *w = g_new(double, ksize);

    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        if (xmax > ksize) /* cannot happen for the ranges above; keeps the table in bounds */
            xmax = ksize;
        double sum = 0.0;
        for (int x = 0; x < xmax; x++) {
            w[x] = lanczos3((x + xmin - center + 0.5) * ss);
            sum += w[x];
        }
        int32_t *k = t->coeff + (size_t)xx * (size_t)ksize;
        for (int x = 0; x < xmax; x++) {
            double v = sum != 0.0 ? w[x] / sum : w[x];
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        t->first[xx] = xmin;
        t->count[xx] = xmax;
    }
    g_free(w);
}

static void lanczos_table_clear(LanczosTable *t) {
    g_free(t->first);
    g_free(t->count);
    g_free(t->coeff);
}

static inline uint8_t clip8(int32_t v) {
    /* Arithmetic shift of a negative sum, as Pillow does (gcc and clang shift arithmetically). */
    int32_t s = v >> PRECISION_BITS;
    return (uint8_t)(s < 0 ? 0 : s > 255 ? 255 : s);
}

/* Only parallelise passes big enough to pay for waking the thread team. Both passes are
 * compiled twice on x86-64 (AVX2 and baseline, picked at load time): the integer sums are the
 * same either way, the AVX2 loops are about twice as fast. */
#define PARALLEL_MIN_BYTES (1 << 18)

/* Four int32 lanes, one pixel (R, G, B, unused): one multiply-add per tap instead of three. */
typedef int32_t v4i32 __attribute__((vector_size(16)));

/* [height][src_w][3] -> [height][out_w][3] */
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("avx2", "default")))
#endif
static void
pass_horizontal(const uint8_t *src, int src_w, int height, uint8_t *dst, int out_w) {
    LanczosTable t;
    lanczos_table_init(&t, src_w, out_w);
    size_t src_stride = (size_t)src_w * 3, dst_stride = (size_t)out_w * 3;
    int big = (size_t)height * dst_stride >= PARALLEL_MIN_BYTES;
#pragma omp parallel if (big)
    {
        v4i32 *px = g_new(v4i32, src_w); /* one input row, widened */
#pragma omp for schedule(static)
        for (int y = 0; y < height; y++) {
            const uint8_t *in = src + (size_t)y * src_stride;
            for (int x = 0; x < src_w; x++)
                px[x] = (v4i32){in[3 * x], in[3 * x + 1], in[3 * x + 2], 0};
            uint8_t *out = dst + (size_t)y * dst_stride;
            for (int xx = 0; xx < out_w; xx++) {
                const int32_t *k = t.coeff + (size_t)xx * (size_t)t.ksize;
                const v4i32 *p = px + t.first[xx];
                v4i32 acc = {1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1),
                             1 << (PRECISION_BITS - 1), 0};
                for (int x = 0; x < t.count[xx]; x++)
                    acc += p[x] * k[x];
                out[3 * xx] = clip8(acc[0]);
                out[3 * xx + 1] = clip8(acc[1]);
                out[3 * xx + 2] = clip8(acc[2]);
            }
        }
        g_free(px);
    }
    lanczos_table_clear(&t);
}

/* [src_h][width][3] -> [out_h][width][3]. Accumulates whole rows so the inner loop is a
 * contiguous multiply-add the compiler vectorises; the sum per pixel is the same as Pillow's. */
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target_clones("avx2", "default")))
#endif
static void
pass_vertical(const uint8_t *src, int width, int src_h, uint8_t *dst, int out_h) {
    LanczosTable t;
    lanczos_table_init(&t, src_h, out_h);
    size_t stride = (size_t)width * 3;
    int big = (size_t)out_h * stride >= PARALLEL_MIN_BYTES;
#pragma omp parallel if (big)
    {
        int32_t *acc = g_new(int32_t, stride); /* [width * 3] */
#pragma omp for schedule(static)
        for (int yy = 0; yy < out_h; yy++) {
            const int32_t *k = t.coeff + (size_t)yy * (size_t)t.ksize;
            for (size_t i = 0; i < stride; i++)
                acc[i] = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < t.count[yy]; y++) {
                const uint8_t *row = src + (size_t)(t.first[yy] + y) * stride;
                int32_t ky = k[y];
                for (size_t i = 0; i < stride; i++)
                    acc[i] += row[i] * ky;
            }
            uint8_t *out = dst + (size_t)yy * stride;
            for (size_t i = 0; i < stride; i++)
                out[i] = clip8(acc[i]);
        }
        g_free(acc);
    }
    lanczos_table_clear(&t);
}

DqImage *dq_image_resize_lanczos(const DqImage *src, int width, int height) {
    if (src == NULL || width <= 0 || height <= 0)
        return NULL;
    DqImage *out = dq_image_new(width, height);
    if (out == NULL)
        return NULL;
    if (width == src->width && height == src->height) {
        memcpy(out->pixels, src->pixels, (size_t)width * (size_t)height * 3);
        return out;
    }
    if (height == src->height) {
        pass_horizontal(src->pixels, src->width, src->height, out->pixels, width);
    } else if (width == src->width) {
        pass_vertical(src->pixels, src->width, src->height, out->pixels, height);
    } else {
        /* The intermediate is uint8, as in Pillow: rounding here is part of the result. */
        DqImage *tmp = dq_image_new(width, src->height);
        if (tmp == NULL) {
            dq_image_free(out);
            return NULL;
        }
        pass_horizontal(src->pixels, src->width, src->height, tmp->pixels, width);
        pass_vertical(tmp->pixels, width, src->height, out->pixels, height);
        dq_image_free(tmp);
    }
    return out;
}
