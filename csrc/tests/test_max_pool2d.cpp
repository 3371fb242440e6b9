// Float max pool (qpart_kernels.h): every ISA row this CPU supports against ATen's definition
// (a row-major scan of the window clipped to the input, `if (v > m || isnan(v)) m = v` from
// m = -inf): bit for bit, NaN where it gives NaN, over odd sizes, kernels 1..5, strides 1..3
// (and wider), every legal padding, several planes, with NaN, +-Inf and +-0.0 ties.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "isa_table.h"
#include "qpart_kernels.h"
#include "test_util.h"

namespace {

namespace k = qpart::kernels;
namespace d = qpart::kernels::detail;
using qpart_test::float_bits;

std::vector<float> reference(const k::MaxPool2dShape& s, const std::vector<float>& x,
                             int64_t planes) {
  const int64_t ho = s.h_out(), wo = s.w_out();
  std::vector<float> y(static_cast<size_t>(planes * ho * wo));
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t i = 0; i < ho; ++i)
      for (int64_t j = 0; j < wo; ++j) {
        float m = -INFINITY;
        for (int64_t r = i * s.stride_h - s.pad_h; r < i * s.stride_h - s.pad_h + s.kh; ++r)
          for (int64_t c = j * s.stride_w - s.pad_w; c < j * s.stride_w - s.pad_w + s.kw; ++c) {
            if (r < 0 || r >= s.h_in || c < 0 || c >= s.w_in) continue;
            const float v = x[static_cast<size_t>((p * s.h_in + r) * s.w_in + c)];
            if (v > m || std::isnan(v)) m = v;
          }
        y[static_cast<size_t>((p * ho + i) * wo + j)] = m;
      }
  return y;
}

// Mostly small integers (many ties, half of the zeros negative), some NaN and +-Inf.
std::vector<float> sample(int64_t n, std::mt19937& rng, bool specials) {
  std::uniform_int_distribution<int> pick(0, 99), small(-3, 3);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) {
    const int u = pick(rng);
    if (specials && u < 2) {
      v = NAN;
    } else if (specials && u < 5) {
      v = u == 2 ? INFINITY : -INFINITY;
    } else if (u < 30) {
      v = (u & 1) ? -0.0f : 0.0f;
    } else {
      v = static_cast<float>(small(rng)) * 0.5f;
    }
  }
  return x;
}

std::vector<const d::IsaKernels*> supported_rows() {
  std::vector<const d::IsaKernels*> out;
  for (const d::IsaKernels& row : d::isa_table())
    if (k::cpu_isa_supported(row.isa)) out.push_back(&row);
  return out;
}

void expect_pool(const k::MaxPool2dShape& s, int64_t planes, bool specials, uint32_t seed) {
  std::mt19937 rng(seed);
  const std::vector<float> x = sample(planes * s.h_in * s.w_in, rng, specials);
  const std::vector<float> want = reference(s, x, planes);
  for (const d::IsaKernels* row : supported_rows()) {
    std::vector<float> scratch(static_cast<size_t>(k::max_pool2d_scratch_floats(s)));
    std::vector<float> got(want.size(), 12345.0f);
    k::max_pool2d_f32(row->isa, s, x.data(), planes, scratch.data(), got.data());
    for (size_t i = 0; i < want.size(); ++i) {
      const bool nan = std::isnan(want[i]);
      if (nan ? std::isnan(got[i]) : float_bits(got[i]) == float_bits(want[i])) continue;
      ADD_FAILURE() << row->name << ": " << s.h_in << "x" << s.w_in << " kernel " << s.kh << "x"
                    << s.kw << " stride " << s.stride_h << "x" << s.stride_w << " pad " << s.pad_h
                    << "x" << s.pad_w << ": output " << i << " is " << got[i] << " (bits "
                    << float_bits(got[i]) << "), want " << want[i] << " (bits "
                    << float_bits(want[i]) << ")";
      return;
    }
  }
}

TEST(MaxPool2d, EveryRowMatchesAtenOverKernelsStridesAndPaddings) {
  uint32_t seed = 1;
  for (int64_t kh = 1; kh <= 5; ++kh)
    for (int64_t kw = 1; kw <= 5; ++kw)
      for (int64_t st = 1; st <= 3; ++st)
        for (int64_t ph = 0; 2 * ph <= kh; ++ph)
          for (int64_t pw = 0; 2 * pw <= kw; ++pw)
            for (const auto& hw : {std::pair<int64_t, int64_t>{13, 37}, {7, 21}, {5, 5}}) {
              const k::MaxPool2dShape s{hw.first, hw.second, kh, kw, st, 4 - st, ph, pw};
              if (!k::max_pool2d_valid(s)) continue;
              expect_pool(s, 3, true, seed++);
              if (::testing::Test::HasFailure()) return;
            }
}

TEST(MaxPool2d, StemAndMnistShapes) {
  expect_pool({112, 112, 3, 3, 2, 2, 1, 1}, 4, true, 7);
  expect_pool({112, 112, 3, 3, 2, 2, 1, 1}, 2, false, 8);
  expect_pool({28, 28, 2, 2, 2, 2, 0, 0}, 5, true, 9);
  expect_pool({14, 14, 2, 2, 2, 2, 0, 0}, 5, false, 10);
  expect_pool({33, 65, 3, 3, 1, 1, 1, 1}, 2, true, 11);
}

TEST(MaxPool2d, WideStridesTallKernelsAndTinyPlanes) {
  expect_pool({40, 83, 2, 2, 5, 7, 1, 1}, 2, true, 21);   // stride > kernel: rows skipped
  expect_pool({30, 200, 4, 3, 3, 9, 2, 1}, 2, true, 22);  // gather strides
  expect_pool({70, 19, 67, 2, 1, 1, 0, 1}, 2, true, 23);  // more than 64 window rows
  expect_pool({1, 1, 1, 1, 1, 1, 0, 0}, 3, true, 24);
  expect_pool({2, 3, 3, 3, 1, 1, 1, 1}, 3, true, 25);
  expect_pool({9, 9, 9, 9, 1, 1, 4, 4}, 2, true, 26);
}

TEST(MaxPool2d, SignedZeroTiesKeepTheFirstInRowMajorOrder) {
  // One 2x2 window: row 0 = (-inf, +0), row 1 = (-0, -1): the row-major first zero is +0
  // (a column-major scan would give -0).
  const k::MaxPool2dShape s{2, 2, 2, 2, 2, 2, 0, 0};
  for (const d::IsaKernels* row : supported_rows()) {
    for (const float first : {0.0f, -0.0f}) {
      const std::vector<float> x = {-INFINITY, first, -first, -1.0f};
      std::vector<float> scratch(static_cast<size_t>(k::max_pool2d_scratch_floats(s)));
      float y = 1.0f;
      k::max_pool2d_f32(row->isa, s, x.data(), 1, scratch.data(), &y);
      EXPECT_EQ(float_bits(y), float_bits(first)) << row->name;
    }
  }
}

TEST(MaxPool2d, ValidShapes) {
  EXPECT_TRUE(k::max_pool2d_valid({4, 4, 3, 3, 2, 2, 1, 1}));
  EXPECT_FALSE(k::max_pool2d_valid({4, 4, 3, 3, 2, 2, 2, 1}));  // pad > kernel / 2
  EXPECT_FALSE(k::max_pool2d_valid({4, 4, 3, 3, 0, 2, 1, 1}));  // stride 0
  EXPECT_FALSE(k::max_pool2d_valid({2, 4, 5, 3, 1, 1, 1, 1}));  // window taller than input
  EXPECT_FALSE(k::max_pool2d_valid({0, 4, 1, 1, 1, 1, 0, 0}));
}

}  // namespace
