/*
 * exp for float arrays, written so that GCC vectorises the loops that call it: branch-free range
 * reduction (x = n ln2 + r), a degree-6 polynomial for e^r and 2^n put together in the exponent
 * bits. Relative error below 1e-7 over the range; NaN stays NaN; inputs are clamped to [-87.3, 88]
 * (e^88 is near FLT_MAX, e^-87.3 near the smallest normal float). The scalar loop tail runs the same
 * operations as the vector body (no contraction into FMA in these files), so an element's value
 * never depends on which of them computed it.
 */
#ifndef OMPCNN_VMATH_H
#define OMPCNN_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float vexpf(float x) {
    /* e^88 = 1.65e38 and e^-87.3 = 1.2e-38 keep 2^n a normal float (n from -126 to 127). */
    const float hi = 88.0f, lo = -87.3f;
    x = x > hi ? hi : x;
    x = x < lo ? lo : x; /* comparisons, not fmaxf: a NaN passes through */
    /* n = x / ln2 rounded to the nearest integer, by the 1.5 * 2^23 trick: the sum's low mantissa
     * bits hold n, and no float-to-int conversion (which could trap) is needed. */
    const float shifter = 12582912.0f;
    float t = x * 1.44269504088896341f + shifter;
    float n = t - shifter;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    uint32_t bits; /* unsigned: for a NaN the bits are garbage, but must not overflow */
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - 0x4B400000u + 127u) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#endif
