// aarch64 NEON packed matmul (NEON is baseline on aarch64: no extra flags). The traits of the
// shared driver (../linear_fused_driver.h, also used by x86/linear_avx2.cpp), on
// 2 x float32x4 per 8 codes:
// * m <= kFusedMaxRows: the driver's fused path; codes unpacked with one 64-bit load,
//   vqtbl1q_u8 byte windows for widths > 4, per-lane vshlq_u32 right shifts and a mask;
//   full tiles of 3 rows x 2 columns;
// * larger m: K-blocked GEMM over an L1-resident dequantized panel (the driver's
//   dequant_range) with a 4 x 3 register tile. Per-element arithmetic is independent of the
//   column range / tiling.
#if defined(__aarch64__)

#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "../dispatch.h"
#include "../linear_fused_driver.h"
#include "../packed_code.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

struct U32x8 {
  uint32x4_t lo, hi;
};

template <int BITS>
struct NeonUnpacker {
  uint8x16_t idx_lo, idx_hi;
  int32x4_t shift_lo, shift_hi;  // negative: right shifts
  uint32x4_t mask;

  NeonUnpacker() {
    uint8_t il[16], ih[16];
    int32_t sl[4], shh[4];
    for (int j = 0; j < 8; ++j) {
      const int bit = j * BITS, byte = bit >> 3;
      const int32_t sh = -(BITS <= 4 ? bit : (bit & 7));
      (j < 4 ? sl : shh)[j % 4] = sh;
      for (int t = 0; t < 4; ++t) {
        const int idx = t < 2 && byte + t < 8 ? byte + t : 0xff;  // 0xff: out of range -> 0
        (j < 4 ? il : ih)[(j % 4) * 4 + t] = static_cast<uint8_t>(idx);
      }
    }
    idx_lo = vld1q_u8(il);
    idx_hi = vld1q_u8(ih);
    shift_lo = vld1q_s32(sl);
    shift_hi = vld1q_s32(shh);
    mask = vdupq_n_u32((1u << BITS) - 1);
  }

  // Needs 8 readable bytes at p (only the first BITS are used).
  inline U32x8 codes(const uint8_t* p) const {
    if constexpr (BITS == 8) {
      const uint16x8_t h = vmovl_u8(vld1_u8(p));
      return {vmovl_u16(vget_low_u16(h)), vmovl_u16(vget_high_u16(h))};
    } else if constexpr (BITS <= 4) {
      uint32_t v;
      std::memcpy(&v, p, 4);
      const uint32x4_t d = vdupq_n_u32(v);
      return {vandq_u32(vshlq_u32(d, shift_lo), mask), vandq_u32(vshlq_u32(d, shift_hi), mask)};
    } else {
      uint64_t v;
      std::memcpy(&v, p, 8);
      const uint8x16_t bytes = vreinterpretq_u8_u64(vdupq_n_u64(v));
      const uint32x4_t wl = vreinterpretq_u32_u8(vqtbl1q_u8(bytes, idx_lo));
      const uint32x4_t wh = vreinterpretq_u32_u8(vqtbl1q_u8(bytes, idx_hi));
      return {vandq_u32(vshlq_u32(wl, shift_lo), mask), vandq_u32(vshlq_u32(wh, shift_hi), mask)};
    }
  }

  inline U32x8 codes_safe(const uint8_t* p) const {
    uint8_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(tmp, p, BITS);
    return codes(tmp);
  }
};

template <int BITS>
void blocked_gemm(const LinearArgs& a);

// Traits of the shared driver (linear_fused_driver.h): float32x4 vectors, two per block.
struct Neon {
  using Vec = float32x4_t;
  static constexpr int kLanes = 4;
  static constexpr int kFusedRows = 3;
  template <int BITS>
  static constexpr int kGemvCols = 4;
  template <int BITS>
  using Unpacker = NeonUnpacker<BITS>;
  template <int BITS>
  static constexpr bool kPlanes = false;

  static inline Vec zero() { return vdupq_n_f32(0.0f); }
  static inline Vec set1(float f) { return vdupq_n_f32(f); }
  static inline Vec load(const float* p) { return vld1q_f32(p); }
  static inline void store(float* p, Vec v) { vst1q_f32(p, v); }
  static inline Vec add(Vec a, Vec b) { return vaddq_f32(a, b); }
  static inline Vec sub(Vec a, Vec b) { return vsubq_f32(a, b); }
  static inline Vec mul(Vec a, Vec b) { return vmulq_f32(a, b); }
  static inline Vec fma(Vec acc, Vec x, Vec w) { return vfmaq_f32(acc, x, w); }
  static inline float reduce(Vec v) { return vaddvq_f32(v); }

  template <int BITS>
  static inline void codes_f32(const Unpacker<BITS>& U, const uint8_t* p, bool safe, Vec* w) {
    const U32x8 c = safe ? U.codes_safe(p) : U.codes(p);
    w[0] = vcvtq_f32_u32(c.lo);
    w[1] = vcvtq_f32_u32(c.hi);
  }

  template <int BITS>
  static void gemm(const LinearArgs& a) {
    blocked_gemm<BITS>(a);
  }
};

// ---- blocked GEMM (larger m) -----------------------------------------------------------------

template <int MR, int NR>
void micro(const float* x, int64_t ldx, const float* w, int64_t len, float* y, int64_t ldy,
           bool first, const float* bias) {
  float32x4_t acc[MR][NR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) acc[i][j] = vdupq_n_f32(0.0f);
  int64_t t = 0;
  for (; t + 4 <= len; t += 4) {
    float32x4_t wv[NR];
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) wv[j] = vld1q_f32(w + j * kGemmLd + t);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const float32x4_t xv = vld1q_f32(x + i * ldx + t);
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) acc[i][j] = vfmaq_f32(acc[i][j], xv, wv[j]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) {
      float s = vaddvq_f32(acc[i][j]);
      for (int64_t u = t; u < len; ++u) s += x[i * ldx + u] * w[j * kGemmLd + u];
      float* out = y + i * ldy + j;
      float v = first ? s : *out + s;
      if (bias) v += bias[j];
      *out = v;
    }
  }
}

template <int MR>
void micro_cols(const float* x, int64_t ldx, const float* w, int64_t len, float* y, int64_t ldy,
                int64_t nc, bool first, const float* bias) {
  int64_t j = 0;
  for (; j + 3 <= nc; j += 3)
    micro<MR, 3>(x, ldx, w + j * kGemmLd, len, y + j, ldy, first, bias ? bias + j : nullptr);
  if (nc - j == 2)
    micro<MR, 2>(x, ldx, w + j * kGemmLd, len, y + j, ldy, first, bias ? bias + j : nullptr);
  if (nc - j == 1)
    micro<MR, 1>(x, ldx, w + j * kGemmLd, len, y + j, ldy, first, bias ? bias + j : nullptr);
}

template <int BITS>
void blocked_gemm(const LinearArgs& a) {
  const NeonUnpacker<BITS> U;
  float* panel = a.scratch;
  for (int64_t k0 = 0; k0 < a.k; k0 += kGemmKc) {
    const int64_t k1 = k0 + kGemmKc < a.k ? k0 + kGemmKc : a.k;
    const bool first = k0 == 0, last = k1 == a.k;
    for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += kGemmNc) {
      const int64_t nc = n0 + kGemmNc < a.n_end ? kGemmNc : a.n_end - n0;
      for (int64_t j = 0; j < nc; ++j)
        dequant_range<Neon, BITS>(a, U, n0 + j, k0, k1, panel + j * kGemmLd);
      const float* bias = last && a.bias ? a.bias + n0 : nullptr;
      int64_t i = 0;
      for (; i + 4 <= a.m; i += 4)
        micro_cols<4>(a.x + i * a.k + k0, a.k, panel, k1 - k0, a.y + i * a.n_total + n0, a.n_total,
                      nc, first, bias);
      const int64_t r = a.m - i;
      const float* xr = a.x + i * a.k + k0;
      float* yr = a.y + i * a.n_total + n0;
      if (r == 3) micro_cols<3>(xr, a.k, panel, k1 - k0, yr, a.n_total, nc, first, bias);
      if (r == 2) micro_cols<2>(xr, a.k, panel, k1 - k0, yr, a.n_total, nc, first, bias);
      if (r == 1) micro_cols<1>(xr, a.k, panel, k1 - k0, yr, a.n_total, nc, first, bias);
    }
  }
}

}  // namespace

void linear_f32_neon(const LinearArgs& a) { linear_f32_driver<Neon>(a); }

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#endif  // defined(__aarch64__)
