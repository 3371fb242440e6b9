// Body of the aarch64 integer packed matmul, included by linear_i8_neon.cpp (plain NEON:
// vmull_s8 + vpadalq_s16) and linear_i8_neon_dot.cpp (sdot, compiled with +dotprod and used
// only when the CPU reports HWCAP_ASIMDDP). The includer defines QPART_I8_DOT(acc, c, x)
// (acc int32x4_t += 16 products of int8x16 c and x) and QPART_I8_ENTRY (the function name).
//
// Codes are used as signed bytes: widths <= 7 directly (codes <= 127); width 8 as code - 128
// (xor 0x80), with the offset folded into the zero point: sum q (c - z) = sum q (c - 128)
// + (128 - z) sum q. Widths 1, 2, 4 unpack 16 packed bytes into 8 / bits bit planes of 16
// codes each (q was permuted to match, see i8_plane_chunk); other widths and group tails
// take 16-code blocks (one vld1q for 8 bits, a scalar spread of 2 x 8 codes otherwise) and
// a scalar remainder. The integer group sums are exact; the float epilogue is per element.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "../dispatch.h"
#include "../packed_code.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

// 16 codes starting at code j0 (a multiple of 8) of row w, as signed bytes.
template <int BITS>
inline int8x16_t codes16(const uint8_t* w, int64_t j0) {
  if constexpr (BITS == 8) {
    return vreinterpretq_s8_u8(veorq_u8(vld1q_u8(w + j0), vdupq_n_u8(0x80)));
  } else {
    uint8_t out[16];
    const uint8_t* p = w + j0 * BITS / 8;
#pragma GCC unroll 8
    for (int h = 0; h < 2; ++h) {
      uint64_t v = 0;
      std::memcpy(&v, p + h * BITS, BITS);
#pragma GCC unroll 8
      for (int j = 0; j < 8; ++j)
        out[h * 8 + j] = static_cast<uint8_t>((v >> (j * BITS)) & ((1u << BITS) - 1));
    }
    return vreinterpretq_s8_u8(vld1q_u8(out));
  }
}

constexpr int kMr = 4;

template <int BITS, int MR>
void tile(const LinearI8Args& a, int64_t i0, int64_t n) {
  const int64_t k = a.k, gs = a.group_size, groups = k / gs;
  const int64_t row_bytes = packed_row_bytes(k, BITS);
  const uint8_t* w = a.packed + n * row_bytes;
  const int8_t* xq[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) xq[i] = a.q + (i0 + i) * k;
  constexpr bool kPlane = BITS == 1 || BITS == 2 || BITS == 4;
  constexpr int kP = 8 / BITS;
  constexpr int64_t kChunk = 16 * kP;
  float acc_f[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) acc_f[i] = 0.0f;
  for (int64_t g = 0; g < groups; ++g) {
    int32x4_t acc[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i] = vdupq_n_s32(0);
    int64_t kc = g * gs;
    const int64_t gend = kc + gs;
    if constexpr (kPlane) {
      const uint8x16_t mask = vdupq_n_u8(static_cast<uint8_t>((1 << BITS) - 1));
      for (; kc + kChunk <= gend; kc += kChunk) {
        const uint8x16_t v = vld1q_u8(w + kc * BITS / 8);
#pragma GCC unroll 8
        for (int s = 0; s < kP; ++s) {
          const int8x16_t c = vreinterpretq_s8_u8(
              vandq_u8(vshlq_u8(v, vdupq_n_s8(static_cast<int8_t>(-s * BITS))), mask));
#pragma GCC unroll 8
          for (int i = 0; i < MR; ++i) QPART_I8_DOT(acc[i], c, vld1q_s8(xq[i] + kc + 16 * s));
        }
      }
    }
    for (; kc + 16 <= gend; kc += 16) {
      const int8x16_t c = codes16<BITS>(w, kc);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) QPART_I8_DOT(acc[i], c, vld1q_s8(xq[i] + kc));
    }
    const int32_t z = static_cast<int32_t>(a.zeros[n * groups + g]) - (BITS == 8 ? 128 : 0);
    const float sw = half_bits_to_float(a.scale_bits[n * groups + g]);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      int32_t t = vaddvq_s32(acc[i]) - z * a.gsum[(i0 + i) * groups + g];
      for (int64_t j = kc; j < gend; ++j)
        t += (code_at(w, j, BITS) - (BITS == 8 ? 128 : 0)) * xq[i][j];
      acc_f[i] += static_cast<float>(t) * sw;
    }
  }
  const float b = a.bias ? a.bias[n] : 0.0f;
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) a.y[(i0 + i) * a.n_total + n] = acc_f[i] * a.x_scale[i0 + i] + b;
}

template <int BITS>
void run(const LinearI8Args& a) {
  for (int64_t n = a.n_begin; n < a.n_end; ++n) {
    int64_t i = 0;
    for (; i + kMr <= a.m; i += kMr) tile<BITS, kMr>(a, i, n);
    for (; i < a.m; ++i) tile<BITS, 1>(a, i, n);
  }
}

}  // namespace

void QPART_I8_ENTRY(const LinearI8Args& a) {
  with_bits(a.bits, [&](auto b) { run<decltype(b)::value>(a); });
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart
