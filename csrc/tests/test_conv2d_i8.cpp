// Integer conv2d: the scalar kernel against an independent model of the documented arithmetic
// (qpart_kernels.h), and every direct SIMD tile kernel (AVX2; NEON with and without sdot; the
// AVX-512 row where the CPU has it) bit-for-bit against the scalar kernel, for every width
// 1..8, strides, padding, dilation, groups / depthwise, odd channel counts and pixel tails,
// per-channel and grouped weights, extreme codes, and work items run in any split; the
// depthwise path (every row with one, its portable and AVX2 tiles) against the definition.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "conv2d_i8_depthwise.h"
#include "conv2d_i8_impl.h"
#include "dispatch.h"
#include "isa_table.h"
#include "qpart_kernels.h"
#include "test_util.h"

namespace {

namespace k = qpart::kernels;
namespace d = qpart::kernels::detail;

using TileFn = void (*)(const d::Conv2dI8Args&, const d::Conv2dI8Tile&, void*);

struct Direct {
  std::string name;
  k::CpuIsa isa;  // plan / packer row
  TileFn tile;    // null: the row's own kernel
};

std::vector<Direct> directs() {
  std::vector<Direct> out;
#if defined(__x86_64__)
  if (k::cpu_isa_supported(k::CpuIsa::kAvx2)) out.push_back({"avx2", k::CpuIsa::kAvx2, nullptr});
  if (k::cpu_isa_supported(k::CpuIsa::kAvx512))
    out.push_back({"avx512", k::CpuIsa::kAvx512, nullptr});
  if (k::cpu_isa_supported(k::CpuIsa::kAmx)) out.push_back({"amx", k::CpuIsa::kAmx, nullptr});
#endif
#if defined(__aarch64__)
  out.push_back({"neon", k::CpuIsa::kNeon, d::conv2d_i8_tile_neon});
  if (k::cpu_has_dotprod())
    out.push_back({"neon_dot", k::CpuIsa::kNeon, d::conv2d_i8_tile_neon_dot});
#endif
  return out;
}

struct Case {
  k::Conv2dShape s;
  int64_t group_size;  // 0: one group per row
  int bits;
};

struct Data {
  std::vector<float> x, bias;
  qpart_test::Packed w;
};

Data make(const Case& c, uint32_t seed) {
  const k::Conv2dShape& s = c.s;
  Data d;
  d.x = qpart_test::random_normal(static_cast<size_t>(s.batch * s.c_in * s.h_in * s.w_in), seed);
  if (s.batch > 1)  // one all-zero image (scale 0)
    std::fill(d.x.begin(), d.x.begin() + s.c_in * s.h_in * s.w_in, 0.0f);
  const int64_t k = s.k();
  const auto wf = qpart_test::random_normal(static_cast<size_t>(s.c_out * k), seed + 1, 0.3f);
  k::Status st;
  const int64_t gs = c.group_size ? c.group_size : k;
  EXPECT_EQ(k % gs, 0) << "bad test case";
  d.w = qpart_test::quantize(wf, s.c_out, k, gs, c.bits, &st);
  EXPECT_EQ(st, k::Status::kOk);
  d.bias = qpart_test::random_normal(static_cast<size_t>(s.c_out), seed + 2);
  return d;
}

// The documented arithmetic, written independently of the kernels.
std::vector<float> model(const Case& c, const Data& dt, bool with_bias) {
  const k::Conv2dShape& s = c.s;
  const int64_t cg = s.c_in / s.groups, opg = s.c_out / s.groups, k = s.k(), taps = s.kh * s.kw;
  const int64_t gs = dt.w.group_size, wg = k / gs, ho = s.h_out(), wo = s.w_out();
  const int64_t img = s.c_in * s.h_in * s.w_in;
  std::vector<int> codes(static_cast<size_t>(s.c_out * k));
  std::vector<uint8_t> unpacked(codes.size());
  k::unpack_rows(dt.w.packed.data(), s.c_out, k, c.bits, unpacked.data());
  std::vector<float> y(static_cast<size_t>(s.batch * s.c_out * ho * wo));
  for (int64_t n = 0; n < s.batch; ++n) {
    float amax = 0.0f;
    for (int64_t i = 0; i < img; ++i) amax = std::max(amax, std::fabs(dt.x[n * img + i]));
    const float sx = amax / 127.0f;
    std::vector<int> q(static_cast<size_t>(img), 0);
    if (sx > 0.0f)
      for (int64_t i = 0; i < img; ++i)
        q[i] = static_cast<int>(
            std::max(-127.0f, std::min(127.0f, std::nearbyint(dt.x[n * img + i] / sx))));
    for (int64_t o = 0; o < s.c_out; ++o) {
      const int64_t g0 = o / opg;
      for (int64_t oy = 0; oy < ho; ++oy)
        for (int64_t ox = 0; ox < wo; ++ox) {
          float a = 0.0f;
          for (int64_t g = 0; g < wg; ++g) {
            int64_t dot = 0, sum = 0;
            for (int64_t j = g * gs; j < (g + 1) * gs; ++j) {
              const int64_t ci = j / taps, r = (j % taps) / s.kw, qq = j % s.kw;
              const int64_t iy = oy * s.stride_h - s.pad_h + r * s.dil_h;
              const int64_t ix = ox * s.stride_w - s.pad_w + qq * s.dil_w;
              if (iy < 0 || iy >= s.h_in || ix < 0 || ix >= s.w_in) continue;
              const int v = q[((g0 * cg + ci) * s.h_in + iy) * s.w_in + ix];
              dot += v * unpacked[o * k + j];
              sum += v;
            }
            const int64_t dd = dot - int64_t{dt.w.zeros[o * wg + g]} * sum;
            const float p = d::conv_i8_rounded(static_cast<float>(dd) *
                                               k::half_bits_to_float(dt.w.scales[o * wg + g]));
            a = a + p;
          }
          y[((n * s.c_out + o) * ho + oy) * wo + ox] =
              d::conv_i8_rounded(a * sx) + (with_bias ? dt.bias[o] : 0.0f);
        }
    }
  }
  return y;
}

// Runs the plan of `isa` with the given tile kernel, the items in `splits` calls (reverse order).
std::vector<float> run(const Case& c, const Data& dt, k::CpuIsa isa, TileFn tile, bool with_bias,
                       int splits = 1, int threads = 1) {
  const k::Conv2dShape& s = c.s;
  std::vector<float> scale(static_cast<size_t>(s.batch));
  EXPECT_EQ(k::conv2d_i8_scales(isa, dt.x.data(), s, scale.data()), k::Status::kOk);
  const k::Conv2dI8Plan plan = k::conv2d_i8_plan(s, dt.w.group_size, isa, threads);
  std::vector<int8_t> input(static_cast<size_t>(plan.input_bytes), 99);
  std::vector<uint8_t> panel(static_cast<size_t>(plan.panel_bytes + 1), 77);
  std::vector<uint8_t> scratch(static_cast<size_t>(plan.scratch_bytes + 1));
  for (int64_t u = 0; u < plan.input_units; ++u)  // one unit per call
    k::conv2d_i8_pack_input(plan, dt.x.data(), s, scale.data(), u, u + 1, input.data());
  k::conv2d_i8_pack_weights(plan, s, dt.w.packed.data(), c.bits, dt.w.zeros.data(), 0, s.c_out,
                            panel.data());
  std::vector<float> y(static_cast<size_t>(s.batch * s.c_out * s.h_out() * s.w_out()), -1234.5f);
  const float* b = with_bias ? dt.bias.data() : nullptr;
  if (tile == nullptr || !plan.direct) {  // weights the direct kernels do not take: scalar
    for (int part = splits - 1; part >= 0; --part) {
      const int64_t i0 = plan.items * part / splits, i1 = plan.items * (part + 1) / splits;
      k::conv2d_i8_items(plan, s, input.data(), panel.data(), scale.data(), dt.w.packed.data(),
                         dt.w.scales.data(), dt.w.zeros.data(), b, dt.w.group_size, c.bits, i0, i1,
                         scratch.data(), y.data());
    }
    return y;
  }
  // A specific tile kernel (NEON with / without sdot): walk the plan's tiles by hand.
  const d::Conv2dI8Args args{&plan.tile_shape,
                             input.data(),
                             panel.data(),
                             scale.data(),
                             dt.w.packed.data(),
                             dt.w.scales.data(),
                             dt.w.zeros.data(),
                             b,
                             dt.w.group_size,
                             c.bits,
                             y.data()};
  const int64_t opg = s.c_out / s.groups, ho = s.h_out();
  for (int64_t item = 0; item < plan.items; ++item) {
    const int64_t pt = item % plan.px_blocks, ct = (item / plan.px_blocks) % plan.co_blocks;
    const int64_t bg = item / (plan.px_blocks * plan.co_blocks);
    d::Conv2dI8Tile t;
    t.image = bg / s.groups;
    t.group = bg % s.groups;
    t.co0 = t.group * opg + ct * plan.co_block;
    t.co_n = std::min(plan.co_block, opg - ct * plan.co_block);
    t.oy0 = pt * plan.px_block;
    t.oy1 = std::min(ho, t.oy0 + plan.px_block);
    tile(args, t, scratch.data());
  }
  return y;
}

void expect_bitwise(const std::vector<float>& got, const std::vector<float>& want,
                    const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(qpart_test::float_bits(got[i]), qpart_test::float_bits(want[i]))
        << what << " at " << i << ": " << got[i] << " vs " << want[i];
}

k::Conv2dShape shape(int64_t n, int64_t ci, int64_t h, int64_t w, int64_t co, int64_t kh,
                     int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                     int64_t dw, int64_t groups) {
  return {n, ci, h, w, co, kh, kw, sh, sw, ph, pw, dh, dw, groups};
}

std::vector<Case> cases(int bits) {
  return {
      {shape(1, 3, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1), 0, bits},     // odd channels, tails
      {shape(2, 8, 12, 10, 9, 3, 3, 2, 2, 1, 1, 1, 1, 1), 0, bits},    // stride 2, 2 images
      {shape(1, 6, 13, 14, 7, 3, 2, 1, 2, 2, 0, 2, 1, 1), 0, bits},    // dilation, asym
      {shape(1, 12, 9, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 3), 0, bits},     // groups
      {shape(1, 10, 11, 9, 10, 3, 3, 1, 1, 1, 1, 1, 1, 10), 0, bits},  // depthwise
      {shape(1, 7, 6, 20, 13, 1, 1, 1, 1, 0, 0, 1, 1, 1), 0, bits},    // 1x1
      {shape(1, 5, 17, 7, 4, 5, 3, 3, 1, 2, 1, 1, 3, 1), 0, bits},     // stride 3, 5x3
      {shape(1, 64, 7, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1), 288, bits},   // grouped, direct
      {shape(1, 64, 5, 6, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1), 32, bits},    // grouped 1x1, direct
      {shape(1, 32, 5, 5, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1), 32, bits},    // grouped, im2col
      {shape(2, 4, 4, 9, 8, 2, 1, 1, 2, 2, 1, 3, 2, 2), 0, bits},      // kw 1, stride_w 2
      {shape(1, 3, 23, 21, 5, 7, 7, 2, 2, 3, 3, 1, 1, 1), 0, bits},    // 3-channel stem
      {shape(1, 3, 23, 21, 5, 7, 7, 2, 2, 3, 3, 1, 1, 1), 49, bits},   // 3 groups, scalar
      {shape(1, 8, 10, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1), 24, bits},    // group 24, im2col
      {shape(1, 8, 6, 40, 5, 3, 3, 1, 2, 1, 1, 1, 1, 1), 24, bits},    // im2col, 20 px, /2
      {shape(2, 8, 5, 37, 3, 3, 3, 1, 1, 1, 1, 1, 2, 1), 24, bits},    // im2col, 37 px, dil
      {shape(1, 64, 6, 5, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1), 96, bits},    // group 96, im2col
      {shape(2, 6, 7, 8, 4, 3, 3, 1, 2, 1, 0, 2, 1, 2), 0, bits},      // 3 per group, dil
      // >= 32 input channels, one group, per channel: the AMX tile where the CPU has one
      {shape(1, 32, 6, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1), 0, bits},    // 8 blocks, 5 out
      {shape(2, 64, 9, 8, 40, 3, 3, 2, 2, 1, 1, 1, 1, 1), 0, bits},   // 16 blocks, /2
      {shape(1, 100, 7, 9, 33, 3, 3, 1, 1, 1, 1, 1, 1, 1), 0, bits},  // 25 blocks: tail
      {shape(1, 70, 11, 5, 17, 1, 1, 1, 1, 0, 0, 1, 1, 1), 0, bits},  // 1x1, 18 blocks
      {shape(1, 48, 8, 12, 70, 3, 2, 1, 2, 2, 0, 2, 1, 1), 0, bits},  // dil, asym, 70 out
      // multiples of 16 output channels on small planes: the lanes tile where the CPU has one
      {shape(1, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1), 0, bits},    // 49 px: 8 x 6 + 1
      {shape(2, 32, 14, 13, 48, 3, 3, 2, 2, 1, 1, 1, 1, 1), 0, bits},  // /2, 3 vectors
      {shape(1, 18, 5, 6, 80, 3, 3, 1, 1, 1, 1, 1, 1, 1), 0, bits},    // channel tail, 4 + 1
      {shape(1, 32, 6, 6, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1), 144, bits},  // 2 weight groups
      {shape(1, 24, 9, 9, 32, 3, 3, 1, 1, 2, 2, 2, 2, 1), 0, bits},    // dilation 2
      {shape(1, 160, 3, 4, 32, 1, 1, 1, 1, 0, 0, 1, 1, 1), 0, bits},   // 1x1, 12 px
  };
}

std::string name(const Case& c, int i) {
  return "bits " + std::to_string(c.bits) + " case " + std::to_string(i);
}

TEST(Conv2dI8, ScalarMatchesTheDefinition) {
  for (int bits = 1; bits <= 8; ++bits) {
    const auto cs = cases(bits);
    for (size_t i = 0; i < cs.size(); ++i) {
      const Data dt = make(cs[i], 100 * bits + static_cast<uint32_t>(i));
      for (bool bias : {false, true})
        expect_bitwise(run(cs[i], dt, k::CpuIsa::kScalar, nullptr, bias), model(cs[i], dt, bias),
                       name(cs[i], static_cast<int>(i)));
    }
  }
}

TEST(Conv2dI8, EveryDirectKernelIsBitIdenticalToScalar) {
  const auto kernels = directs();
  if (kernels.empty()) GTEST_SKIP() << "no direct SIMD kernel on this CPU";
  for (int bits = 1; bits <= 8; ++bits) {
    const auto cs = cases(bits);
    for (size_t i = 0; i < cs.size(); ++i) {
      const Data dt = make(cs[i], 200 * bits + static_cast<uint32_t>(i));
      const bool bias = i % 2 == 0;
      const auto want = run(cs[i], dt, k::CpuIsa::kScalar, nullptr, bias);
      for (const Direct& kd : kernels) {
        const std::string what = kd.name + " " + name(cs[i], static_cast<int>(i));
        expect_bitwise(run(cs[i], dt, kd.isa, kd.tile, bias), want, what);
        if (kd.tile == nullptr)  // split items, thread-balanced plans
          expect_bitwise(run(cs[i], dt, kd.isa, nullptr, bias, 3, 2), want, what + " split");
      }
    }
  }
}

TEST(Conv2dI8, DirectPlansWhereExpected) {
  const k::Conv2dShape s = shape(1, 8, 7, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  const k::Conv2dShape stem = shape(1, 3, 224, 224, 64, 7, 7, 2, 2, 3, 3, 1, 1, 1);
  const k::Conv2dShape pointwise = shape(1, 3, 8, 8, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1);
  for (const Direct& kd : directs()) {
    for (int64_t gs : {s.k(), int64_t{36 * 2}}) {  // whole 4-channel blocks: the direct layout
      const k::Conv2dI8Plan p = k::conv2d_i8_plan(s, gs, kd.isa);
      EXPECT_TRUE(p.direct && !p.im2col) << kd.name;
    }
    const k::Conv2dI8Plan g24 = k::conv2d_i8_plan(s, 24, kd.isa);  // 24 % 36 != 0
    EXPECT_TRUE(g24.direct && g24.im2col) << kd.name;
    EXPECT_EQ(g24.tile_shape.k(), s.k());
    // Stems run the direct layout, except with AMX (the patch matrix, see AmxPlansWhereExpected).
    EXPECT_EQ(k::conv2d_i8_plan(stem, stem.k(), kd.isa, 2).im2col, kd.isa == k::CpuIsa::kAmx)
        << kd.name;
    EXPECT_FALSE(k::conv2d_i8_plan(stem, 49, kd.isa).direct) << kd.name;  // 49 % 4 != 0
    for (int threads : {2, 3})  // row blocks cut so that every thread gets as many items
      EXPECT_EQ(k::conv2d_i8_plan(stem, stem.k(), kd.isa, threads).items % threads, 0)
          << kd.name << " " << threads;
    const k::Conv2dI8Plan two = k::conv2d_i8_plan(s, 24, kd.isa, 2);
    EXPECT_GE(two.input_units, 4) << kd.name;  // one image's rows packed by both threads
    EXPECT_FALSE(k::conv2d_i8_plan(pointwise, pointwise.k(), kd.isa).im2col) << kd.name;
  }
  EXPECT_FALSE(k::conv2d_i8_plan(s, s.k(), k::CpuIsa::kScalar).direct);
}

TEST(Conv2dI8, LanesPlansWhereExpected) {
  // The lanes tile takes one-group convs of whole 16-channel vectors with small planes and
  // >= 128 codes per output: ResNet-18's 28 x 28, 14 x 14 and 7 x 7 stages, not its 56 x 56
  // one or a 1x1 shortcut over 64 channels.
  const k::Conv2dShape l4 = shape(1, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  const k::Conv2dShape l4s2 = shape(1, 256, 14, 14, 512, 3, 3, 2, 2, 1, 1, 1, 1, 1);
  const k::Conv2dShape l3 = shape(1, 256, 14, 14, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  const k::Conv2dShape l1 = shape(1, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  const k::Conv2dShape odd = shape(1, 64, 7, 7, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  const k::Conv2dShape grouped = shape(1, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1, 1, 2);
  const k::Conv2dShape short64 = shape(1, 64, 56, 56, 128, 1, 1, 2, 2, 0, 0, 1, 1, 1);
  const k::Conv2dShape short128 = shape(1, 128, 28, 28, 256, 1, 1, 2, 2, 0, 0, 1, 1, 1);
  EXPECT_TRUE(d::conv_i8_lanes_applies(short128, short128.k()));
  for (const k::Conv2dShape& s : {l4, l4s2, l3}) EXPECT_TRUE(d::conv_i8_lanes_applies(s, s.k()));
  EXPECT_TRUE(d::conv_i8_lanes_applies(l4, 512 * 9 / 2));  // weight groups of whole blocks
  EXPECT_FALSE(d::conv_i8_lanes_applies(l4, 64));          // the patch matrix's groups
  for (const k::Conv2dShape& s : {l1, odd, grouped, short64})
    EXPECT_FALSE(d::conv_i8_lanes_applies(s, s.k()));
  for (const Direct& kd : directs()) {
    const bool has = d::isa_kernels(kd.isa).fn.conv2d_i8_lanes_tile != nullptr;
    const k::Conv2dI8Plan p = k::conv2d_i8_plan(l4, l4.k(), kd.isa, 2);
    EXPECT_EQ(p.lanes, has && !p.amx) << kd.name;
    EXPECT_FALSE(k::conv2d_i8_plan(l1, l1.k(), kd.isa, 2).lanes) << kd.name;
    if (p.lanes) {
      EXPECT_EQ(p.co_block % 16, 0);
      EXPECT_EQ(p.panel_bytes, l4.c_out * l4.k());
    }
  }
  EXPECT_FALSE(k::conv2d_i8_plan(l4, l4.k(), k::CpuIsa::kScalar).lanes);
  ::setenv("QPART_CONV_I8_LANES", "0", 1);  // the switch back to the pixel tile
  for (const Direct& kd : directs()) EXPECT_FALSE(k::conv2d_i8_plan(l4, l4.k(), kd.isa).lanes);
  ::unsetenv("QPART_CONV_I8_LANES");
}

TEST(Conv2dI8, LanesAndPixelTilesAgree) {
  // Every width on a lanes shape: the lanes tile, then the pixel tile it replaces (the switch).
  const k::Conv2dShape s = shape(2, 40, 9, 7, 96, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  for (const Direct& kd : directs()) {
    if (!k::conv2d_i8_plan(s, s.k(), kd.isa).lanes) continue;
    for (int bits = 1; bits <= 8; ++bits) {
      const Case c{s, bits % 2 ? 0 : 180, bits};  // per channel, and 2 weight groups
      const Data dt = make(c, 900 + static_cast<uint32_t>(bits));
      EXPECT_TRUE(k::conv2d_i8_plan(s, dt.w.group_size, kd.isa).lanes);
      const auto lanes = run(c, dt, kd.isa, nullptr, true, 2, 2);
      ::setenv("QPART_CONV_I8_LANES", "0", 1);
      const auto pixels = run(c, dt, kd.isa, nullptr, true, 2, 2);
      ::unsetenv("QPART_CONV_I8_LANES");
      expect_bitwise(lanes, pixels, kd.name + " bits " + std::to_string(bits));
      expect_bitwise(lanes, model(c, dt, true), kd.name + " model bits " + std::to_string(bits));
    }
  }
}

TEST(Conv2dI8, AmxPlansWhereExpected) {
  // Only the amx row plans the AMX tile, and only for one group with per-channel weights and
  // >= 32 input channels; its channel blocks start at multiples of 32 (two 16-channel tiles).
  const k::Conv2dShape wide = shape(1, 64, 14, 14, 200, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  const k::Conv2dShape narrow = shape(1, 28, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  const k::Conv2dShape grouped = shape(1, 64, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 2);
  for (k::CpuIsa isa : {k::CpuIsa::kScalar, k::CpuIsa::kAvx2, k::CpuIsa::kAvx512})
    EXPECT_FALSE(k::conv2d_i8_plan(wide, wide.k(), isa, 2).amx) << k::cpu_isa_name(isa);
#if defined(__x86_64__)
  for (int threads : {1, 2, 16}) {
    const k::Conv2dI8Plan p = k::conv2d_i8_plan(wide, wide.k(), k::CpuIsa::kAmx, threads);
    EXPECT_TRUE(p.direct && p.amx && !p.im2col);
    EXPECT_EQ(p.co_block % 32, 0) << threads;
    EXPECT_EQ(p.panel_bytes, d::conv_i8_amx_panel_bytes(wide));
  }
  EXPECT_FALSE(k::conv2d_i8_plan(wide, 64 * 9 / 2, k::CpuIsa::kAmx).amx);  // weight groups
  EXPECT_FALSE(k::conv2d_i8_plan(narrow, narrow.k(), k::CpuIsa::kAmx).amx);
  EXPECT_FALSE(k::conv2d_i8_plan(grouped, grouped.k(), k::CpuIsa::kAmx).amx);
  // A 3-channel 7x7 stem: AMX on the patch matrix (147 codes = 37 blocks per output); a
  // 3-channel 3x3 conv (27 codes) stays on the direct AVX-512 tile.
  const k::Conv2dShape stem = shape(1, 3, 224, 224, 64, 7, 7, 2, 2, 3, 3, 1, 1, 1);
  const k::Conv2dI8Plan ps = k::conv2d_i8_plan(stem, stem.k(), k::CpuIsa::kAmx, 2);
  EXPECT_TRUE(ps.direct && ps.im2col && ps.amx);
  EXPECT_EQ(ps.tile_shape.k(), stem.k());
  const k::Conv2dShape small = shape(1, 3, 32, 32, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  const k::Conv2dI8Plan pm = k::conv2d_i8_plan(small, small.k(), k::CpuIsa::kAmx, 2);
  EXPECT_TRUE(pm.direct && !pm.im2col && !pm.amx);
#endif
}

TEST(Conv2dI8, ExtremeCodesAndActivationsDoNotSaturate) {
  // Every code at its maximum and activations at +-127: the largest s16 pair sums.
  for (int bits = 1; bits <= 8; ++bits) {
    const Case c{shape(1, 64, 6, 9, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1), 0, bits};
    Data dt = make(c, 7);
    for (size_t i = 0; i < dt.x.size(); ++i) dt.x[i] = (i % 3 == 0) ? -1.0f : 1.0f;
    std::vector<uint8_t> codes(static_cast<size_t>(c.s.c_out * c.s.k()),
                               static_cast<uint8_t>(k::max_code(bits)));
    k::pack_rows(codes.data(), c.s.c_out, c.s.k(), bits, dt.w.packed.data());
    const auto want = model(c, dt, true);
    expect_bitwise(run(c, dt, k::CpuIsa::kScalar, nullptr, true), want, "scalar");
    for (const Direct& kd : directs())
      expect_bitwise(run(c, dt, kd.isa, kd.tile, true), want,
                     kd.name + " bits " + std::to_string(bits));
  }
}

TEST(Conv2dI8, AmxZeroFoldingIsExact) {
  // The AMX panel holds code - zero as int8 where every difference fits (then no activation
  // sums), else the u8 codes: both bit-identical to the definition, with extreme codes
  // (rows of all-maximum and all-zero codes), activations at +-127 and extreme zero points.
  const k::Conv2dShape s = shape(2, 64, 6, 9, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  for (int bits = 1; bits <= 8; ++bits) {
    const Case c{s, 0, bits};
    Data dt = make(c, 17 + bits);
    for (size_t i = s.c_in * s.h_in * s.w_in; i < dt.x.size(); ++i)
      dt.x[i] = (i % 3 == 0) ? -1.0f : 1.0f;
    std::vector<uint8_t> codes(static_cast<size_t>(s.c_out * s.k()));
    k::unpack_rows(dt.w.packed.data(), s.c_out, s.k(), bits, codes.data());
    std::fill(codes.begin(), codes.begin() + s.k(), static_cast<uint8_t>(k::max_code(bits)));
    std::fill(codes.begin() + s.k(), codes.begin() + 2 * s.k(), uint8_t{0});
    k::pack_rows(codes.data(), s.c_out, s.k(), bits, dt.w.packed.data());
    const uint8_t mx = static_cast<uint8_t>(k::max_code(bits));
    const std::vector<std::pair<std::vector<uint8_t>, bool>> variants = {
        {{0, mx, 128, static_cast<uint8_t>(mx / 2), 1}, bits <= 7},
        {{128, 128, 128, 128, 128}, true},  // 8 bits: codes - 128 span exactly -128..127
        {{129, 0, 0, 0, 0}, false},
        {{255, 255, 0, 255, 7}, false}};
    for (const auto& [zeros, folds] : variants) {
      dt.w.zeros = zeros;
      const std::string what = "bits " + std::to_string(bits) + " zero " + std::to_string(zeros[0]);
      const auto want = model(c, dt, true);
      expect_bitwise(run(c, dt, k::CpuIsa::kScalar, nullptr, true), want, "scalar " + what);
      for (const Direct& kd : directs()) {
        if (kd.isa == k::CpuIsa::kAmx) {
          const k::Conv2dI8Plan plan = k::conv2d_i8_plan(s, s.k(), kd.isa);
          EXPECT_TRUE(plan.amx);
          EXPECT_EQ(k::conv2d_i8_zero_folded(plan, s, bits, zeros.data()), folds) << what;
        }
        expect_bitwise(run(c, dt, kd.isa, kd.tile, true), want, kd.name + " " + what);
      }
    }
  }
}

TEST(Conv2dI8, ScaleIsTheExactAbsMaxOnEveryRow) {
  // int8_scale = max |x| / 127 and kNonFinite for any NaN / Inf, on every supported row (the
  // AVX2 kernel keeps four maxima at once): every length up to 100 (vector tails), the maximum
  // and a non-finite value at every position.
  std::vector<k::CpuIsa> isas;
  for (const d::IsaKernels& row : d::isa_table())
    if (k::cpu_isa_supported(row.isa)) isas.push_back(row.isa);
  const std::vector<float> base = qpart_test::random_normal(100, 41);
  for (int64_t n = 0; n <= 100; ++n) {
    for (int64_t at = 0; at < std::max<int64_t>(n, 1); ++at) {
      std::vector<float> x(base.begin(), base.begin() + n);
      if (n > 0) x[static_cast<size_t>(at)] = (at % 2 ? -1.0f : 1.0f) * 1000.5f;
      float amax = 0.0f;
      for (float v : x) amax = std::fabs(v) > amax ? std::fabs(v) : amax;
      for (k::CpuIsa isa : isas) {
        float scale = -1.0f;
        ASSERT_EQ(k::int8_scale(isa, x.data(), n, &scale), k::Status::kOk);
        EXPECT_EQ(scale, amax / 127.0f) << k::cpu_isa_name(isa) << " n " << n << " at " << at;
      }
      if (n == 0) continue;
      for (float bad : {std::nanf(""), -INFINITY}) {
        std::vector<float> y = x;
        y[static_cast<size_t>(at)] = bad;
        for (k::CpuIsa isa : isas) {
          float scale = -1.0f;
          EXPECT_EQ(k::int8_scale(isa, y.data(), n, &scale), k::Status::kNonFinite)
              << k::cpu_isa_name(isa) << " n " << n << " at " << at;
          EXPECT_EQ(scale, 0.0f);
        }
      }
    }
  }
}

TEST(Conv2dI8, RejectsNonFiniteInput) {
  const Case c{shape(2, 3, 5, 5, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1), 0, 4};
  Data dt = make(c, 3);
  dt.x[80] = std::nanf("");
  std::vector<float> y(static_cast<size_t>(2 * 2 * 25));
  for (k::CpuIsa isa : {k::CpuIsa::kScalar, k::best_cpu_isa()})
    EXPECT_EQ(k::conv2d_i8(isa, dt.x.data(), c.s, dt.w.packed.data(), dt.w.scales.data(),
                           dt.w.zeros.data(), nullptr, c.s.k(), 4, y.data()),
              k::Status::kNonFinite);
}

TEST(Conv2dI8, EpilogueEqualsASeparateAddAndRelu) {
  // The residual add and ReLU run on each tile: the values of the plain convolution followed
  // by y + r and max(y, 0) as separate float operations, on every row (NaN and -0.0 included).
  // The second shape reaches the AMX tile (>= 32 input channels), which fuses them into its
  // stores.
  for (const Case& c : {Case{shape(2, 6, 9, 7, 10, 3, 3, 2, 1, 1, 1, 1, 1, 1), 0, 3},
                        Case{shape(2, 40, 9, 10, 33, 3, 3, 1, 1, 1, 1, 1, 1, 1), 0, 3}}) {
    const Data dt = make(c, 11);
    const int64_t n = c.s.batch * c.s.c_out * c.s.h_out() * c.s.w_out();
    std::vector<float> res = qpart_test::random_normal(static_cast<size_t>(n), 12);
    res[0] = std::nanf("");
    res[1] = -0.0f;
    std::vector<k::CpuIsa> isas{k::CpuIsa::kScalar};
    for (const Direct& kd : directs())
      if (kd.tile == nullptr) isas.push_back(kd.isa);
    for (k::CpuIsa isa : isas) {
      std::vector<float> plain(static_cast<size_t>(n)), fused(plain.size());
      ASSERT_EQ(k::conv2d_i8(isa, dt.x.data(), c.s, dt.w.packed.data(), dt.w.scales.data(),
                             dt.w.zeros.data(), dt.bias.data(), c.s.k(), 3, plain.data()),
                k::Status::kOk);
      for (bool relu : {false, true}) {
        for (const float* r :
             {static_cast<const float*>(nullptr), static_cast<const float*>(res.data())}) {
          const k::ConvEpilogue ep{r, relu};
          ASSERT_EQ(k::conv2d_i8(isa, dt.x.data(), c.s, dt.w.packed.data(), dt.w.scales.data(),
                                 dt.w.zeros.data(), dt.bias.data(), c.s.k(), 3, fused.data(), ep),
                    k::Status::kOk);
          std::vector<float> want = plain;
          for (int64_t i = 0; i < n; ++i) {
            if (r != nullptr) want[i] = want[i] + r[i];
            if (relu) want[i] = want[i] < 0.0f ? 0.0f : want[i];
          }
          expect_bitwise(fused, want, "epilogue isa " + std::to_string(static_cast<int>(isa)));
        }
      }
    }
  }
}

// ---- the depthwise path (conv2d_i8_depthwise.h) ----------------------------------------------

std::vector<Case> depthwise_cases(int bits) {
  return {
      {shape(1, 5, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5), 0, bits},    // odd sizes, tails
      {shape(2, 6, 13, 17, 12, 3, 3, 2, 2, 1, 1, 1, 1, 6), 0, bits},  // stride 2, m 2, batch 2
      {shape(1, 3, 12, 40, 9, 5, 3, 1, 2, 2, 1, 2, 1, 3), 0, bits},   // asymmetric, dilation
      {shape(1, 4, 7, 7, 4, 3, 3, 3, 1, 0, 2, 1, 3, 4), 0, bits},     // stride 3, dilation 3
      {shape(1, 2, 30, 70, 2, 3, 3, 2, 2, 1, 1, 2, 2, 2), 0, bits},   // stride 2, dilation 2
      {shape(1, 1, 28, 28, 8, 5, 5, 1, 1, 2, 2, 1, 1, 1), 0, bits},   // one channel, m 8
      {shape(1, 4, 10, 21, 4, 2, 4, 1, 3, 1, 1, 1, 1, 4), 0, bits},   // even kw, stride_w 3
      {shape(1, 3, 9, 9, 6, 1, 1, 1, 1, 0, 0, 1, 1, 3), 0, bits},     // 1x1
      {shape(1, 3, 11, 13, 6, 3, 3, 1, 1, 1, 1, 1, 1, 3), 1, bits},   // one code per group
      {shape(1, 3, 11, 13, 3, 3, 3, 2, 2, 1, 1, 1, 1, 3), 3, bits},   // a group per kernel row
      {shape(1, 2, 9, 14, 4, 2, 6, 1, 2, 1, 2, 1, 1, 2), 3, bits},    // groups split tap pairs
      {shape(3, 8, 7, 7, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8), 0, bits},     // batch 3, 7x7
      {shape(1, 6, 33, 45, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6), 0, bits},   // 5 vectors + a tail
      {shape(1, 2, 5, 300, 2, 3, 3, 1, 1, 1, 1, 1, 1, 2), 0, bits},   // wide rows
  };
}

// The plan of `isa` with its items walked by hand through `tile` (any depthwise kernel).
std::vector<float> run_depthwise(const Case& c, const Data& dt, k::CpuIsa isa, TileFn tile,
                                 bool with_bias) {
  const k::Conv2dShape& s = c.s;
  std::vector<float> scale(static_cast<size_t>(s.batch));
  EXPECT_EQ(k::conv2d_i8_scales(isa, dt.x.data(), s, scale.data()), k::Status::kOk);
  const k::Conv2dI8Plan plan = k::conv2d_i8_plan(s, dt.w.group_size, isa, 2);
  EXPECT_TRUE(plan.depthwise);
  EXPECT_EQ(plan.panel_bytes, 0);
  std::vector<int8_t> input(static_cast<size_t>(plan.input_bytes), 99);
  std::vector<uint8_t> scratch(static_cast<size_t>(plan.scratch_bytes + 1));
  k::conv2d_i8_pack_input(plan, dt.x.data(), s, scale.data(), 0, plan.input_units, input.data());
  std::vector<float> y(static_cast<size_t>(s.batch * s.c_out * s.h_out() * s.w_out()), -1234.5f);
  const d::Conv2dI8Args args{&s,
                             input.data(),
                             nullptr,
                             scale.data(),
                             dt.w.packed.data(),
                             dt.w.scales.data(),
                             dt.w.zeros.data(),
                             with_bias ? dt.bias.data() : nullptr,
                             dt.w.group_size,
                             c.bits,
                             y.data()};
  const int64_t m = s.c_out / s.groups, ho = s.h_out();
  for (int64_t item = plan.items - 1; item >= 0; --item) {
    d::Conv2dI8Tile t;
    t.image = item / plan.px_blocks / s.groups;
    t.group = item / plan.px_blocks % s.groups;
    t.co0 = t.group * m;
    t.co_n = m;
    t.oy0 = item % plan.px_blocks * plan.px_block;
    t.oy1 = std::min(ho, t.oy0 + plan.px_block);
    tile(args, t, scratch.data());
  }
  return y;
}

TEST(Conv2dI8, DepthwiseIsBitIdenticalToTheDefinition) {
  std::vector<std::pair<std::string, k::CpuIsa>> rows;
  for (k::CpuIsa isa : {k::CpuIsa::kAvx512, k::CpuIsa::kAvx2, k::CpuIsa::kNeon})
    if (k::cpu_isa_supported(isa)) rows.push_back({k::cpu_isa_name(isa), isa});
  for (int bits = 1; bits <= 8; ++bits) {
    const auto cs = depthwise_cases(bits);
    for (size_t i = 0; i < cs.size(); ++i) {
      const Data dt = make(cs[i], 300 * bits + static_cast<uint32_t>(i));
      for (bool bias : {false, true}) {
        const std::string what = name(cs[i], static_cast<int>(i)) + (bias ? " bias" : "");
        const auto want = model(cs[i], dt, bias);
        expect_bitwise(run(cs[i], dt, k::CpuIsa::kScalar, nullptr, bias), want, "scalar " + what);
        for (const auto& [row, isa] : rows) {
          expect_bitwise(run(cs[i], dt, isa, nullptr, bias), want, row + " " + what);
          expect_bitwise(run(cs[i], dt, isa, nullptr, bias, 3, 2), want, row + " split " + what);
          // The portable tile on the row's layout (the one NEON runs; packed by this row).
          expect_bitwise(run_depthwise(cs[i], dt, isa, d::conv2d_i8_dw_tile_portable, bias), want,
                         row + " portable " + what);
#if defined(__x86_64__)
          if (isa != k::CpuIsa::kNeon)
            expect_bitwise(run_depthwise(cs[i], dt, isa, d::conv2d_i8_dw_tile_avx2, bias), want,
                           row + " avx2 tile " + what);
#endif
        }
      }
    }
  }
}

TEST(Conv2dI8, DepthwisePlansWhereExpected) {
  const k::Conv2dShape dw = shape(1, 8, 7, 7, 16, 3, 3, 1, 1, 1, 1, 1, 1, 8);
  const k::Conv2dShape dense = shape(1, 8, 7, 7, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1);
  EXPECT_FALSE(k::conv2d_i8_plan(dw, dw.k(), k::CpuIsa::kScalar).depthwise);  // the reference
  for (k::CpuIsa isa : {k::CpuIsa::kAvx512, k::CpuIsa::kAvx2, k::CpuIsa::kNeon}) {
    if (!k::cpu_isa_supported(isa)) continue;
    EXPECT_TRUE(k::conv2d_i8_plan(dw, dw.k(), isa).depthwise) << k::cpu_isa_name(isa);
    EXPECT_FALSE(k::conv2d_i8_plan(dense, dense.k(), isa).depthwise) << k::cpu_isa_name(isa);
    ::setenv("QPART_CONV_I8_DEPTHWISE", "0", 1);  // the switch back to the generic kernels
    EXPECT_FALSE(k::conv2d_i8_plan(dw, dw.k(), isa).depthwise) << k::cpu_isa_name(isa);
    ::unsetenv("QPART_CONV_I8_DEPTHWISE");
  }
}

TEST(Conv2dI8, DepthwiseExtremeCodesAndEpilogue) {
  // Every code at its maximum, zero points at 0 or the maximum, activations at +-127; then
  // the fused residual / ReLU on the same depthwise shape.
  for (int bits = 1; bits <= 8; ++bits) {
    const Case c{shape(2, 6, 9, 13, 12, 3, 3, 1, 1, 1, 1, 1, 1, 6), 0, bits};
    Data dt = make(c, 17);
    for (size_t i = 0; i < dt.x.size(); ++i) dt.x[i] = (i % 3 == 0) ? -1.0f : 1.0f;
    std::vector<uint8_t> codes(static_cast<size_t>(c.s.c_out * c.s.k()),
                               static_cast<uint8_t>(k::max_code(bits)));
    for (size_t i = 0; i < codes.size(); i += 5) codes[i] = 0;
    k::pack_rows(codes.data(), c.s.c_out, c.s.k(), bits, dt.w.packed.data());
    for (size_t o = 0; o < dt.w.zeros.size(); ++o)
      dt.w.zeros[o] = o % 2 ? static_cast<uint8_t>(k::max_code(bits)) : 0;
    const auto want = model(c, dt, true);
    const int64_t n = static_cast<int64_t>(want.size());
    std::vector<float> res = qpart_test::random_normal(static_cast<size_t>(n), 18);
    res[1] = -0.0f;
    for (k::CpuIsa isa : {k::CpuIsa::kAvx512, k::CpuIsa::kAvx2, k::CpuIsa::kNeon}) {
      if (!k::cpu_isa_supported(isa)) continue;
      const std::string what = std::string(k::cpu_isa_name(isa)) + " bits " + std::to_string(bits);
      expect_bitwise(run(c, dt, isa, nullptr, true), want, what);
      std::vector<float> fused(want.size());
      const k::ConvEpilogue ep{res.data(), true};
      ASSERT_EQ(k::conv2d_i8(isa, dt.x.data(), c.s, dt.w.packed.data(), dt.w.scales.data(),
                             dt.w.zeros.data(), dt.bias.data(), c.s.k(), bits, fused.data(), ep),
                k::Status::kOk);
      std::vector<float> want_ep = want;
      for (int64_t i = 0; i < n; ++i) {
        want_ep[i] = want_ep[i] + res[i];
        want_ep[i] = want_ep[i] < 0.0f ? 0.0f : want_ep[i];
      }
      expect_bitwise(fused, want_ep, what + " epilogue");
    }
  }
}

}  // namespace
