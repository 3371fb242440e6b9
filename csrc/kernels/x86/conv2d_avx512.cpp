// AVX-512 packed conv2d tile kernel (direct NCHW; algorithm in conv2d_x86_tile.h), compiled
// for AVX-512 F/BW/VL/VBMI via a target pragma and only called after run-time detection.
//
// Register tile: 8 output channels x 48 pixels = 24 zmm accumulators; per depth step 3
// pixel loads, 8 weight broadcasts (folded into the FMAs as {1to16} memory operands).
// Weights: each depth block of a row is unpacked 64 codes at a time with Unpack64
// (vpermb + vpmultishiftqb, every width; masked loads at the row's end), then converted
// 16 at a time to (code - zero) * scale per quantization group (masked at group and block
// edges, so any group size works).
#if defined(__x86_64__)

#include <cstdint>

#include "../conv2d_impl.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vbmi")
// GCC 12 flags the deliberately undefined pass-through operand (_mm512_undefined_epi32) of
// vpermb / vpmultishiftqb as "maybe uninitialized" once inlined: a false positive.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "avx512_unpack.h"
#include "conv2d_x86_tile.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

// Lanes [0, n) set (n clamped to 0..16).
inline __mmask16 lane_mask16(int64_t n) {
  if (n <= 0) return 0;
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
}

struct Avx512 {
  using Vec = __m512;
  static constexpr int kLanes = 16;
  static constexpr int kMr = static_cast<int>(kConvAvx512Mr);
  static constexpr int kNr = static_cast<int>(kConvAvx512Nr);
  using Code = uint8_t;
  template <int BITS>
  using Unpacker = Unpack64<BITS>;

  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec set1(float f) { return _mm512_set1_ps(f); }
  static Vec load(const float* p) { return _mm512_load_ps(p); }  // panels are 64-byte aligned
  static Vec loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, Vec v) { _mm512_store_ps(p, v); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec load_n(const float* p, int64_t n) {
    return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lane_mask16(n), p);
  }
  static Vec load_range(const float* p, int64_t lo, int64_t hi) {
    const __mmask16 m = lane_mask16(hi > 0 ? hi : 0) & ~lane_mask16(lo > 0 ? lo : 0);
    return _mm512_maskz_loadu_ps(m, p);
  }
  static void store_n(float* p, Vec v, int64_t n) {
    if (n >= 16) {
      _mm512_storeu_ps(p, v);
    } else {
      _mm512_mask_storeu_ps(p, lane_mask16(n), v);
    }
  }

  // codes[0, kc) = codes k0 .. k0 + kc - 1 of a packed row (k0 % 8 == 0: byte aligned).
  template <int BITS>
  static void unpack(const Unpack64<BITS>& u, const uint8_t* row, int64_t k0, int64_t kc,
                     uint8_t* codes) {
    const uint8_t* p = row + k0 * BITS / 8;
    for (int64_t j = 0; j < kc; j += 64) {
      const uint8_t* src = p + j * BITS / 8;
      const __m512i c = kc - j >= 64 ? u.full(src) : u.partial(src, kc - j);
      _mm512_store_si512(codes + j, c);
    }
  }

  // out[j] = (codes[j] - zero) * scale for j in [0, kc), group by group.
  static void dequant_codes(const uint8_t* codes, int64_t k0, int64_t kc,
                            const uint16_t* scale_bits, const uint8_t* zeros, int64_t gs,
                            float* out) {
    for (int64_t j = 0; j < kc;) {
      const int64_t g = (k0 + j) / gs;
      const int64_t end = (g + 1) * gs - k0 < kc ? (g + 1) * gs - k0 : kc;
      const __m512 z = _mm512_set1_ps(static_cast<float>(zeros[g]));
      const __m512 sc = _mm512_set1_ps(half_bits_to_float(scale_bits[g]));
      for (int64_t i = j; i < end; i += 16) {
        const __mmask16 m = lane_mask16(end - i);
        const __m128i c8 = _mm_maskz_loadu_epi8(m, codes + i);
        const __m512 c = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(c8));
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_sub_ps(c, z), sc));
      }
      j = end;
    }
  }
};

}  // namespace

void conv2d_tile_avx512(const Conv2dArgs& a, const Conv2dTile& t, float* scratch) {
  conv_tile<Avx512>(a, t, scratch);
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC diagnostic pop
#pragma GCC pop_options

#endif  // __x86_64__
