// Float max pool (qpart_kernels.h): the portable rows (the reference of the SIMD ones and the
// kernel of ISA rows without their own) and the dispatch through the ISA table.
#include <cmath>
#include <cstdint>

#include "isa_table.h"
#include "max_pool2d_impl.h"
#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace {

using detail::pool_take;

struct PortableRows {
  static void hrow(const MaxPool2dShape& s, const float* row, int64_t j_begin, int64_t j_end,
                   float* out) {
    for (int64_t j = j_begin; j < j_end; ++j) {
      const float* w = row + j * s.stride_w - s.pad_w;
      float acc = w[0];
      for (int64_t t = 1; t < s.kw; ++t) acc = pool_take(acc, w[t]);
      out[j] = acc;
    }
  }

  static void hrow_edge(const MaxPool2dShape& s, const float* row, int64_t j_begin, int64_t j_end,
                        float* out) {
    for (int64_t j = j_begin; j < j_end; ++j) out[j] = detail::hrow_clipped(s, row, j);
  }

  // Row by row over the whole width (loops a compiler can vectorize); out may be rows[0].
  static void vmax(const float* const* rows, int64_t n, int64_t w, float* out) {
    if (out != rows[0])
      for (int64_t j = 0; j < w; ++j) out[j] = rows[0][j];
    for (int64_t r = 1; r < n; ++r) {
      const float* v = rows[r];
      for (int64_t j = 0; j < w; ++j) out[j] = pool_take(out[j], v[j]);
    }
  }
};

void max_pool2d_planes_portable(const MaxPool2dShape& s, const float* x, int64_t planes,
                                float* scratch, float* y) {
  detail::max_pool2d_planes_impl<PortableRows>(s, x, planes, scratch, y);
}

}  // namespace

bool max_pool2d_valid(const MaxPool2dShape& s) {
  if (s.h_in < 1 || s.w_in < 1 || s.kh < 1 || s.kw < 1 || s.stride_h < 1 || s.stride_w < 1)
    return false;
  if (s.pad_h < 0 || s.pad_w < 0 || 2 * s.pad_h > s.kh || 2 * s.pad_w > s.kw) return false;
  return s.h_in + 2 * s.pad_h >= s.kh && s.w_in + 2 * s.pad_w >= s.kw;
}

int64_t max_pool2d_scratch_floats(const MaxPool2dShape& s) {
  return detail::pool_ring_rows(s.kh) * s.w_out() + 16;
}

void max_pool2d_f32(CpuIsa isa, const MaxPool2dShape& s, const float* x, int64_t planes,
                    float* scratch, float* y) {
  const auto fn = detail::isa_kernels(isa).fn.max_pool2d_planes;
  (fn ? fn : max_pool2d_planes_portable)(s, x, planes, scratch, y);
}

void max_pool2d_f32(const MaxPool2dShape& s, const float* x, int64_t planes, float* scratch,
                    float* y) {
  max_pool2d_f32(active_cpu_isa(), s, x, planes, scratch, y);
}

}  // namespace kernels
}  // namespace qpart
