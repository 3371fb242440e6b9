// Integer path (int8 activations x low-bit codes): the activation quantizer, the scalar int
// kernel against a double-precision model of the same arithmetic, and every SIMD int kernel
// (AVX2; NEON with and without sdot) against the scalar int kernel, for every width 1..8,
// odd k / tails, m = 1..9, n = 1 and column tails, per-channel and grouped, split column
// ranges, and a guard-page over-read check.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "dispatch.h"
#include "qpart_kernels.h"
#include "test_util.h"

namespace {

namespace k = qpart::kernels;
namespace d = qpart::kernels::detail;
using qpart_test::Packed;

struct Kernel {
  const char* name;
  k::CpuIsa layout;  // isa whose activation layout the kernel reads
  std::function<void(const d::LinearI8Args&)> fn;
};

std::vector<Kernel> simd_kernels() {
  std::vector<Kernel> out;
#if defined(__x86_64__)
  if (k::cpu_isa_supported(k::CpuIsa::kAvx2))
    out.push_back({"avx2", k::CpuIsa::kAvx2, d::linear_i8_avx2});
  if (k::cpu_isa_supported(k::CpuIsa::kAvx512)) {
    out.push_back({"avx512_gemv", k::CpuIsa::kAvx512, d::linear_i8_avx512_gemv});
    out.push_back({"avx512_gemm", k::CpuIsa::kAvx512, d::linear_i8_avx512_gemm});
  }
  if (k::cpu_isa_supported(k::CpuIsa::kAmx)) {
    out.push_back({"amx_gemm", k::CpuIsa::kAmx, d::linear_i8_amx_gemm});
  }
#endif
#if defined(__aarch64__)
  out.push_back({"neon", k::CpuIsa::kNeon, d::linear_i8_neon});
  if (k::cpu_has_dotprod()) out.push_back({"neon_dot", k::CpuIsa::kNeon, d::linear_i8_neon_dot});
#endif
  return out;
}

struct Act {
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> gsum;
};

Act quantize_act(k::CpuIsa isa, const std::vector<float>& x, int64_t m, int64_t kdim, int64_t gs,
                 int bits) {
  Act a;
  a.q.assign(static_cast<size_t>(m * kdim), 99);
  a.scale.assign(static_cast<size_t>(m), -1.0f);
  a.gsum.assign(static_cast<size_t>(m * (kdim / gs)), 12345);
  EXPECT_EQ(k::quantize_activations_i8(isa, x.data(), m, kdim, gs, bits, a.q.data(), a.scale.data(),
                                       a.gsum.data()),
            k::Status::kOk);
  return a;
}

std::vector<float> run(const std::function<void(const d::LinearI8Args&)>& fn, const Act& act,
                       int64_t m, const Packed& p, const float* bias, int64_t n_begin,
                       int64_t n_end, std::vector<float> y) {
  const d::LinearI8Args args{act.q.data(),    act.scale.data(), act.gsum.data(), m,     p.k,
                             p.packed.data(), p.scales.data(),  p.zeros.data(),  bias,  p.rows,
                             p.group_size,    p.bits,           n_begin,         n_end, y.data()};
  fn(args);
  return y;
}

// Double-precision model: dequantized weights x (q * scale_x), summing |terms| for the bound.
void model(const std::vector<float>& w, const Act& act, int64_t m, int64_t kdim, int64_t n,
           const float* bias, std::vector<double>* y, std::vector<double>* mag) {
  y->assign(static_cast<size_t>(m * n), 0.0);
  mag->assign(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t c = 0; c < n; ++c) {
      double s = 0, a = 0;
      for (int64_t j = 0; j < kdim; ++j) {
        const double t = static_cast<double>(w[c * kdim + j]) * act.q[i * kdim + j] * act.scale[i];
        s += t;
        a += std::fabs(t);
      }
      (*y)[i * n + c] = s + (bias ? bias[c] : 0.0);
      (*mag)[i * n + c] = a + (bias ? std::fabs(bias[c]) : 0.0);
    }
}

void check_case(int64_t m, int64_t kdim, int64_t n, int64_t gs, int bits, bool with_bias,
                uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "m=" << m << " k=" << kdim << " n=" << n << " gs=" << gs
                                  << " bits=" << bits << " bias=" << with_bias);
  const auto wf = qpart_test::random_normal(static_cast<size_t>(n * kdim), seed, 0.5f);
  const auto x = qpart_test::random_uniform(static_cast<size_t>(m * kdim), seed + 1, -2.f, 3.f);
  const auto bias_v = qpart_test::random_normal(static_cast<size_t>(n), seed + 2);
  const float* bias = with_bias ? bias_v.data() : nullptr;
  k::Status st;
  const Packed p = qpart_test::quantize(wf, n, kdim, gs, bits, &st);
  ASSERT_EQ(st, k::Status::kOk);
  const std::vector<float> init(static_cast<size_t>(m * n), -777.25f);

  const Act act = quantize_act(k::CpuIsa::kScalar, x, m, kdim, gs, bits);
  const auto ref = run(d::linear_i8_scalar, act, m, p, bias, 0, n, init);
  std::vector<double> want, mag;
  model(qpart_test::dequantize(p), act, m, kdim, n, bias, &want, &mag);
  for (size_t t = 0; t < ref.size(); ++t)
    ASSERT_NEAR(ref[t], want[t], 1e-5 * mag[t] + 1e-6) << "scalar int vs model at " << t;

  for (const Kernel& kern : simd_kernels()) {
    SCOPED_TRACE(kern.name);
    const Act sa = quantize_act(kern.layout, x, m, kdim, gs, bits);
    ASSERT_EQ(sa.scale, act.scale);
    ASSERT_EQ(sa.gsum, act.gsum);
    const auto got = run(kern.fn, sa, m, p, bias, 0, n, init);
    for (size_t t = 0; t < ref.size(); ++t)
      ASSERT_NEAR(got[t], ref[t], 1e-5 * mag[t] + 1e-6) << "at " << t;
    // Column split: identical to the whole range (per-element arithmetic is split-free).
    if (n > 2) {
      auto part = run(kern.fn, sa, m, p, bias, 0, n / 2 + 1, init);
      part = run(kern.fn, sa, m, p, bias, n / 2 + 1, n, part);
      ASSERT_EQ(part, got);
    }
    // Public dispatch with the same isa agrees too.
    if (k::cpu_isa_supported(kern.layout)) {
      std::vector<float> y = init;
      k::linear_i8(kern.layout, sa.q.data(), sa.scale.data(), sa.gsum.data(), m, kdim,
                   p.packed.data(), p.scales.data(), p.zeros.data(), bias, n, gs, bits, 0, n,
                   y.data());
      for (size_t t = 0; t < ref.size(); ++t)
        ASSERT_NEAR(y[t], ref[t], 1e-5 * mag[t] + 1e-6) << "dispatch at " << t;
    }
  }
}

// scripts/cpp_tests.sh --aarch64 also runs these tests under qemu's cortex-a53 model (no sdot)
// with QPART_EXPECT_DOTPROD=0, and under the default (max) model with QPART_EXPECT_DOTPROD=1.
TEST(LinearI8, DotProdDetection) {
  const char* want = std::getenv("QPART_EXPECT_DOTPROD");
  if (want == nullptr) GTEST_SKIP() << "QPART_EXPECT_DOTPROD not set";
  EXPECT_EQ(k::cpu_has_dotprod(), std::strcmp(want, "1") == 0);
}

TEST(LinearI8, QuantizerRoundsAndSums) {
  const int64_t m = 3, kdim = 256, gs = 64;
  auto x = qpart_test::random_normal(static_cast<size_t>(m * kdim), 5);
  for (int64_t j = 0; j < kdim; ++j) x[2 * kdim + j] = 0.0f;  // all-zero row
  x[5] = -9.0f;
  const Act a = quantize_act(k::CpuIsa::kScalar, x, m, kdim, gs, 4);
  for (int64_t i = 0; i < m; ++i) {
    float amax = 0;
    for (int64_t j = 0; j < kdim; ++j) amax = std::max(amax, std::fabs(x[i * kdim + j]));
    EXPECT_EQ(a.scale[i], amax / 127.0f);
    for (int64_t g = 0; g < kdim / gs; ++g) {
      int32_t s = 0;
      for (int64_t j = g * gs; j < (g + 1) * gs; ++j) {
        const int want =
            a.scale[i] > 0 ? static_cast<int>(std::nearbyint(x[i * kdim + j] / a.scale[i])) : 0;
        EXPECT_EQ(a.q[i * kdim + j], std::max(-127, std::min(127, want)));
        s += a.q[i * kdim + j];
      }
      EXPECT_EQ(a.gsum[i * (kdim / gs) + g], s);
    }
  }
  EXPECT_EQ(a.q[5], -127);
  EXPECT_EQ(a.scale[2], 0.0f);
}

TEST(LinearI8, QuantizerRejectsNonFinite) {
  std::vector<float> x(64, 1.0f);
  std::vector<int8_t> q(64);
  float s;
  int32_t gs;
  x[7] = std::nanf("");
  EXPECT_EQ(
      k::quantize_activations_i8(k::CpuIsa::kScalar, x.data(), 1, 64, 64, 4, q.data(), &s, &gs),
      k::Status::kNonFinite);
  x[7] = INFINITY;
  EXPECT_EQ(
      k::quantize_activations_i8(k::CpuIsa::kScalar, x.data(), 1, 64, 64, 4, q.data(), &s, &gs),
      k::Status::kNonFinite);
}

TEST(LinearI8, PlaneLayoutIsAPermutation) {
  const int64_t kdim = 384, gs = 128;
  const auto x = qpart_test::random_normal(static_cast<size_t>(2 * kdim), 9);
  for (int bits = 1; bits <= 8; ++bits) {
    const Act nat = quantize_act(k::CpuIsa::kScalar, x, 2, kdim, gs, bits);
    const Act perm = quantize_act(k::CpuIsa::kAvx2, x, 2, kdim, gs, bits);  // layout only
    std::vector<int8_t> a = nat.q, b = perm.q;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    EXPECT_EQ(a, b) << bits;
    if (bits != 1 && bits != 2 && bits != 4) {
      EXPECT_EQ(nat.q, perm.q) << bits;
    }
  }
}

TEST(LinearI8, EveryWidthPerChannel) {
  uint32_t seed = 100;
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t kdim : {8, 37, 100, 256, 333})
      for (int64_t m : {1, 2, 3, 4, 5})
        check_case(m, kdim, 7, kdim, bits, (m + bits) % 2 == 0, seed++);
}

TEST(LinearI8, EveryWidthGrouped) {
  uint32_t seed = 500;
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t gs : {32, 64, 128})
      for (int64_t m : {1, 6, 9}) check_case(m, 384, 5, gs, bits, m != 6, seed++);
}

TEST(LinearI8, SingleColumnAndColumnTails) {
  uint32_t seed = 900;
  for (int bits = 1; bits <= 8; ++bits)
    for (int64_t n : {1, 2, 3, 9, 13})
      check_case(bits % 2 ? 1 : 7, 256, n, 128, bits, true, seed++);
}

TEST(LinearI8, ExtremeCodesDoNotSaturate) {
  // All codes at 2^bits - 1 (weights >= 0, zero point 0) and activations at +-127: the
  // largest pair sums the s16 accumulation of each kernel has to hold.
  // m = 6 and 10 run the batched (panel) tiles of the SIMD kernels.
  for (int bits = 1; bits <= 8; ++bits)
    for (const int64_t m : {2, 6, 10}) {
      const int64_t kdim = 1024, n = 3;
      std::vector<float> wf(static_cast<size_t>(n * kdim), 1.0f);
      std::vector<float> x(static_cast<size_t>(m * kdim), 5.0f);
      for (int64_t i = 1; i < m; i += 2)
        for (int64_t j = 0; j < kdim; ++j) x[i * kdim + j] = -5.0f;
      k::Status st;
      const Packed p = qpart_test::quantize(wf, n, kdim, kdim, bits, &st);
      ASSERT_EQ(st, k::Status::kOk);
      const Act act = quantize_act(k::CpuIsa::kScalar, x, m, kdim, kdim, bits);
      const std::vector<float> init(static_cast<size_t>(m * n), 0.0f);
      const auto ref = run(d::linear_i8_scalar, act, m, p, nullptr, 0, n, init);
      for (const Kernel& kern : simd_kernels()) {
        const Act sa = quantize_act(kern.layout, x, m, kdim, kdim, bits);
        const auto got = run(kern.fn, sa, m, p, nullptr, 0, n, init);
        for (size_t t = 0; t < ref.size(); ++t)
          ASSERT_NEAR(got[t], ref[t], 1e-5 * std::fabs(ref[t])) << kern.name << " bits " << bits;
      }
      EXPECT_NEAR(ref[0], 5.0 * kdim, 0.02 * 5.0 * kdim) << bits;
    }
}

TEST(LinearI8, BatchedTilesEveryWidth) {
  // Batches that run the SIMD kernels' batched tiles (6- and 4-row blocks, leftover rows,
  // 12-column panels with an odd last column), per-channel with a k tail, groups of one to
  // eight 32-code steps.
  uint32_t seed = 1300;
  for (int bits = 1; bits <= 8; ++bits) {
    for (const int64_t m : {4, 7, 10, 13, 64})
      check_case(m, 300, 13, 300, bits, m % 2 == 0, seed++);
    // (1 bit, groups of 256: the AVX2 kernels' float zero-point fold - sum_g s * dot minus
    // sum_g s * z * gsum - cancels beyond this tolerance; its bits are pinned by
    // tests/kernels/test_linear_int8_gemm.py instead.)
    for (const int64_t gs : {32, 128, 256})
      for (const int64_t m : {6, 11, 16})
        if (bits > 1 || gs < 256) check_case(m, 512, 25, gs, bits, m != 6, seed++);
  }
}

TEST(LinearI8, AmxTilesEveryWidth) {
  // Shapes that run the AMX GEMM's 32- and 16-row tiles (k and groups multiples of 64) with
  // VNNI leftover rows, column tails, groups within a K block and one group over several.
  // (1 bit with groups >= 256 left out for the AVX2 kernel's tolerance, as above.)
  uint32_t seed = 1700;
  for (int bits = 1; bits <= 8; ++bits) {
    for (const int64_t m : {16, 41, 64}) {
      if (bits > 1) check_case(m, 1024, 37, 1024, bits, m != 16, seed++);
      for (const int64_t gs : {64, 128, 512})
        if (bits > 1 || gs < 256) check_case(m, 1024, 21, gs, bits, m == 41, seed++);
    }
  }
}

TEST(LinearI8, NoReadPastPackedBuffer) {
  const long page = sysconf(_SC_PAGESIZE);
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t kdim : {96, 200}) {
      const int64_t n = 3, m = 2;
      const auto wf = qpart_test::random_normal(static_cast<size_t>(n * kdim), 77 + bits);
      k::Status st;
      const Packed p = qpart_test::quantize(wf, n, kdim, kdim, bits, &st);
      const size_t bytes = p.packed.size();
      const size_t span = ((bytes + page - 1) / page + 1) * page;
      void* mem = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      ASSERT_NE(mem, MAP_FAILED);
      uint8_t* guard = static_cast<uint8_t*>(mem) + span - page;
      ASSERT_EQ(mprotect(guard, page, PROT_NONE), 0);
      uint8_t* buf = guard - bytes;
      std::memcpy(buf, p.packed.data(), bytes);
      const auto x = qpart_test::random_normal(static_cast<size_t>(m * kdim), 3);
      for (const Kernel& kern : simd_kernels()) {
        const Act sa = quantize_act(kern.layout, x, m, kdim, kdim, bits);
        std::vector<float> y(static_cast<size_t>(m * n));
        const d::LinearI8Args args{sa.q.data(),
                                   sa.scale.data(),
                                   sa.gsum.data(),
                                   m,
                                   kdim,
                                   buf,
                                   p.scales.data(),
                                   p.zeros.data(),
                                   nullptr,
                                   n,
                                   kdim,
                                   bits,
                                   0,
                                   n,
                                   y.data()};
        kern.fn(args);
      }
      munmap(mem, span);
    }
  }
}

}  // namespace

namespace {

// The AVX2 weight quantizer (quantize_rows under the avx2 ISA) is bit-exact with the scalar
// one: every width, per-channel / grouped, odd group lengths, ties, -0, subnormals, all-zero
// groups, and the same error statuses.
TEST(SimdQuantizer, BitExactWithScalar) {
  const k::CpuIsa saved = k::active_cpu_isa();
  std::vector<k::CpuIsa> isas;
  for (k::CpuIsa isa : {k::CpuIsa::kAvx2, k::CpuIsa::kAvx512, k::CpuIsa::kNeon})
    if (k::cpu_isa_supported(isa)) isas.push_back(isa);
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t gs : {int64_t{32}, int64_t{37}, int64_t{128}, int64_t{264}}) {
      const int64_t rows = 5, kdim = gs == 37 ? 37 : 2 * gs;
      auto x = qpart_test::random_normal(static_cast<size_t>(rows * kdim), 40 + bits, 2.0f);
      for (int64_t j = 0; j < kdim; ++j) x[j] = 0.0f;                            // all-zero row
      for (int64_t j = 0; j < kdim; ++j) x[kdim + j] = (j % 7) * 0.25f - 0.75f;  // ties
      x[2 * kdim] = -0.0f;
      for (int64_t j = 0; j < kdim; ++j) x[3 * kdim + j] = 1e-42f * static_cast<float>(j % 5);
      const int64_t groups = kdim / gs, rb = k::packed_row_bytes(kdim, bits);
      std::vector<uint8_t> p0(rows * rb), z0(rows * groups);
      std::vector<uint16_t> s0(rows * groups);
      ASSERT_TRUE(k::set_cpu_isa(k::CpuIsa::kScalar));
      ASSERT_EQ(
          k::quantize_rows(x.data(), 0, rows, kdim, gs, bits, p0.data(), s0.data(), z0.data()),
          k::Status::kOk);
      for (k::CpuIsa isa : isas) {
        std::vector<uint8_t> p1(rows * rb, 0xAB), z1(rows * groups);
        std::vector<uint16_t> s1(rows * groups);
        ASSERT_TRUE(k::set_cpu_isa(isa));
        ASSERT_EQ(
            k::quantize_rows(x.data(), 0, rows, kdim, gs, bits, p1.data(), s1.data(), z1.data()),
            k::Status::kOk);
        EXPECT_EQ(p0, p1) << bits << " " << gs;
        EXPECT_EQ(s0, s1) << bits << " " << gs;
        EXPECT_EQ(z0, z1) << bits << " " << gs;
        auto bad = x;
        bad[kdim + 3] = std::nanf("");
        EXPECT_EQ(
            k::quantize_rows(bad.data(), 0, rows, kdim, gs, bits, p1.data(), s1.data(), z1.data()),
            k::Status::kNonFinite);
        bad[kdim + 3] = 3e38f;
        bad[kdim + 4] = -3e38f;
        EXPECT_EQ(
            k::quantize_rows(bad.data(), 0, rows, kdim, gs, bits, p1.data(), s1.data(), z1.data()),
            k::Status::kScaleOverflow);
      }
    }
  }
  k::set_cpu_isa(saved);
}

}  // namespace
