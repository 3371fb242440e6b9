// Packed matmul: the portable scalar reference plus run-time dispatch to the active ISA
// row's SIMD kernel (isa_table.cpp).
#include <cstring>
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
    ok &= x[i] <= kFoldSafeAbs && x[i] >= -kFoldSafeAbs;  // NaN: false
  // Inf/NaN scales (exponent all ones), four at a time: an exponent field e of a 16-bit lane
  // reaches bit 15 when 0x0400 is added only if e == 0x7c00 (no carry leaves the lane).
  uint64_t bad = 0;
  int64_t i = 0;
  for (; i + 4 <= n_scales; i += 4) {
    uint64_t v;
    std::memcpy(&v, scale_bits + i, sizeof v);
    bad |= ((v & 0x7c007c007c007c00ull) + 0x0400040004000400ull) & 0x8000800080008000ull;
  }
  for (; i < n_scales; ++i) bad |= (scale_bits[i] & 0x7c00u) == 0x7c00u;
  return ok && bad == 0;
}

namespace {

/// Columns [n_begin, n_end) of linear_f32; `x_ok`: fold_exact holds for x; `prepared`: this
/// thread's xsum / scratch already hold this call's values (see LinearArgs). Returns whether the
/// SIMD kernel ran (and so left xsum / scratch prepared).
bool linear_f32_columns(const float* x, int64_t m, int64_t k, const uint8_t* packed,
                        const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                        int64_t n_total, int64_t group_size, int bits, int64_t n_begin,
                        int64_t n_end, float* y, bool x_ok, bool prepared) {
  const detail::IsaKernels& isa = detail::active_isa_kernels();
  const bool simd_shape = group_size == k || group_size % 8 == 0;
  const int64_t groups = k / group_size;
  if (isa.fn.linear_f32 != nullptr && simd_shape && x_ok &&
      fold_exact(nullptr, 0, scale_bits + n_begin * groups, (n_end - n_begin) * groups)) {
    // Scratch lives here (a plain TU) so the ISA-specific files instantiate no std templates.
    thread_local std::vector<float> xsum, scratch;
    const size_t xsum_n = static_cast<size_t>(m * (k / group_size));
    if (xsum.size() < xsum_n) xsum.resize(xsum_n);
    const size_t scratch_n = static_cast<size_t>(isa.linear_scratch_floats(m, k));
    if (scratch.size() < scratch_n) scratch.resize(scratch_n);
    const detail::LinearArgs args{
        x,          m,    k,       packed, scale_bits, zeros,       bias,           n_total,
        group_size, bits, n_begin, n_end,  y,          xsum.data(), scratch.data(), prepared};
    isa.fn.linear_f32(args);
    return true;
  }
  detail::linear_f32_scalar(x, m, k, packed, scale_bits, zeros, bias, n_total, group_size, bits,
                            n_begin, n_end, y);
  return false;
}

}  // namespace

void linear_f32(const float* x, int64_t m, int64_t k, const uint8_t* packed,
                const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                int64_t n_total, int64_t group_size, int bits, int64_t n_begin, int64_t n_end,
                float* y) {
  if (n_begin >= n_end || m <= 0) return;
  linear_f32_columns(x, m, k, packed, scale_bits, zeros, bias, n_total, group_size, bits, n_begin,
                     n_end, y, fold_exact(x, m * k, nullptr, 0), false);
}

int64_t linear_gemv_chunk(int64_t m, int64_t k, int bits) {
  if (m > detail::kFusedMaxRows) return 0;
  const int64_t row = packed_row_bytes(k, bits) * m;  // more rows of x: more work per column
  const int64_t cols = (kGemvChunkBytes / (row > 0 ? row : 1)) / 8 * 8;
  return cols > 8 ? cols : 8;
}

void linear_f32_chunks(const float* x, int64_t m, int64_t k, const uint8_t* packed,
                       const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                       int64_t n_total, int64_t group_size, int bits, ColumnChunks& work,
                       float* y) {
  if (m <= 0) return;
  int64_t begin = 0, end = 0;
  if (!work.take(&begin, &end)) return;
  const bool x_ok = fold_exact(x, m * k, nullptr, 0);
  bool prepared = false;
  do {
    prepared = linear_f32_columns(x, m, k, packed, scale_bits, zeros, bias, n_total, group_size,
                                  bits, begin, end, y, x_ok, prepared) ||
               prepared;
  } while (work.take(&begin, &end));
}

}  // namespace kernels
}  // namespace qpart
