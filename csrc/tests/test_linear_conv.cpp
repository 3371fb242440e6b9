// Packed linear and conv2d against naive double-precision references computed on the
// dequantized weights (dequantize_rows), including output/work-item subranges.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "qpart_kernels.h"
#include "test_util.h"

namespace {

using qpart::kernels::active_cpu_isa;
using qpart::kernels::conv2d_f32;
using qpart::kernels::conv2d_f32_items;
using qpart::kernels::conv2d_plan;
using qpart::kernels::conv2d_scratch_floats;
using qpart::kernels::Conv2dPlan;
using qpart::kernels::Conv2dShape;
using qpart::kernels::CpuIsa;
using qpart::kernels::linear_f32;
using qpart::kernels::Status;
using qpart_test::Packed;

constexpr float kSentinel = -12345.5f;

// fp32 accumulation of `terms` products: allow a few ulps per term of the magnitude sum.
double fp32_tolerance(double abs_sum, int64_t terms) {
  return 4.0 * static_cast<double>(terms + 1) * std::ldexp(1.0, -24) * abs_sum + 1e-30;
}

// ---- linear ---------------------------------------------------------------------------------

struct LinearCase {
  int64_t m, k, n, group_size;
};

void run_linear_case(const LinearCase& c, int bits, bool with_bias, uint32_t seed) {
  SCOPED_TRACE(testing::Message() << "m=" << c.m << " k=" << c.k << " n=" << c.n
                                  << " group_size=" << c.group_size << " bits=" << bits
                                  << " bias=" << with_bias);
  const auto w_f = qpart_test::random_normal(static_cast<size_t>(c.n * c.k), seed);
  const auto x = qpart_test::random_normal(static_cast<size_t>(c.m * c.k), seed + 1000);
  const auto bias_v = qpart_test::random_normal(static_cast<size_t>(c.n), seed + 2000);
  const float* bias = with_bias ? bias_v.data() : nullptr;
  Status st;
  const Packed p = qpart_test::quantize(w_f, c.n, c.k, c.group_size, bits, &st);
  ASSERT_EQ(st, Status::kOk);
  const auto w = qpart_test::dequantize(p);

  auto run = [&](int64_t n_begin, int64_t n_end, std::vector<float>* y) {
    linear_f32(x.data(), c.m, c.k, p.packed.data(), p.scales.data(), p.zeros.data(), bias, c.n,
               c.group_size, bits, n_begin, n_end, y->data());
  };

  // Full output against the double reference.
  std::vector<float> y(static_cast<size_t>(c.m * c.n), kSentinel);
  run(0, c.n, &y);
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t n = 0; n < c.n; ++n) {
      double ref = with_bias ? bias_v[n] : 0.0, abs_sum = with_bias ? std::fabs(bias_v[n]) : 0.0;
      for (int64_t j = 0; j < c.k; ++j) {
        const double t = static_cast<double>(x[i * c.k + j]) * w[n * c.k + j];
        ref += t;
        abs_sum += std::fabs(t);
      }
      ASSERT_NEAR(y[i * c.n + n], ref, fp32_tolerance(abs_sum, c.k)) << "y[" << i << "," << n
                                                                       << "]";
    }
  }

  // Column subranges write exactly their columns, with the same values as the full call.
  const std::pair<int64_t, int64_t> ranges[] = {
      {0, 1}, {c.n / 2, c.n / 2 + 2}, {c.n - 1, c.n}, {2, 2}, {1, c.n - 1}};
  for (auto r : ranges) {
    std::vector<float> ys(static_cast<size_t>(c.m * c.n), kSentinel);
    run(r.first, r.second, &ys);
    for (int64_t i = 0; i < c.m; ++i) {
      for (int64_t n = 0; n < c.n; ++n) {
        const bool inside = n >= r.first && n < r.second;
        ASSERT_EQ(ys[i * c.n + n], inside ? y[i * c.n + n] : kSentinel)
            << "range [" << r.first << "," << r.second << ") y[" << i << "," << n << "]";
      }
    }
  }

  // Splitting the columns across calls reproduces the full result bit for bit.
  std::vector<float> ysplit(static_cast<size_t>(c.m * c.n), kSentinel);
  run(0, 2, &ysplit);
  run(2, 3, &ysplit);
  run(3, c.n, &ysplit);
  EXPECT_EQ(ysplit, y);
}

TEST(Linear, MatchesDoubleReference) {
  const LinearCase cases[] = {
      {1, 33, 7, 33}, {3, 33, 7, 33}, {3, 33, 7, 11}, {1, 65, 5, 65}, {3, 63, 6, 21},
      {1, 64, 7, 32}, {3, 64, 7, 64}, {3, 96, 9, 32}, {2, 128, 5, 32}, {3, 7, 4, 7},
  };
  uint32_t seed = 10;
  for (int bits = 1; bits <= 8; ++bits) {
    for (const auto& c : cases) {
      run_linear_case(c, bits, /*with_bias=*/false, seed++);
      run_linear_case(c, bits, /*with_bias=*/true, seed++);
    }
  }
}

TEST(Linear, ZeroWeightsGiveBias) {
  const int64_t m = 2, k = 16, n = 3;
  const std::vector<float> w(static_cast<size_t>(n * k), 0.0f);
  const auto x = qpart_test::random_normal(static_cast<size_t>(m * k), 3);
  const std::vector<float> bias = {1.5f, -2.0f, 0.25f};
  Status st;
  const Packed p = qpart_test::quantize(w, n, k, 8, 4, &st);
  ASSERT_EQ(st, Status::kOk);
  std::vector<float> y(static_cast<size_t>(m * n), kSentinel);
  linear_f32(x.data(), m, k, p.packed.data(), p.scales.data(), p.zeros.data(), bias.data(), n, 8,
             4, 0, n, y.data());
  EXPECT_EQ(y, (std::vector<float>{1.5f, -2.0f, 0.25f, 1.5f, -2.0f, 0.25f}));
}

// ---- conv2d ---------------------------------------------------------------------------------

Conv2dShape make_shape(int64_t batch, int64_t c_in, int64_t h_in, int64_t w_in, int64_t c_out,
                       int64_t kh, int64_t kw, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                       int64_t pad_w, int64_t dil_h, int64_t dil_w, int64_t groups) {
  Conv2dShape s;
  s.batch = batch;
  s.c_in = c_in;
  s.h_in = h_in;
  s.w_in = w_in;
  s.c_out = c_out;
  s.kh = kh;
  s.kw = kw;
  s.stride_h = stride_h;
  s.stride_w = stride_w;
  s.pad_h = pad_h;
  s.pad_w = pad_w;
  s.dil_h = dil_h;
  s.dil_w = dil_w;
  s.groups = groups;
  return s;
}

// Direct convolution in double; weights [c_out][c_in/groups][kh][kw] (row co, column
// (ci * kh + r) * kw + q), i.e. the packed (ci, r, s) order.
void ref_conv2d(const std::vector<float>& x, const Conv2dShape& s, const std::vector<float>& w,
                const float* bias, std::vector<double>* y, std::vector<double>* abs_sum) {
  const int64_t ho = s.h_out(), wo = s.w_out(), cg = s.c_in / s.groups;
  const int64_t og = s.c_out / s.groups;
  y->assign(static_cast<size_t>(s.batch * s.c_out * ho * wo), 0.0);
  abs_sum->assign(y->size(), 0.0);
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t co = 0; co < s.c_out; ++co) {
      const int64_t g = co / og;
      for (int64_t oy = 0; oy < ho; ++oy) {
        for (int64_t ox = 0; ox < wo; ++ox) {
          double acc = bias ? bias[co] : 0.0;
          double mag = bias ? std::fabs(bias[co]) : 0.0;
          for (int64_t ci = 0; ci < cg; ++ci) {
            for (int64_t r = 0; r < s.kh; ++r) {
              for (int64_t q = 0; q < s.kw; ++q) {
                const int64_t iy = oy * s.stride_h - s.pad_h + r * s.dil_h;
                const int64_t ix = ox * s.stride_w - s.pad_w + q * s.dil_w;
                if (iy < 0 || iy >= s.h_in || ix < 0 || ix >= s.w_in) continue;
                const double xv =
                    x[((b * s.c_in + g * cg + ci) * s.h_in + iy) * s.w_in + ix];
                const double wv = w[co * s.k() + (ci * s.kh + r) * s.kw + q];
                acc += xv * wv;
                mag += std::fabs(xv * wv);
              }
            }
          }
          const size_t idx = static_cast<size_t>(((b * s.c_out + co) * ho + oy) * wo + ox);
          (*y)[idx] = acc;
          (*abs_sum)[idx] = mag;
        }
      }
    }
  }
}

// Every ISA this build and CPU can run, scalar (the reference) first.
std::vector<CpuIsa> supported_isas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512, CpuIsa::kNeon}) {
    if (qpart::kernels::cpu_isa_supported(isa)) out.push_back(isa);
  }
  return out;
}

// Restores the ISA active before the test.
struct IsaGuard {
  CpuIsa saved = active_cpu_isa();
  ~IsaGuard() { qpart::kernels::set_cpu_isa(saved); }
};

// A copy of `v` that ends exactly where an inaccessible page starts, so a kernel reading or
// writing one element past the end faults.
template <typename T>
class Guarded {
 public:
  explicit Guarded(const std::vector<T>& v) : n_(v.size()) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t bytes = (n_ * sizeof(T) + page - 1) / page * page;
    size_ = bytes + page;
    void* mem = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<uint8_t*>(mem);
    if (mprotect(base_ + bytes, page, PROT_NONE) != 0) throw std::runtime_error("mprotect");
    data_ = reinterpret_cast<T*>(base_ + bytes - n_ * sizeof(T));
    if (n_ > 0) std::memcpy(data_, v.data(), n_ * sizeof(T));
  }
  ~Guarded() { munmap(base_, size_); }
  Guarded(const Guarded&) = delete;
  Guarded& operator=(const Guarded&) = delete;
  T* data() { return data_; }
  std::vector<T> vec() const { return std::vector<T>(data_, data_ + n_); }

 private:
  size_t n_, size_;
  uint8_t* base_;
  T* data_;
};

// Runs conv2d with `isa` on guarded buffers and checks: the double reference; that every
// work item writes exactly its tile; that any split of the items (threads) gives the same
// bits; and that the (image, group) convenience entry point agrees bit for bit.
void run_conv_case(const Conv2dShape& s, int64_t group_size, int bits, bool with_bias,
                   uint32_t seed, CpuIsa isa) {
  SCOPED_TRACE(testing::Message()
               << "isa=" << qpart::kernels::cpu_isa_name(isa) << " batch=" << s.batch
               << " c_in=" << s.c_in << " " << s.h_in << "x" << s.w_in
               << " c_out=" << s.c_out << " kernel=" << s.kh << "x" << s.kw << " stride="
               << s.stride_h << "," << s.stride_w << " pad=" << s.pad_h << "," << s.pad_w
               << " dil=" << s.dil_h << "," << s.dil_w << " groups=" << s.groups
               << " group_size=" << group_size << " bits=" << bits << " bias=" << with_bias);
  IsaGuard guard;
  ASSERT_TRUE(qpart::kernels::set_cpu_isa(isa));
  const int64_t k = s.k(), ho = s.h_out(), wo = s.w_out();
  ASSERT_GT(ho, 0);
  ASSERT_GT(wo, 0);
  ASSERT_EQ(k % group_size, 0);
  const auto w_f = qpart_test::random_normal(static_cast<size_t>(s.c_out * k), seed);
  const auto x_v =
      qpart_test::random_normal(static_cast<size_t>(s.batch * s.c_in * s.h_in * s.w_in), seed + 7);
  const auto bias_v = qpart_test::random_normal(static_cast<size_t>(s.c_out), seed + 13);
  Guarded<float> bias_g(bias_v);
  const float* bias = with_bias ? bias_g.data() : nullptr;
  Status st;
  const Packed p = qpart_test::quantize(w_f, s.c_out, k, group_size, bits, &st);
  ASSERT_EQ(st, Status::kOk);
  const auto w = qpart_test::dequantize(p);
  Guarded<float> x(x_v);
  Guarded<uint8_t> packed(p.packed);
  Guarded<uint16_t> scales(p.scales);
  Guarded<uint8_t> zeros(p.zeros);

  const Conv2dPlan plan = conv2d_plan(s, isa);
  ASSERT_EQ(plan.isa, isa);
  const size_t y_size = static_cast<size_t>(s.batch * s.c_out * ho * wo);
  // Scratch starts as NaN so that reading anything not written first would show.
  std::vector<float> scratch(static_cast<size_t>(plan.scratch_floats),
                             std::numeric_limits<float>::quiet_NaN());
  auto run = [&](int64_t item_begin, int64_t item_end, std::vector<float>* y) {
    Guarded<float> yg(*y);
    conv2d_f32_items(plan, x.data(), s, packed.data(), scales.data(), zeros.data(), bias,
                     group_size, bits, item_begin, item_end, scratch.data(), yg.data());
    *y = yg.vec();
  };

  std::vector<double> ref, abs_sum;
  ref_conv2d(x_v, s, w, with_bias ? bias_v.data() : nullptr, &ref, &abs_sum);
  std::vector<float> y(y_size, kSentinel);
  run(0, plan.items, &y);
  for (size_t i = 0; i < y_size; ++i) {
    ASSERT_NEAR(y[i], ref[i], fp32_tolerance(abs_sum[i], k)) << "y flat index " << i;
  }

  // Each work item writes exactly its tile: co_block channels x px_block pixels of one
  // (image, group), numbered as documented in Conv2dPlan.
  const int64_t og = s.c_out / s.groups, pixels = ho * wo;
  for (int64_t item = 0; item < plan.items; ++item) {
    std::vector<float> yi(y_size, kSentinel);
    run(item, item + 1, &yi);
    const int64_t pt = item % plan.px_blocks, ct = (item / plan.px_blocks) % plan.co_blocks;
    const int64_t bg = item / (plan.px_blocks * plan.co_blocks);
    for (int64_t bb = 0; bb < s.batch; ++bb) {
      for (int64_t co = 0; co < s.c_out; ++co) {
        for (int64_t px = 0; px < pixels; ++px) {
          const bool inside = bb * s.groups + co / og == bg && (co % og) / plan.co_block == ct &&
                              px / plan.px_block == pt;
          const size_t idx = static_cast<size_t>((bb * s.c_out + co) * pixels + px);
          ASSERT_EQ(yi[idx], inside ? y[idx] : kSentinel)
              << "item " << item << " image " << bb << " channel " << co << " pixel " << px;
        }
      }
    }
  }

  // Splitting the items (as threads do) reproduces the full result bit for bit.
  std::vector<float> ysplit(y_size, kSentinel);
  const int64_t half = plan.items / 2;
  run(0, half, &ysplit);
  run(half, half, &ysplit);
  run(half, plan.items, &ysplit);
  EXPECT_EQ(ysplit, y);

  // Plans sized for other thread counts give the same bits.
  for (int threads : {2, 3, 4}) {
    const Conv2dPlan other = conv2d_plan(s, isa, threads);
    std::vector<float> scratch_t(static_cast<size_t>(other.scratch_floats));
    Guarded<float> yt(std::vector<float>(y_size, kSentinel));
    conv2d_f32_items(other, x.data(), s, packed.data(), scales.data(), zeros.data(), bias,
                     group_size, bits, 0, other.items, scratch_t.data(), yt.data());
    EXPECT_EQ(yt.vec(), y) << "plan for " << threads << " threads";
  }

  // The (image, group) entry point runs the same tiles.
  std::vector<float> yconv(y_size, kSentinel);
  std::vector<float> scratch2(static_cast<size_t>(conv2d_scratch_floats(s)));
  ASSERT_GE(scratch2.size(), scratch.size());
  conv2d_f32(x.data(), s, packed.data(), scales.data(), zeros.data(), bias, group_size, bits, 0,
             s.batch * s.groups, scratch2.data(), yconv.data());
  EXPECT_EQ(yconv, y);
}

void run_conv_case_all_isas(const Conv2dShape& s, int64_t group_size, int bits,
                            bool with_bias, uint32_t seed) {
  for (CpuIsa isa : supported_isas()) run_conv_case(s, group_size, bits, with_bias, seed, isa);
}

TEST(Conv2d, StridePaddingDilationGroups) {
  // batch 2, c_in 4 -> c_out 6 in 2 groups, 3x3 kernel, 9x7 input, stride 2, pad 1, dil 2.
  const Conv2dShape s = make_shape(2, 4, 9, 7, 6, 3, 3, 2, 2, 1, 1, 2, 2, 2);
  ASSERT_EQ(s.h_out(), 4);
  ASSERT_EQ(s.w_out(), 3);
  uint32_t seed = 500;
  for (int bits = 1; bits <= 8; ++bits) {
    for (int64_t gs : {18, 9}) {
      run_conv_case_all_isas(s, gs, bits, false, seed++);
      run_conv_case_all_isas(s, gs, bits, true, seed++);
    }
  }
}

TEST(Conv2d, AsymmetricShapes) {
  struct Case {
    Conv2dShape shape;
    int64_t group_size;
  };
  const Case cases[] = {
      // 3x2 kernel, stride (1,2), pad (0,1), dilation (1,2), 7x5 input.
      {make_shape(2, 3, 7, 5, 5, 3, 2, 1, 2, 0, 1, 1, 2, 1), 6},
      {make_shape(2, 3, 7, 5, 5, 3, 2, 1, 2, 0, 1, 1, 2, 1), 3},
      // depthwise 3x3, pad 1, 5x5 input.
      {make_shape(2, 4, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 4), 9},
      // 1x1, stride 2, 5x6 input.
      {make_shape(2, 8, 5, 6, 3, 1, 1, 2, 2, 0, 0, 1, 1, 1), 8},
      // groups 2 with 2 outputs per group, 2x3 kernel, padding wider than the kernel reach.
      {make_shape(1, 4, 6, 5, 4, 2, 3, 2, 2, 2, 2, 1, 1, 2), 6},
      // groups 3, odd everything, stride 3, dilation 3.
      {make_shape(2, 3, 11, 13, 6, 3, 3, 3, 3, 1, 2, 3, 3, 3), 3},
  };
  uint32_t seed = 900;
  for (int bits : {1, 2, 3, 4, 5, 8}) {
    for (const auto& c : cases) {
      run_conv_case_all_isas(c.shape, c.group_size, bits, false, seed++);
      run_conv_case_all_isas(c.shape, c.group_size, bits, true, seed++);
    }
  }
}

// Tile edges and odd shapes for every ISA and width: c_out not a multiple of the register
// tile (and more than one channel tile), pixel counts not a multiple of the SIMD width (and
// more than one pixel tile), depth over one K block, 7x7 and 5x3 kernels, 1 output channel,
// 1x1 stride 1, grouped and depthwise, batch > 1.
TEST(Conv2d, TileEdgesEveryIsa) {
  struct Case {
    Conv2dShape shape;
    int64_t group_size;
  };
  const Case cases[] = {
      // 3x3 pad 1: 13 channels, 99 pixels, per-channel.
      {make_shape(1, 5, 9, 11, 13, 3, 3, 1, 1, 1, 1, 1, 1, 1), 45},
      // stride 2, pad 2, batch 2, groups of 12.
      {make_shape(2, 4, 13, 10, 9, 3, 3, 2, 2, 2, 2, 1, 1, 1), 12},
      // dilation 2, pad 2.
      {make_shape(1, 3, 12, 12, 7, 3, 3, 1, 1, 2, 2, 2, 2, 1), 27},
      // 2 groups of 5 channels, batch 2.
      {make_shape(2, 6, 8, 9, 10, 3, 3, 1, 1, 1, 1, 1, 1, 2), 27},
      // depthwise 3x3.
      {make_shape(1, 8, 10, 10, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8), 9},
      // 7x7 stride 2 pad 3 (k = 147: two depth blocks), groups of 49.
      {make_shape(1, 3, 20, 20, 16, 7, 7, 2, 2, 3, 3, 1, 1, 1), 49},
      // 5x3 kernel, asymmetric padding.
      {make_shape(1, 4, 11, 9, 5, 5, 3, 1, 1, 2, 1, 1, 1, 1), 20},
      // one output channel, 1x1.
      {make_shape(1, 16, 6, 7, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1), 8},
      // 1x1 stride 1, batch 2.
      {make_shape(2, 32, 7, 9, 24, 1, 1, 1, 1, 0, 0, 1, 1, 1), 16},
      // k = 576 (5 depth blocks), 70 channels (two channel tiles), 81 pixels, groups of 64.
      {make_shape(1, 64, 9, 9, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1), 64},
      // 900 pixels (several pixel tiles), 3 channels.
      {make_shape(1, 2, 30, 30, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1), 18},
      // batch 3, stride (1, 2), padding (0, 1), dilation (2, 1).
      {make_shape(3, 3, 9, 12, 11, 3, 3, 1, 2, 0, 1, 2, 1, 1), 9},
  };
  uint32_t seed = 3000;
  for (int bits = 1; bits <= 8; ++bits) {
    for (const auto& c : cases) {
      run_conv_case_all_isas(c.shape, c.group_size, bits, (seed & 1) != 0, seed);
      ++seed;
    }
  }
  // Per-channel variant of the multi-block case.
  run_conv_case_all_isas(make_shape(1, 64, 9, 9, 70, 3, 3, 1, 1, 1, 1, 1, 1, 1), 576, 3, true, 7);
}

// Inf/NaN inputs and non-finite scales give the per-term (reference) result on every ISA:
// the SIMD kernels fold the zero points, which would turn Inf into NaN (issue 18).
TEST(Linear, NonFiniteOperandsMatchScalarOnEveryIsa) {
  EXPECT_TRUE(qpart::kernels::fold_exact(nullptr, 0, nullptr, 0));
  const float inf = std::numeric_limits<float>::infinity();
  const float bad[] = {inf, -inf, std::numeric_limits<float>::quiet_NaN(), 2e18f};
  for (float v : bad) EXPECT_FALSE(qpart::kernels::fold_exact(&v, 1, nullptr, 0)) << v;
  const uint16_t half_inf = 0x7c00u, half_one = 0x3c00u;
  EXPECT_FALSE(qpart::kernels::fold_exact(nullptr, 0, &half_inf, 1));
  EXPECT_TRUE(qpart::kernels::fold_exact(nullptr, 0, &half_one, 1));

  const int64_t m = 3, k = 64, n = 9, gs = 32;
  for (int bits : {2, 4, 8}) {
    qpart::kernels::Status st;
    qpart_test::Packed p = qpart_test::quantize(
        qpart_test::random_normal(static_cast<size_t>(n * k), 11), n, k, gs, bits, &st);
    ASSERT_EQ(st, qpart::kernels::Status::kOk);
    for (float v : bad) {
      std::vector<float> x = qpart_test::random_normal(static_cast<size_t>(m * k), 12);
      x[3] = v;
      x[2 * k + 5] = -v;
      std::vector<float> want(static_cast<size_t>(m * n));
      {
        IsaGuard guard;
        ASSERT_TRUE(qpart::kernels::set_cpu_isa(CpuIsa::kScalar));
        qpart::kernels::linear_f32(x.data(), m, k, p.packed.data(), p.scales.data(), p.zeros.data(),
                                   nullptr, n, gs, bits, 0, n, want.data());
      }
      for (CpuIsa isa : supported_isas()) {
        IsaGuard guard;
        ASSERT_TRUE(qpart::kernels::set_cpu_isa(isa));
        std::vector<float> got(static_cast<size_t>(m * n));
        qpart::kernels::linear_f32(x.data(), m, k, p.packed.data(), p.scales.data(), p.zeros.data(),
                                   nullptr, n, gs, bits, 0, n, got.data());
        for (size_t i = 0; i < got.size(); ++i) {
          if (std::isnan(want[i])) {
            EXPECT_TRUE(std::isnan(got[i])) << qpart::kernels::cpu_isa_name(isa) << " " << i;
          } else if (std::isinf(want[i])) {
            EXPECT_EQ(got[i], want[i]) << qpart::kernels::cpu_isa_name(isa) << " " << i;
          } else {
            EXPECT_NEAR(got[i], want[i], 1e-3f * (1.0f + std::fabs(want[i])))
                << qpart::kernels::cpu_isa_name(isa) << " " << i;
          }
        }
      }
    }
  }
}

}  // namespace
