// AVX-512 batched kernels (x86/linear_avx512_gemm.cpp, m > kFusedMaxRows), called directly:
// the int8 VNNI kernel bit-exact against linear_i8_scalar, the float kernel against
// linear_f32_scalar to a reassociation tolerance; every width 1..8, per-channel and groups
// 8/32/128, odd K (K % 4 != 0, K % 64 != 0, several K blocks), odd m, N = 1, column ranges
// starting and ending inside a 32-column panel, split ranges, and guard-page over-read checks.
// Skipped when the CPU lacks the avx512 ISA level.
#include <gtest/gtest.h>

#if defined(__x86_64__)
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "dispatch.h"
#include "qpart_kernels.h"
#include "test_util.h"

namespace {

namespace k = qpart::kernels;
namespace d = qpart::kernels::detail;
using qpart_test::Packed;

bool have_avx512() { return k::cpu_isa_supported(k::CpuIsa::kAvx512); }

struct Act {
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> gsum;
};

Act quantize_act(const std::vector<float>& x, int64_t m, int64_t kdim, int64_t gs, int bits) {
  Act a;
  a.q.assign(static_cast<size_t>(m * kdim), 0);
  a.scale.assign(static_cast<size_t>(m), 0.0f);
  a.gsum.assign(static_cast<size_t>(m * (kdim / gs)), 0);
  EXPECT_EQ(k::quantize_activations_i8(k::CpuIsa::kAvx512, x.data(), m, kdim, gs, bits, a.q.data(),
                                       a.scale.data(), a.gsum.data()),
            k::Status::kOk);
  return a;
}

// One test problem: packed weight [n, kdim], float and int8 activations [m, kdim], bias.
struct Problem {
  int64_t m, kdim, n, gs;
  int bits;
  Packed p;
  std::vector<float> x, bias;
  Act act;
};

Problem make_problem(int64_t m, int64_t kdim, int64_t n, int64_t gs, int bits, uint32_t seed) {
  Problem pr{m, kdim, n, gs, bits, {}, {}, {}, {}};
  const auto wf = qpart_test::random_normal(static_cast<size_t>(n * kdim), seed, 0.5f);
  k::Status st;
  pr.p = qpart_test::quantize(wf, n, kdim, gs, bits, &st);
  EXPECT_EQ(st, k::Status::kOk);
  pr.x = qpart_test::random_uniform(static_cast<size_t>(m * kdim), seed + 1, -2.f, 3.f);
  pr.bias = qpart_test::random_normal(static_cast<size_t>(n), seed + 2);
  pr.act = quantize_act(pr.x, m, kdim, gs, bits);
  return pr;
}

std::vector<float> run_i8(void (*fn)(const d::LinearI8Args&), const Problem& pr, bool bias,
                          int64_t n_begin, int64_t n_end, std::vector<float> y) {
  const d::LinearI8Args args{pr.act.q.data(),
                             pr.act.scale.data(),
                             pr.act.gsum.data(),
                             pr.m,
                             pr.kdim,
                             pr.p.packed.data(),
                             pr.p.scales.data(),
                             pr.p.zeros.data(),
                             bias ? pr.bias.data() : nullptr,
                             pr.n,
                             pr.gs,
                             pr.bits,
                             n_begin,
                             n_end,
                             y.data()};
  fn(args);
  return y;
}

std::vector<float> run_f32_gemm(const Problem& pr, bool bias, int64_t n_begin, int64_t n_end,
                                std::vector<float> y) {
  std::vector<float> xsum(static_cast<size_t>(pr.m * (pr.kdim / pr.gs)), 0.0f);
  std::vector<float> scratch(static_cast<size_t>(d::simd_linear_scratch_floats(pr.m, pr.kdim)),
                             0.0f);
  const d::LinearArgs args{pr.x.data(),
                           pr.m,
                           pr.kdim,
                           pr.p.packed.data(),
                           pr.p.scales.data(),
                           pr.p.zeros.data(),
                           bias ? pr.bias.data() : nullptr,
                           pr.n,
                           pr.gs,
                           pr.bits,
                           n_begin,
                           n_end,
                           y.data(),
                           xsum.data(),
                           scratch.data()};
  d::linear_f32_avx512_gemm(args);
  return y;
}

std::vector<float> run_f32_scalar(const Problem& pr, bool bias, int64_t n_begin, int64_t n_end,
                                  std::vector<float> y) {
  d::linear_f32_scalar(pr.x.data(), pr.m, pr.kdim, pr.p.packed.data(), pr.p.scales.data(),
                       pr.p.zeros.data(), bias ? pr.bias.data() : nullptr, pr.n, pr.gs, pr.bits,
                       n_begin, n_end, y.data());
  return y;
}

// sum_k |x w| + |bias| per output (double), the scale of the reassociation error.
std::vector<double> magnitudes(const Problem& pr, bool bias) {
  const std::vector<float> w = qpart_test::dequantize(pr.p);
  std::vector<double> mag(static_cast<size_t>(pr.m * pr.n), 0.0);
  for (int64_t i = 0; i < pr.m; ++i)
    for (int64_t c = 0; c < pr.n; ++c) {
      double a = bias ? std::fabs(pr.bias[c]) : 0.0;
      for (int64_t j = 0; j < pr.kdim; ++j)
        a += std::fabs(static_cast<double>(pr.x[i * pr.kdim + j]) * w[c * pr.kdim + j]);
      mag[i * pr.n + c] = a;
    }
  return mag;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Both kernels on [n_begin, n_end) and on that range split at `split`, against the scalar
// kernels on the same range (outputs outside it must stay untouched).
void check(const Problem& pr, bool bias, int64_t n_begin, int64_t n_end, int64_t split) {
  split = split < n_begin ? n_begin : (split > n_end ? n_end : split);
  SCOPED_TRACE(testing::Message() << "m=" << pr.m << " k=" << pr.kdim << " n=" << pr.n
                                  << " gs=" << pr.gs << " bits=" << pr.bits << " bias=" << bias
                                  << " range=[" << n_begin << "," << n_end << ") split=" << split);
  const std::vector<float> init(static_cast<size_t>(pr.m * pr.n), -777.25f);

  const auto want_i8 = run_i8(d::linear_i8_scalar, pr, bias, n_begin, n_end, init);
  const auto got_i8 = run_i8(d::linear_i8_avx512_gemm, pr, bias, n_begin, n_end, init);
  for (size_t t = 0; t < init.size(); ++t)
    ASSERT_EQ(qpart_test::float_bits(got_i8[t]), qpart_test::float_bits(want_i8[t]))
        << "int8 at " << t << ": " << got_i8[t] << " vs " << want_i8[t];
  auto part = run_i8(d::linear_i8_avx512_gemm, pr, bias, n_begin, split, init);
  part = run_i8(d::linear_i8_avx512_gemm, pr, bias, split, n_end, part);
  ASSERT_TRUE(same_bits(part, got_i8)) << "int8 split";

  const auto want = run_f32_scalar(pr, bias, n_begin, n_end, init);
  const auto got = run_f32_gemm(pr, bias, n_begin, n_end, init);
  const auto mag = magnitudes(pr, bias);
  for (size_t t = 0; t < init.size(); ++t) {
    if (want[t] == init[t]) {
      ASSERT_EQ(got[t], init[t]) << "f32 wrote outside the range at " << t;
    } else {
      ASSERT_NEAR(got[t], want[t], 2e-6 * mag[t] + 1e-6) << "f32 at " << t;
    }
  }
  auto fpart = run_f32_gemm(pr, bias, n_begin, split, init);
  fpart = run_f32_gemm(pr, bias, split, n_end, fpart);
  ASSERT_TRUE(same_bits(fpart, got)) << "f32 split";
}

struct Shape {
  int64_t kdim, gs;
};

// Odd K (per channel: K % 4 != 0, K % 64 != 0, several int8 / float K blocks) and grouped K
// (groups 8 / 32 / 128, group counts odd, groups straddling float K blocks; group 40
// straddles the int8 K blocks too).
const Shape kShapes[] = {{8, 8},      {24, 24},    {100, 100}, {1030, 1030}, {4100, 4100},
                         {24, 8},     {200, 8},    {96, 32},   {1056, 32},   {384, 128},
                         {1152, 128}, {1664, 128}, {1040, 40}};
const int64_t kRows[] = {9, 17, 63, 65};

TEST(Avx512Gemm, EveryWidthGroupAndOddShape) {
  if (!have_avx512()) GTEST_SKIP() << "CPU lacks the avx512 ISA level";
  uint32_t seed = 100;
  int idx = 0;
  for (int bits = 1; bits <= 8; ++bits) {
    for (const Shape& s : kShapes) {
      const int64_t m = kRows[idx++ % 4];
      const int64_t n = s.kdim >= 4096 ? 37 : 70;
      const Problem pr = make_problem(m, s.kdim, n, s.gs, bits, seed += 7);
      check(pr, true, 0, n, 33);       // whole range, split inside the second panel
      check(pr, false, 5, n - 3, 36);  // starts and ends mid-panel
    }
  }
}

TEST(Avx512Gemm, SingleColumnAndEveryRowCount) {
  if (!have_avx512()) GTEST_SKIP() << "CPU lacks the avx512 ISA level";
  for (int bits : {1, 3, 4, 8}) {
    const Problem one = make_problem(17, 264, 1, 8, bits, 500 + bits);  // N = 1
    check(one, true, 0, 1, 1);
    // m = 9..40 covers every register-tile remainder; 300 rows spans several row blocks.
    for (int64_t m : {9, 10, 11, 12, 13, 14, 15, 16, 23, 31, 40, 300}) {
      const Problem pr = make_problem(m, 640, 45, 128, bits, 600 + static_cast<uint32_t>(m));
      check(pr, true, 3, 45, 31);
    }
  }
}

// A buffer whose last byte is followed by an unreadable page.
template <typename T>
struct Guarded {
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE)), span = 0;
  void* mem = nullptr;
  T* data = nullptr;
  explicit Guarded(const std::vector<T>& src) {
    const size_t bytes = src.size() * sizeof(T);
    span = (bytes + page - 1) / page * page + page;
    mem = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t* guard = static_cast<uint8_t*>(mem) + span - page;
    mprotect(guard, page, PROT_NONE);
    data = reinterpret_cast<T*>(guard - bytes);
    std::memcpy(data, src.data(), bytes);
  }
  ~Guarded() { munmap(mem, span); }
};

TEST(Avx512Gemm, AmxTilesBitIdenticalToScalar) {
  // The amx row's GEMM: 32- and 16-row AMX tiles plus VNNI leftover rows, bit for bit the
  // scalar kernel's (as the VNNI GEMM is), one group or several per K block or one group
  // over several K blocks, column tails and a column split.
  if (!k::cpu_isa_supported(k::CpuIsa::kAmx)) GTEST_SKIP() << "CPU lacks the amx ISA level";
  uint32_t seed = 2100;
  for (int bits = 1; bits <= 8; ++bits) {
    for (const int64_t m : {16, 41, 64}) {
      for (const int64_t gs : {1024, 64, 128, 512}) {
        SCOPED_TRACE(testing::Message() << "bits=" << bits << " m=" << m << " gs=" << gs);
        const int64_t n = 37;
        const Problem pr = make_problem(m, 1024, n, gs, bits, seed++);
        const std::vector<float> init(static_cast<size_t>(m * n), -5.5f);
        const auto want = run_i8(d::linear_i8_scalar, pr, m != 16, 0, n, init);
        ASSERT_TRUE(same_bits(run_i8(d::linear_i8_amx_gemm, pr, m != 16, 0, n, init), want));
        auto part = run_i8(d::linear_i8_amx_gemm, pr, m != 16, 0, 20, init);
        part = run_i8(d::linear_i8_amx_gemm, pr, m != 16, 20, n, part);
        ASSERT_TRUE(same_bits(part, want));
      }
    }
  }
}

TEST(Avx512Gemm, NoReadPastBuffers) {
  if (!have_avx512()) GTEST_SKIP() << "CPU lacks the avx512 ISA level";
  for (int bits = 1; bits <= 8; ++bits) {
    for (const Shape& s : {Shape{1030, 1030}, Shape{100, 100}, Shape{200, 8}}) {
      SCOPED_TRACE(testing::Message() << "bits=" << bits << " k=" << s.kdim);
      const int64_t m = 11, n = 35;
      const Problem pr = make_problem(m, s.kdim, n, s.gs, bits, 900 + bits);
      const Guarded<uint8_t> packed(pr.p.packed), zeros(pr.p.zeros);
      const Guarded<uint16_t> scales(pr.p.scales);
      const Guarded<int8_t> q(pr.act.q);
      const Guarded<float> x(pr.x), xs(pr.act.scale), bias(pr.bias);
      const Guarded<int32_t> gsum(pr.act.gsum);
      const std::vector<float> init(static_cast<size_t>(m * n), 0.0f);
      std::vector<float> y = init, want = run_i8(d::linear_i8_scalar, pr, true, 0, n, init);
      const d::LinearI8Args ia{q.data,      xs.data,     gsum.data,  m,         s.kdim,
                               packed.data, scales.data, zeros.data, bias.data, n,
                               s.gs,        bits,        0,          n,         y.data()};
      d::linear_i8_avx512_gemm(ia);
      ASSERT_TRUE(same_bits(y, want));
      std::vector<float> xsum(static_cast<size_t>(m * (s.kdim / s.gs)));
      std::vector<float> scratch(static_cast<size_t>(d::simd_linear_scratch_floats(m, s.kdim)));
      y = init;
      const d::LinearArgs fa{x.data,     m,         s.kdim,   packed.data, scales.data,
                             zeros.data, bias.data, n,        s.gs,        bits,
                             0,          n,         y.data(), xsum.data(), scratch.data()};
      d::linear_f32_avx512_gemm(fa);
      want = run_f32_scalar(pr, true, 0, n, init);
      for (size_t t = 0; t < y.size(); ++t) ASSERT_NEAR(y[t], want[t], 1e-3f) << t;
    }
  }
}

}  // namespace

#endif  // __x86_64__
