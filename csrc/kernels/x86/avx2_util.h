// Internal: small AVX2 helpers shared by the x86 kernels. Include after the file's
// `#pragma GCC target("avx2,...")` and <immintrin.h>.
#pragma once

#include <immintrin.h>

namespace qpart {
namespace kernels {
namespace detail {
namespace {  // internal linkage: compiled per ISA translation unit

/// `v` unchanged but opaque to the optimizer: a product stays rounded to float on its own
/// (no FMA contraction), as in the scalar kernels.
inline __m256 rounded(__m256 v) {
  __asm__("" : "+x"(v));
  return v;
}

/// Sum of the 8 lanes of `v`.
inline float hsum(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}

}  // namespace
}  // namespace detail
}  // namespace kernels
}  // namespace qpart
