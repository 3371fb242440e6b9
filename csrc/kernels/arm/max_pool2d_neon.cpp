// NEON rows of the float max pool (max_pool2d_impl.h), 4 output columns per vector. fmax
// would prefer +0.0 to -0.0 whatever their order, so each tap takes ATen's update as a select:
// v where v > acc or v is NaN (vcgtq | ~vceqq(v, v), vbslq). Stride 1 reads each tap with one
// load, stride 2 with a de-interleaving vld2q (which reads one float past the last tap, so the
// last columns of a row whose vld2q would leave the row run scalar); larger strides run scalar.
// A last partial vector overlaps the previous one (same values written twice).
#if defined(__aarch64__)

#include <arm_neon.h>

#include <cstdint>

#include "../max_pool2d_impl.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

inline float32x4_t take4(float32x4_t acc, float32x4_t v) {
  const uint32x4_t pick = vorrq_u32(vcgtq_f32(v, acc), vmvnq_u32(vceqq_f32(v, v)));
  return vbslq_f32(pick, v, acc);
}

float32x4_t hblock(const MaxPool2dShape& s, const float* row, int64_t j) {
  const float* base = row + j * s.stride_w - s.pad_w;
  if (s.stride_w == 1) {
    float32x4_t acc = vld1q_f32(base);
    for (int64_t t = 1; t < s.kw; ++t) acc = take4(acc, vld1q_f32(base + t));
    return acc;
  }
  float32x4_t acc = vld2q_f32(base).val[0];
  for (int64_t t = 1; t < s.kw; ++t) acc = take4(acc, vld2q_f32(base + t).val[0]);
  return acc;
}

struct NeonRows {
  static void hrow(const MaxPool2dShape& s, const float* row, int64_t j_begin, int64_t j_end,
                   float* out) {
    int64_t vec_end = s.stride_w <= 2 ? j_end : j_begin;
    if (s.stride_w == 2) {  // vld2q of tap kw - 1 for columns [j, j + 4) reads up to 2j + 6 + kw
      const int64_t room = s.w_in - 8 - s.kw + s.pad_w + 1;    // 2j - pad + kw + 6 < w_in
      const int64_t last = room < 0 ? j_begin - 1 : room / 2;  // largest vector start
      vec_end = last + 4 < vec_end ? last + 4 : vec_end;
    }
    if (vec_end - j_begin < 4) vec_end = j_begin;
    int64_t j = j_begin;
    for (; j + 4 <= vec_end; j += 4) vst1q_f32(out + j, hblock(s, row, j));
    if (j < vec_end) vst1q_f32(out + vec_end - 4, hblock(s, row, vec_end - 4));
    for (j = vec_end; j < j_end; ++j) out[j] = hrow_clipped(s, row, j);
  }

  static void hrow_edge(const MaxPool2dShape& s, const float* row, int64_t j_begin, int64_t j_end,
                        float* out) {
    for (int64_t j = j_begin; j < j_end; ++j) out[j] = hrow_clipped(s, row, j);
  }

  static void vmax(const float* const* rows, int64_t n, int64_t w, float* out) {
    if (w < 4) {
      for (int64_t j = 0; j < w; ++j) {
        float acc = rows[0][j];
        for (int64_t r = 1; r < n; ++r) acc = pool_take(acc, rows[r][j]);
        out[j] = acc;
      }
      return;
    }
    const auto block = [&](int64_t j) {
      float32x4_t acc = vld1q_f32(rows[0] + j);
      for (int64_t r = 1; r < n; ++r) acc = take4(acc, vld1q_f32(rows[r] + j));
      vst1q_f32(out + j, acc);
    };
    int64_t j = 0;
    for (; j + 4 <= w; j += 4) block(j);
    if (j < w) block(w - 4);
  }
};

}  // namespace

void max_pool2d_planes_neon(const MaxPool2dShape& s, const float* x, int64_t planes, float* scratch,
                            float* y) {
  max_pool2d_planes_impl<NeonRows>(s, x, planes, scratch, y);
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#endif  // defined(__aarch64__)
