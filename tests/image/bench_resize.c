/* Resampler speed: dq_image_resize_lanczos against a plain scalar port of Pillow's loops
 * (src/libImaging/Resample.c order: per output pixel, per tap, one thread), on the resizes a
 * page goes through at N = 4 and 5, in the same run. Also checks both give the same bytes.
 * Each side's best wall time and best CPU time (the process's, all threads: docqa's resampler
 * runs on an OpenMP team, the scalar port on one thread), and their ratios.
 *
 *   bench_resize [REPEATS]      (scripts/bench-image.sh runs it)
 */
#include "image.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_s(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double now(void) {
    return clock_s(CLOCK_MONOTONIC);
}

static double cpu(void) {
    return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

/* ---- reference: Pillow's loop structure, scalar, 22-bit fixed point ---- */

static double ref_lanczos(double x) {
    if (x < -3.0 || x >= 3.0)
        return 0.0;
    double a = x == 0.0 ? 1.0 : sin(M_PI * x) / (M_PI * x);
    double b = x == 0.0 ? 1.0 : sin(M_PI * (x / 3.0)) / (M_PI * (x / 3.0));
    return a * b;
}

static int *ref_coeffs(int in, int out, int *ksize_out, int **bounds_out) {
    double scale = (double)in / out, fs = scale < 1 ? 1 : scale, support = 3.0 * fs;
    int ksize = (int)ceil(support) * 2 + 1;
    int *kk = calloc((size_t)out * ksize, sizeof(int));
    int *bounds = malloc(sizeof(int) * 2 * out);
    double *w = malloc(sizeof(double) * ksize);
    for (int xx = 0; xx < out; xx++) {
        double center = (xx + 0.5) * scale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        xmin = xmin < 0 ? 0 : xmin;
        xmax = (xmax > in ? in : xmax) - xmin;
        double ww = 0;
        for (int x = 0; x < xmax; x++) {
            w[x] = ref_lanczos((x + xmin - center + 0.5) * (1.0 / fs));
            ww += w[x];
        }
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0 ? w[x] / ww : w[x];
            kk[xx * ksize + x] = v < 0 ? (int)(-0.5 + v * (1 << 22)) : (int)(0.5 + v * (1 << 22));
        }
        bounds[2 * xx] = xmin;
        bounds[2 * xx + 1] = xmax;
    }
    free(w);
    *ksize_out = ksize;
    *bounds_out = bounds;
    return kk;
}

static uint8_t ref_clip(int v) {
    v >>= 22;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static DqImage *ref_resize(const DqImage *src, int ow, int oh) {
    DqImage *cur = dq_image_new(src->width, src->height);
    memcpy(cur->pixels, src->pixels, (size_t)src->width * src->height * 3);
    if (ow != src->width) {
        int ksize, *b, *k = ref_coeffs(src->width, ow, &ksize, &b);
        DqImage *t = dq_image_new(ow, cur->height);
        for (int y = 0; y < cur->height; y++)
            for (int xx = 0; xx < ow; xx++)
                for (int c = 0; c < 3; c++) {
                    int ss = 1 << 21;
                    for (int x = 0; x < b[2 * xx + 1]; x++)
                        ss += cur->pixels[((size_t)y * cur->width + b[2 * xx] + x) * 3 + c] *
                              k[xx * ksize + x];
                    t->pixels[((size_t)y * ow + xx) * 3 + c] = ref_clip(ss);
                }
        free(k);
        free(b);
        dq_image_free(cur);
        cur = t;
    }
    if (oh != src->height) {
        int ksize, *b, *k = ref_coeffs(src->height, oh, &ksize, &b);
        DqImage *t = dq_image_new(cur->width, oh);
        for (int yy = 0; yy < oh; yy++)
            for (int x = 0; x < cur->width; x++)
                for (int c = 0; c < 3; c++) {
                    int ss = 1 << 21;
                    for (int y = 0; y < b[2 * yy + 1]; y++)
                        ss += cur->pixels[((size_t)(b[2 * yy] + y) * cur->width + x) * 3 + c] *
                              k[yy * ksize + y];
                    t->pixels[((size_t)yy * cur->width + x) * 3 + c] = ref_clip(ss);
                }
        free(k);
        free(b);
        dq_image_free(cur);
        cur = t;
    }
    return cur;
}

/* ---- bench ---- */

int main(int argc, char **argv) {
    int repeats = argc > 1 ? atoi(argv[1]) : 3;
    if (repeats < 1)
        repeats = 1;
    /* A letter page scanned at 300 dpi down to N = 5 (2560), then the processor's
     * resize_for_vision_encoder and global tile; a small chart upscaled to N = 4. */
    static const int cases[][4] = {{2550, 3300, 1978, 2560},
                                   {1978, 2560, 2048, 2560},
                                   {2048, 2560, 512, 512},
                                   {200, 150, 2048, 1536}};
    double total_dq = 0, total_ref = 0, total_dq_cpu = 0, total_ref_cpu = 0;
    int bad = 0;
    printf("%-24s %10s %10s %7s | %13s %14s %7s\n", "resize", "docqa ms", "scalar ms", "ratio",
           "docqa cpu ms", "scalar cpu ms", "ratio");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        DqImage *a = dq_image_new(cases[c][0], cases[c][1]);
        /* text-like content: flat paper with dark strokes, where ringing shows */
        for (size_t i = 0; i < (size_t)a->width * a->height * 3; i++)
            a->pixels[i] = ((i / 3) * 2654435761u >> 27) < 3 ? 20 : 245;
        double best_dq = 1e30, best_ref = 1e30, cpu_dq = 1e30, cpu_ref = 1e30;
        DqImage *x = NULL, *y = NULL;
        for (int r = 0; r < repeats; r++) {
            dq_image_free(x);
            dq_image_free(y);
            double t0 = now(), c0 = cpu();
            x = dq_image_resize_lanczos(a, cases[c][2], cases[c][3]);
            double t1 = now(), c1 = cpu();
            y = ref_resize(a, cases[c][2], cases[c][3]);
            double t2 = now(), c2 = cpu();
            best_dq = fmin(best_dq, t1 - t0);
            best_ref = fmin(best_ref, t2 - t1);
            cpu_dq = fmin(cpu_dq, c1 - c0);
            cpu_ref = fmin(cpu_ref, c2 - c1);
        }
        // cppcheck-suppress nullPointer -- repeats >= 1 set x and y
        int same = memcmp(x->pixels, y->pixels, (size_t)x->width * x->height * 3) == 0;
        bad += !same;
        char label[64];
        snprintf(label, sizeof label, "%dx%d -> %dx%d", cases[c][0], cases[c][1], cases[c][2],
                 cases[c][3]);
        printf("%-24s %10.1f %10.1f %6.2fx | %13.1f %14.1f %6.2fx%s\n", label, best_dq * 1e3,
               best_ref * 1e3, best_ref / best_dq, cpu_dq * 1e3, cpu_ref * 1e3, cpu_ref / cpu_dq,
               same ? "" : "  OUTPUT DIFFERS");
        total_dq += best_dq;
        total_ref += best_ref;
        total_dq_cpu += cpu_dq;
        total_ref_cpu += cpu_ref;
        dq_image_free(x);
        dq_image_free(y);
        dq_image_free(a);
    }
    printf("%-24s %10.1f %10.1f %6.2fx | %13.1f %14.1f %6.2fx\n", "total", total_dq * 1e3,
           total_ref * 1e3, total_ref / total_dq, total_dq_cpu * 1e3, total_ref_cpu * 1e3,
           total_ref_cpu / total_dq_cpu);
    return bad ? 1 : 0;
}
