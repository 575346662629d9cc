/* Small SIMD helpers shared by the fast CPU kernels (cpu_gemm.c, cpu_gemv.c, backend_cpu_fast.c).
 *
 * Everything AVX2 carries its own target attribute, so the project builds for any x86-64 and
 * the kernels are chosen at run time (dq_cpu_has_avx2). */
#ifndef DQ_CPU_SIMD_H
#define DQ_CPU_SIMD_H

#include "safetensors.h" /* dq_f32_bf16 */

#include <glib.h>
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* bf16 is the top half of a float32: widening is exact. */
static inline float dq_bf16f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* AVX2 and FMA present, and not switched off with DOCQA_CPU_NO_AVX2 (to test the portable
 * paths on machines that have them). */
gboolean dq_cpu_has_avx2(void);

#define DQ_AVX2 __attribute__((target("avx2,fma")))

/* AVX512F present, its registers saved by the OS, and not switched off with DOCQA_CPU_NO_AVX512
 * (cpu_gemm.c). */
gboolean dq_cpu_has_avx512f(void);

#define DQ_AVX512 __attribute__((target("avx512f,avx2,fma")))

/* Keeps a loaded vector in a register: without it the compiler folds the load into every
 * instruction that uses the value, and a value used four times costs four loads (loads, not
 * FMAs, bound the small kernels on these cores). */
#define DQ_IN_REGISTER(v) __asm__("" : "+x"(v))

DQ_AVX2 static inline __m256 dq_load_bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

DQ_AVX2 static inline float dq_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* float32 exp (Cephes' polynomial, ~1 ulp on [-87, 88]; below that the result underflows to a
 * tiny normal, which every caller treats as 0 after scaling). Its constants, one list for the
 * 8- and 16-lane versions, which must give the same bits lane for lane: the clamp, log2(e),
 * ln(2) in two parts (high, low), and the polynomial's coefficients from the highest power. */
#define DQ_EXP_MIN    (-87.3f)
#define DQ_EXP_MAX    88.3f
#define DQ_EXP_LOG2E  1.44269504088896341f
#define DQ_EXP_LN2_HI 0.693359375f
#define DQ_EXP_LN2_LO (-2.12194440e-4f)
#define DQ_EXP_P0     1.9875691500E-4f
#define DQ_EXP_P1     1.3981999507E-3f
#define DQ_EXP_P2     8.3334519073E-3f
#define DQ_EXP_P3     4.1665795894E-2f
#define DQ_EXP_P4     1.6666665459E-1f
#define DQ_EXP_P5     5.0000001201E-1f

DQ_AVX2 static inline __m256 dq_exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(DQ_EXP_MIN)), _mm256_set1_ps(DQ_EXP_MAX));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(DQ_EXP_LOG2E)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(DQ_EXP_LN2_HI), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(DQ_EXP_LN2_LO), x);
    __m256 y = _mm256_set1_ps(DQ_EXP_P0);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(DQ_EXP_P1));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(DQ_EXP_P2));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(DQ_EXP_P3));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(DQ_EXP_P4));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(DQ_EXP_P5));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* dq_exp256 on 16 lanes: the same operations, so the same bits lane for lane. */
DQ_AVX512 static inline __m512 dq_exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(DQ_EXP_MIN)), _mm512_set1_ps(DQ_EXP_MAX));
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(DQ_EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(DQ_EXP_LN2_HI), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(DQ_EXP_LN2_LO), x);
    __m512 y = _mm512_set1_ps(DQ_EXP_P0);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(DQ_EXP_P1));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(DQ_EXP_P2));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(DQ_EXP_P3));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(DQ_EXP_P4));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(DQ_EXP_P5));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    __m512i e =
        _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

/* out[j] = q . k_j for j < n, k_j = k + j * stride; d floats each. Four keys at a time: four
 * independent FMA chains (one key alone waits on the FMA latency at every step). */
DQ_AVX2 static inline void dq_dot_rows_avx2(float *out, const float *q, const float *k,
                                            size_t stride, int n, int d) {
    int d8 = d & ~7, j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = k + (size_t)j * stride, *k1 = k0 + stride, *k2 = k1 + stride,
                    *k3 = k2 + stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int c = 0; c < d8; c += 8) {
            __m256 qv = _mm256_loadu_ps(q + c);
            a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + c), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + c), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + c), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + c), a3);
        }
        float s0 = dq_hsum256(a0), s1 = dq_hsum256(a1), s2 = dq_hsum256(a2), s3 = dq_hsum256(a3);
        for (int c = d8; c < d; c++) {
            s0 += q[c] * k0[c];
            s1 += q[c] * k1[c];
            s2 += q[c] * k2[c];
            s3 += q[c] * k3[c];
        }
        out[j] = s0;
        out[j + 1] = s1;
        out[j + 2] = s2;
        out[j + 3] = s3;
    }
    for (; j < n; j++) {
        const float *kj = k + (size_t)j * stride;
        __m256 acc = _mm256_setzero_ps();
        for (int c = 0; c < d8; c += 8)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(kj + c), acc);
        float s = dq_hsum256(acc);
        for (int c = d8; c < d; c++)
            s += q[c] * kj[c];
        out[j] = s;
    }
}

/* acc [d] += sum over j < n of p[j] * v_j, v_j = v + j * stride: the accumulator stays in
 * registers, 64 floats at a time, while the values stream by. */
DQ_AVX2 static inline void dq_weighted_sum_avx2(float *acc, const float *p, const float *v,
                                                size_t stride, int n, int d) {
    int c0 = 0;
    for (; c0 + 64 <= d; c0 += 64) {
        __m256 a[8];
        for (int i = 0; i < 8; i++)
            a[i] = _mm256_loadu_ps(acc + c0 + 8 * i);
        for (int j = 0; j < n; j++) {
            __m256 pj = _mm256_set1_ps(p[j]);
            const float *vj = v + (size_t)j * stride + c0;
            for (int i = 0; i < 8; i++)
                a[i] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8 * i), a[i]);
        }
        for (int i = 0; i < 8; i++)
            _mm256_storeu_ps(acc + c0 + 8 * i, a[i]);
    }
    for (; c0 + 8 <= d; c0 += 8) {
        __m256 a = _mm256_loadu_ps(acc + c0);
        for (int j = 0; j < n; j++)
            a = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(v + (size_t)j * stride + c0),
                                a);
        _mm256_storeu_ps(acc + c0, a);
    }
    for (; c0 < d; c0++)
        for (int j = 0; j < n; j++)
            acc[c0] += p[j] * v[(size_t)j * stride + c0];
}

#endif
