// AVX-512 VBMI unpacking of dense LSB-first packed codes (docs/FORMAT.md) into one code per
// byte, natural order, for every width 1..8. Include after immintrin.h under a
// `#pragma GCC target` that enables avx512f, avx512bw and avx512vbmi.
//
// 64 codes occupy 8 * BITS bytes; codes 8g..8g+7 are the BITS bytes at offset g * BITS.
// vpermb copies those bytes to the start of qword g, vpmultishiftqb picks the 8-bit field at
// bit offset t * BITS for byte t of each qword, and a mask keeps the low BITS bits.
#pragma once

#include <cstdint>

namespace qpart {
namespace kernels {
namespace detail {
namespace {  // internal linkage: each includer compiles it for its own target

/// Mask of the first n (0..64) bytes of a 64-byte vector.
inline __mmask64 avx512_byte_mask(int64_t n) {
  return n >= 64 ? ~static_cast<__mmask64>(0) : (static_cast<__mmask64>(1) << n) - 1;
}

template <int BITS>
struct Unpack64 {
  static_assert(BITS >= 1 && BITS <= 8, "widths 1..8");
  /// Packed bytes of 64 codes.
  static constexpr int kBytes = 8 * BITS;

  __m512i perm, ctrl, mask;

  Unpack64() {
    alignas(64) uint8_t p[64], c[64];
    for (int g = 0; g < 8; ++g)
      for (int t = 0; t < 8; ++t) {
        p[g * 8 + t] = static_cast<uint8_t>(g * BITS + t);  // <= 63 for BITS <= 8
        c[g * 8 + t] = static_cast<uint8_t>(t * BITS);
      }
    perm = _mm512_load_si512(p);
    ctrl = _mm512_load_si512(c);
    mask = _mm512_set1_epi8(static_cast<char>((1 << BITS) - 1));
  }

  /// Codes from a vector whose first kBytes bytes are the packed bytes (the rest ignored).
  __m512i from_bytes(__m512i raw) const {
    if (BITS == 8) return raw;
    const __m512i gathered = _mm512_permutexvar_epi8(perm, raw);
    return _mm512_and_si512(_mm512_multishift_epi64_epi8(ctrl, gathered), mask);
  }

  /// Codes 0..63 whose bits start at byte p; reads exactly kBytes bytes.
  __m512i full(const uint8_t* p) const {
    if (kBytes == 64) return _mm512_loadu_si512(p);
    return from_bytes(_mm512_maskz_loadu_epi8(avx512_byte_mask(kBytes), p));
  }

  /// The first `count` (< 64) codes from byte p, lanes >= count zero; reads only
  /// ceil(count * BITS / 8) bytes (masked loads do not fault past the end of a buffer).
  __m512i partial(const uint8_t* p, int64_t count) const {
    const int64_t bytes = (count * BITS + 7) / 8;
    const __m512i codes = from_bytes(_mm512_maskz_loadu_epi8(avx512_byte_mask(bytes), p));
    return _mm512_maskz_mov_epi8(avx512_byte_mask(count), codes);
  }
};

}  // namespace
}  // namespace detail
}  // namespace kernels
}  // namespace qpart
