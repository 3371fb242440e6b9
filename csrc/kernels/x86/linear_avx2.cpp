// AVX2+FMA packed matmul, compiled for AVX2 via a target pragma (no global ISA flags) and
// only called after run-time CPU detection (isa_table.cpp). The traits of the shared driver
// (../linear_fused_driver.h, also used by arm/linear_neon.cpp), on one __m256 per 8 codes:
//
// * m <= kFusedMaxRows (batch 1..8, GEMV-like, memory bound): the driver's fused path. Each
//   block of 8 codes (exactly `bits` bytes) is unpacked in registers with one 64-bit
//   broadcast load, a byte shuffle (widths > 4), a per-lane variable shift and a mask;
//   widths 1, 2 and 4 read 16-byte bit-plane chunks against a permuted copy of x
//   (plane_blocks). Full tiles of 4 rows x 2 columns.
// * larger m: blocked GEMM. A panel of 16 columns x kAvxKc depth is dequantized (the driver's
//   dequant_range: exactly the values dequantize_rows gives; staged row-major, then
//   8x8-transposed in registers) into a k-major L1-resident buffer and multiplied by every
//   row of x with a 6 x 16 outer-product register tile (broadcast x, 12 FMA accumulators);
//   partial sums over K blocks go through y in a fixed order.
// The arithmetic for one output element never depends on [n_begin, n_end) or on how
// columns are tiled, so the results do not depend on the thread split.
#if defined(__x86_64__)

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../dispatch.h"
#include "../packed_code.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include "../linear_fused_driver.h"
#include "avx2_util.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

// Unpacks blocks of 8 codes (`BITS` bytes starting at a byte boundary) into 8 int32 lanes.
template <int BITS>
struct Avx2Unpacker {
  __m256i shuf, shift, mask;

  Avx2Unpacker() {
    alignas(32) int8_t sh[32];
    alignas(32) int32_t sv[8];
    for (int j = 0; j < 8; ++j) {
      const int bit = j * BITS, byte = bit >> 3;
      sv[j] = BITS <= 4 ? bit : (bit & 7);
      for (int t = 0; t < 4; ++t) {
        const int idx = t < 2 && byte + t < 8 ? byte + t : -1;
        sh[(j / 4) * 16 + (j % 4) * 4 + t] =
            idx < 0 ? static_cast<int8_t>(0x80) : static_cast<int8_t>(idx);
      }
    }
    shuf = _mm256_load_si256(reinterpret_cast<const __m256i*>(sh));
    shift = _mm256_load_si256(reinterpret_cast<const __m256i*>(sv));
    mask = _mm256_set1_epi32((1 << BITS) - 1);
  }

  // Needs 8 readable bytes at p (only the first BITS are used).
  inline __m256i codes(const uint8_t* p) const {
    if constexpr (BITS == 8) {
      return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    } else if constexpr (BITS <= 4) {
      int32_t v;
      std::memcpy(&v, p, 4);
      return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(v), shift), mask);
    } else {
      int64_t v;
      std::memcpy(&v, p, 8);
      const __m256i w = _mm256_shuffle_epi8(_mm256_set1_epi64x(v), shuf);
      return _mm256_and_si256(_mm256_srlv_epi32(w, shift), mask);
    }
  }

  // Same for a block near the end of the buffer: copies its BITS bytes first.
  inline __m256i codes_safe(const uint8_t* p) const {
    uint8_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(tmp, p, BITS);
    return codes(tmp);
  }
};

template <int BITS>
void blocked_gemm(const LinearArgs& a);

// Traits of the shared driver (linear_fused_driver.h): one __m256 per block of 8 codes.
struct Avx2 {
  using Vec = __m256;
  static constexpr int kLanes = 8;
  static constexpr int kFusedRows = 4;
  // Batch 1: weight rows per tile. 8 (8 independent FMA chains) is 1.13x faster than 4 for
  // 3 bits and even for 5 and 8, but 0.64-0.86x for the plane widths (measured, thread time,
  // same process), which keep 4.
  template <int BITS>
  static constexpr int kGemvCols = BITS == 1 || BITS == 2 || BITS == 4 || BITS == 8 ? 4 : 8;
  template <int BITS>
  using Unpacker = Avx2Unpacker<BITS>;
  // Widths 1, 2 and 4 ("plane" widths) read 16 bytes = C = 128 / BITS codes at a time: plane
  // s = (bytes >> s*BITS) & mask holds codes P*i + s (P = 8 / BITS) of the chunk in byte i,
  // widened with vpmovzxbd. x is permuted to match once per call (permute_x).
  template <int BITS>
  static constexpr bool kPlanes = BITS == 1 || BITS == 2 || BITS == 4;

  static inline Vec zero() { return _mm256_setzero_ps(); }
  static inline Vec set1(float f) { return _mm256_set1_ps(f); }
  static inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static inline Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
  static inline Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static inline Vec fma(Vec acc, Vec x, Vec w) { return _mm256_fmadd_ps(x, w, acc); }
  static inline float reduce(Vec v) { return hsum(v); }

  template <int BITS>
  static inline void codes_f32(const Unpacker<BITS>& U, const uint8_t* p, bool safe, Vec* w) {
    w[0] = _mm256_cvtepi32_ps(safe ? U.codes_safe(p) : U.codes(p));
  }

  // xperm = x with every full chunk of C codes (counted from its group's start) reordered to
  // (plane s, half h, lane u) <- code P * (8h + u) + s; other positions keep x's order.
  template <int BITS>
  static void permute_x(const LinearArgs& a, float* xperm) {
    constexpr int P = 8 / BITS, C = 16 * P;
    const int64_t gs = a.group_size, groups = a.k / gs;
    for (int64_t i = 0; i < a.m; ++i) {
      const float* xi = a.x + i * a.k;
      float* xo = xperm + i * a.k;
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t g0 = g * gs, full = gs / C;
        for (int64_t c = 0; c < full; ++c) {
          const float* src = xi + g0 + c * C;
          float* dst = xo + g0 + c * C;
          for (int s = 0; s < P; ++s)
            for (int h = 0; h < 2; ++h)
              for (int u = 0; u < 8; ++u) dst[(s * 2 + h) * 8 + u] = src[P * (8 * h + u) + s];
        }
        for (int64_t t = g0 + full * C; t < g0 + gs; ++t) xo[t] = xi[t];
      }
    }
  }

  // The full plane chunks of the group starting at code g0 (x in permute_x's order) into
  // acc; returns the 8-code blocks they cover. Each half h of a chunk (bytes 8h .. 8h + 7) is
  // widened to 32-bit lanes once, straight from memory (vpmovzxbd m64); plane s of lane u is
  // (dword >> s*BITS) & mask - byte 8h + u's bits of code P * (8h + u) + s - and the top plane
  // needs no mask (the zero-extended dword has no higher bits).
  template <int BITS, int MR, int NR>
  static int64_t plane_blocks(const uint8_t* const* w, const float* const* x, int64_t g0,
                              int64_t gs, Vec (&acc)[MR][NR][1]) {
    constexpr int P = 8 / BITS, C = 16 * P;
    const __m256i dmask = _mm256_set1_epi32((1 << BITS) - 1);
    const int64_t full = gs / C;
    for (int64_t c = 0; c < full; ++c) {
      const int64_t kc = g0 + c * C;
      __m256i d[2][NR];
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h)
#pragma GCC unroll 16
        for (int j = 0; j < NR; ++j)
          d[h][j] = _mm256_cvtepu8_epi32(
              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(w[j] + kc * BITS / 8 + 8 * h)));
          // Accumulation order as before: plane-major, then half (s * 2 + h).
#pragma GCC unroll 8
      for (int s = 0; s < P; ++s) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          __m256 wv[NR];
#pragma GCC unroll 16
          for (int j = 0; j < NR; ++j) {
            const __m256i sh = s == 0 ? d[h][j] : _mm256_srli_epi32(d[h][j], s * BITS);
            wv[j] = _mm256_cvtepi32_ps(s == P - 1 ? sh : _mm256_and_si256(sh, dmask));
          }
#pragma GCC unroll 16
          for (int i = 0; i < MR; ++i) {
            const __m256 xv = _mm256_loadu_ps(x[i] + kc + (s * 2 + h) * 8);
#pragma GCC unroll 16
            for (int j = 0; j < NR; ++j) acc[i][j][0] = _mm256_fmadd_ps(xv, wv[j], acc[i][j][0]);
          }
        }
      }
    }
    return full * C / 8;
  }

  template <int BITS>
  static void gemm(const LinearArgs& a) {
    blocked_gemm<BITS>(a);
  }
};

// ---- blocked GEMM (larger m) -----------------------------------------------------------------

// In-register 8x8 transpose: r[t] (row t) -> r[t] (column t).
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Dequantizes columns [n0, n0 + nc) x codes [k0, k1) into a k-major panel:
// panel[t * 16 + j] = W[n0 + j, k0 + t], zero for j >= nc and for t in [len, len rounded up to 8).
template <int BITS>
void build_panel(const LinearArgs& a, const Avx2Unpacker<BITS>& U, int64_t n0, int64_t nc,
                 int64_t k0, int64_t k1, float* stage, float* panel) {
  const int64_t len = k1 - k0, len8 = (len + 7) / 8 * 8;
  for (int64_t j = 0; j < kAvxNc; ++j) {
    float* row = stage + j * kAvxKc;
    if (j < nc) {
      dequant_range<Avx2, BITS>(a, U, n0 + j, k0, k1, row);
    } else {
      for (int64_t t = 0; t < len; ++t) row[t] = 0.0f;
    }
    for (int64_t t = len; t < len8; ++t) row[t] = 0.0f;
  }
  for (int64_t t = 0; t < len8; t += 8) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      __m256 r[8];
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) r[q] = _mm256_loadu_ps(stage + (h * 8 + q) * kAvxKc + t);
      transpose8(r);
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) _mm256_storeu_ps(panel + (t + q) * 16 + h * 8, r[q]);
    }
  }
}

// y[i, n0 + j] for MR rows and nc <= 16 columns: acc = (first ? 0 : y) + sum_t x[i, t] *
// panel[t, j] in t order (outer-product register tile MR x 16), + bias when given.
// xp is the packed x tile: xp[t * kAvxMr + i].
template <int MR>
void micro(const float* xp, const float* panel, int64_t len, float* y, int64_t ldy, int64_t nc,
           bool first, const float* bias) {
  __m256 c[MR][2];
  alignas(32) float tmp[16];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (first) {
      c[i][0] = c[i][1] = _mm256_setzero_ps();
    } else if (nc == 16) {
      c[i][0] = _mm256_loadu_ps(y + i * ldy);
      c[i][1] = _mm256_loadu_ps(y + i * ldy + 8);
    } else {
      for (int j = 0; j < 16; ++j) tmp[j] = j < nc ? y[i * ldy + j] : 0.0f;
      c[i][0] = _mm256_load_ps(tmp);
      c[i][1] = _mm256_load_ps(tmp + 8);
    }
  }
  for (int64_t t = 0; t < len; ++t) {
    const __m256 w0 = _mm256_load_ps(panel + t * 16), w1 = _mm256_load_ps(panel + t * 16 + 8);
    const float* xt = xp + t * kAvxMr;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 xb = _mm256_broadcast_ss(xt + i);
      c[i][0] = _mm256_fmadd_ps(xb, w0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(xb, w1, c[i][1]);
    }
  }
  __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
  if (bias) {
    for (int j = 0; j < 16; ++j) tmp[j] = j < nc ? bias[j] : 0.0f;
    b0 = _mm256_load_ps(tmp);
    b1 = _mm256_load_ps(tmp + 8);
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    if (bias) {
      c[i][0] = _mm256_add_ps(c[i][0], b0);
      c[i][1] = _mm256_add_ps(c[i][1], b1);
    }
    if (nc == 16) {
      _mm256_storeu_ps(y + i * ldy, c[i][0]);
      _mm256_storeu_ps(y + i * ldy + 8, c[i][1]);
    } else {
      _mm256_store_ps(tmp, c[i][0]);
      _mm256_store_ps(tmp + 8, c[i][1]);
      for (int j = 0; j < nc; ++j) y[i * ldy + j] = tmp[j];
    }
  }
}

// Packs x[:, k0:k1] tile by tile: tile r (rows 6r..6r+5) at xp + r * 6 * kAvxKc, element
// (i, t) at [t * 6 + i]; missing rows of the last tile are zero.
void pack_x(const LinearArgs& a, int64_t k0, int64_t k1, float* xp) {
  const int64_t len = k1 - k0;
  for (int64_t i0 = 0; i0 < a.m; i0 += kAvxMr) {
    float* tile = xp + (i0 / kAvxMr) * kAvxMr * kAvxKc;
    for (int64_t i = 0; i < kAvxMr; ++i) {
      if (i0 + i < a.m) {
        const float* src = a.x + (i0 + i) * a.k + k0;
        for (int64_t t = 0; t < len; ++t) tile[t * kAvxMr + i] = src[t];
      } else {
        for (int64_t t = 0; t < len; ++t) tile[t * kAvxMr + i] = 0.0f;
      }
    }
  }
}

template <int BITS>
void blocked_gemm(const LinearArgs& a) {
  const Avx2Unpacker<BITS> U;
  // 32-byte aligned panel (aligned loads in the micro-kernel), staging rows, packed x.
  float* panel = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(a.scratch) + 31) &
                                          ~static_cast<uintptr_t>(31));
  float* stage = panel + kAvxKc * kAvxNc;
  float* xp = stage + kAvxKc * kAvxNc;
  for (int64_t k0 = 0; k0 < a.k; k0 += kAvxKc) {
    const int64_t k1 = k0 + kAvxKc < a.k ? k0 + kAvxKc : a.k;
    const bool first = k0 == 0, last = k1 == a.k;
    const int64_t len = k1 - k0;
    pack_x(a, k0, k1, xp);
    for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += kAvxNc) {
      const int64_t nc = n0 + kAvxNc < a.n_end ? kAvxNc : a.n_end - n0;
      build_panel<BITS>(a, U, n0, nc, k0, k1, stage, panel);
      const float* bias = last && a.bias ? a.bias + n0 : nullptr;
      for (int64_t i = 0; i < a.m; i += kAvxMr) {
        const float* xt = xp + (i / kAvxMr) * kAvxMr * kAvxKc;
        float* yr = a.y + i * a.n_total + n0;
        switch (a.m - i < kAvxMr ? a.m - i : kAvxMr) {
          case 6: micro<6>(xt, panel, len, yr, a.n_total, nc, first, bias); break;
          case 5: micro<5>(xt, panel, len, yr, a.n_total, nc, first, bias); break;
          case 4: micro<4>(xt, panel, len, yr, a.n_total, nc, first, bias); break;
          case 3: micro<3>(xt, panel, len, yr, a.n_total, nc, first, bias); break;
          case 2: micro<2>(xt, panel, len, yr, a.n_total, nc, first, bias); break;
          default: micro<1>(xt, panel, len, yr, a.n_total, nc, first, bias); break;
        }
      }
    }
  }
}

}  // namespace

void linear_f32_avx2(const LinearArgs& a) { linear_f32_driver<Avx2>(a); }

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC pop_options

#endif  // defined(__x86_64__)
