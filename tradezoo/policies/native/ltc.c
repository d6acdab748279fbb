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

/* synapse_adjoint for four samples at once (potentials v[p], adjoints g_n[p], g_d[p] ->
 * g_v[p], p = 0..3). The weights are read once for the four, and each gradient accumulator is
 * read and written once with the four samples' terms: the adjoint is bound by that memory
 * traffic more than by its arithmetic, and this runs the backward pass ~25% faster than four
 * single-sample calls. Written out per sample because a loop over p inside the j loop stops
 * the compiler from vectorising over j. */
static inline void synapse_adjoint4(int64_t H, const float *const *v, const float *a,
                                    const float *c, const float *e, const float *w,
                                    const float *const *g_n, const float *const *g_d,
                                    float *const *g_v, float *g_a, float *g_c, float *g_e,
                                    float *g_w) {
    const float *gn0 = g_n[0], *gn1 = g_n[1], *gn2 = g_n[2], *gn3 = g_n[3];
    const float *gd0 = g_d[0], *gd1 = g_d[1], *gd2 = g_d[2], *gd3 = g_d[3];
    for (int64_t i = 0; i < H; ++i) {
        const float v0 = v[0][i], v1 = v[1][i], v2 = v[2][i], v3 = v[3][i];
        const int64_t row = i * H;
        float acc0 = 0.0f, acc1 = 0.0f, acc2 = 0.0f, acc3 = 0.0f;
#pragma omp simd reduction(+ : acc0, acc1, acc2, acc3)
        for (int64_t j = 0; j < H; ++j) {
            const float a_ij = a[row + j], c_ij = c[row + j];
            const float e_ij = e[row + j], w_ij = w[row + j];
            const float s0 = sigmoid(a_ij * v0 + c_ij), s1 = sigmoid(a_ij * v1 + c_ij);
            const float s2 = sigmoid(a_ij * v2 + c_ij), s3 = sigmoid(a_ij * v3 + c_ij);
            const float z0 = (e_ij * gn0[j] + w_ij * gd0[j]) * s0 * (1.0f - s0);
            const float z1 = (e_ij * gn1[j] + w_ij * gd1[j]) * s1 * (1.0f - s1);
            const float z2 = (e_ij * gn2[j] + w_ij * gd2[j]) * s2 * (1.0f - s2);
            const float z3 = (e_ij * gn3[j] + w_ij * gd3[j]) * s3 * (1.0f - s3);
            g_e[row + j] += (s0 * gn0[j] + s1 * gn1[j]) + (s2 * gn2[j] + s3 * gn3[j]);
            g_w[row + j] += (s0 * gd0[j] + s1 * gd1[j]) + (s2 * gd2[j] + s3 * gd3[j]);
            g_a[row + j] += (z0 * v0 + z1 * v1) + (z2 * v2 + z3 * v3);
            g_c[row + j] += (z0 + z1) + (z2 + z3);
            acc0 += z0 * a_ij;
            acc1 += z1 * a_ij;
            acc2 += z2 * a_ij;
            acc3 += z3 * a_ij;
        }
        g_v[0][i] = acc0;
        g_v[1][i] = acc1;
        g_v[2][i] = acc2;
        g_v[3][i] = acc3;
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
 * caller zeroes. Samples run in blocks of four (synapse_adjoint4), the rest one by one.
 * Returns 0, or -1 if a work buffer could not be allocated. */
int tz_ltc_backward(int64_t B, int64_t L, int64_t U, int64_t H, const float *cmt,
                    const float *a, const float *c, const float *e, const float *w,
                    const float *v_in, const float *dens, const float *out,
                    const float *grad_out, float *g_c1, float *g_c2, float *g_cmt, float *g_a,
                    float *g_c, float *g_e, float *g_w) {
    enum { BLOCK = 4 };
    float *buf = (float *)malloc(sizeof(float) * 4 * BLOCK * (size_t)H);
    if (buf == NULL) return -1;
    float *g[BLOCK], *g_n[BLOCK], *g_d[BLOCK], *g_v[BLOCK]; /* [H] each, per sample */
    for (int p = 0; p < BLOCK; ++p) {
        g[p] = buf + (4 * p) * H;       /* dLoss/dv after the unfold being undone */
        g_n[p] = buf + (4 * p + 1) * H; /* dLoss/dnumerator */
        g_d[p] = buf + (4 * p + 2) * H; /* dLoss/ddenominator */
        g_v[p] = buf + (4 * p + 3) * H; /* dLoss/dv through the synapses */
    }
    TZ_FLUSH_DENORMALS_BEGIN
    int64_t n_block;
    for (int64_t b0 = 0; b0 < B; b0 += n_block) {
        n_block = B - b0 >= BLOCK ? BLOCK : 1;
        for (int64_t p = 0; p < n_block; ++p) memset(g[p], 0, sizeof(float) * (size_t)H);
        for (int64_t t = L - 1; t >= 0; --t) {
            for (int64_t p = 0; p < n_block; ++p) {
                const int64_t bt = (b0 + p) * L + t;
                for (int64_t j = 0; j < H; ++j) {
                    g[p][j] += grad_out[bt * H + j];
                    g_c1[bt * H + j] = 0.0f;
                    g_c2[bt * H + j] = 0.0f;
                    g_cmt[bt * H + j] = 0.0f;
                }
            }
            for (int64_t k = U - 1; k >= 0; --k) {
                const float *v[BLOCK];
                for (int64_t p = 0; p < n_block; ++p) {
                    const int64_t bt = (b0 + p) * L + t, btk = bt * U + k;
                    const float *den = dens + btk * H;
                    const float *v_next = k + 1 < U ? v_in + (btk + 1) * H : out + bt * H;
                    float *g_num_t = g_c1 + bt * H, *g_den_t = g_c2 + bt * H;
                    float *g_cm_t = g_cmt + bt * H;
                    v[p] = v_in + btk * H;
                    for (int64_t j = 0; j < H; ++j) {
                        g_n[p][j] = g[p][j] / den[j];
                        g_d[p][j] = -g_n[p][j] * v_next[j];
                        g_num_t[j] += g_n[p][j];
                        g_den_t[j] += g_d[p][j];
                        g_cm_t[j] += g_n[p][j] * v[p][j];
                    }
                }
                if (n_block == BLOCK)
                    synapse_adjoint4(H, v, a, c, e, w, (const float *const *)g_n,
                                     (const float *const *)g_d, g_v, g_a, g_c, g_e, g_w);
                else
                    synapse_adjoint(H, H, v[0], a, c, e, w, g_n[0], g_d[0], g_v[0], g_a, g_c,
                                    g_e, g_w);
                for (int64_t p = 0; p < n_block; ++p) {
                    const float *cmt_t = cmt + ((b0 + p) * L + t) * H;
                    for (int64_t j = 0; j < H; ++j) g[p][j] = g_n[p][j] * cmt_t[j] + g_v[p][j];
                }
            }
        }
    }
    TZ_FLUSH_DENORMALS_END
    free(buf);
    return 0;
}
