// Packed matmul: the portable scalar reference plus run-time dispatch to the active ISA
// row's SIMD kernel (isa_table.cpp).
#include <vector>

#include "dispatch.h"
#include "isa_table.h"
#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace detail {

// Each weight row is dequantized once and reused for every input row.
void linear_f32_scalar(const float* x, int64_t m, int64_t k, const uint8_t* packed,
                       const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                       int64_t n_total, int64_t group_size, int bits, int64_t n_begin,
                       int64_t n_end, float* y) {
  const int64_t groups = k / group_size;
  const int64_t row_bytes = packed_row_bytes(k, bits);
  std::vector<float> w(static_cast<size_t>(k));
  for (int64_t n = n_begin; n < n_end; ++n) {
    dequantize_rows(packed + n * row_bytes, scale_bits + n * groups, zeros + n * groups, 0, 1, k,
                    group_size, bits, w.data());
    const float b = bias ? bias[n] : 0.0f;
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * k;
      float acc = 0.0f;
      for (int64_t j = 0; j < k; ++j) acc += xi[j] * w[j];
      y[i * n_total + n] = acc + b;
    }
  }
}

}  // namespace detail

bool fold_exact(const float* x, int64_t n, const uint16_t* scale_bits, int64_t n_scales) {
  bool ok = true;
  for (int64_t i = 0; i < n; ++i)
    ok &= x[i] <= kFoldSafeAbs && x[i] >= -kFoldSafeAbs;                              // NaN: false
  for (int64_t i = 0; i < n_scales; ++i) ok &= (scale_bits[i] & 0x7c00u) != 0x7c00u;  // Inf/NaN
  return ok;
}

void linear_f32(const float* x, int64_t m, int64_t k, const uint8_t* packed,
                const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                int64_t n_total, int64_t group_size, int bits, int64_t n_begin, int64_t n_end,
                float* y) {
  if (n_begin >= n_end || m <= 0) return;
  const detail::IsaKernels& isa = detail::active_isa_kernels();
  const bool simd_shape = group_size == k || group_size % 8 == 0;
  const int64_t groups = k / group_size;
  if (isa.fn.linear_f32 != nullptr && simd_shape &&
      fold_exact(x, m * k, scale_bits + n_begin * groups, (n_end - n_begin) * groups)) {
    // Scratch lives here (a plain TU) so the ISA-specific files instantiate no std templates.
    thread_local std::vector<float> xsum, scratch;
    const size_t xsum_n = static_cast<size_t>(m * (k / group_size));
    if (xsum.size() < xsum_n) xsum.resize(xsum_n);
    const size_t scratch_n = static_cast<size_t>(isa.linear_scratch_floats(m, k));
    if (scratch.size() < scratch_n) scratch.resize(scratch_n);
    const detail::LinearArgs args{x,       m,     k,       packed,      scale_bits,
                                  zeros,   bias,  n_total, group_size,  bits,
                                  n_begin, n_end, y,       xsum.data(), scratch.data()};
    return isa.fn.linear_f32(args);
  }
  detail::linear_f32_scalar(x, m, k, packed, scale_bits, zeros, bias, n_total, group_size, bits,
                            n_begin, n_end, y);
}

}  // namespace kernels
}  // namespace qpart
