/*
 * Forward-only CPU kernels of TimeParticle's gated particle recurrences, the native inference
 * paths of tradezoo/policies/timeparticle.py: `tz_particle_scan_forward` (the recurrence
 * without messages fed back, `particle_scan_native`) and `tz_particle_scan_messages_forward`
 * (with them, `particle_scan_messages_native`; its own comment block is further down).
 *
 * tz_particle_scan_forward: the reference is `_ParticleScan.forward` in timeparticle.py;
 * tests/test_timeparticle_native.py checks this kernel against it. Shapes (float32,
 * C-contiguous):
 *
 *   pre     [K, L, B, 2D]   input terms of the K particles (already in the scaled form)
 *   u_rec   [K, D, 2D]      scaled state weights
 *   out     [L, K, B, D], or [1, K, B, D] (the last step) when !keep_all
 *
 * Per particle k, sample b and step t (p starts at 1/2, i.e. h = 0):
 *
 *   [g | q] = sigmoid(pre[k, t, b] + p @ u_rec[k])     (2D values)
 *   p      <- p + g (q - p)                             (lerp)
 *
 * Why a kernel: at batch 1 the PyTorch loop pays ~20 us of dispatch per step (a batched matmul
 * of K 1 x D by D x 2D products, a sigmoid and a lerp) for about 0.5 us of arithmetic. Here the
 * matrix-vector product is D axpy updates over the 2D outputs, which vectorise.
 */

#include "tz_common.h"

int tz_particle_scan_forward(int64_t K, int64_t L, int64_t B, int64_t D, const float *pre,
                             const float *u_rec, float *out, int64_t keep_all) {
    float *buf = (float *)malloc(sizeof(float) * 3 * (size_t)D);
    if (buf == NULL) return -1;
    float *p = buf;     /* [D] state */
    float *z = buf + D; /* [2D] gate and candidate pre-activations, then [g | q] */
    TZ_FLUSH_DENORMALS_BEGIN
    for (int64_t k = 0; k < K; ++k) {
        const float *u_k = u_rec + k * D * 2 * D;
        for (int64_t b = 0; b < B; ++b) {
            for (int64_t i = 0; i < D; ++i) p[i] = 0.5f;
            for (int64_t t = 0; t < L; ++t) {
                memcpy(z, pre + ((k * L + t) * B + b) * 2 * D, sizeof(float) * 2 * (size_t)D);
                for (int64_t i = 0; i < D; ++i) {
                    const float p_i = p[i];
                    const float *u_i = u_k + i * 2 * D;
                    for (int64_t j = 0; j < 2 * D; ++j) z[j] += p_i * u_i[j];
                }
                for (int64_t j = 0; j < D; ++j) {
                    const float g = sigmoid(z[j]), q = sigmoid(z[D + j]);
                    p[j] += g * (q - p[j]);
                }
                if (keep_all) memcpy(out + ((t * K + k) * B + b) * D, p, sizeof(float) * (size_t)D);
            }
            if (!keep_all) memcpy(out + (k * B + b) * D, p, sizeof(float) * (size_t)D);
        }
    }
    TZ_FLUSH_DENORMALS_END
    free(buf);
    return 0;
}

/*
 * The recurrence with the cross-scale messages fed back (`message_feedback`): the native
 * inference path of `ParticleLayer.recurrence_with_messages` (`particle_scan_messages_native`),
 * checked against it by tests/test_timeparticle_native.py. It runs in the state form h (no
 * change of variable). Shapes (float32, C-contiguous), H heads of W = D / H channels:
 *
 *   pre     [K, L, B, 2D]   input terms x_k,t @ [W_g,x | W_h,x]_k + [b_g | b_h]_k
 *   u_rec   [K, D, 2D]      [U_g | U_h] per particle
 *   c_msg   [K, D, 2D]      [C_g | C_h] per particle
 *   w_qkv   [D, 3D]         [W_q | W_k | W_v] in row-vector form (the qkv weight transposed)
 *   out     [L, K, B, D], or [1, K, B, D] (the last step) when !keep_all
 *
 * Per sample b and step t (h_k,0 = 0), with every message read from the states before the
 * step (all K of z_k are computed before any h_k moves):
 *
 *   [q_k | k_k | v_k] = h_k,t-1 @ w_qkv                                       k = 1..K
 *   alpha^e_kj        = softmax_{j != k}( q^e_k . k^e_j / sqrt(W) )           head e = 1..H
 *   m^e_k             = sum_{j != k} alpha^e_kj v^e_j                (x^e: head e's W channels)
 *   z_k               = pre[k, t, b] + h_k,t-1 @ u_rec[k] + m_k @ c_msg[k]    (2D values)
 *   h_k,t             = h_k,t-1 + sigmoid(z_k[:D]) (tanh(z_k[D:]) - h_k,t-1)
 *
 * The matrix-vector products are axpy updates over their outputs (3D or 2D wide), which
 * vectorise; the K x K attention per head is scalar work of K^2 W multiply-adds.
 */

/* tanh(a) = 2 sigmoid(2a) - 1 (exact algebra; the vectorisable sigmoid above). */
static inline float tanh_sigmoid(float a) { return 2.0f * sigmoid(2.0f * a) - 1.0f; }

int tz_particle_scan_messages_forward(int64_t K, int64_t L, int64_t B, int64_t D, int64_t H,
                                      const float *pre, const float *u_rec, const float *c_msg,
                                      const float *w_qkv, float *out, int64_t keep_all) {
    const int64_t W = D / H;
    const float scale = 1.0f / __builtin_sqrtf((float)W);
    /* h [K, D] states, qkv [K, 3D], m [K, D] messages, z [K, 2D], score [K] */
    float *buf = (float *)malloc(sizeof(float) * ((size_t)K * 7 * (size_t)D + (size_t)K));
    if (buf == NULL) return -1;
    float *h = buf, *qkv = h + K * D, *m = qkv + K * 3 * D, *z = m + K * D, *score = z + K * 2 * D;
    TZ_FLUSH_DENORMALS_BEGIN
    for (int64_t b = 0; b < B; ++b) {
        memset(h, 0, sizeof(float) * (size_t)(K * D));
        for (int64_t t = 0; t < L; ++t) {
            /* projections of the states before the step */
            memset(qkv, 0, sizeof(float) * (size_t)(K * 3 * D));
            for (int64_t k = 0; k < K; ++k) {
                const float *h_k = h + k * D;
                float *qkv_k = qkv + k * 3 * D;
                for (int64_t i = 0; i < D; ++i) {
                    const float h_i = h_k[i];
                    const float *w_i = w_qkv + i * 3 * D;
                    for (int64_t j = 0; j < 3 * D; ++j) qkv_k[j] += h_i * w_i[j];
                }
            }
            /* messages: per head, softmax over the other particles (diagonal masked out) */
            for (int64_t e = 0; e < H; ++e) {
                const int64_t c0 = e * W;
                for (int64_t k = 0; k < K; ++k) {
                    const float *q_k = qkv + k * 3 * D + c0;
                    float top = -3.0e38f;
                    for (int64_t j = 0; j < K; ++j) {
                        if (j == k) continue;
                        const float *k_j = qkv + j * 3 * D + D + c0;
                        float s = 0.0f;
                        for (int64_t c = 0; c < W; ++c) s += q_k[c] * k_j[c];
                        score[j] = s * scale;
                        if (score[j] > top) top = score[j];
                    }
                    float total = 0.0f;
                    for (int64_t j = 0; j < K; ++j) {
                        score[j] = j == k ? 0.0f : exp_poly(score[j] - top);
                        total += score[j];
                    }
                    float *m_k = m + k * D + c0;
                    for (int64_t c = 0; c < W; ++c) m_k[c] = 0.0f;
                    for (int64_t j = 0; j < K; ++j) {
                        if (j == k) continue;
                        const float alpha = score[j] / total;
                        const float *v_j = qkv + j * 3 * D + 2 * D + c0;
                        for (int64_t c = 0; c < W; ++c) m_k[c] += alpha * v_j[c];
                    }
                }
            }
            /* gate and candidate pre-activations of every particle, then the update */
            for (int64_t k = 0; k < K; ++k) {
                float *z_k = z + k * 2 * D;
                const float *h_k = h + k * D, *m_k = m + k * D;
                const float *u_k = u_rec + k * D * 2 * D, *c_k = c_msg + k * D * 2 * D;
                memcpy(z_k, pre + ((k * L + t) * B + b) * 2 * D, sizeof(float) * 2 * (size_t)D);
                for (int64_t i = 0; i < D; ++i) {
                    const float h_i = h_k[i], m_i = m_k[i];
                    const float *u_i = u_k + i * 2 * D, *c_i = c_k + i * 2 * D;
                    for (int64_t j = 0; j < 2 * D; ++j) z_k[j] += h_i * u_i[j] + m_i * c_i[j];
                }
            }
            for (int64_t k = 0; k < K; ++k) {
                float *h_k = h + k * D;
                const float *z_k = z + k * 2 * D;
                for (int64_t j = 0; j < D; ++j) {
                    const float g = sigmoid(z_k[j]), cand = tanh_sigmoid(z_k[D + j]);
                    h_k[j] += g * (cand - h_k[j]);
                }
                if (keep_all)
                    memcpy(out + ((t * K + k) * B + b) * D, h_k, sizeof(float) * (size_t)D);
            }
        }
        if (!keep_all)
            for (int64_t k = 0; k < K; ++k)
                memcpy(out + (k * B + b) * D, h + k * D, sizeof(float) * (size_t)D);
    }
    TZ_FLUSH_DENORMALS_END
    free(buf);
    return 0;
}
