// The CPU ISA table (isa_table.h): its shape (one row per CpuIsa, best first, scalar last,
// names round-trip through the selection API) and, for every row this CPU supports, its
// kernels against the scalar row: the weight quantizer and the int8 activation quantizer
// bit-exact (up to the row's plane layout), linear_f32, linear_i8 and conv2d within fp32
// reassociation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "isa_table.h"
#include "qpart_kernels.h"
#include "test_util.h"

namespace {

namespace k = qpart::kernels;
namespace d = qpart::kernels::detail;
using qpart_test::Packed;

struct IsaGuard {
  k::CpuIsa saved = k::active_cpu_isa();
  ~IsaGuard() { k::set_cpu_isa(saved); }
};

std::vector<const d::IsaKernels*> supported_rows() {
  std::vector<const d::IsaKernels*> out;
  for (const d::IsaKernels& row : d::isa_table())
    if (k::cpu_isa_supported(row.isa)) out.push_back(&row);
  return out;
}

// |a - b| <= 2 (terms + 2) 2^-24 mag + 1e-6: fp32 reassociation over `terms` products whose
// magnitudes sum to `mag`.
void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                  const std::vector<double>& mag, int64_t terms) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t t = 0; t < got.size(); ++t) {
    const double tol = 2.0 * static_cast<double>(terms + 2) * std::ldexp(1.0, -24) * mag[t] + 1e-6;
    ASSERT_NEAR(got[t], want[t], tol) << "at " << t;
  }
}

TEST(IsaTable, OneRowPerIsaBestFirst) {
  const d::IsaRows rows = d::isa_table();
  ASSERT_GE(rows.count, 1u);
  EXPECT_EQ(rows.end()[-1].isa, k::CpuIsa::kScalar);
  std::set<int> keys;
  std::set<std::string> names;
  for (const d::IsaKernels& row : rows) {
    SCOPED_TRACE(row.name);
    EXPECT_TRUE(keys.insert(static_cast<int>(row.isa)).second) << "duplicate key";
    EXPECT_TRUE(names.insert(row.name).second) << "duplicate name";
    EXPECT_NE(std::string(row.name), "auto");
    EXPECT_STREQ(k::cpu_isa_name(row.isa), row.name);
    k::CpuIsa parsed;
    ASSERT_TRUE(k::parse_cpu_isa(row.name, &parsed));
    EXPECT_EQ(parsed, row.isa);
    EXPECT_EQ(&d::isa_kernels(row.isa), &row);
    EXPECT_EQ(k::cpu_isa_supported(row.isa), row.fn.supported != nullptr && row.fn.supported());
    EXPECT_NE(row.linear_scratch_floats, nullptr);
    if (row.fn.supported != nullptr && row.fn.linear_f32 == nullptr) {
      EXPECT_EQ(row.linear_scratch_floats(5, 300), 0);  // built without a SIMD matmul
    }
    if (row.fn.conv2d_tile != nullptr) {
      EXPECT_GT(row.conv_tile.mr, 0);
      EXPECT_GT(row.conv_tile.nr, 0);
      EXPECT_GT(row.conv_tile.lanes, 0);
      EXPECT_EQ(d::kConvPxMax % row.conv_tile.lanes, 0);
    }
    for (int bits = 1; bits <= 8; ++bits) {
      const bool planar = row.i8_plane_layout && (bits == 1 || bits == 2 || bits == 4);
      EXPECT_EQ(d::i8_plane_chunk(row.isa, bits), planar ? 128 / bits : 0) << bits;
    }
  }
  for (k::CpuIsa isa : {k::CpuIsa::kScalar, k::CpuIsa::kAvx2, k::CpuIsa::kNeon, k::CpuIsa::kAvx512,
                        k::CpuIsa::kAmx})
    EXPECT_EQ(keys.count(static_cast<int>(isa)), 1u) << k::cpu_isa_name(isa);
  // best_cpu_isa is the first supported row; the scalar row always is.
  const auto supported = supported_rows();
  ASSERT_FALSE(supported.empty());
  EXPECT_EQ(supported.front()->isa, k::best_cpu_isa());
  EXPECT_EQ(supported.back()->isa, k::CpuIsa::kScalar);
  // The active row follows set_cpu_isa.
  IsaGuard guard;
  for (const d::IsaKernels* row : supported) {
    ASSERT_TRUE(k::set_cpu_isa(row->isa));
    EXPECT_EQ(&d::active_isa_kernels(), row);
  }
}

TEST(IsaTable, EveryRowMatchesScalar) {
  IsaGuard guard;
  uint32_t seed = 4000;
  for (const d::IsaKernels* row : supported_rows()) {
    for (int bits = 1; bits <= 8; ++bits) {
      for (int64_t m : {1, 3, 10}) {
        const int64_t kdim = 200, n = 21, gs = 40;
        SCOPED_TRACE(testing::Message() << "isa=" << row->name << " bits=" << bits << " m=" << m);
        const auto wf = qpart_test::random_normal(static_cast<size_t>(n * kdim), seed++, 0.5f);
        const auto x = qpart_test::random_uniform(static_cast<size_t>(m * kdim), seed++, -2.f, 3.f);
        const auto bias = qpart_test::random_normal(static_cast<size_t>(n), seed++);

        // Weight quantizer: bit-exact with the scalar row.
        k::Status st;
        ASSERT_TRUE(k::set_cpu_isa(k::CpuIsa::kScalar));
        const Packed p = qpart_test::quantize(wf, n, kdim, gs, bits, &st);
        ASSERT_EQ(st, k::Status::kOk);
        ASSERT_TRUE(k::set_cpu_isa(row->isa));
        const Packed q = qpart_test::quantize(wf, n, kdim, gs, bits, &st);
        ASSERT_EQ(st, k::Status::kOk);
        EXPECT_EQ(q.packed, p.packed);
        EXPECT_EQ(q.scales, p.scales);
        EXPECT_EQ(q.zeros, p.zeros);

        // Magnitudes of the products behind each output (for the fp32 tolerance).
        const int64_t groups = kdim / gs;
        std::vector<double> mag(static_cast<size_t>(m * n));
        for (int64_t i = 0; i < m; ++i)
          for (int64_t c = 0; c < n; ++c) {
            double s = std::fabs(bias[c]);
            for (int64_t j = 0; j < kdim; ++j) {
              const double sc = qpart_test::ref_half_value(p.scales[c * groups + j / gs]);
              s += std::fabs(x[i * kdim + j]) * (p.zeros[c * groups + j / gs] + 2.0 * 255) * sc;
            }
            mag[i * n + c] = s;
          }

        // linear_f32 through the active row.
        std::vector<float> ref(static_cast<size_t>(m * n)), got(ref.size());
        d::linear_f32_scalar(x.data(), m, kdim, p.packed.data(), p.scales.data(), p.zeros.data(),
                             bias.data(), n, gs, bits, 0, n, ref.data());
        k::linear_f32(x.data(), m, kdim, p.packed.data(), p.scales.data(), p.zeros.data(),
                      bias.data(), n, gs, bits, 0, n, got.data());
        expect_close(got, ref, mag, kdim);

        // int8 activations in the row's layout: the same values, scales and group sums.
        std::vector<int8_t> q0(static_cast<size_t>(m * kdim)), q1(q0.size());
        std::vector<float> s0(static_cast<size_t>(m)), s1(s0.size());
        std::vector<int32_t> g0(static_cast<size_t>(m * groups)), g1(g0.size());
        ASSERT_EQ(k::quantize_activations_i8(k::CpuIsa::kScalar, x.data(), m, kdim, gs, bits,
                                             q0.data(), s0.data(), g0.data()),
                  k::Status::kOk);
        ASSERT_EQ(k::quantize_activations_i8(row->isa, x.data(), m, kdim, gs, bits, q1.data(),
                                             s1.data(), g1.data()),
                  k::Status::kOk);
        EXPECT_EQ(s1, s0);
        EXPECT_EQ(g1, g0);
        if (d::i8_plane_chunk(*row, bits) == 0) {
          EXPECT_EQ(q1, q0);
        } else {
          auto a = q0, b = q1;
          std::sort(a.begin(), a.end());
          std::sort(b.begin(), b.end());
          EXPECT_EQ(b, a);
        }
        std::vector<float> iref(ref.size()), igot(ref.size());
        k::linear_i8(k::CpuIsa::kScalar, q0.data(), s0.data(), g0.data(), m, kdim, p.packed.data(),
                     p.scales.data(), p.zeros.data(), bias.data(), n, gs, bits, 0, n, iref.data());
        k::linear_i8(row->isa, q1.data(), s1.data(), g1.data(), m, kdim, p.packed.data(),
                     p.scales.data(), p.zeros.data(), bias.data(), n, gs, bits, 0, n, igot.data());
        for (size_t t = 0; t < iref.size(); ++t)
          ASSERT_NEAR(igot[t], iref[t], 1e-5 * mag[t] + 1e-6) << "i8 at " << t;
      }

      // conv2d with the row's plan against the scalar row's plan.
      SCOPED_TRACE(testing::Message() << "isa=" << row->name << " bits=" << bits << " conv2d");
      const k::Conv2dShape s{2, 6, 9, 8, 10, 3, 3, 1, 1, 1, 1, 1, 1, 2};
      const int64_t kk = s.k();
      const auto wf = qpart_test::random_normal(static_cast<size_t>(s.c_out * kk), seed++, 0.5f);
      const auto x = qpart_test::random_normal(
          static_cast<size_t>(s.batch * s.c_in * s.h_in * s.w_in), seed++);
      const auto bias = qpart_test::random_normal(static_cast<size_t>(s.c_out), seed++);
      k::Status st;
      const Packed p = qpart_test::quantize(wf, s.c_out, kk, kk, bits, &st);
      ASSERT_EQ(st, k::Status::kOk);
      const int64_t out_n = s.batch * s.c_out * s.h_out() * s.w_out();
      auto run_conv = [&](k::CpuIsa isa) {
        const k::Conv2dPlan plan = k::conv2d_plan(s, isa, 2);
        EXPECT_EQ(plan.isa, isa);
        EXPECT_LE(plan.scratch_floats, k::conv2d_scratch_floats(s));
        std::vector<float> scratch(static_cast<size_t>(plan.scratch_floats));
        std::vector<float> y(static_cast<size_t>(out_n), -5.0f);
        k::conv2d_f32_items(plan, x.data(), s, p.packed.data(), p.scales.data(), p.zeros.data(),
                            bias.data(), kk, bits, 0, plan.items, scratch.data(), y.data());
        return y;
      };
      ASSERT_TRUE(k::set_cpu_isa(k::CpuIsa::kScalar));
      const auto cref = run_conv(k::CpuIsa::kScalar);
      ASSERT_TRUE(k::set_cpu_isa(row->isa));
      const auto cgot = run_conv(row->isa);
      // Every input value and weight can contribute: bound by the sum over all of them.
      double xmax = 0.0;
      for (float v : x) xmax = std::max(xmax, static_cast<double>(std::fabs(v)));
      std::vector<double> cmag(static_cast<size_t>(out_n));
      for (int64_t t = 0; t < out_n; ++t) {
        const int64_t co = (t / (s.h_out() * s.w_out())) % s.c_out;
        const double sc = qpart_test::ref_half_value(p.scales[co]);
        cmag[t] = std::fabs(bias[co]) + kk * xmax * (p.zeros[co] + 2.0 * 255) * sc;
      }
      expect_close(cgot, cref, cmag, kk);
    }
  }
}

}  // namespace
