/*
 * Shared by the kernels in this folder: a vectorisable exp and sigmoid, and the denormal
 * guard. Header-only (static inline), included by each kernel's single C file.
 */
#ifndef TZ_COMMON_H
#define TZ_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define TZ_HAVE_MXCSR 1
#endif

/* exp(x) = 2^n 2^f with n = round(x log2 e), f in [-1/2, 1/2], and 2^f by a degree-5
 * polynomial fitted for relative error (< 2.4e-7 for f; < 1e-6 overall for |x| < 16, where
 * the rounding of x log2 e is the larger term). Branch-free, so loops calling it vectorise;
 * x is clamped to [-87, 88], which keeps 2^n a normal float. */
static inline float exp_poly(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float y = x * 1.44269504088896341f;
    const float n = __builtin_floorf(y + 0.5f);
    const float f = y - n;
    float p = 1.3276472454e-3f;
    p = p * f + 9.6755418926e-3f;
    p = p * f + 5.5507130921e-2f;
    p = p * f + 2.4022120237e-1f;
    p = p * f + 6.9314694404e-1f;
    p = p * f + 1.0000001192e+0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sigmoid(float z) { return 1.0f / (1.0f + exp_poly(-z)); }

/* Denormals are flushed to zero inside the kernels (FTZ/DAZ, restored on return), whatever the
 * calling thread's mode: they slow x86 arithmetic up to ~100x and carry no information at the
 * scale of these models' activations. */
#ifdef TZ_HAVE_MXCSR
#define TZ_FLUSH_DENORMALS_BEGIN                                                               \
    const unsigned int tz_saved_mxcsr = _mm_getcsr();                                          \
    _mm_setcsr(tz_saved_mxcsr | 0x8040u); /* FTZ | DAZ */
#define TZ_FLUSH_DENORMALS_END _mm_setcsr(tz_saved_mxcsr);
#else
#define TZ_FLUSH_DENORMALS_BEGIN
#define TZ_FLUSH_DENORMALS_END
#endif

#endif /* TZ_COMMON_H */
