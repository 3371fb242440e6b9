// Internal: per-ISA entry points behind the public kernel API (not installed, not stable).
#pragma once

#include <cstdint>

#include "qpart_kernels.h"
#include "with_bits.h"

namespace qpart {
namespace kernels {
namespace detail {

/// Portable scalar packed matmul (the reference implementation).
void linear_f32_scalar(const float* x, int64_t m, int64_t k, const uint8_t* packed,
                       const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                       int64_t n_total, int64_t group_size, int bits, int64_t n_begin,
                       int64_t n_end, float* y);

/// Arguments of the SIMD packed matmuls. group_size % 8 == 0 or group_size == k.
/// `xsum` holds m * (k / group_size) sums of x over each group (row-major), and `scratch`
/// at least the ISA row's linear_scratch_floats(m, k) floats; both are allocated by the caller so
/// the ISA-specific translation units instantiate no standard-library templates.
/// `prepared`: xsum and the fused path's copy of x in scratch already hold this call's values
/// (a later chunk of linear_f32_chunks on the same thread); kernels may skip recomputing them.
struct LinearArgs {
  const float* x;
  int64_t m, k;
  const uint8_t* packed;
  const uint16_t* scale_bits;
  const uint8_t* zeros;
  const float* bias;
  int64_t n_total, group_size;
  int bits;
  int64_t n_begin, n_end;
  float* y;
  float* xsum;
  float* scratch;
  bool prepared = false;
};

/// Batch rows up to this count take the fused (GEMV-style) path; more take the blocked GEMM.
constexpr int64_t kFusedMaxRows = 8;
/// K block and column panel of the NEON blocked GEMM: the panel holds kGemmNc rows of kGemmKc
/// floats with row stride kGemmLd (padded by a cache line so rows do not share L1 sets).
constexpr int64_t kGemmKc = 256;
constexpr int64_t kGemmNc = 24;
constexpr int64_t kGemmLd = kGemmKc + 16;
/// AVX2 GEMM: K block and panel width (k-major panel of kAvxKc x 16 floats + a staging area).
constexpr int64_t kAvxKc = 256;
constexpr int64_t kAvxNc = 16;
constexpr int64_t kAvxMr = 6;
/// AVX-512 GEMM (x86/linear_avx512_gemm.cpp): panel width, and K block / most rows per row
/// block of the int8 (u8 quad panel, per-thread state) and float (fp32 panel) kernels.
constexpr int64_t kAvx512Nr = 32;
constexpr int64_t kAvx512I8Kc = 512;
constexpr int64_t kAvx512I8Mc = 256;
constexpr int64_t kAvx512F32Kc = 256;
constexpr int64_t kAvx512F32Mc = 256;
/// Groups one float K block can touch (group_size >= 8, plus one straddling group).
constexpr int64_t kAvx512Groups = kAvx512F32Kc / 8 + 2;
/// Scratch floats each SIMD linear_f32 needs for m x k inputs (the row's
/// linear_scratch_floats, isa_table.cpp): the NEON GEMM panel; the AVX2 GEMM panel + staging
/// rows + packed x block, or the AVX2 fused path's bit-plane-permuted copy of x
/// (m <= kFusedMaxRows); the AVX-512 GEMM panel + per-group scales and zeros. 64 floats of
/// slack cover the kernels' alignment of their panels.
inline int64_t neon_linear_scratch_floats(int64_t /*m*/, int64_t /*k*/) {
  return kGemmLd * kGemmNc + 64;
}
inline int64_t avx2_linear_scratch_floats(int64_t m, int64_t k) {
  const int64_t gemm = 2 * kAvxKc * kAvxNc + (m + kAvxMr) * kAvxKc;
  const int64_t fused = m <= kFusedMaxRows ? m * k : 0;
  return (gemm > fused ? gemm : fused) + 64;
}
/// The AVX-512 GEMV's float path for m <= kDigitMaxRows rows of x and weight groups of at most
/// kDigitMaxGroup codes writes each x row as four int8 digits (x86/linear_avx512_gemv.cpp):
/// per row 4 planes of k bytes (rounded up to 64), 4 int32 digit sums per weight group (at most
/// k / 8 groups) and a scale.
constexpr int64_t kDigitMaxRows = 3;
constexpr int64_t kDigitMaxGroup = 32768;
inline int64_t avx512_digit_scratch_bytes(int64_t m, int64_t k) {
  const int64_t planes = 4 * ((k + 63) / 64 * 64), sums = 16 * (k / 8 + 1);
  return m * (planes + sums + 4) + 3 * 64;
}
inline int64_t avx512_linear_scratch_floats(int64_t m, int64_t k) {
  const int64_t gemm = (kAvx512F32Kc + 2 * kAvx512Groups) * kAvx512Nr + 64;
  const int64_t digits = m <= kDigitMaxRows ? (avx512_digit_scratch_bytes(m, k) + 3) / 4 : 0;
  return gemm > digits ? gemm : digits;
}
/// Enough scratch for any of them (for callers that run a kernel directly, e.g. the tests).
inline int64_t simd_linear_scratch_floats(int64_t m, int64_t k) {
  int64_t most = neon_linear_scratch_floats(m, k);
  const int64_t avx2 = avx2_linear_scratch_floats(m, k);
  const int64_t avx512 = avx512_linear_scratch_floats(m, k);
  most = most > avx2 ? most : avx2;
  return most > avx512 ? most : avx512;
}

/// Arguments of the integer (int8-activation) packed matmul kernels.
struct LinearI8Args {
  const int8_t* q;
  const float* x_scale;
  const int32_t* gsum;
  int64_t m, k;
  const uint8_t* packed;
  const uint16_t* scale_bits;
  const uint8_t* zeros;
  const float* bias;
  int64_t n_total, group_size;
  int bits;
  int64_t n_begin, n_end;
  float* y;
};

/// The portable integer kernel (the reference of the SIMD ones; q in x's order).
void linear_i8_scalar(const LinearI8Args& a);
/// One row of quantize_activations_i8 in x's order (q, scale); false on NaN/Inf.
bool quantize_row_i8_scalar(const float* x, int64_t k, int8_t* q, float* scale);

/// group_params after its range scan: lo = min(0, min x), hi = max(0, max x).
Status group_params_from_range(float lo, float hi, int bits, uint16_t* scale_bits, uint8_t* zero);
#if defined(__x86_64__)
void linear_i8_avx2(const LinearI8Args& a);
/// One row of quantize_activations_i8 in x's order (q, scale); false on NaN/Inf.
bool quantize_row_i8_avx2(const float* x, int64_t k, int8_t* q, float* scale);
/// One group of quantize_rows (scale, zero point and one code per byte), bit-exact with the
/// scalar quantizer.
Status quantize_group_avx2(const float* x, int64_t n, int bits, uint16_t* scale_bits, uint8_t* zero,
                           uint8_t* codes);
#endif
#if defined(__aarch64__)
void linear_i8_neon(const LinearI8Args& a);
void linear_i8_neon_dot(const LinearI8Args& a);
#endif

#if defined(__x86_64__)
void linear_f32_avx2(const LinearArgs& a);
/// max |x| of n floats (false if a NaN or Inf was seen; x86/conv2d_i8_avx2.cpp): the integer
/// conv's image scales and the digits of the AVX-512 float GEMV.
bool absmax_avx2(const float* x, int64_t n, float* amax);
/// AVX-512 (F/BW/VL/VNNI/VBMI) kernels, x86/linear_avx512_gemv.cpp for m <= kFusedMaxRows and
/// x86/linear_avx512_gemm.cpp for larger m. The integer ones read q in x's order.
void linear_f32_avx512_gemv(const LinearArgs& a);
void linear_f32_avx512_gemm(const LinearArgs& a);
void linear_i8_avx512_gemv(const LinearI8Args& a);
void linear_i8_avx512_gemm(const LinearI8Args& a);
/// The same GEMM with its 16-row tiles on AMX (tdpbsud) where K and the group size are
/// multiples of 64 (amx row only; bit-identical to linear_i8_avx512_gemm).
void linear_i8_amx_gemm(const LinearI8Args& a);
#endif
#if defined(__aarch64__)
void linear_f32_neon(const LinearArgs& a);
#endif

}  // namespace detail
}  // namespace kernels
}  // namespace qpart
