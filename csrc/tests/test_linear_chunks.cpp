// The dynamic column hand-out of the small-batch matmuls (ColumnChunks, linear_f32_chunks,
// linear_i8_chunks): every ISA, every width, per-channel and grouped weights, odd shapes;
// the chunked results must equal one linear_f32 / linear_i8 call over all columns bit for bit,
// whatever the chunk size and however the chunks are spread over (simulated) threads.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "qpart_kernels.h"
#include "test_util.h"

namespace {

namespace k = qpart::kernels;
using qpart_test::Packed;

struct Guard {  // restores the ISA active before the test
  k::CpuIsa saved = k::active_cpu_isa();
  ~Guard() { k::set_cpu_isa(saved); }
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(LinearChunks, ChunkSizeAndHandOutDoNotChangeBits) {
  Guard guard;
  const k::CpuIsa isas[] = {k::CpuIsa::kScalar, k::CpuIsa::kAvx2, k::CpuIsa::kAvx512,
                            k::CpuIsa::kNeon};
  struct Shape {
    int64_t n, k, gs, m;
  };
  const Shape shapes[] = {
      {37, 200, 200, 1}, {45, 320, 64, 1}, {29, 384, 128, 3}, {70, 129, 129, 1}};
  for (k::CpuIsa isa : isas) {
    if (!k::cpu_isa_supported(isa)) continue;
    ASSERT_TRUE(k::set_cpu_isa(isa));
    for (int bits = 1; bits <= 8; ++bits) {
      for (const Shape& s : shapes) {
        k::Status st;
        const std::vector<float> w = qpart_test::random_normal(s.n * s.k, 11u + bits, 1.0f);
        const Packed p = qpart_test::quantize(w, s.n, s.k, s.gs, bits, &st);
        ASSERT_EQ(st, k::Status::kOk);
        const std::vector<float> x = qpart_test::random_normal(s.m * s.k, 7u + bits, 1.0f);
        const std::vector<float> bias = qpart_test::random_normal(s.n, 5u, 1.0f);
        std::vector<float> ref(s.m * s.n);
        k::linear_f32(x.data(), s.m, s.k, p.packed.data(), p.scales.data(), p.zeros.data(),
                      bias.data(), s.n, s.gs, bits, 0, s.n, ref.data());
        // int8 path: quantized activations once, then one call over all columns.
        const int64_t groups = s.k / s.gs;
        std::vector<int8_t> q(s.m * s.k);
        std::vector<float> xs(s.m);
        std::vector<int32_t> gsum(s.m * groups);
        ASSERT_EQ(k::quantize_activations_i8(isa, x.data(), s.m, s.k, s.gs, bits, q.data(),
                                             xs.data(), gsum.data()),
                  k::Status::kOk);
        std::vector<float> ref8(s.m * s.n);
        k::linear_i8(isa, q.data(), xs.data(), gsum.data(), s.m, s.k, p.packed.data(),
                     p.scales.data(), p.zeros.data(), bias.data(), s.n, s.gs, bits, 0, s.n,
                     ref8.data());
        for (int64_t chunk : {int64_t{8}, int64_t{16}, k::linear_gemv_chunk(s.m, s.k, bits)}) {
          for (int workers : {1, 2, 3}) {
            std::vector<float> y(s.m * s.n, -1.0f), y8(s.m * s.n, -1.0f);
            k::ColumnChunks work, work8;
            work.n = work8.n = s.n;
            work.chunk = work8.chunk = chunk;
            std::vector<std::thread> pool;
            for (int t = 0; t < workers; ++t) {
              pool.emplace_back([&] {
                k::linear_f32_chunks(x.data(), s.m, s.k, p.packed.data(), p.scales.data(),
                                     p.zeros.data(), bias.data(), s.n, s.gs, bits, work, y.data());
                k::linear_i8_chunks(isa, q.data(), xs.data(), gsum.data(), s.m, s.k,
                                    p.packed.data(), p.scales.data(), p.zeros.data(), bias.data(),
                                    s.n, s.gs, bits, work8, y8.data());
              });
            }
            for (std::thread& t : pool) t.join();
            EXPECT_TRUE(same_bits(y, ref)) << k::cpu_isa_name(isa) << " bits " << bits << " n "
                                           << s.n << " chunk " << chunk << " workers " << workers;
            EXPECT_TRUE(same_bits(y8, ref8)) << "i8 " << k::cpu_isa_name(isa) << " bits " << bits
                                             << " n " << s.n << " chunk " << chunk;
          }
        }
      }
    }
  }
}

TEST(LinearChunks, ChunkSizes) {
  EXPECT_EQ(k::linear_gemv_chunk(9, 4096, 4), 0);  // beyond the GEMV path: static split
  const int64_t c = k::linear_gemv_chunk(1, 4096, 4);
  EXPECT_EQ(c % 8, 0);
  EXPECT_EQ(c, k::kGemvChunkBytes / 2048);
  EXPECT_EQ(k::linear_gemv_chunk(1, 1 << 20, 8), 8);  // at least 8 columns
  k::ColumnChunks work;
  work.n = 20;
  work.chunk = 8;
  int64_t b = 0, e = 0;
  ASSERT_TRUE(work.take(&b, &e));
  EXPECT_EQ(b, 0);
  EXPECT_EQ(e, 8);
  ASSERT_TRUE(work.take(&b, &e));
  ASSERT_TRUE(work.take(&b, &e));
  EXPECT_EQ(b, 16);
  EXPECT_EQ(e, 20);
  EXPECT_FALSE(work.take(&b, &e));
}

}  // namespace
