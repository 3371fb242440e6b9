// Integer packed matmul (opt-in int8 activations, see qpart_kernels.h): the per-row int8
// activation quantizer, the portable scalar kernel (the reference of the SIMD kernels in
// x86/linear_i8_avx2.cpp and arm/linear_i8_neon*.cpp) and run-time dispatch.
#include <cmath>

#include "dispatch.h"
#include "isa_table.h"
#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace detail {

// One row in x's order; false on NaN/Inf (then scale 0 and q 0). |x / s| <= 127.00001, so the
// magic-number rounding is exact round-half-to-even (rint, torch.round) without a libm call;
// the division is a true division, as in the AVX2 version and the reference.
bool quantize_row_i8_scalar(const float* x, int64_t k, int8_t* q, float* scale) {
  float amax = 0.0f;
  bool finite = true;
  for (int64_t j = 0; j < k; ++j) {
    const float a = std::fabs(x[j]);
    finite = finite && a <= 3.4028234663852886e38f;  // false for NaN and Inf
    amax = a > amax ? a : amax;
  }
  if (!finite) amax = 0.0f;
  const float s = amax / 127.0f;
  *scale = s;
  for (int64_t j = 0; j < k; ++j) {
    int v = 0;
    if (s > 0.0f) {
      float r = (x[j] / s + 12582912.0f) - 12582912.0f;
      r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
      v = static_cast<int>(r);
    }
    q[j] = static_cast<int8_t>(v);
  }
  return finite;
}

}  // namespace detail

Status quantize_activations_i8(CpuIsa isa, const float* x, int64_t m, int64_t k, int64_t group_size,
                               int bits, int8_t* q, float* scale, int32_t* gsum) {
  const int64_t groups = k / group_size;
  const detail::IsaKernels& row = detail::isa_kernels(isa);
  const auto quantize_row =
      row.fn.quantize_row_i8 ? row.fn.quantize_row_i8 : detail::quantize_row_i8_scalar;
  const int64_t chunk = detail::i8_plane_chunk(row, bits);
  const int64_t planes = chunk ? 8 / bits : 0;
  Status status = Status::kOk;
  for (int64_t i = 0; i < m; ++i) {
    const float* xi = x + i * k;
    int8_t* qi = q + i * k;
    if (!quantize_row(xi, k, qi, scale + i)) status = Status::kNonFinite;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t g0 = g * group_size;
      int32_t sum = 0;
      for (int64_t j = g0; j < g0 + group_size; ++j) sum += qi[j];
      gsum[i * groups + g] = sum;
      // Plane layout: code P*u + p of each full chunk moves to position p*16 + u.
      if (chunk) {
        int8_t tmp[128];
        for (int64_t c0 = g0; c0 + chunk <= g0 + group_size; c0 += chunk) {
          for (int64_t u = 0; u < 16; ++u)
            for (int64_t p = 0; p < planes; ++p) tmp[p * 16 + u] = qi[c0 + planes * u + p];
          for (int64_t t = 0; t < chunk; ++t) qi[c0 + t] = tmp[t];
        }
      }
    }
  }
  return status;
}

namespace detail {

void linear_i8_scalar(const LinearI8Args& a) {
  const int64_t k = a.k, gs = a.group_size, groups = k / gs;
  const int64_t row_bytes = packed_row_bytes(k, a.bits);
  const unsigned mask = (1u << a.bits) - 1u;
  for (int64_t n = a.n_begin; n < a.n_end; ++n) {
    const uint8_t* w = a.packed + n * row_bytes;
    const float b = a.bias ? a.bias[n] : 0.0f;
    for (int64_t i = 0; i < a.m; ++i) {
      const int8_t* qi = a.q + i * k;
      float acc = 0.0f;
      for (int64_t g = 0; g < groups; ++g) {
        int32_t dot = 0;
        for (int64_t j = g * gs; j < (g + 1) * gs; ++j) {
          const int64_t bit = j * a.bits;
          unsigned window = w[bit >> 3];
          if ((bit & 7) + a.bits > 8) window |= static_cast<unsigned>(w[(bit >> 3) + 1]) << 8;
          const int code = static_cast<int>((window >> (bit & 7)) & mask);
          dot += code * qi[j];
        }
        dot -= static_cast<int32_t>(a.zeros[n * groups + g]) * a.gsum[i * groups + g];
        acc += static_cast<float>(dot) * half_bits_to_float(a.scale_bits[n * groups + g]);
      }
      a.y[i * a.n_total + n] = acc * a.x_scale[i] + b;
    }
  }
}

}  // namespace detail

void linear_i8(CpuIsa isa, const int8_t* q, const float* scale, const int32_t* gsum, int64_t m,
               int64_t k, const uint8_t* packed, const uint16_t* scale_bits, const uint8_t* zeros,
               const float* bias, int64_t n_total, int64_t group_size, int bits, int64_t n_begin,
               int64_t n_end, float* y) {
  if (n_begin >= n_end || m <= 0) return;
  const detail::LinearI8Args args{q,          scale,      gsum,    m,     k,
                                  packed,     scale_bits, zeros,   bias,  n_total,
                                  group_size, bits,       n_begin, n_end, y};
  const detail::IsaKernels& row = detail::isa_kernels(isa);
  if (row.fn.linear_i8 != nullptr) return row.fn.linear_i8(args);
  detail::linear_i8_scalar(args);
}

void linear_i8_chunks(CpuIsa isa, const int8_t* q, const float* scale, const int32_t* gsum,
                      int64_t m, int64_t k, const uint8_t* packed, const uint16_t* scale_bits,
                      const uint8_t* zeros, const float* bias, int64_t n_total, int64_t group_size,
                      int bits, ColumnChunks& work, float* y) {
  for (int64_t begin = 0, end = 0; work.take(&begin, &end);)
    linear_i8(isa, q, scale, gsum, m, k, packed, scale_bits, zeros, bias, n_total, group_size, bits,
              begin, end, y);
}

}  // namespace kernels
}  // namespace qpart
