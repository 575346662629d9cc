/* Each hidden_act (config.h's SmolvlmAct) in double precision, from transformers' activations.py
 * formulas written out again here, not from model/activation.h: the backends' act op is checked
 * against these. */
#ifndef DQ_TEST_ACT_REF_H
#define DQ_TEST_ACT_REF_H

#include "config.h"

#include <math.h>

static inline double act_ref_gelu(double x) {
    return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
}

static inline double act_ref(SmolvlmAct act, double x) {
    switch (act) {
    case DQ_ACT_SILU:
        return x / (1.0 + exp(-x));
    case DQ_ACT_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * pow(x, 3.0))));
    case DQ_ACT_GELU_ERF:
        return act_ref_gelu(x);
    case DQ_ACT_GELU_10:
        return fmin(fmax(act_ref_gelu(x), -10.0), 10.0);
    case DQ_ACT_QUICK_GELU:
        return x / (1.0 + exp(-1.702 * x));
    case DQ_ACT_RELU:
        return fmax(x, 0.0);
    case DQ_ACT_RELU6:
        return fmin(fmax(x, 0.0), 6.0);
    case DQ_ACT_RELU2:
        return x > 0 ? x * x : 0.0;
    case DQ_ACT_LEAKY_RELU:
        return x >= 0 ? x : 0.01 * x;
    case DQ_ACT_SIGMOID:
        return 1.0 / (1.0 + exp(-x));
    case DQ_ACT_TANH:
        return tanh(x);
    case DQ_ACT_MISH:
        return x * tanh(log(1.0 + exp(x)));
    case DQ_ACT_LAPLACE:
        return 0.5 * (1.0 + erf((x - 0.707107) / (0.282095 * sqrt(2.0))));
    case DQ_ACT_LINEAR:
    case DQ_ACT_COUNT:
        break;
    }
    return x;
}

static inline const char *act_ref_name(SmolvlmAct act) {
    static const char *const names[DQ_ACT_COUNT] = {
        "silu",  "gelu_tanh",  "gelu",    "gelu_10", "quick_gelu", "relu",    "relu6",
        "relu2", "leaky_relu", "sigmoid", "tanh",    "mish",       "laplace", "linear"};
    return names[act];
}

#endif
