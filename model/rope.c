#include "rope.h"

#include <math.h>
#include <string.h>

/* _compute_default_rope_parameters: 1.0 / base ** (arange(0, dim, 2).float() / dim), all float32
 * (torch's pow of a float32 tensor takes the scalar base as float32; 1.0 / t is reciprocal). */
static float default_inv_freq(double theta, int i, int head_dim) {
    return 1.0f / powf((float)theta, (float)(2 * i) / (float)head_dim);
}

void dq_rope_plain(DqRope *r, double theta, int head_dim) {
    memset(r, 0, sizeof *r);
    r->half = MIN(head_dim / 2, DQ_ROPE_MAX_HALF);
    r->attention_factor = 1.0f;
    for (int i = 0; i < r->half; i++)
        r->inv_freq[i] = default_inv_freq(theta, i, head_dim);
}

/* _compute_llama3_parameters, op for op: a float32 tensor with a Python float computes in
 * float32 with the float rounded to float32 (wavelen = 2 * math.pi / inv_freq is
 * reciprocal(inv_freq) * 2pi); the thresholds are Python doubles, rounded likewise where they
 * meet the tensor. */
static void llama3(DqRope *r, const SmolvlmConfig *c) {
    const float factor = (float)c->rope_factor;
    const float low = (float)c->rope_low_freq_factor;
    const double low_wavelen = c->rope_original_max_pos / c->rope_low_freq_factor;
    const double high_wavelen = c->rope_original_max_pos / c->rope_high_freq_factor;
    const float smooth_den = (float)(c->rope_high_freq_factor - c->rope_low_freq_factor);
    for (int i = 0; i < r->half; i++) {
        float inv = r->inv_freq[i];
        float wavelen = (1.0f / inv) * (float)(2 * M_PI);
        float scaled = wavelen > (float)low_wavelen ? inv / factor : inv;
        /* medium: neither below high_freq_wavelen nor above low_freq_wavelen */
        if (!(wavelen < (float)high_wavelen) && !(wavelen > (float)low_wavelen)) {
            float smooth = ((1.0f / wavelen) * (float)c->rope_original_max_pos - low) / smooth_den;
            scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
        }
        r->inv_freq[i] = scaled;
    }
}

/* find_correction_dim, in double as Python computes it. */
static double correction_dim(double rotations, int dim, double base, double max_pos) {
    return (dim * log(max_pos / (rotations * 2 * M_PI))) / (2 * log(base));
}

/* _compute_yarn_parameters: the interpolated (1 / (factor * pos_freq)) and extrapolated
 * (1 / pos_freq) frequencies blended by a linear ramp over the dimensions between the correction
 * range's ends, float32 op for op. */
static void yarn(DqRope *r, const SmolvlmConfig *c) {
    const int dim = 2 * r->half;
    const double max_pos =
        c->rope_original_max_pos != 0 ? c->rope_original_max_pos : c->max_position_embeddings;
    double low = correction_dim(c->rope_beta_fast, dim, c->rope_theta, max_pos);
    double high = correction_dim(c->rope_beta_slow, dim, c->rope_theta, max_pos);
    if (c->rope_truncate) {
        low = floor(low);
        high = ceil(high);
    }
    low = MAX(low, 0);
    high = MIN(high, dim - 1);
    if (low == high)
        high += 0.001; /* linear_ramp_factor's guard against a zero range */
    const float factor = (float)c->rope_factor;
    for (int i = 0; i < r->half; i++) {
        float pos_freq = powf((float)c->rope_theta, (float)(2 * i) / (float)dim);
        float extrapolation = 1.0f / pos_freq;
        float interpolation = 1.0f / (factor * pos_freq);
        float ramp = ((float)i - (float)low) / (float)(high - low);
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp; /* torch.clamp; NaN stays NaN */
        float extrapolation_factor = 1.0f - ramp;
        r->inv_freq[i] =
            interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
    }
    r->attention_factor = (float)c->rope_attention_factor;
}

void dq_rope_init(DqRope *r, const SmolvlmConfig *c) {
    dq_rope_plain(r, c->rope_theta, c->head_dim);
    switch (c->rope_type) {
    case DQ_ROPE_DEFAULT:
        break;
    case DQ_ROPE_LINEAR:
        for (int i = 0; i < r->half; i++)
            r->inv_freq[i] /= (float)c->rope_factor;
        break;
    case DQ_ROPE_LLAMA3:
        llama3(r, c);
        break;
    case DQ_ROPE_YARN:
        yarn(r, c);
        break;
    }
}

gboolean dq_rope_equal(const DqRope *a, const DqRope *b) {
    return a->half == b->half &&
           memcmp(&a->attention_factor, &b->attention_factor, sizeof(float)) == 0 &&
           memcmp(a->inv_freq, b->inv_freq, (size_t)a->half * sizeof(float)) == 0;
}
