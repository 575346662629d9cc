/* One element of each hidden_act docqa computes (config.h's SmolvlmAct), as transformers'
 * ACT2CLS class computes it in float32 with torch's kernels: each step rounded to float as
 * torch rounds it (the Python scalars, doubles, become floats in each op), so that the results
 * are within an ulp or two of torch's vectorized exp, erf and tanh.
 *
 * Header-only, for the CPU reference (backend_cpu.c's act, which the fast CPU backend keeps) and
 * the CUDA backend's act kernel alike: under nvcc the functions are __host__ __device__, under a
 * C compiler plain static inline ones.
 */
#ifndef DQ_ACTIVATION_H
#define DQ_ACTIVATION_H

#include "config.h"

#include <math.h>

#ifdef __CUDACC__
#define DQ_ACT_FN static __host__ __device__ __forceinline__
#else
#define DQ_ACT_FN static inline
#endif

/* torch.clip's and hardtanh's order: NaN is neither below lo nor above hi, and stays NaN. */
DQ_ACT_FN float dq_act_clip(float v, float lo, float hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* torch's gelu (approximate="none"): erf of x * M_SQRT1_2, then x * 0.5 * (1 + erf). */
DQ_ACT_FN float dq_act_gelu_erf(float v) {
    return v * 0.5f * (1.0f + erff(v * 0.70710678118654752f));
}

DQ_ACT_FN float dq_act_sigmoid(float v) {
    return 1.0f / (1.0f + expf(-v));
}

DQ_ACT_FN float dq_act_one(SmolvlmAct act, float v) {
    switch (act) {
    case DQ_ACT_SILU:
        return v / (1.0f + expf(-v));
    case DQ_ACT_GELU_TANH: /* torch's gelu(approximate="tanh") */
        return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    case DQ_ACT_GELU_ERF:
        return dq_act_gelu_erf(v);
    case DQ_ACT_GELU_10: /* ClippedGELUActivation(min=-10, max=10) over GELUActivation */
        return dq_act_clip(dq_act_gelu_erf(v), -10.0f, 10.0f);
    case DQ_ACT_QUICK_GELU: /* input * torch.sigmoid(1.702 * input) */
        return v * dq_act_sigmoid(1.702f * v);
    case DQ_ACT_RELU: /* clamp_min(x, 0), NaN kept */
        return v < 0.0f ? 0.0f : v;
    case DQ_ACT_RELU6: /* hardtanh(x, 0, 6) */
        return dq_act_clip(v, 0.0f, 6.0f);
    case DQ_ACT_RELU2: { /* torch.square(relu(x)) */
        float r = v < 0.0f ? 0.0f : v;
        return r * r;
    }
    case DQ_ACT_LEAKY_RELU: /* nn.LeakyReLU's default negative_slope 0.01 */
        return v > 0.0f ? v : v * 0.01f;
    case DQ_ACT_SIGMOID:
        return dq_act_sigmoid(v);
    case DQ_ACT_TANH:
        return tanhf(v);
    case DQ_ACT_MISH: /* torch's mish kernel: x * tanh(log1p(exp(x))), no softplus threshold */
        return v * tanhf(log1pf(expf(v)));
    case DQ_ACT_LAPLACE: /* (input - mu).div(sigma * math.sqrt(2.0)), then 0.5 * (1 + erf) */
        return 0.5f * (1.0f + erff((v - 0.707107f) / (float)(0.282095 * 1.4142135623730951)));
    case DQ_ACT_LINEAR:
    case DQ_ACT_COUNT:
        break;
    }
    return v;
}

#endif
