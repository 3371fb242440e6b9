// Portable scalar packed matmul: each weight row is dequantized once and reused for every
// input row. SIMD variants (AVX2, NEON) come with runtime dispatch in a later change.
#include <vector>

#include "qpart_kernels.h"

namespace qpart {
namespace kernels {

void linear_f32(const float* x, int64_t m, int64_t k, const uint8_t* packed,
                const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                int64_t n_total, int64_t group_size, int bits, int64_t n_begin,
                int64_t n_end, float* y) {
  const int64_t groups = k / group_size;
  const int64_t row_bytes = packed_row_bytes(k, bits);
  std::vector<float> w(static_cast<size_t>(k));
  for (int64_t n = n_begin; n < n_end; ++n) {
    dequantize_rows(packed + n * row_bytes, scale_bits + n * groups, zeros + n * groups, 0, 1,
                    k, group_size, bits, w.data());
    const float b = bias ? bias[n] : 0.0f;
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * k;
      float acc = 0.0f;
      for (int64_t j = 0; j < k; ++j) acc += xi[j] * w[j];
      y[i * n_total + n] = acc + b;
    }
  }
}

}  // namespace kernels
}  // namespace qpart
