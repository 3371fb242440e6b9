// fp16 conversion: exhaustive half->float->half round trip and float->half against a slow
// double-precision nearest-value reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "qpart_kernels.h"
#include "test_util.h"

namespace {

using qpart::kernels::float_to_half_bits;
using qpart::kernels::half_bits_to_float;
using qpart_test::bits_float;
using qpart_test::float_bits;
using qpart_test::is_half_nan;
using qpart_test::ref_half_value;

// Values of the non-negative half patterns 0x0000..0x7bff, plus 65536 standing in for the
// next step (pattern 0x7c00, +inf): IEEE overflow rounding treats the largest finite value
// as followed by 2^16, so anything at or past the midpoint 65520 rounds to infinity.
const std::vector<double>& positive_half_values() {
  static const std::vector<double> table = [] {
    std::vector<double> t;
    for (uint32_t h = 0; h <= 0x7bffu; ++h) t.push_back(ref_half_value(static_cast<uint16_t>(h)));
    t.push_back(65536.0);
    return t;
  }();
  return table;
}

// Reference float -> half in double: nearest representable value, ties to the even pattern.
// NaN maps to the canonical quiet NaN (callers only compare NaN-ness).
uint16_t ref_float_to_half(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000u : 0u;
  if (std::isnan(f)) return sign | 0x7e00u;
  const double a = std::fabs(static_cast<double>(f));
  const auto& t = positive_half_values();
  // Largest index with t[idx] <= a.
  const size_t idx = static_cast<size_t>(std::upper_bound(t.begin(), t.end(), a) - t.begin()) - 1;
  if (idx + 1 == t.size()) return sign | 0x7c00u;  // a >= 65536 (including inf)
  const double below = a - t[idx], above = t[idx + 1] - a;
  size_t pick;
  if (below < above) {
    pick = idx;
  } else if (above < below) {
    pick = idx + 1;
  } else {
    pick = (idx % 2 == 0) ? idx : idx + 1;  // tie: even mantissa == even bit pattern
  }
  return sign | static_cast<uint16_t>(pick);
}

void expect_convert(float f, uint16_t expected_bits) {
  const uint16_t got = float_to_half_bits(f);
  EXPECT_EQ(got, expected_bits) << "float " << f << " (bits 0x" << std::hex << float_bits(f)
                                << ") expected half 0x" << expected_bits << " got 0x" << got;
  // The reference must agree with the hand-derived value too.
  EXPECT_EQ(ref_float_to_half(f), expected_bits) << "reference disagrees for " << f;
}

void expect_matches_reference(float f) {
  const uint16_t got = float_to_half_bits(f);
  const uint16_t want = ref_float_to_half(f);
  if (std::isnan(f)) {
    ASSERT_TRUE(is_half_nan(got)) << "NaN float 0x" << std::hex << float_bits(f)
                                  << " -> half 0x" << got;
    return;
  }
  ASSERT_EQ(got, want) << "float " << f << " (bits 0x" << std::hex << float_bits(f)
                       << ") expected half 0x" << want << " got 0x" << got;
}

TEST(Half, ExhaustiveRoundTrip) {
  for (uint32_t i = 0; i <= 0xffffu; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const float f = half_bits_to_float(h);
    const uint16_t back = float_to_half_bits(f);
    if (is_half_nan(h)) {
      ASSERT_TRUE(std::isnan(f)) << "half 0x" << std::hex << i;
      ASSERT_TRUE(is_half_nan(back)) << "half 0x" << std::hex << i << " -> 0x" << back;
      continue;
    }
    ASSERT_EQ(back, h) << "half 0x" << std::hex << i << " -> float " << f << " -> 0x" << back;
  }
}

TEST(Half, ExhaustiveDecodeIsExact) {
  for (uint32_t i = 0; i <= 0xffffu; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    const float f = half_bits_to_float(h);
    if ((h & 0x7c00u) == 0x7c00u) {
      if (h & 0x3ffu) {
        ASSERT_TRUE(std::isnan(f)) << std::hex << i;
      } else {
        ASSERT_TRUE(std::isinf(f)) << std::hex << i;
        ASSERT_EQ(std::signbit(f), (h & 0x8000u) != 0) << std::hex << i;
      }
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), ref_half_value(h)) << "half 0x" << std::hex << i;
    ASSERT_EQ(std::signbit(f), (h & 0x8000u) != 0) << "sign of half 0x" << std::hex << i;
  }
}

TEST(Half, EdgeValues) {
  const float inf = std::numeric_limits<float>::infinity();
  expect_convert(0.0f, 0x0000);
  expect_convert(-0.0f, 0x8000);
  expect_convert(1.0f, 0x3c00);
  expect_convert(-2.0f, 0xc000);
  expect_convert(65504.0f, 0x7bff);
  expect_convert(-65504.0f, 0xfbff);
  expect_convert(65519.99f, 0x7bff);   // just below the overflow midpoint
  expect_convert(std::nextafter(65520.0f, 0.0f), 0x7bff);
  expect_convert(65520.0f, 0x7c00);    // midpoint 65504|65536: ties to even -> inf
  expect_convert(-65520.0f, 0xfc00);
  expect_convert(65536.0f, 0x7c00);
  expect_convert(1e30f, 0x7c00);
  expect_convert(std::numeric_limits<float>::max(), 0x7c00);
  expect_convert(inf, 0x7c00);
  expect_convert(-inf, 0xfc00);
  // Subnormal halves are multiples of 2^-24.
  expect_convert(std::ldexp(1.0f, -24), 0x0001);
  expect_convert(std::ldexp(1.0f, -25), 0x0000);          // 0.5 ulp: tie to even -> 0
  expect_convert(-std::ldexp(1.0f, -25), 0x8000);
  expect_convert(std::nextafter(std::ldexp(1.0f, -25), 1.0f), 0x0001);
  expect_convert(3.0f * std::ldexp(1.0f, -26), 0x0001);   // 0.75 ulp
  expect_convert(3.0f * std::ldexp(1.0f, -25), 0x0002);   // 1.5 ulp: tie to even -> 2
  expect_convert(5.0f * std::ldexp(1.0f, -25), 0x0002);   // 2.5 ulp: tie to even -> 2
  expect_convert(std::ldexp(1.0f, -26), 0x0000);
  expect_convert(1e-45f, 0x0000);                         // float subnormal
  expect_convert(std::ldexp(1023.0f, -24), 0x03ff);       // largest subnormal half
  expect_convert(std::ldexp(1023.5f, -24), 0x0400);       // tie -> even -> smallest normal
  expect_convert(std::ldexp(1.0f, -14), 0x0400);
  // Normal range ties: 1 + 2^-11 is halfway between 0x3c00 and 0x3c01.
  expect_convert(1.0f + std::ldexp(1.0f, -11), 0x3c00);
  expect_convert(1.0f + 3.0f * std::ldexp(1.0f, -11), 0x3c02);
  expect_convert(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -23), 0x3c01);
  expect_convert(2048.0f - 0.5f, 0x6800);  // 2047.5: halfway 2047 (odd) | 2048 (even)
  expect_convert(std::ldexp(2047.0f, -11) + std::ldexp(1.0f, -12), 0x3c00);  // carry to exp
  // NaN in, NaN out (quiet or signalling, either sign).
  EXPECT_TRUE(is_half_nan(float_to_half_bits(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(is_half_nan(float_to_half_bits(-std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(is_half_nan(float_to_half_bits(bits_float(0x7f800001u))));
  EXPECT_TRUE(is_half_nan(float_to_half_bits(bits_float(0xffc00001u))));
}

// Every half midpoint (and the floats just around it) for every finite half, both signs.
TEST(Half, AllMidpointsMatchReference) {
  for (uint32_t h = 0; h < 0x7bffu; ++h) {
    const double mid = 0.5 * (ref_half_value(static_cast<uint16_t>(h)) +
                              ref_half_value(static_cast<uint16_t>(h + 1)));
    const float m = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(m), mid);  // half midpoints fit in a float
    for (float f : {m, std::nextafter(m, 0.0f), std::nextafter(m, 1e9f)}) {
      expect_matches_reference(f);
      expect_matches_reference(-f);
    }
  }
}

TEST(Half, RandomBitPatternsMatchReference) {
  std::mt19937 rng(12345);
  for (int i = 0; i < 300000; ++i) expect_matches_reference(bits_float(rng()));
}

TEST(Half, RandomHalfRangeFloatsMatchReference) {
  // Magnitudes spread log-uniformly over the half range and a little beyond it.
  std::mt19937 rng(777);
  std::uniform_int_distribution<int> exponent(-28, 16);
  std::uniform_int_distribution<uint32_t> mantissa(0, (1u << 23) - 1);
  for (int i = 0; i < 300000; ++i) {
    const uint32_t e = static_cast<uint32_t>(exponent(rng) + 127);
    const uint32_t sign = (rng() & 1u) << 31;
    expect_matches_reference(bits_float(sign | (e << 23) | mantissa(rng)));
  }
}

}  // namespace
