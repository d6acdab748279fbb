/*
 * Forward-only CPU kernel of Mamba's selective scan: the native inference path of
 * tradezoo/policies/mamba.py (`selective_scan_native`).
 *
 * The reference is `selective_scan_sequential` in mamba.py (mamba_ssm's selective_scan_ref);
 * tests/test_mamba_native.py checks this kernel against it. Shapes (float32, C-contiguous):
 *
 *   u, delta   [B, L, E]     input and step size (delta > 0, after softplus)
 *   A_t        [N, E]        the state matrix, transposed (A < 0)
 *   Bm, Cm     [B, L, N]     input and output projections
 *   D          [E] or NULL   skip connection
 *   y          [B, L, E], or [B, 1, E] (the last step) when last_only
 *
 * Per sample b and step t, for every channel e and state n (s starts at 0):
 *
 *   s[n, e] <- exp(delta_e A[e, n]) s[n, e] + delta_e u_e Bm[n]
 *   y_e      = sum_n Cm[n] s[n, e] + D_e u_e
 *
 * Why a kernel: the PyTorch backends run each step (or chunk) as several tensor ops over
 * [B, E, N] and materialise exp(delta A) for the whole chunk; at batch 1 their dispatch costs
 * dominate (the policy re-encodes the window at every env step). Here the state [N, E] of one
 * sample stays in cache, exp is fused with the update, and the loops over e vectorise.
 */

#include "tz_common.h"

int tz_selective_scan_forward(int64_t B, int64_t L, int64_t E, int64_t N, const float *u,
                              const float *delta, const float *A_t, const float *Bm,
                              const float *Cm, const float *D, float *y, int64_t last_only) {
    float *buf = (float *)malloc(sizeof(float) * ((size_t)N + 2) * (size_t)E);
    if (buf == NULL) return -1;
    float *s = buf;                 /* [N, E] state */
    float *drive = buf + N * E;     /* [E] delta u */
    float *acc = buf + (N + 1) * E; /* [E] C . s */
    TZ_FLUSH_DENORMALS_BEGIN
    for (int64_t b = 0; b < B; ++b) {
        memset(s, 0, sizeof(float) * (size_t)(N * E));
        for (int64_t t = 0; t < L; ++t) {
            const int64_t bt = b * L + t;
            const float *u_t = u + bt * E, *d_t = delta + bt * E;
            const float *B_t = Bm + bt * N, *C_t = Cm + bt * N;
            for (int64_t e = 0; e < E; ++e) {
                drive[e] = d_t[e] * u_t[e];
                acc[e] = 0.0f;
            }
            for (int64_t n = 0; n < N; ++n) {
                float *s_n = s + n * E;
                const float *A_n = A_t + n * E;
                const float b_n = B_t[n], c_n = C_t[n];
                for (int64_t e = 0; e < E; ++e) {
                    s_n[e] = exp_poly(d_t[e] * A_n[e]) * s_n[e] + drive[e] * b_n;
                    acc[e] += c_n * s_n[e];
                }
            }
            if (last_only && t + 1 < L) continue;
            float *y_t = y + (last_only ? b : bt) * E;
            for (int64_t e = 0; e < E; ++e) y_t[e] = acc[e] + (D ? D[e] * u_t[e] : 0.0f);
        }
    }
    TZ_FLUSH_DENORMALS_END
    free(buf);
    return 0;
}
