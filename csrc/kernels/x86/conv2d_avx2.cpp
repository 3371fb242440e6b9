// AVX2+FMA packed conv2d tile kernel (direct NCHW; algorithm in conv2d_x86_tile.h), compiled
// for AVX2 via a target pragma and only called after run-time detection.
//
// Register tile: 6 output channels x 16 pixels = 12 ymm accumulators; per depth step 2
// pixel loads and 6 weight broadcasts (the layout of the AVX2 linear GEMM's 6x16 tile).
// Weights: each block of 8 codes (exactly BITS bytes, read with a fixed-size memcpy) is
// broadcast as one 64-bit value and shifted per lane with two vpsrlvq (codes 0-3 and 4-7),
// merged into 8 int32 lanes and masked; a row's last partial block uses the scalar code_at.
// The int32 codes are then converted 8 at a time to (code - zero) * scale per quantization
// group (masked at group and block edges, so any group size works).
#if defined(__x86_64__)

#include <cstdint>
#include <cstring>

#include "../conv2d_impl.h"
#include "../packed_code.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include "conv2d_x86_tile.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

// Lanes [0, n) set (n clamped to 0..8; n <= 0: none), as the mask operand of vmaskmov.
inline __m256i lane_mask8(int64_t n) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const int clamped = static_cast<int>(n < 0 ? 0 : n < 8 ? n : 8);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(clamped), iota);
}

// Codes 0..7 of the BITS bytes at p as 8 int32 lanes.
template <int BITS>
struct Unpack8 {
  __m256i shift_lo, shift_hi, order, mask;

  Unpack8()
      : shift_lo(_mm256_setr_epi64x(0, BITS, 2 * BITS, 3 * BITS)),
        shift_hi(_mm256_setr_epi64x(4 * BITS, 5 * BITS, 6 * BITS, 7 * BITS)),
        order(_mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7)),
        mask(_mm256_set1_epi32((1 << BITS) - 1)) {}

  __m256i operator()(const uint8_t* p) const {
    int64_t v = 0;
    std::memcpy(&v, p, BITS);
    const __m256i all = _mm256_set1_epi64x(v);
    const __m256i lo = _mm256_srlv_epi64(all, shift_lo);  // code t in the low half of qword t
    const __m256i hi = _mm256_srlv_epi64(all, shift_hi);  // code t + 4 likewise
    // Interleave to [c0 c4 c1 c5 | c2 c6 c3 c7], then restore the natural order.
    const __m256i mixed = _mm256_blend_epi32(lo, _mm256_slli_epi64(hi, 32), 0xAA);
    return _mm256_and_si256(_mm256_permutevar8x32_epi32(mixed, order), mask);
  }
};

struct Avx2 {
  using Vec = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kMr = static_cast<int>(kConvAvx2Mr);
  static constexpr int kNr = static_cast<int>(kConvAvx2Nr);
  using Code = int32_t;
  template <int BITS>
  using Unpacker = Unpack8<BITS>;

  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec set1(float f) { return _mm256_set1_ps(f); }
  static Vec load(const float* p) { return _mm256_load_ps(p); }  // panels are 64-byte aligned
  static Vec loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, Vec v) { _mm256_store_ps(p, v); }
  static Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec load_n(const float* p, int64_t n) {
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask8(n));
  }
  static Vec load_range(const float* p, int64_t lo, int64_t hi) {
    const __m256i m = _mm256_andnot_si256(lane_mask8(lo), lane_mask8(hi));
    return _mm256_maskload_ps(p, m);
  }
  static void store_n(float* p, Vec v, int64_t n) {
    if (n >= 8) {
      _mm256_storeu_ps(p, v);
    } else {
      _mm256_maskstore_ps(p, lane_mask8(n), v);
    }
  }

  // codes[0, kc) = codes k0 .. k0 + kc - 1 of a packed row (k0 % 8 == 0: byte aligned).
  template <int BITS>
  static void unpack(const Unpack8<BITS>& u, const uint8_t* row, int64_t k0, int64_t kc,
                     int32_t* codes) {
    int64_t j = 0;
    for (; j + 8 <= kc; j += 8) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(codes + j), u(row + (k0 + j) * BITS / 8));
    }
    for (; j < kc; ++j) codes[j] = code_at(row, k0 + j, BITS);  // reads only the row's bytes
  }

  // out[j] = (codes[j] - zero) * scale for j in [0, kc), group by group.
  static void dequant_codes(const int32_t* codes, int64_t k0, int64_t kc,
                            const uint16_t* scale_bits, const uint8_t* zeros, int64_t gs,
                            float* out) {
    for (int64_t j = 0; j < kc;) {
      const int64_t g = (k0 + j) / gs;
      const int64_t end = (g + 1) * gs - k0 < kc ? (g + 1) * gs - k0 : kc;
      const __m256 z = _mm256_set1_ps(static_cast<float>(zeros[g]));
      const __m256 sc = _mm256_set1_ps(half_bits_to_float(scale_bits[g]));
      for (int64_t i = j; i < end; i += 8) {
        const __m256i m = lane_mask8(end - i);
        const __m256 c = _mm256_cvtepi32_ps(_mm256_maskload_epi32(codes + i, m));
        _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(_mm256_sub_ps(c, z), sc));
      }
      j = end;
    }
  }
};

}  // namespace

void conv2d_tile_avx2(const Conv2dArgs& a, const Conv2dTile& t, float* scratch) {
  conv_tile<Avx2>(a, t, scratch);
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC pop_options

#endif  // __x86_64__
