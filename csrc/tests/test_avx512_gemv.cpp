// AVX-512 small-batch kernels (x86/linear_avx512_gemv.cpp) called directly, against the scalar
// kernels: the integer kernel must give bit-identical y to linear_i8_scalar (exact int32 group
// sums, then the same per-element float epilogue), the float kernel must match
// linear_f32_scalar to float-reassociation tolerance. Every width 1..8, per-channel and
// groups of 8 / 32 / 128, odd k (8, 24, 100, 1030, 4100, ...), m = 1..8 (row blocks of 1..4
// and 4 + rest), column ranges that start and end inside a 4-row tile, n = 1, extreme codes,
// and guard pages after the packed weights and the activations (no over-read).
// Skipped where the CPU lacks the avx512 ISA level.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "dispatch.h"
#include "qpart_kernels.h"
#include "test_util.h"

namespace {

namespace k = qpart::kernels;
namespace d = qpart::kernels::detail;
using qpart_test::Packed;

constexpr float kSentinel = -777.25f;  // y outside [n_begin, n_end) must keep it

bool have_avx512() {
#if defined(__x86_64__)
  return k::cpu_isa_supported(k::CpuIsa::kAvx512);
#else
  return false;
#endif
}

#define SKIP_WITHOUT_AVX512() \
  if (!have_avx512()) GTEST_SKIP() << "CPU lacks the avx512 ISA level"

struct Act {
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> gsum;
};

Act quantize_act(const float* x, int64_t m, int64_t kdim, int64_t gs, int bits) {
  Act a;
  a.q.assign(static_cast<size_t>(m * kdim), 0);
  a.scale.assign(static_cast<size_t>(m), 0.0f);
  a.gsum.assign(static_cast<size_t>(m * (kdim / gs)), 0);
  // The avx512 layout is x's natural order, the scalar kernel's too.
  EXPECT_EQ(k::quantize_activations_i8(k::CpuIsa::kAvx512, x, m, kdim, gs, bits, a.q.data(),
                                       a.scale.data(), a.gsum.data()),
            k::Status::kOk);
  return a;
}

/// Sizes of one case; q, x and packed may point into guarded buffers.
struct Shape {
  int64_t m, k, n, gs;
  int bits;
};

d::LinearI8Args i8_args(const Shape& s, const int8_t* q, const Act& act, const uint8_t* packed,
                        const Packed& p, const float* bias, int64_t nb, int64_t ne, float* y) {
  return d::LinearI8Args{q,
                         act.scale.data(),
                         act.gsum.data(),
                         s.m,
                         s.k,
                         packed,
                         p.scales.data(),
                         p.zeros.data(),
                         bias,
                         s.n,
                         s.gs,
                         s.bits,
                         nb,
                         ne,
                         y};
}

/// Runs the AVX-512 float kernel on columns [nb, ne) with caller-owned xsum / scratch.
void f32_gemv(const Shape& s, const float* x, const uint8_t* packed, const Packed& p,
              const float* bias, int64_t nb, int64_t ne, float* y) {
#if defined(__x86_64__)
  std::vector<float> xsum(static_cast<size_t>(s.m * (s.k / s.gs)), 0.0f);
  std::vector<float> scratch(static_cast<size_t>(d::simd_linear_scratch_floats(s.m, s.k)), 0.0f);
  const d::LinearArgs a{x,      s.m, s.k, packed, p.scales.data(), p.zeros.data(), bias, s.n, s.gs,
                        s.bits, nb,  ne,  y,      xsum.data(),     scratch.data()};
  d::linear_f32_avx512_gemv(a);
#else
  (void)s, (void)x, (void)packed, (void)p, (void)bias, (void)nb, (void)ne, (void)y;
#endif
}

void i8_gemv(const d::LinearI8Args& a) {
#if defined(__x86_64__)
  d::linear_i8_avx512_gemv(a);
#else
  (void)a;
#endif
}

/// Column ranges that start / end inside 4-row tiles, plus the whole range.
std::vector<std::pair<int64_t, int64_t>> ranges(int64_t n) {
  std::vector<std::pair<int64_t, int64_t>> r = {{0, n}};
  if (n > 3) r.push_back({1, n - 2});
  if (n > 6) r.push_back({3, 4});
  if (n > 9) r.push_back({5, n});
  return r;
}

void expect_same_bits(const std::vector<float>& got, const std::vector<float>& want,
                      const char* what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t t = 0; t < got.size(); ++t)
    ASSERT_EQ(qpart_test::float_bits(got[t]), qpart_test::float_bits(want[t]))
        << what << " at " << t << ": " << got[t] << " vs " << want[t];
}

/// Both kernels on one shape against the scalar kernels, over several column ranges.
void check_case(const Shape& s, bool with_bias, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "m=" << s.m << " k=" << s.k << " n=" << s.n << " gs=" << s.gs
                                  << " bits=" << s.bits << " bias=" << with_bias);
  const auto wf = qpart_test::random_normal(static_cast<size_t>(s.n * s.k), seed, 0.5f);
  const auto x = qpart_test::random_uniform(static_cast<size_t>(s.m * s.k), seed + 1, -2.f, 3.f);
  const auto bias_v = qpart_test::random_normal(static_cast<size_t>(s.n), seed + 2);
  const float* bias = with_bias ? bias_v.data() : nullptr;
  k::Status st;
  const Packed p = qpart_test::quantize(wf, s.n, s.k, s.gs, s.bits, &st);
  ASSERT_EQ(st, k::Status::kOk);
  const Act act = quantize_act(x.data(), s.m, s.k, s.gs, s.bits);

  std::vector<float> fwhole(static_cast<size_t>(s.m * s.n), kSentinel);
  f32_gemv(s, x.data(), p.packed.data(), p, bias, 0, s.n, fwhole.data());
  for (const auto& [nb, ne] : ranges(s.n)) {
    SCOPED_TRACE(testing::Message() << "columns [" << nb << ", " << ne << ")");
    const std::vector<float> init(static_cast<size_t>(s.m * s.n), kSentinel);
    // Integer: bit-exact with the scalar kernel.
    std::vector<float> want = init, got = init;
    d::linear_i8_scalar(
        i8_args(s, act.q.data(), act, p.packed.data(), p, bias, nb, ne, want.data()));
    i8_gemv(i8_args(s, act.q.data(), act, p.packed.data(), p, bias, nb, ne, got.data()));
    expect_same_bits(got, want, "int8");
    // Float: scalar to reassociation tolerance; untouched columns keep the sentinel.
    std::vector<float> fwant = init, fgot = init;
    d::linear_f32_scalar(x.data(), s.m, s.k, p.packed.data(), p.scales.data(), p.zeros.data(), bias,
                         s.n, s.gs, s.bits, nb, ne, fwant.data());
    f32_gemv(s, x.data(), p.packed.data(), p, bias, nb, ne, fgot.data());
    float ymax = 0.0f;
    for (float v : fwant) ymax = std::max(ymax, std::fabs(v));
    const float tol = 2e-4f * (1.0f + ymax);
    for (int64_t i = 0; i < s.m; ++i)
      for (int64_t c = 0; c < s.n; ++c) {
        const size_t t = static_cast<size_t>(i * s.n + c);
        if (c < nb || c >= ne) {
          ASSERT_EQ(fgot[t], kSentinel) << "float wrote outside its range at " << t;
        } else {
          ASSERT_NEAR(fgot[t], fwant[t], tol) << "float at row " << i << " col " << c;
          // Same bits as the whole range: tiles and column tails sum in one order.
          ASSERT_EQ(qpart_test::float_bits(fgot[t]), qpart_test::float_bits(fwhole[t]))
              << "float depends on the column range at row " << i << " col " << c;
        }
      }
  }
}

TEST(Avx512Gemv, EveryWidthPerChannelOddK) {
  SKIP_WITHOUT_AVX512();
  uint32_t seed = 1;
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t kdim : {8, 24, 100, 1030, 4100})
      for (int64_t m : {1, 2, 3, 5, 8})
        check_case({m, kdim, 11, kdim, bits}, (m + bits) % 2 == 0, seed++);
}

TEST(Avx512Gemv, EveryWidthGrouped) {
  SKIP_WITHOUT_AVX512();
  uint32_t seed = 1000;
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t gs : {8, 32, 128})
      // Group counts odd and even; k / gs < 64-code steps, exactly 64, and 64 + tail.
      for (int64_t kdim : {gs, 3 * gs, int64_t{640}, int64_t{1152}})
        for (int64_t m : {1, 4, 6}) {
          if (kdim % gs != 0) continue;
          check_case({m, kdim, 10, gs, bits}, (m + bits + gs) % 2 == 1, seed++);
        }
}

TEST(Avx512Gemv, EveryBatchRow) {
  SKIP_WITHOUT_AVX512();
  uint32_t seed = 5000;
  for (int bits : {3, 4, 8})
    for (int64_t m = 1; m <= d::kFusedMaxRows; ++m) check_case({m, 200, 9, 8, bits}, true, seed++);
}

TEST(Avx512Gemv, SingleColumn) {
  SKIP_WITHOUT_AVX512();
  uint32_t seed = 7000;
  for (int bits = 1; bits <= 8; ++bits) {
    check_case({1, 1030, 1, 1030, bits}, true, seed++);
    check_case({3, 256, 1, 128, bits}, false, seed++);
  }
}

// All codes at their maximum against q = +-127: the largest int32 group sums (vpdpbusd must
// not saturate, e.g. 255 * 127 * 4 per lane and step at 8 bits).
TEST(Avx512Gemv, ExtremeCodesDoNotSaturate) {
  SKIP_WITHOUT_AVX512();
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t gs : {int64_t{4096}, int64_t{128}}) {
      SCOPED_TRACE(testing::Message() << "bits=" << bits << " gs=" << gs);
      const Shape s{2, 4096, 5, gs, bits};
      Packed p;
      p.rows = s.n, p.k = s.k, p.group_size = gs, p.bits = bits;
      const std::vector<uint8_t> codes(static_cast<size_t>(s.n * s.k),
                                       static_cast<uint8_t>(k::max_code(bits)));
      p.packed.assign(static_cast<size_t>(s.n * p.row_bytes()), 0);
      k::pack_rows(codes.data(), s.n, s.k, bits, p.packed.data());
      p.scales.assign(static_cast<size_t>(s.n * p.groups()), k::float_to_half_bits(0.5f));
      p.zeros.assign(static_cast<size_t>(s.n * p.groups()), 0);
      std::vector<float> x(static_cast<size_t>(s.m * s.k), 1.0f);
      for (int64_t j = 0; j < s.k; ++j) x[static_cast<size_t>(s.k + j)] = -1.0f;  // row 1: -127
      const Act act = quantize_act(x.data(), s.m, s.k, gs, bits);
      std::vector<float> want(static_cast<size_t>(s.m * s.n)), got = want;
      d::linear_i8_scalar(
          i8_args(s, act.q.data(), act, p.packed.data(), p, nullptr, 0, s.n, want.data()));
      i8_gemv(i8_args(s, act.q.data(), act, p.packed.data(), p, nullptr, 0, s.n, got.data()));
      expect_same_bits(got, want, "int8");
      // y = 0.5 * max_code * 127 * k * (1/127) per row, +-.
      const float expect = 0.5f * static_cast<float>(k::max_code(bits)) * static_cast<float>(s.k);
      EXPECT_NEAR(got[0], expect, 1e-4f * expect);
      EXPECT_NEAR(got[static_cast<size_t>(s.n)], -expect, 1e-4f * expect);
    }
}

/// `bytes` bytes ending exactly at a PROT_NONE page: any read past the end faults.
class Guarded {
 public:
  explicit Guarded(size_t bytes) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    span_ = (bytes + page - 1) / page * page + page;
    mem_ = mmap(nullptr, span_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(mem_, MAP_FAILED);
    uint8_t* guard = static_cast<uint8_t*>(mem_) + span_ - page;
    EXPECT_EQ(mprotect(guard, page, PROT_NONE), 0);
    data_ = guard - bytes;
  }
  ~Guarded() { munmap(mem_, span_); }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  uint8_t* data() const { return data_; }

 private:
  void* mem_ = nullptr;
  size_t span_ = 0;
  uint8_t* data_ = nullptr;
};

// Packed weights, int8 q and float x each end at a guard page; the last column's last group
// is a partial 64-code step for these k.
TEST(Avx512Gemv, NoReadPastBuffers) {
  SKIP_WITHOUT_AVX512();
  uint32_t seed = 9000;
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t kdim : {8, 100, 1030})
      for (int64_t m : {1, 3}) {
        SCOPED_TRACE(testing::Message() << "bits=" << bits << " k=" << kdim << " m=" << m);
        const Shape s{m, kdim, 6, kdim, bits};
        const auto wf = qpart_test::random_normal(static_cast<size_t>(s.n * kdim), seed++);
        const auto x = qpart_test::random_normal(static_cast<size_t>(m * kdim), seed++);
        k::Status st;
        const Packed p = qpart_test::quantize(wf, s.n, kdim, kdim, bits, &st);
        ASSERT_EQ(st, k::Status::kOk);
        const Act act = quantize_act(x.data(), m, kdim, kdim, bits);
        Guarded gw(p.packed.size()), gq(act.q.size()), gx(x.size() * sizeof(float));
        std::memcpy(gw.data(), p.packed.data(), p.packed.size());
        std::memcpy(gq.data(), act.q.data(), act.q.size());
        std::memcpy(gx.data(), x.data(), x.size() * sizeof(float));
        std::vector<float> want(static_cast<size_t>(m * s.n)), got = want;
        d::linear_i8_scalar(
            i8_args(s, act.q.data(), act, p.packed.data(), p, nullptr, 0, s.n, want.data()));
        i8_gemv(i8_args(s, reinterpret_cast<const int8_t*>(gq.data()), act, gw.data(), p, nullptr,
                        0, s.n, got.data()));
        expect_same_bits(got, want, "int8");
        std::vector<float> fgot(want.size());
        f32_gemv(s, reinterpret_cast<const float*>(gx.data()), gw.data(), p, nullptr, 0, s.n,
                 fgot.data());
        std::vector<float> fwant(want.size());
        d::linear_f32_scalar(x.data(), m, kdim, p.packed.data(), p.scales.data(), p.zeros.data(),
                             nullptr, s.n, kdim, bits, 0, s.n, fwant.data());
        float ymax = 0.0f;
        for (float v : fwant) ymax = std::max(ymax, std::fabs(v));
        for (size_t t = 0; t < fwant.size(); ++t)
          ASSERT_NEAR(fgot[t], fwant[t], 2e-4f * (1.0f + ymax)) << "float at " << t;
      }
}

// The float kernel for m <= kDigitMaxRows writes x as four int8 digits of a power-of-two scale
// S (|x - digits| <= S * 2^-22 <= max|x| * 2^-27): its error against the exact result must stay
// within that representation error plus float rounding of the group values and their sum,
//   |y - exact| <= 2^-26 max|x| sum|w| + (groups + 3) 2^-23 sum|x w|,
// on activations spanning 2^-40 .. 2^20 (random signs, exact zeros, one row all zero), where a
// fixed-point representation of x would lose the small ones. Every width, per channel and
// groups of 128.
TEST(Avx512Gemv, FloatDigitsStayWithinTheirErrorBound) {
  SKIP_WITHOUT_AVX512();
  std::mt19937 rng(4242);
  std::uniform_real_distribution<float> expo(-40.0f, 20.0f), unit(0.5f, 1.0f);
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t gs : {int64_t{0}, int64_t{128}})
      for (int64_t m = 1; m <= d::kDigitMaxRows; ++m) {
        const int64_t kdim = 1000 + 24 * bits, n = 9, group = gs == 0 ? kdim : gs;
        if (kdim % group != 0) continue;
        SCOPED_TRACE(testing::Message() << "bits=" << bits << " gs=" << group << " m=" << m);
        const auto wf = qpart_test::random_normal(static_cast<size_t>(n * kdim), 77 + bits);
        std::vector<float> x(static_cast<size_t>(m * kdim));
        for (size_t t = 0; t < x.size(); ++t) {
          const float mag = std::ldexp(unit(rng), static_cast<int>(expo(rng)));
          x[t] = (t % 7 == 3) ? 0.0f : ((rng() & 1) ? mag : -mag);
        }
        if (m == 3) std::fill(x.begin() + 2 * kdim, x.end(), 0.0f);
        k::Status st;
        const Packed p = qpart_test::quantize(wf, n, kdim, group, bits, &st);
        ASSERT_EQ(st, k::Status::kOk);
        const std::vector<float> w = qpart_test::dequantize(p);  // s * (q - z): exact in float
        std::vector<float> got(static_cast<size_t>(m * n));
        f32_gemv(Shape{m, kdim, n, group, bits}, x.data(), p.packed.data(), p, nullptr, 0, n,
                 got.data());
        for (int64_t i = 0; i < m; ++i) {
          double amax = 0.0;
          for (int64_t j = 0; j < kdim; ++j)
            amax = std::max(amax, std::fabs(double(x[i * kdim + j])));
          for (int64_t c = 0; c < n; ++c) {
            double exact = 0.0, sum_w = 0.0, sum_xw = 0.0;
            for (int64_t j = 0; j < kdim; ++j) {
              const double xv = x[i * kdim + j], wv = w[c * kdim + j];
              exact += xv * wv;
              sum_w += std::fabs(wv);
              sum_xw += std::fabs(xv * wv);
            }
            const double bound =
                std::ldexp(amax * sum_w, -26) + std::ldexp(double(kdim / group + 3) * sum_xw, -23);
            ASSERT_LE(std::fabs(got[i * n + c] - exact), bound)
                << "row " << i << " col " << c << ": " << got[i * n + c] << " vs " << exact;
          }
        }
      }
}

}  // namespace
