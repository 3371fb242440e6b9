// AVX2 weight quantizer (one group -> fp16 scale, zero point, one code per byte), bit-exact with
// the scalar quantize_rows: the range scan uses min/max (exact in any order for finite
// values), the scale and zero point come from the same scalar code
// (group_params_from_range), and codes use a true division (vdivps, correctly rounded like
// the scalar '/'), round-half-to-even (vroundps, like nearbyint), + zero, clamp to
// [0, 2^bits - 1]. Compiled for AVX2 via a target pragma; called after run-time detection.
#if defined(__x86_64__)

#include <cmath>
#include <cstdint>
#include <cstring>

#include "../dispatch.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include <immintrin.h>

namespace qpart {
namespace kernels {
namespace detail {

Status quantize_group_avx2(const float* x, int64_t n, int bits, uint16_t* scale_bits,
                           uint8_t* zero, uint8_t* codes) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 fmax = _mm256_set1_ps(3.4028234663852886e38f);
  __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(v, absmask), fmax, _CMP_NLE_UQ));
    vlo = _mm256_min_ps(vlo, v);
    vhi = _mm256_max_ps(vhi, v);
  }
  if (_mm256_movemask_ps(bad) != 0) return Status::kNonFinite;
  alignas(32) float l8[8], h8[8];
  _mm256_store_ps(l8, vlo);
  _mm256_store_ps(h8, vhi);
  float lo = 0.0f, hi = 0.0f;
  for (int t = 0; t < 8; ++t) {
    lo = l8[t] < lo ? l8[t] : lo;
    hi = h8[t] > hi ? h8[t] : hi;
  }
  for (; i < n; ++i) {
    const float v = x[i];
    if (!std::isfinite(v)) return Status::kNonFinite;
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  const Status st = group_params_from_range(lo, hi, bits, scale_bits, zero);
  if (st != Status::kOk) return st;
  if (*scale_bits == 0) {
    std::memset(codes, 0, static_cast<size_t>(n));
    return Status::kOk;
  }
  const float scale = half_bits_to_float(*scale_bits);
  const float zf = static_cast<float>(*zero);
  const float qmax = static_cast<float>((1 << bits) - 1);
  const __m256 vs = _mm256_set1_ps(scale), vz = _mm256_set1_ps(zf);
  const __m256 vmax = _mm256_set1_ps(qmax), vzero = _mm256_setzero_ps();
  auto conv = [&](const float* p) {
    const __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(p), vs),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, vz), vzero), vmax));
  };
  i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i a = _mm256_packs_epi32(conv(x + i), conv(x + i + 8));
    const __m256i b = _mm256_packs_epi32(conv(x + i + 16), conv(x + i + 24));
    const __m256i v = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b),
                                                  _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i), v);
  }
  for (; i < n; ++i) {
    const float q = std::nearbyint(x[i] / scale) + zf;
    codes[i] = static_cast<uint8_t>(q < 0.0f ? 0.0f : (q > qmax ? qmax : q));
  }
  return Status::kOk;
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC pop_options

#endif  // __x86_64__
