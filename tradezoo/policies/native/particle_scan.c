/*
 * Forward-only CPU kernel of TimeParticle's gated particle recurrences: the native inference
 * path of tradezoo/policies/timeparticle.py (`particle_scan_native`).
 *
 * The reference is `_ParticleScan.forward` in timeparticle.py; tests/test_timeparticle_native.py
 * checks this kernel against it. Shapes (float32, C-contiguous):
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
