// Shared helpers for the qpart_core unit tests: independent (double-precision) references
// and deterministic random data.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "qpart_kernels.h"

namespace qpart_test {

/// Exact value of a finite binary16 bit pattern, decoded without the library.
inline double ref_half_value(uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  double magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<double>(mantissa), -24);
  } else {
    magnitude = std::ldexp(static_cast<double>(1024 + mantissa), exponent - 25);
  }
  return sign ? -magnitude : magnitude;
}

inline bool is_half_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

/// Dense quantization dimensions shared by the quantizer/matmul tests.
struct Packed {
  int64_t rows = 0, k = 0, group_size = 0;
  int bits = 0;
  std::vector<uint8_t> packed;
  std::vector<uint16_t> scales;
  std::vector<uint8_t> zeros;

  int64_t groups() const { return k / group_size; }
  int64_t row_bytes() const { return qpart::kernels::packed_row_bytes(k, bits); }
};

inline Packed quantize(const std::vector<float>& x, int64_t rows, int64_t k, int64_t group_size,
                       int bits, qpart::kernels::Status* status) {
  Packed p;
  p.rows = rows;
  p.k = k;
  p.group_size = group_size;
  p.bits = bits;
  p.packed.assign(static_cast<size_t>(rows * p.row_bytes()), 0);
  p.scales.assign(static_cast<size_t>(rows * p.groups()), 0);
  p.zeros.assign(static_cast<size_t>(rows * p.groups()), 0);
  *status = qpart::kernels::quantize_rows(x.data(), 0, rows, k, group_size, bits,
                                          p.packed.data(), p.scales.data(), p.zeros.data());
  return p;
}

inline std::vector<float> dequantize(const Packed& p) {
  std::vector<float> w(static_cast<size_t>(p.rows * p.k), 0.0f);
  qpart::kernels::dequantize_rows(p.packed.data(), p.scales.data(), p.zeros.data(), 0, p.rows,
                                  p.k, p.group_size, p.bits, w.data());
  return w;
}

inline std::vector<float> random_normal(size_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& f : v) f = dist(rng);
  return v;
}

inline std::vector<float> random_uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& f : v) f = dist(rng);
  return v;
}

}  // namespace qpart_test
