/* Pillow 12.x LANCZOS resize of 8-bit RGB (src/libImaging/Resample.c), bit for bit.
 *
 * Separable: a horizontal pass (only when the width changes) whose result is rounded and clipped
 * to uint8, then a vertical pass (only when the height changes). Per output coordinate the
 * Lanczos-3 weights are computed in double, normalised to sum 1, then converted to signed
 * 22-bit fixed point; a pixel is clip8((2^21 + sum in * k) >> 22) accumulated in int32.
 * Weights that would fall outside the image are dropped, not mirrored.
 *
 * One exception, from Pillow 12.3's Image.resize (not its C core): an image over 100 times taller
 * than wide whose height shrinks is resized vertically first (into a narrow intermediate), then
 * horizontally. Pillow 13 widened that rule to other shrinks; transformers 4.57 with Pillow 12.3
 * is the reference, so only the 100:1 rule is followed here.
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

/* Only parallelise passes big enough to pay for waking the thread team. */
#define PARALLEL_MIN_BYTES (1 << 18)

/* Both passes sum 96 bytes at a time, each a column of sums over the taps held in registers
 * (lanes_sum: AVX-512, AVX2 or portable, picked at run time; the integer sums are the same).
 * The horizontal pass works on strips of 32 rows turned on their side: each input column's
 * 32 rows x 3 channels = 96 bytes side by side, so that a tap is one contiguous multiply-add
 * over the strip's rows with every lane used; a pixel at a time used 3 int32 lanes of 4. Each
 * sum adds the same integer products as Pillow's, so the bytes are the same. */
#define STRIP_ROWS  32
#define STRIP_LANES (STRIP_ROWS * 3)
#define OUT_BLOCK   32

/* The strip's rows [y0, y0 + rows) of src into cols [src_w][STRIP_ROWS][3], four rows at a
 * time: a column's 12 bytes of them gathered in a register and stored at once (a byte at a time
 * this was most of the pass: every store went to another cache line). */
static void strip_on_side(uint8_t *cols, const uint8_t *src, size_t src_stride, int src_w, int y0,
                          int rows) {
    int r = 0;
    for (; r + 4 <= rows; r += 4) {
        const uint8_t *p0 = src + (size_t)(y0 + r) * src_stride;
        const uint8_t *p1 = p0 + src_stride, *p2 = p1 + src_stride, *p3 = p2 + src_stride;
        uint8_t *c = cols + 3 * r;
        for (int x = 0; x < src_w; x++, c += STRIP_LANES) {
            const size_t o = 3 * (size_t)x;
            uint8_t v[12] = {p0[o], p0[o + 1], p0[o + 2], p1[o], p1[o + 1], p1[o + 2],
                             p2[o], p2[o + 1], p2[o + 2], p3[o], p3[o + 1], p3[o + 2]};
            memcpy(c, v, 12);
        }
    }
    for (; r < rows; r++) {
        const uint8_t *p = src + (size_t)(y0 + r) * src_stride;
        for (int x = 0; x < src_w; x++)
            memcpy(cols + (size_t)x * STRIP_LANES + 3 * r, p + 3 * (size_t)x, 3);
    }
    for (int x = 0; rows < STRIP_ROWS && x < src_w; x++) /* missing rows: computed, not kept */
        memset(cols + (size_t)x * STRIP_LANES + 3 * rows, 0, (size_t)(STRIP_ROWS - rows) * 3);
}

/* STRIP_LANES output bytes, out[i] = clip8(2^21 + sum_x in[x * step + i] * k[x]): an output
 * column of a strip (step STRIP_LANES), or 96 bytes of an output row (step: the row stride). */
static void lanes_sum(uint8_t *out, const uint8_t *in, size_t step, const int32_t *k, int n) {
    int32_t acc[STRIP_LANES];
    for (int i = 0; i < STRIP_LANES; i++)
        acc[i] = 1 << (PRECISION_BITS - 1);
    for (int x = 0; x < n; x++, in += step)
        for (int i = 0; i < STRIP_LANES; i++)
            acc[i] += in[i] * k[x];
    for (int i = 0; i < STRIP_LANES; i++)
        out[i] = clip8(acc[i]);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_STRIP_AVX2 1

/* lanes_sum with twelve 8-lane sums in registers; packs saturate as clip8 clamps. */
__attribute__((target("avx2"))) static void lanes_sum_avx2(uint8_t *out, const uint8_t *col,
                                                           size_t step, const int32_t *k, int n) {
    __m256i acc[12];
    for (int v = 0; v < 12; v++)
        acc[v] = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    for (int x = 0; x < n; x++, col += step) {
        const __m256i kx = _mm256_set1_epi32(k[x]);
        for (int v = 0; v < 12; v++) {
            __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(col + 8 * v)));
            acc[v] = _mm256_add_epi32(acc[v], _mm256_mullo_epi32(b, kx));
        }
    }
    for (int v = 0; v < 12; v += 2) {
        __m256i a = _mm256_srai_epi32(acc[v], PRECISION_BITS);
        __m256i b = _mm256_srai_epi32(acc[v + 1], PRECISION_BITS);
        /* packs work within 128-bit lanes: 0..3 8..11 4..7 12..15, put back in order */
        __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8);
        __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        _mm_storeu_si128((__m128i *)(out + 8 * v), bytes);
    }
}

/* lanes_sum_avx2 with 16-lane sums: six registers. */
__attribute__((target("avx512f"))) static void
lanes_sum_avx512(uint8_t *out, const uint8_t *col, size_t step, const int32_t *k, int n) {
    __m512i acc[6];
    for (int v = 0; v < 6; v++)
        acc[v] = _mm512_set1_epi32(1 << (PRECISION_BITS - 1));
    for (int x = 0; x < n; x++, col += step) {
        const __m512i kx = _mm512_set1_epi32(k[x]);
        for (int v = 0; v < 6; v++) {
            __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(col + 16 * v)));
            acc[v] = _mm512_add_epi32(acc[v], _mm512_mullo_epi32(b, kx));
        }
    }
    const __m512i zero = _mm512_setzero_si512();
    for (int v = 0; v < 6; v++) {
        /* clip8: negative sums to 0, then an unsigned saturating narrowing to 255 */
        __m512i a = _mm512_max_epi32(_mm512_srai_epi32(acc[v], PRECISION_BITS), zero);
        _mm_storeu_si128((__m128i *)(out + 16 * v), _mm512_cvtusepi32_epi8(a));
    }
}
#endif

typedef void (*LanesSum)(uint8_t *out, const uint8_t *in, size_t step, const int32_t *k, int n);

/* The best kernel this CPU has, or the one DOCQA_RESAMPLE names (portable, avx2, avx512; one
 * the CPU lacks falls back to the next below it): tests run each against the others. */
static LanesSum lanes_sum_pick(void) {
    const char *want = g_getenv("DOCQA_RESAMPLE");
    (void)want;
#ifdef HAVE_STRIP_AVX2
    if (g_strcmp0(want, "portable") == 0)
        return lanes_sum;
    if (g_strcmp0(want, "avx2") != 0 && __builtin_cpu_supports("avx512f"))
        return lanes_sum_avx512;
    if (__builtin_cpu_supports("avx2"))
        return lanes_sum_avx2;
#endif
    return lanes_sum;
}

/* [height][src_w][3] -> [height][out_w][3] */
static void pass_horizontal(const uint8_t *src, int src_w, int height, uint8_t *dst, int out_w) {
    LanczosTable t;
    lanczos_table_init(&t, src_w, out_w);
    size_t src_stride = (size_t)src_w * 3, dst_stride = (size_t)out_w * 3;
    const int strips = (height + STRIP_ROWS - 1) / STRIP_ROWS;
    LanesSum column = lanes_sum_pick();
    int big = (size_t)height * dst_stride >= PARALLEL_MIN_BYTES;
#pragma omp parallel if (big)
    {
        uint8_t *cols = g_new0(uint8_t, (size_t)src_w * STRIP_LANES);
        /* OUT_BLOCK output columns' sums [col][row][3], then written row by row: a row's 3
         * bytes a column went to 32 rows' cache lines a column. */
        uint8_t sums[OUT_BLOCK][STRIP_LANES];
#pragma omp for schedule(static)
        for (int s = 0; s < strips; s++) {
            const int y0 = s * STRIP_ROWS, rows = MIN(STRIP_ROWS, height - y0);
            strip_on_side(cols, src, src_stride, src_w, y0, rows);
            for (int x0 = 0; x0 < out_w; x0 += OUT_BLOCK) {
                const int nb = MIN(OUT_BLOCK, out_w - x0);
                for (int b = 0; b < nb; b++)
                    column(sums[b], cols + (size_t)t.first[x0 + b] * STRIP_LANES, STRIP_LANES,
                           t.coeff + (size_t)(x0 + b) * (size_t)t.ksize, t.count[x0 + b]);
                uint8_t *out = dst + (size_t)y0 * dst_stride + 3 * (size_t)x0;
                for (int r = 0; r < rows; r++, out += dst_stride) {
                    uint8_t line[3 * OUT_BLOCK];
                    for (int b = 0; b < nb; b++)
                        memcpy(line + 3 * b, sums[b] + 3 * r, 3);
                    memcpy(out, line, 3 * (size_t)nb);
                }
            }
        }
        g_free(cols);
    }
    lanczos_table_clear(&t);
}

/* [src_h][width][3] -> [out_h][width][3]: an output row 96 bytes at a time, each a column of
 * sums over the input rows held in registers (lanes_sum), the row's last bytes the plain way;
 * the sum per byte is the same as Pillow's. */
static void pass_vertical(const uint8_t *src, int width, int src_h, uint8_t *dst, int out_h) {
    LanczosTable t;
    lanczos_table_init(&t, src_h, out_h);
    const size_t stride = (size_t)width * 3, whole = stride / STRIP_LANES * STRIP_LANES;
    LanesSum sum = lanes_sum_pick();
    int big = (size_t)out_h * stride >= PARALLEL_MIN_BYTES;
#pragma omp parallel for schedule(static) if (big)
    for (int yy = 0; yy < out_h; yy++) {
        const int32_t *k = t.coeff + (size_t)yy * (size_t)t.ksize;
        const uint8_t *in = src + (size_t)t.first[yy] * stride;
        uint8_t *out = dst + (size_t)yy * stride;
        for (size_t i = 0; i < whole; i += STRIP_LANES)
            sum(out + i, in + i, stride, k, t.count[yy]);
        for (size_t i = whole; i < stride; i++) {
            int32_t acc = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < t.count[yy]; y++)
                acc += in[(size_t)y * stride + i] * k[y];
            out[i] = clip8(acc);
        }
    }
    lanczos_table_clear(&t);
}

DqImage *dq_image_resize_lanczos(const DqImage *src, int width, int height) {
    if (src == NULL || width <= 0 || height <= 0)
        return NULL;
    DqImage *out = dq_image_new_uninit(width, height);
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
    } else if ((gint64)src->height > (gint64)src->width * 100 && height < src->height) {
        DqImage *tmp = dq_image_new_uninit(src->width, height);
        if (tmp == NULL) {
            dq_image_free(out);
            return NULL;
        }
        pass_vertical(src->pixels, src->width, src->height, tmp->pixels, height);
        pass_horizontal(tmp->pixels, src->width, height, out->pixels, width);
        dq_image_free(tmp);
    } else {
        /* The intermediate is uint8, as in Pillow: rounding here is part of the result. */
        DqImage *tmp = dq_image_new_uninit(width, src->height);
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
