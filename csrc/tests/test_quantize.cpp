// Group quantizer: scale/zero-point invariants, reconstruction error bounds, degenerate
// groups, error statuses, and row-subrange behaviour of quantize_rows / dequantize_rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "qpart_kernels.h"
#include "test_util.h"

namespace {

using qpart::kernels::dequantize_rows;
using qpart::kernels::group_params;
using qpart::kernels::max_code;
using qpart::kernels::packed_row_bytes;
using qpart::kernels::quantize_rows;
using qpart::kernels::Status;
using qpart::kernels::unpack_rows;
using qpart_test::Packed;
using qpart_test::ref_half_value;

// Checks every documented property of a quantized matrix against its float input.
void check_quantized(const std::vector<float>& x, int64_t rows, int64_t k, int64_t group_size,
                     int bits) {
  SCOPED_TRACE(testing::Message() << "rows=" << rows << " k=" << k << " group_size="
                                  << group_size << " bits=" << bits);
  Status st;
  const Packed p = qpart_test::quantize(x, rows, k, group_size, bits, &st);
  ASSERT_EQ(st, Status::kOk);
  const std::vector<float> deq = qpart_test::dequantize(p);
  std::vector<uint8_t> codes(static_cast<size_t>(rows * k));
  unpack_rows(p.packed.data(), rows, k, bits, codes.data());

  const int qmax = max_code(bits);
  const float qmax_f = static_cast<float>(qmax);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < p.groups(); ++g) {
      const float* xs = x.data() + r * k + g * group_size;
      float lo = 0.0f, hi = 0.0f;
      for (int64_t i = 0; i < group_size; ++i) {
        lo = std::min(lo, xs[i]);
        hi = std::max(hi, xs[i]);
      }
      const uint16_t h = p.scales[r * p.groups() + g];
      const int zero = p.zeros[r * p.groups() + g];
      const int64_t base = r * k + g * group_size;
      SCOPED_TRACE(testing::Message() << "row " << r << " group " << g << " lo=" << lo
                                      << " hi=" << hi << " scale_bits=0x" << std::hex << h
                                      << std::dec << " zero=" << zero);

      // The single scale and its own group_params call agree.
      uint16_t h2 = 0xdead;
      uint8_t z2 = 0xee;
      ASSERT_EQ(group_params(xs, group_size, bits, &h2, &z2), Status::kOk);
      ASSERT_EQ(h2, h);
      ASSERT_EQ(z2, zero);

      if (hi == lo) {  // all zeros
        ASSERT_EQ(h, 0);
        ASSERT_EQ(zero, 0);
        for (int64_t i = 0; i < group_size; ++i) {
          ASSERT_EQ(codes[base + i], 0);
          ASSERT_EQ(deq[base + i], 0.0f);
        }
        continue;
      }
      // A positive, finite fp16 scale.
      ASSERT_GT(h, 0) << "non-zero group got a zero scale";
      ASSERT_LT(h, 0x7c00) << "scale must be a positive finite half";
      const double scale = ref_half_value(h);
      // delta = (hi - lo) / qmax (fp32, as in the format spec and the PyTorch reference),
      // rounded *up* to fp16: scale is the smallest half >= delta.
      const float delta = (hi - lo) / qmax_f;
      ASSERT_GE(scale, static_cast<double>(delta));
      if (delta > 0.0f) {
        ASSERT_LT(ref_half_value(static_cast<uint16_t>(h - 1)), static_cast<double>(delta))
            << "scale is not the smallest half >= delta";
      } else {
        ASSERT_EQ(h, 1) << "underflowing delta must round up to the smallest half";
      }
      // ... so it covers the exact range up to the fp32 rounding of (hi - lo) / qmax.
      const double range = static_cast<double>(hi) - static_cast<double>(lo);
      ASSERT_GE(scale * qmax, range * (1.0 - std::ldexp(1.0, -22)));
      // Zero point: a code, round(-lo / scale) up to rounding of the fp32 division.
      ASSERT_GE(zero, 0);
      ASSERT_LE(zero, qmax);
      const double z_exact = std::min(-static_cast<double>(lo) / scale, static_cast<double>(qmax));
      ASSERT_LE(std::fabs(zero - z_exact), 0.5 + 1e-4);

      const float scale_f = static_cast<float>(scale);
      for (int64_t i = 0; i < group_size; ++i) {
        const int c = codes[base + i];
        ASSERT_LE(c, qmax);
        // Codes follow the spec formula: clamp(round_half_even(x / scale) + zero).
        const float q = std::nearbyint(xs[i] / scale_f) + static_cast<float>(zero);
        const int expect_code = static_cast<int>(std::min(std::max(q, 0.0f), qmax_f));
        ASSERT_EQ(c, expect_code) << "x=" << xs[i];
        // dequantize_rows is exactly (code - zero) * scale.
        ASSERT_EQ(deq[base + i], (static_cast<float>(c) - static_cast<float>(zero)) * scale_f);
        // Reconstruction error: at most one step (the documented bound), and in fact half a
        // step up to fp32 rounding since the grid covers [lo, hi].
        const double err = std::fabs(static_cast<double>(xs[i]) - deq[base + i]);
        ASSERT_LE(err, scale) << "x=" << xs[i] << " deq=" << deq[base + i];
        ASSERT_LE(err, scale * (0.5 + 1e-4)) << "x=" << xs[i] << " deq=" << deq[base + i];
      }
    }
  }
}

struct Shape {
  int64_t rows, k, group_size;
};

const Shape kShapes[] = {{4, 96, 96}, {4, 96, 32}, {3, 96, 12}, {2, 33, 33},
                         {3, 33, 11}, {2, 21, 3},  {2, 7, 1}};

TEST(Quantize, RandomNormalAllBits) {
  uint32_t seed = 1;
  for (int bits = 1; bits <= 8; ++bits) {
    for (const Shape& s : kShapes) {
      const auto x = qpart_test::random_normal(static_cast<size_t>(s.rows * s.k), seed++);
      check_quantized(x, s.rows, s.k, s.group_size, bits);
    }
  }
}

TEST(Quantize, RandomScalesAndSigns) {
  uint32_t seed = 100;
  for (int bits = 1; bits <= 8; ++bits) {
    for (const Shape& s : kShapes) {
      const size_t n = static_cast<size_t>(s.rows * s.k);
      check_quantized(qpart_test::random_uniform(n, seed++, 0.5f, 2.0f), s.rows, s.k,
                      s.group_size, bits);  // positive only: lo = 0
      check_quantized(qpart_test::random_uniform(n, seed++, -3.0f, -1.0f), s.rows, s.k,
                      s.group_size, bits);  // negative only: hi = 0
      check_quantized(qpart_test::random_normal(n, seed++, 1e-6f), s.rows, s.k, s.group_size,
                      bits);  // subnormal fp16 scales
      check_quantized(qpart_test::random_normal(n, seed++, 300.0f), s.rows, s.k, s.group_size,
                      bits);
      auto skewed = qpart_test::random_normal(n, seed++, 1e-3f);
      for (size_t i = 0; i < n; i += 5) skewed[i] *= 1e5f;  // outliers
      check_quantized(skewed, s.rows, s.k, s.group_size, bits);
    }
  }
}

TEST(Quantize, AllZeroGroup) {
  // Row of 4 groups of 8: zeros, random, signed zeros, random.
  const int64_t k = 32, gs = 8;
  for (int bits = 1; bits <= 8; ++bits) {
    auto x = qpart_test::random_normal(static_cast<size_t>(k), 7u + static_cast<uint32_t>(bits));
    for (int64_t i = 0; i < 8; ++i) x[i] = 0.0f;
    for (int64_t i = 16; i < 24; ++i) x[i] = (i % 2) ? -0.0f : 0.0f;
    Status st;
    const Packed p = qpart_test::quantize(x, 1, k, gs, bits, &st);
    ASSERT_EQ(st, Status::kOk);
    EXPECT_EQ(p.scales[0], 0);
    EXPECT_EQ(p.zeros[0], 0);
    EXPECT_EQ(p.scales[2], 0);
    EXPECT_EQ(p.zeros[2], 0);
    EXPECT_NE(p.scales[1], 0);
    EXPECT_NE(p.scales[3], 0);
    const auto deq = qpart_test::dequantize(p);
    for (int64_t i : {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23}) {
      EXPECT_EQ(deq[i], 0.0f) << i;
    }
    check_quantized(x, 1, k, gs, bits);

    // group_params alone on an all-zero buffer, with junk in the outputs.
    const std::vector<float> zeros(5, 0.0f);
    uint16_t h = 0x1234;
    uint8_t z = 0x56;
    ASSERT_EQ(group_params(zeros.data(), 5, bits, &h, &z), Status::kOk);
    EXPECT_EQ(h, 0);
    EXPECT_EQ(z, 0);
  }
}

TEST(Quantize, ConstantGroups) {
  for (int bits = 1; bits <= 8; ++bits) {
    const int qmax = max_code(bits);
    SCOPED_TRACE(testing::Message() << "bits=" << bits);
    {  // constant positive: lo = 0, zero = 0, every code is the top code.
      const std::vector<float> x(16, 3.0f);
      Status st;
      const Packed p = qpart_test::quantize(x, 1, 16, 16, bits, &st);
      ASSERT_EQ(st, Status::kOk);
      EXPECT_EQ(p.zeros[0], 0);
      std::vector<uint8_t> codes(16);
      unpack_rows(p.packed.data(), 1, 16, bits, codes.data());
      for (uint8_t c : codes) EXPECT_EQ(c, qmax);
      check_quantized(x, 1, 16, 16, bits);
    }
    {  // constant negative: hi = 0, zero = qmax, every code is 0.
      const std::vector<float> x(16, -2.5f);
      Status st;
      const Packed p = qpart_test::quantize(x, 1, 16, 8, bits, &st);
      ASSERT_EQ(st, Status::kOk);
      EXPECT_EQ(p.zeros[0], qmax);
      EXPECT_EQ(p.zeros[1], qmax);
      std::vector<uint8_t> codes(16);
      unpack_rows(p.packed.data(), 1, 16, bits, codes.data());
      for (uint8_t c : codes) EXPECT_EQ(c, 0);
      check_quantized(x, 1, 16, 8, bits);
    }
    {  // exactly representable grid: x = 0.5 * {0..qmax} reconstructs exactly.
      std::vector<float> x(static_cast<size_t>(qmax + 1));
      for (int i = 0; i <= qmax; ++i) x[i] = 0.5f * static_cast<float>(i);
      Status st;
      const Packed p = qpart_test::quantize(x, 1, qmax + 1, qmax + 1, bits, &st);
      ASSERT_EQ(st, Status::kOk);
      EXPECT_EQ(p.scales[0], 0x3800);  // 0.5
      EXPECT_EQ(p.zeros[0], 0);
      EXPECT_EQ(qpart_test::dequantize(p), x);
    }
  }
}

TEST(Quantize, TinyAndSubnormalInputs) {
  // Non-zero groups whose range is so small that (hi - lo) / qmax underflows in fp32 must
  // still get a non-zero scale (rounded up to the smallest half, 2^-24), not the all-zero
  // encoding, and reconstruct within the error bound.
  const float denorm_min = std::numeric_limits<float>::denorm_min();
  const std::vector<std::vector<float>> groups = {
      {denorm_min, 0.0f, 0.0f, 0.0f},
      {0.0f, -denorm_min, 0.0f, 0.0f},
      {1e-40f, -2e-42f, 3e-41f, 0.0f},
      {1e-9f, -1e-9f, 5e-10f, 0.0f},
      {std::numeric_limits<float>::min(), 0.0f, 0.0f, 0.0f},
  };
  for (int bits = 1; bits <= 8; ++bits) {
    for (const auto& x : groups) {
      SCOPED_TRACE(testing::Message() << "bits=" << bits << " x0=" << x[0] << " x1=" << x[1]);
      uint16_t h = 0;
      uint8_t z = 0;
      ASSERT_EQ(group_params(x.data(), 4, bits, &h, &z), Status::kOk);
      EXPECT_EQ(h, 1);  // 2^-24: everything here is far below one step
      EXPECT_LE(z, max_code(bits));
      check_quantized(x, 1, 4, 4, bits);
      check_quantized(x, 1, 4, 2, bits);
    }
  }
}

TEST(Quantize, NonFiniteInput) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (float bad : {nan, inf, -inf}) {
    for (int bits : {1, 4, 8}) {
      std::vector<float> x = {1.0f, -2.0f, bad, 0.5f};
      uint16_t h = 0;
      uint8_t z = 0;
      EXPECT_EQ(group_params(x.data(), 4, bits, &h, &z), Status::kNonFinite);
      x = {bad, 0.0f, 0.0f, 0.0f};  // also when it would otherwise be an all-zero group
      EXPECT_EQ(group_params(x.data(), 4, bits, &h, &z), Status::kNonFinite);

      // quantize_rows: the bad value sits in row 1, group 1.
      auto m = qpart_test::random_normal(3 * 16, 99);
      m[1 * 16 + 9] = bad;
      Status st;
      qpart_test::quantize(m, 3, 16, 8, bits, &st);
      EXPECT_EQ(st, Status::kNonFinite);
    }
  }
}

TEST(Quantize, ScaleOverflow) {
  uint16_t h = 0;
  uint8_t z = 0;
  for (int bits = 1; bits <= 8; ++bits) {
    const std::vector<float> huge = {1e30f, -1e30f, 0.0f, 1.0f};
    EXPECT_EQ(group_params(huge.data(), 4, bits, &h, &z), Status::kScaleOverflow) << bits;
    const std::vector<float> max_range = {std::numeric_limits<float>::max(),
                                          -std::numeric_limits<float>::max()};
    EXPECT_EQ(group_params(max_range.data(), 2, bits, &h, &z), Status::kScaleOverflow) << bits;
  }
  // Boundary at 1 bit: delta = hi - lo must fit in fp16 (max 65504).
  const std::vector<float> at_max = {65504.0f};
  ASSERT_EQ(group_params(at_max.data(), 1, 1, &h, &z), Status::kOk);
  EXPECT_EQ(h, 0x7bff);
  EXPECT_EQ(z, 0);
  const std::vector<float> neg_at_max = {-65504.0f};
  ASSERT_EQ(group_params(neg_at_max.data(), 1, 1, &h, &z), Status::kOk);
  EXPECT_EQ(h, 0x7bff);
  EXPECT_EQ(z, 1);
  const std::vector<float> past_max = {65505.0f};  // rounds *up* past 65504 -> overflow
  EXPECT_EQ(group_params(past_max.data(), 1, 1, &h, &z), Status::kScaleOverflow);
  // At 8 bits the range may be 255 * 65504.
  const std::vector<float> at_max8 = {255.0f * 65504.0f, 0.0f};
  ASSERT_EQ(group_params(at_max8.data(), 2, 8, &h, &z), Status::kOk);
  EXPECT_EQ(h, 0x7bff);
  const std::vector<float> split8 = {128.0f * 65504.0f, -127.0f * 65504.0f};
  ASSERT_EQ(group_params(split8.data(), 2, 8, &h, &z), Status::kOk);
  EXPECT_EQ(h, 0x7bff);
  EXPECT_EQ(z, 127);
  const std::vector<float> past_max8 = {255.0f * 65504.0f * 1.001f, 0.0f};
  EXPECT_EQ(group_params(past_max8.data(), 2, 8, &h, &z), Status::kScaleOverflow);

  // quantize_rows reports it, and the first failing status wins (row-major group order).
  auto m = qpart_test::random_normal(2 * 16, 5);
  m[0 * 16 + 3] = 1e30f;                        // row 0, group 0: overflow at 4 bits
  m[0 * 16 + 12] = std::numeric_limits<float>::quiet_NaN();  // row 0, group 1: non-finite
  Status st;
  qpart_test::quantize(m, 2, 16, 8, 4, &st);
  EXPECT_EQ(st, Status::kScaleOverflow);
  m[0 * 16 + 3] = 1.0f;
  qpart_test::quantize(m, 2, 16, 8, 4, &st);
  EXPECT_EQ(st, Status::kNonFinite);
}

TEST(Quantize, RowSubrangeWritesOnlyThoseRows) {
  const int64_t rows = 6, k = 40, gs = 8;
  for (int bits : {1, 3, 4, 7, 8}) {
    SCOPED_TRACE(testing::Message() << "bits=" << bits);
    const auto x = qpart_test::random_normal(static_cast<size_t>(rows * k), 31u + bits);
    Status st;
    const Packed full = qpart_test::quantize(x, rows, k, gs, bits, &st);
    ASSERT_EQ(st, Status::kOk);
    const int64_t rb = packed_row_bytes(k, bits), groups = k / gs;

    // Quantize only rows [2, 5) into sentinel-filled buffers.
    std::vector<uint8_t> packed(static_cast<size_t>(rows * rb), 0xCD);
    std::vector<uint16_t> scales(static_cast<size_t>(rows * groups), 0xBEEF);
    std::vector<uint8_t> zeros(static_cast<size_t>(rows * groups), 0xAB);
    ASSERT_EQ(quantize_rows(x.data(), 2, 5, k, gs, bits, packed.data(), scales.data(),
                            zeros.data()),
              Status::kOk);
    for (int64_t r = 0; r < rows; ++r) {
      const bool inside = r >= 2 && r < 5;
      for (int64_t i = 0; i < rb; ++i) {
        ASSERT_EQ(packed[r * rb + i], inside ? full.packed[r * rb + i] : 0xCD) << r << " " << i;
      }
      for (int64_t g = 0; g < groups; ++g) {
        ASSERT_EQ(scales[r * groups + g], inside ? full.scales[r * groups + g] : 0xBEEF);
        ASSERT_EQ(zeros[r * groups + g], inside ? full.zeros[r * groups + g] : 0xAB);
      }
    }

    // Any split of the rows gives the same bytes as one call.
    std::vector<uint8_t> packed2(static_cast<size_t>(rows * rb), 0);
    std::vector<uint16_t> scales2(static_cast<size_t>(rows * groups), 0);
    std::vector<uint8_t> zeros2(static_cast<size_t>(rows * groups), 0);
    for (auto range : {std::pair<int64_t, int64_t>{0, 1}, {1, 4}, {4, 4}, {4, 6}}) {
      ASSERT_EQ(quantize_rows(x.data(), range.first, range.second, k, gs, bits, packed2.data(),
                              scales2.data(), zeros2.data()),
                Status::kOk);
    }
    EXPECT_EQ(packed2, full.packed);
    EXPECT_EQ(scales2, full.scales);
    EXPECT_EQ(zeros2, full.zeros);

    // dequantize_rows on a subrange writes only those rows too.
    const auto deq_full = qpart_test::dequantize(full);
    std::vector<float> deq(static_cast<size_t>(rows * k), -777.0f);
    dequantize_rows(full.packed.data(), full.scales.data(), full.zeros.data(), 1, 3, k, gs, bits,
                    deq.data());
    for (int64_t r = 0; r < rows; ++r) {
      const bool inside = r >= 1 && r < 3;
      for (int64_t i = 0; i < k; ++i) {
        ASSERT_EQ(deq[r * k + i], inside ? deq_full[r * k + i] : -777.0f) << r << " " << i;
      }
    }
  }
}

}  // namespace
