// SIMD (AVX2 on x86-64, NEON on aarch64) packed matmul and conv2d against the scalar path,
// for every width 1..8, odd shapes (k not a multiple of 8 / 32 / the SIMD width, n = 1,
// column and row tails, m = 1..9 across the fused/GEMM switch, several K blocks), per-channel
// and grouped; plus the ISA selection API and a guard-page over-read check.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "qpart_kernels.h"
#include "test_util.h"

namespace {

namespace k = qpart::kernels;
using qpart_test::Packed;

std::vector<k::CpuIsa> simd_isas() {
  std::vector<k::CpuIsa> out;
  for (k::CpuIsa isa : {k::CpuIsa::kAvx2, k::CpuIsa::kAvx512, k::CpuIsa::kNeon}) {
    if (k::cpu_isa_supported(isa)) out.push_back(isa);
  }
  return out;
}

double max_code_d(int bits) { return static_cast<double>((1 << bits) - 1); }

// Restores the ISA active before the test.
struct IsaGuard {
  k::CpuIsa saved = k::active_cpu_isa();
  ~IsaGuard() { k::set_cpu_isa(saved); }
};

std::vector<float> run_linear(k::CpuIsa isa, const std::vector<float>& x, int64_t m,
                              const Packed& p, const float* bias, int64_t n_begin, int64_t n_end,
                              std::vector<float> y) {
  EXPECT_TRUE(k::set_cpu_isa(isa));
  k::linear_f32(x.data(), m, p.k, p.packed.data(), p.scales.data(), p.zeros.data(), bias, p.rows,
                p.group_size, p.bits, n_begin, n_end, y.data());
  return y;
}

void check_linear(k::CpuIsa isa, int64_t m, int64_t kdim, int64_t n, int64_t gs, int bits,
                  bool with_bias, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "isa=" << k::cpu_isa_name(isa) << " m=" << m << " k=" << kdim
                                  << " n=" << n << " gs=" << gs << " bits=" << bits
                                  << " bias=" << with_bias);
  const auto wf = qpart_test::random_normal(static_cast<size_t>(n * kdim), seed, 0.5f);
  const auto x = qpart_test::random_uniform(static_cast<size_t>(m * kdim), seed + 1, -2.f, 3.f);
  const auto bias_v = qpart_test::random_normal(static_cast<size_t>(n), seed + 2);
  const float* bias = with_bias ? bias_v.data() : nullptr;
  k::Status st;
  const Packed p = qpart_test::quantize(wf, n, kdim, gs, bits, &st);
  ASSERT_EQ(st, k::Status::kOk);
  const std::vector<float> init(static_cast<size_t>(m * n), -777.25f);
  const auto ref = run_linear(k::CpuIsa::kScalar, x, m, p, bias, 0, n, init);
  const auto got = run_linear(isa, x, m, p, bias, 0, n, init);

  // Tolerance: fp32 reassociation over k terms of magnitude |x| (|q - z| + z) s (the zero
  // point is folded per group in the fused path).
  const int64_t groups = kdim / gs;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t c = 0; c < n; ++c) {
      double mag = with_bias ? std::fabs(bias_v[c]) : 0.0;
      for (int64_t j = 0; j < kdim; ++j) {
        const double s = qpart_test::ref_half_value(p.scales[c * groups + j / gs]);
        const double z = p.zeros[c * groups + j / gs];
        mag += std::fabs(x[i * kdim + j]) * (z + 2.0 * max_code_d(bits)) * s;
      }
      const double tol = 2.0 * static_cast<double>(kdim + 2) * std::ldexp(1.0, -24) * mag + 1e-6;
      ASSERT_NEAR(got[i * n + c], ref[i * n + c], tol) << "y[" << i << "," << c << "]";
    }
  }

  // Any split of the columns gives the same bits; untouched columns stay untouched.
  if (n >= 2) {
    const int64_t cut = n / 2 + (n > 4 ? 1 : 0);
    auto split = run_linear(isa, x, m, p, bias, 0, cut, init);
    EXPECT_EQ(split[cut], init[cut]);
    split = run_linear(isa, x, m, p, bias, cut, n, split);
    ASSERT_EQ(split, got);
  }
  const auto one = run_linear(isa, x, m, p, bias, n - 1, n, init);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t c = 0; c < n; ++c) {
      ASSERT_EQ(one[i * n + c], c == n - 1 ? got[i * n + c] : init[i * n + c]);
    }
  }
}

TEST(CpuIsa, SelectionApi) {
  IsaGuard guard;
  EXPECT_TRUE(k::cpu_isa_supported(k::CpuIsa::kScalar));
  EXPECT_TRUE(k::cpu_isa_supported(k::best_cpu_isa()));
  k::CpuIsa isa;
  ASSERT_TRUE(k::parse_cpu_isa("scalar", &isa));
  EXPECT_EQ(isa, k::CpuIsa::kScalar);
  ASSERT_TRUE(k::parse_cpu_isa("avx2", &isa));
  EXPECT_EQ(isa, k::CpuIsa::kAvx2);
  ASSERT_TRUE(k::parse_cpu_isa("avx512", &isa));
  EXPECT_EQ(isa, k::CpuIsa::kAvx512);
  ASSERT_TRUE(k::parse_cpu_isa("amx", &isa));
  EXPECT_EQ(isa, k::CpuIsa::kAmx);
  ASSERT_TRUE(k::parse_cpu_isa("neon", &isa));
  EXPECT_EQ(isa, k::CpuIsa::kNeon);
  ASSERT_TRUE(k::parse_cpu_isa("auto", &isa));
  EXPECT_EQ(isa, k::best_cpu_isa());
  EXPECT_FALSE(k::parse_cpu_isa("sse9", &isa));
  EXPECT_FALSE(k::parse_cpu_isa(nullptr, &isa));
  EXPECT_STREQ(k::cpu_isa_name(k::CpuIsa::kAvx2), "avx2");
  EXPECT_STREQ(k::cpu_isa_name(k::CpuIsa::kAvx512), "avx512");
  EXPECT_STREQ(k::cpu_isa_name(k::CpuIsa::kAmx), "amx");
  // AVX-512 kernels fall back on AVX2 ones, so the AVX-512 level implies AVX2; the AMX level
  // is the AVX-512 one plus AMX kernels.
  if (k::cpu_isa_supported(k::CpuIsa::kAvx512)) {
    EXPECT_TRUE(k::cpu_isa_supported(k::CpuIsa::kAvx2));
    EXPECT_EQ(k::best_cpu_isa(),
              k::cpu_isa_supported(k::CpuIsa::kAmx) ? k::CpuIsa::kAmx : k::CpuIsa::kAvx512);
  }
  if (k::cpu_isa_supported(k::CpuIsa::kAmx)) {
    EXPECT_TRUE(k::cpu_isa_supported(k::CpuIsa::kAvx512));
  }
  ASSERT_TRUE(k::set_cpu_isa(k::CpuIsa::kScalar));
  EXPECT_EQ(k::active_cpu_isa(), k::CpuIsa::kScalar);
#if defined(__x86_64__)
  EXPECT_FALSE(k::cpu_isa_supported(k::CpuIsa::kNeon));
  EXPECT_FALSE(k::set_cpu_isa(k::CpuIsa::kNeon));
  EXPECT_EQ(k::active_cpu_isa(), k::CpuIsa::kScalar);
#endif
#if defined(__aarch64__)
  EXPECT_TRUE(k::cpu_isa_supported(k::CpuIsa::kNeon));
  EXPECT_FALSE(k::cpu_isa_supported(k::CpuIsa::kAvx2));
  EXPECT_FALSE(k::cpu_isa_supported(k::CpuIsa::kAvx512));
  EXPECT_EQ(k::best_cpu_isa(), k::CpuIsa::kNeon);
#endif
}

TEST(SimdLinear, EveryWidthOddShapesPerChannel) {
  IsaGuard guard;
  const auto isas = simd_isas();
  if (isas.empty()) GTEST_SKIP() << "no SIMD ISA on this CPU/build";
  uint32_t seed = 1;
  for (k::CpuIsa isa : isas) {
    for (int bits = 1; bits <= 8; ++bits) {
      // k: below one block, odd, not a multiple of 8/32, > one GEMM K block (512).
      for (int64_t kdim : {1, 7, 8, 13, 37, 64, 100, 515, 1030}) {
        for (int64_t m : {1, 2, 3, 4, 5, 9}) {
          for (int64_t n : {1, 2, 5, 19}) {
            check_linear(isa, m, kdim, n, kdim, bits, (seed % 2) == 0, seed);
            ++seed;
          }
        }
      }
    }
  }
}

TEST(SimdLinear, EveryWidthGrouped) {
  IsaGuard guard;
  const auto isas = simd_isas();
  if (isas.empty()) GTEST_SKIP() << "no SIMD ISA on this CPU/build";
  uint32_t seed = 9000;
  struct Case {
    int64_t k, gs;
  };
  const Case cases[] = {{64, 32}, {256, 128}, {96, 32}, {1152, 128}, {48, 8}, {40, 8}};
  for (k::CpuIsa isa : isas) {
    for (int bits = 1; bits <= 8; ++bits) {
      for (const Case& c : cases) {
        for (int64_t m : {1, 2, 3, 4, 6, 7, 8}) {
          for (int64_t n : {1, 3, 6, 17}) {
            check_linear(isa, m, c.k, n, c.gs, bits, (seed % 3) != 0, seed);
            ++seed;
          }
        }
      }
    }
  }
}

TEST(SimdLinear, NonMultipleOf8GroupsFallBack) {
  IsaGuard guard;
  const auto isas = simd_isas();
  if (isas.empty()) GTEST_SKIP() << "no SIMD ISA on this CPU/build";
  for (k::CpuIsa isa : isas) {
    for (int bits : {3, 5}) check_linear(isa, 4, 36, 5, 12, bits, true, 77u + bits);
  }
}

// The last row of the packed buffer ends right before a PROT_NONE page: the SIMD loads must
// not read past it (they read 8-byte windows in the middle of the buffer).
TEST(SimdLinear, NoOverReadAtBufferEnd) {
  IsaGuard guard;
  const auto isas = simd_isas();
  if (isas.empty()) GTEST_SKIP() << "no SIMD ISA on this CPU/build";
  const long page = sysconf(_SC_PAGESIZE);
  void* mem = mmap(nullptr, static_cast<size_t>(2 * page), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  uint8_t* base = static_cast<uint8_t*>(mem);
  ASSERT_EQ(mprotect(base + page, static_cast<size_t>(page), PROT_NONE), 0);
  for (k::CpuIsa isa : isas) {
    for (int bits = 1; bits <= 8; ++bits) {
      for (int64_t kdim : {8, 16, 24, 40, 21}) {
        for (int64_t m : {1, 5}) {
          const int64_t n = 3;
          SCOPED_TRACE(testing::Message() << "isa=" << k::cpu_isa_name(isa) << " bits=" << bits
                                          << " k=" << kdim << " m=" << m);
          const auto wf = qpart_test::random_normal(static_cast<size_t>(n * kdim), 5);
          const auto x = qpart_test::random_normal(static_cast<size_t>(m * kdim), 6);
          k::Status st;
          const Packed p = qpart_test::quantize(wf, n, kdim, kdim, bits, &st);
          ASSERT_EQ(st, k::Status::kOk);
          uint8_t* tail = base + page - p.packed.size();
          std::memcpy(tail, p.packed.data(), p.packed.size());
          std::vector<float> y1(static_cast<size_t>(m * n)), y2(y1.size());
          ASSERT_TRUE(k::set_cpu_isa(isa));
          k::linear_f32(x.data(), m, kdim, tail, p.scales.data(), p.zeros.data(), nullptr, n, kdim,
                        bits, 0, n, y1.data());
          ASSERT_TRUE(k::set_cpu_isa(k::CpuIsa::kScalar));
          k::linear_f32(x.data(), m, kdim, tail, p.scales.data(), p.zeros.data(), nullptr, n, kdim,
                        bits, 0, n, y2.data());
          for (size_t i = 0; i < y1.size(); ++i)
            ASSERT_NEAR(y1[i], y2[i], 1e-3 * (1 + std::fabs(y2[i])));
        }
      }
    }
  }
  munmap(mem, static_cast<size_t>(2 * page));
}

TEST(SimdConv2d, MatchesScalarEveryWidth) {
  IsaGuard guard;
  const auto isas = simd_isas();
  if (isas.empty()) GTEST_SKIP() << "no SIMD ISA on this CPU/build";
  // batch 2, c_in 6 -> c_out 8 in 2 groups, 3x3, 7x6 input, stride 1, pad 1 (k = 27).
  k::Conv2dShape s{2, 6, 7, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1, 2};
  const int64_t kdim = s.k();
  const auto wf = qpart_test::random_normal(static_cast<size_t>(s.c_out * kdim), 3);
  const auto x =
      qpart_test::random_normal(static_cast<size_t>(s.batch * s.c_in * s.h_in * s.w_in), 4);
  const auto bias = qpart_test::random_normal(static_cast<size_t>(s.c_out), 5);
  const size_t y_size = static_cast<size_t>(s.batch * s.c_out * s.h_out() * s.w_out());
  std::vector<float> scratch(static_cast<size_t>(k::conv2d_scratch_floats(s)));
  for (k::CpuIsa isa : isas) {
    for (int bits = 1; bits <= 8; ++bits) {
      SCOPED_TRACE(testing::Message() << "isa=" << k::cpu_isa_name(isa) << " bits=" << bits);
      k::Status st;
      const Packed p = qpart_test::quantize(wf, s.c_out, kdim, kdim, bits, &st);
      ASSERT_EQ(st, k::Status::kOk);
      std::vector<float> y_ref(y_size), y(y_size);
      ASSERT_TRUE(k::set_cpu_isa(k::CpuIsa::kScalar));
      k::conv2d_f32(x.data(), s, p.packed.data(), p.scales.data(), p.zeros.data(), bias.data(),
                    kdim, bits, 0, s.batch * s.groups, scratch.data(), y_ref.data());
      ASSERT_TRUE(k::set_cpu_isa(isa));
      k::conv2d_f32(x.data(), s, p.packed.data(), p.scales.data(), p.zeros.data(), bias.data(),
                    kdim, bits, 0, s.batch * s.groups, scratch.data(), y.data());
      for (size_t i = 0; i < y_size; ++i) {
        ASSERT_NEAR(y[i], y_ref[i], 1e-4 * (1.0 + std::fabs(y_ref[i]))) << "index " << i;
      }
    }
  }
}

}  // namespace
