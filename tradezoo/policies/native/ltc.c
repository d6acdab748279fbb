/*
 * Fused CPU kernels of the LTC recurrence: the native fast path of tradezoo/policies/ltc.py.
 *
 * The reference is the PyTorch code in ltc.py (`_run` for the forward pass, `_LTCRecurrence.
 * backward` for the hand-written adjoint); tests/test_ltc_native.py checks outputs and every
 * gradient against it. Same names and shapes as there (float32, C-contiguous):
 *
 *   c1, c2, cmt        [B, L, H]  input-only terms of numerator and denominator, cm / (dt / U)
 *   a, c, e, w         [H, H]     sigma, -sigma mu, W erev, W   (row: source i, column: target j)
 *   v_in, dens         [B, L, U, H] potentials entering each unfold, and its denominators
 *
 * One unfold (U per bar) of sample b, for every target neuron j:
 *
 *   s_ij  = sigmoid(a_ij v_i + c_ij)
 *   den_j = sum_i s_ij w_ij + c2_j
 *   v_j  <- (c1_j + cmt_j v_j + sum_i s_ij e_ij) / den_j
 *
 * Why a kernel: PyTorch runs each unfold as ~8 passes over a [B, H, H] tensor (and recomputes
 * the sigmoids in backward), and at batch 1 pays ~2-3 us of dispatch per op for 384 sequential
 * unfolds of a 64-bar window. Here one sample's whole recurrence runs in one loop nest whose
 * [H, H] working set stays in cache, the sigmoid is fused with both sums, and the loops over j
 * vectorise (exp_poly in tz_common.h is branch-free so the compiler can vectorise it).
 *
 * Floating point: denormals are flushed inside the kernels (see tz_common.h).
 */

#include "tz_common.h"

/* One layer of synapses (the shared inner loops). Sources i in [0, n_src) with values v [n_src]
 * (neuron potentials, or the inputs for the sensory synapses), targets j in [0, H):
 *   num_j += sum_i s_ij e_ij,  den_j += sum_i s_ij w_ij,  s_ij = sigmoid(a_ij v_i + c_ij). */
static inline void synapse_sums(int64_t n_src, int64_t H, const float *v, const float *a,
                                const float *c, const float *e, const float *w, float *num,
                                float *den) {
    for (int64_t i = 0; i < n_src; ++i) {
        const float v_i = v[i];
        const float *a_i = a + i * H, *c_i = c + i * H, *e_i = e + i * H, *w_i = w + i * H;
        for (int64_t j = 0; j < H; ++j) {
            const float s = sigmoid(a_i[j] * v_i + c_i[j]);
            num[j] += s * e_i[j];
            den[j] += s * w_i[j];
        }
    }
}

/* Adjoint of synapse_sums: given g_n = dLoss/dnum and g_d = dLoss/dden [H], writes
 * g_v [n_src] = dLoss/dv and adds dLoss/d(a, c, e, w) into g_a, g_c, g_e, g_w [n_src, H]. */
static inline void synapse_adjoint(int64_t n_src, int64_t H, const float *v, const float *a,
                                   const float *c, const float *e, const float *w,
                                   const float *g_n, const float *g_d, float *g_v, float *g_a,
                                   float *g_c, float *g_e, float *g_w) {
    for (int64_t i = 0; i < n_src; ++i) {
        const float v_i = v[i];
        const int64_t row = i * H;
        float g_vi = 0.0f;
#pragma omp simd reduction(+ : g_vi)
        for (int64_t j = 0; j < H; ++j) {
            const float s = sigmoid(a[row + j] * v_i + c[row + j]);
            const float g_z = (e[row + j] * g_n[j] + w[row + j] * g_d[j]) * s * (1.0f - s);
            g_e[row + j] += s * g_n[j];
            g_w[row + j] += s * g_d[j];
            g_a[row + j] += g_z * v_i;
            g_c[row + j] += g_z;
            g_vi += g_z * a[row + j];
        }
        g_v[i] = g_vi;
    }
}

/* Sensory synapse sums for samples [0, B): x [B, L, F] (inputs after their affine map),
 * a, c, e, w [F, H] -> num, den [B, L, H]. */
int tz_ltc_sensory_forward(int64_t B, int64_t L, int64_t F, int64_t H, const float *x,
                           const float *a, const float *c, const float *e, const float *w,
                           float *num, float *den) {
    TZ_FLUSH_DENORMALS_BEGIN
    for (int64_t bt = 0; bt < B * L; ++bt) {
        memset(num + bt * H, 0, sizeof(float) * (size_t)H);
        memset(den + bt * H, 0, sizeof(float) * (size_t)H);
        synapse_sums(F, H, x + bt * F, a, c, e, w, num + bt * H, den + bt * H);
    }
    TZ_FLUSH_DENORMALS_END
    return 0;
}

/* Adjoint of tz_ltc_sensory_forward: writes g_x [B, L, F]; ADDS the parameter gradients into
 * g_a, g_c, g_e, g_w [F, H] (zeroed by the caller). */
int tz_ltc_sensory_backward(int64_t B, int64_t L, int64_t F, int64_t H, const float *x,
                            const float *a, const float *c, const float *e, const float *w,
                            const float *g_num, const float *g_den, float *g_x, float *g_a,
                            float *g_c, float *g_e, float *g_w) {
    TZ_FLUSH_DENORMALS_BEGIN
    for (int64_t bt = 0; bt < B * L; ++bt)
        synapse_adjoint(F, H, x + bt * F, a, c, e, w, g_num + bt * H, g_den + bt * H,
                        g_x + bt * F, g_a, g_c, g_e, g_w);
    TZ_FLUSH_DENORMALS_END
    return 0;
}

/* Forward pass of the recurrence over samples [0, B). `out` is [B, L, H], or [B, H] (the last
 * bar) when `last_only`; `v_in` and `dens` ([B, L, U, H]) are written when not NULL (for
 * backward). Returns 0, or -1 if a work buffer could not be allocated. */
int tz_ltc_forward(int64_t B, int64_t L, int64_t U, int64_t H, const float *c1,
                   const float *c2, const float *cmt, const float *a, const float *c,
                   const float *e, const float *w, float *out, int64_t last_only, float *v_in,
                   float *dens) {
    float *buf = (float *)malloc(sizeof(float) * 3 * (size_t)H);
    if (buf == NULL) return -1;
    float *v = buf, *num = buf + H, *den = buf + 2 * H; /* [H] each */
    TZ_FLUSH_DENORMALS_BEGIN
    for (int64_t b = 0; b < B; ++b) {
        memset(v, 0, sizeof(float) * (size_t)H);
        for (int64_t t = 0; t < L; ++t) {
            const int64_t bt = b * L + t;
            const float *c1_t = c1 + bt * H, *c2_t = c2 + bt * H, *cmt_t = cmt + bt * H;
            for (int64_t k = 0; k < U; ++k) {
                const int64_t btk = bt * U + k;
                if (v_in) memcpy(v_in + btk * H, v, sizeof(float) * (size_t)H);
                memset(num, 0, sizeof(float) * (size_t)H);
                memset(den, 0, sizeof(float) * (size_t)H);
                synapse_sums(H, H, v, a, c, e, w, num, den);
                for (int64_t j = 0; j < H; ++j) {
                    const float d = den[j] + c2_t[j];
                    if (dens) dens[btk * H + j] = d;
                    v[j] = (c1_t[j] + cmt_t[j] * v[j] + num[j]) / d;
                }
            }
            if (!last_only) memcpy(out + bt * H, v, sizeof(float) * (size_t)H);
        }
        if (last_only) memcpy(out + b * H, v, sizeof(float) * (size_t)H);
    }
    TZ_FLUSH_DENORMALS_END
    free(buf);
    return 0;
}

/* Adjoint of tz_ltc_forward over samples [0, B), from the saved `v_in`, `dens` and the
 * potentials `out` [B, L, H]. Writes g_c1, g_c2, g_cmt [B, L, H]; ADDS the parameter gradients
 * (summed over the samples, the bars and the unfolds) into g_a, g_c, g_e, g_w [H, H], which the
 * caller zeroes. Returns 0, or -1 if a work buffer could not be allocated. */
int tz_ltc_backward(int64_t B, int64_t L, int64_t U, int64_t H, const float *cmt,
                    const float *a, const float *c, const float *e, const float *w,
                    const float *v_in, const float *dens, const float *out,
                    const float *grad_out, float *g_c1, float *g_c2, float *g_cmt, float *g_a,
                    float *g_c, float *g_e, float *g_w) {
    float *buf = (float *)malloc(sizeof(float) * 4 * (size_t)H);
    if (buf == NULL) return -1;
    float *g = buf;           /* dLoss/dv after the unfold being undone [H] */
    float *g_n = buf + H;     /* dLoss/dnumerator [H] */
    float *g_d = buf + 2 * H; /* dLoss/ddenominator [H] */
    float *g_v = buf + 3 * H; /* dLoss/dv through the synapses [H] */
    TZ_FLUSH_DENORMALS_BEGIN
    for (int64_t b = 0; b < B; ++b) {
        memset(g, 0, sizeof(float) * (size_t)H);
        for (int64_t t = L - 1; t >= 0; --t) {
            const int64_t bt = b * L + t;
            const float *cmt_t = cmt + bt * H, *grad_t = grad_out + bt * H;
            float *g_num_t = g_c1 + bt * H, *g_den_t = g_c2 + bt * H, *g_cm_t = g_cmt + bt * H;
            for (int64_t j = 0; j < H; ++j) {
                g[j] += grad_t[j];
                g_num_t[j] = 0.0f;
                g_den_t[j] = 0.0f;
                g_cm_t[j] = 0.0f;
            }
            for (int64_t k = U - 1; k >= 0; --k) {
                const int64_t btk = bt * U + k;
                const float *v = v_in + btk * H, *den = dens + btk * H;
                const float *v_next = k + 1 < U ? v_in + (btk + 1) * H : out + bt * H;
                for (int64_t j = 0; j < H; ++j) {
                    g_n[j] = g[j] / den[j];
                    g_d[j] = -g_n[j] * v_next[j];
                    g_num_t[j] += g_n[j];
                    g_den_t[j] += g_d[j];
                    g_cm_t[j] += g_n[j] * v[j];
                }
                synapse_adjoint(H, H, v, a, c, e, w, g_n, g_d, g_v, g_a, g_c, g_e, g_w);
                for (int64_t j = 0; j < H; ++j) g[j] = g_n[j] * cmt_t[j] + g_v[j];
            }
        }
    }
    TZ_FLUSH_DENORMALS_END
    free(buf);
    return 0;
}
