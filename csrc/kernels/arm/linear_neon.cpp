// aarch64 NEON packed matmul (NEON is baseline on aarch64: no extra flags). Same structure
// as the AVX2 kernel (csrc/kernels/x86/linear_avx2.cpp), on 2 x float32x4 per 8 codes:
// * m <= kFusedMaxRows: fused unpack (64-bit load, vqtbl1q_u8 byte windows for widths > 4,
//   per-lane vshlq_u32 right shifts, mask) + FMA with the zero point folded per group;
// * larger m: K-blocked GEMM over an L1-resident dequantized panel with a 4 x 3 register
//   tile. Per-element arithmetic is independent of the column range / tiling.
#if defined(__aarch64__)

#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "../dispatch.h"
#include "../packed_code.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

struct U32x8 {
  uint32x4_t lo, hi;
};

template <int BITS>
struct Unpacker {
  uint8x16_t idx_lo, idx_hi;
  int32x4_t shift_lo, shift_hi;  // negative: right shifts
  uint32x4_t mask;

  Unpacker() {
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

inline int64_t fast_blocks(const LinearArgs& a, int64_t n, int64_t row_bytes) {
  const int64_t avail = (a.n_total - n) * row_bytes;
  return avail >= 8 ? (avail - 8) / a.bits + 1 : 0;
}

// ---- fused path (small m) ------------------------------------------------------------------

void compute_xsum(const LinearArgs& a) {
  const int64_t groups = a.k / a.group_size;
  for (int64_t i = 0; i < a.m; ++i) {
    const float* xi = a.x + i * a.k;
    for (int64_t g = 0; g < groups; ++g) {
      const float* p = xi + g * a.group_size;
      float32x4_t acc = vdupq_n_f32(0.0f);
      int64_t j = 0;
      for (; j + 4 <= a.group_size; j += 4) acc = vaddq_f32(acc, vld1q_f32(p + j));
      float s = vaddvq_f32(acc);
      for (; j < a.group_size; ++j) s += p[j];
      a.xsum[i * groups + g] = s;
    }
  }
}

template <int BITS, int MR, int NR>
void fused_tile(const LinearArgs& a, const Unpacker<BITS>& U, int64_t i0, int64_t n0) {
  const int64_t k = a.k, gs = a.group_size, groups = k / gs;
  const int64_t row_bytes = packed_row_bytes(k, BITS);
  const int64_t kblocks = k / 8;
  const int64_t nfast = fast_blocks(a, n0 + NR - 1, row_bytes);
  const uint8_t* w[NR];
  #pragma GCC unroll 16
  for (int j = 0; j < NR; ++j) w[j] = a.packed + (n0 + j) * row_bytes;
  const float* x[MR];
  #pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) x[i] = a.x + (i0 + i) * k;
  float out[MR][NR];
  #pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
    #pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) out[i][j] = 0.0f;

  for (int64_t g = 0; g < groups; ++g) {
    float32x4_t acc[MR][NR][2];
    #pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
      #pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) acc[i][j][0] = acc[i][j][1] = vdupq_n_f32(0.0f);
    const int64_t b0 = g * gs / 8, b1 = (g + 1) * gs / 8;
    auto body = [&](int64_t blk, bool safe) {
      float32x4_t wl[NR], wh[NR];
      #pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) {
        const uint8_t* p = w[j] + blk * BITS;
        const U32x8 c = safe ? U.codes_safe(p) : U.codes(p);
        wl[j] = vcvtq_f32_u32(c.lo);
        wh[j] = vcvtq_f32_u32(c.hi);
      }
      #pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const float32x4_t xl = vld1q_f32(x[i] + blk * 8);
        const float32x4_t xh = vld1q_f32(x[i] + blk * 8 + 4);
        #pragma GCC unroll 16
        for (int j = 0; j < NR; ++j) {
          acc[i][j][0] = vfmaq_f32(acc[i][j][0], xl, wl[j]);
          acc[i][j][1] = vfmaq_f32(acc[i][j][1], xh, wh[j]);
        }
      }
    };
    const int64_t mid = b1 < nfast ? b1 : (b0 > nfast ? b0 : nfast);
    for (int64_t blk = b0; blk < mid; ++blk) body(blk, false);
    for (int64_t blk = mid; blk < b1; ++blk) body(blk, true);
    float tail[MR][NR];
    #pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
      #pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) tail[i][j] = 0.0f;
    if (g == groups - 1) {
      for (int64_t kk = kblocks * 8; kk < k; ++kk) {
        #pragma GCC unroll 16
        for (int j = 0; j < NR; ++j) {
          const float q = static_cast<float>(code_at(w[j], kk, BITS));
          #pragma GCC unroll 16
          for (int i = 0; i < MR; ++i) tail[i][j] += x[i][kk] * q;
        }
      }
    }
    #pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) {
      const float s = half_bits_to_float(a.scale_bits[(n0 + j) * groups + g]);
      const float z = static_cast<float>(a.zeros[(n0 + j) * groups + g]);
      #pragma GCC unroll 16
      for (int i = 0; i < MR; ++i) {
        const float dot = vaddvq_f32(vaddq_f32(acc[i][j][0], acc[i][j][1])) + tail[i][j];
        out[i][j] += s * (dot - z * a.xsum[(i0 + i) * groups + g]);
      }
    }
  }
  #pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    #pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) {
      const float b = a.bias ? a.bias[n0 + j] : 0.0f;
      a.y[(i0 + i) * a.n_total + n0 + j] = out[i][j] + b;
    }
  }
}

template <int BITS, int MR, int NR>
void fused_rows(const LinearArgs& a, const Unpacker<BITS>& U, int64_t i0) {
  int64_t n = a.n_begin;
  for (; n + NR <= a.n_end; n += NR) fused_tile<BITS, MR, NR>(a, U, i0, n);
  for (; n < a.n_end; ++n) fused_tile<BITS, MR, 1>(a, U, i0, n);
}

template <int BITS>
void fused(const LinearArgs& a) {
  const Unpacker<BITS> U;
  compute_xsum(a);
  int64_t i = 0;
  for (; i + 3 <= a.m; i += 3) fused_rows<BITS, 3, 2>(a, U, i);
  if (a.m - i == 2) fused_rows<BITS, 2, 3>(a, U, i);
  if (a.m - i == 1) fused_rows<BITS, 1, 4>(a, U, i);
}

// ---- blocked GEMM (larger m) -----------------------------------------------------------------

template <int BITS>
void dequant_range(const LinearArgs& a, const Unpacker<BITS>& U, int64_t n, int64_t k0,
                   int64_t k1, float* dst) {
  const int64_t gs = a.group_size, groups = a.k / gs;
  const int64_t row_bytes = packed_row_bytes(a.k, BITS);
  const uint8_t* row = a.packed + n * row_bytes;
  const int64_t nfast = fast_blocks(a, n, row_bytes);
  int64_t kk = k0;
  while (kk < k1) {
    const int64_t g = kk / gs;
    const int64_t gend = (g + 1) * gs < k1 ? (g + 1) * gs : k1;
    const float s = half_bits_to_float(a.scale_bits[n * groups + g]);
    const float z = static_cast<float>(a.zeros[n * groups + g]);
    const float32x4_t sv = vdupq_n_f32(s), zv = vdupq_n_f32(z);
    for (; kk + 8 <= gend; kk += 8) {
      const int64_t blk = kk / 8;
      const uint8_t* p = row + blk * BITS;
      const U32x8 c = blk < nfast ? U.codes(p) : U.codes_safe(p);
      vst1q_f32(dst + (kk - k0), vmulq_f32(vsubq_f32(vcvtq_f32_u32(c.lo), zv), sv));
      vst1q_f32(dst + (kk - k0) + 4, vmulq_f32(vsubq_f32(vcvtq_f32_u32(c.hi), zv), sv));
    }
    for (; kk < gend; ++kk) dst[kk - k0] = (static_cast<float>(code_at(row, kk, BITS)) - z) * s;
  }
}

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
void micro_cols(const float* x, int64_t ldx, const float* w, int64_t len, float* y,
                int64_t ldy, int64_t nc, bool first, const float* bias) {
  int64_t j = 0;
  for (; j + 3 <= nc; j += 3)
    micro<MR, 3>(x, ldx, w + j * kGemmLd, len, y + j, ldy, first, bias ? bias + j : nullptr);
  if (nc - j == 2)
    micro<MR, 2>(x, ldx, w + j * kGemmLd, len, y + j, ldy, first, bias ? bias + j : nullptr);
  if (nc - j == 1)
    micro<MR, 1>(x, ldx, w + j * kGemmLd, len, y + j, ldy, first, bias ? bias + j : nullptr);
}

template <int BITS>
void gemm(const LinearArgs& a) {
  const Unpacker<BITS> U;
  float* panel = a.scratch;
  for (int64_t k0 = 0; k0 < a.k; k0 += kGemmKc) {
    const int64_t k1 = k0 + kGemmKc < a.k ? k0 + kGemmKc : a.k;
    const bool first = k0 == 0, last = k1 == a.k;
    for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += kGemmNc) {
      const int64_t nc = n0 + kGemmNc < a.n_end ? kGemmNc : a.n_end - n0;
      for (int64_t j = 0; j < nc; ++j) dequant_range<BITS>(a, U, n0 + j, k0, k1, panel + j * kGemmLd);
      const float* bias = last && a.bias ? a.bias + n0 : nullptr;
      int64_t i = 0;
      for (; i + 4 <= a.m; i += 4)
        micro_cols<4>(a.x + i * a.k + k0, a.k, panel, k1 - k0, a.y + i * a.n_total + n0,
                      a.n_total, nc, first, bias);
      const int64_t r = a.m - i;
      const float* xr = a.x + i * a.k + k0;
      float* yr = a.y + i * a.n_total + n0;
      if (r == 3) micro_cols<3>(xr, a.k, panel, k1 - k0, yr, a.n_total, nc, first, bias);
      if (r == 2) micro_cols<2>(xr, a.k, panel, k1 - k0, yr, a.n_total, nc, first, bias);
      if (r == 1) micro_cols<1>(xr, a.k, panel, k1 - k0, yr, a.n_total, nc, first, bias);
    }
  }
}

template <int BITS>
void run(const LinearArgs& a) {
  if (a.m <= kFusedMaxRows) {
    fused<BITS>(a);
  } else {
    gemm<BITS>(a);
  }
}

}  // namespace

void linear_f32_neon(const LinearArgs& a) {
  with_bits(a.bits, [&](auto b) { run<decltype(b)::value>(a); });
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#endif  // defined(__aarch64__)
