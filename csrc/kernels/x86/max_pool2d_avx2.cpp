// AVX2 rows of the float max pool (max_pool2d_impl.h), 8 output columns per vector. With
// v the later tap, vmaxps(v, acc) is (v > acc ? v : acc): ATen's update, except that a NaN v
// leaves acc; the NaN taps are therefore collected in a mask and OR-ed in at the end (a NaN
// acc is kept by vmaxps itself; one vcmpunordps covers two taps). Stride 1 reads each tap with one
// load; stride 2 takes two taps from the even and odd elements of two loads (vshufps), combines the
// taps in that lane order and restores it once (vpermpd); larger strides gather. Kernel widths 2
// and 3 (and 1..3 window rows) are compiled with constant trip counts. A last partial vector
// overlaps the previous one (same values written twice), so nothing reads or writes past the row.
// The columns whose windows reach into the padding use masked loads (vmaskmovps, masked
// gathers) with -inf in the lanes outside the row.
#if defined(__x86_64__)

#include <cstdint>

#include "../max_pool2d_impl.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include <immintrin.h>

namespace qpart {
namespace kernels {
namespace detail {
namespace {

// Running maximum of 8 columns: acc (the first tap) and the NaN lanes of the later taps.
struct Acc8 {
  __m256 acc, nan;
  explicit Acc8(__m256 first) : acc(first), nan(_mm256_setzero_ps()) {}
  void take(__m256 v) {
    acc = _mm256_max_ps(v, acc);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  void take2(__m256 v, __m256 w) {  // v, then w; one vcmpunordps finds a NaN in either
    acc = _mm256_max_ps(w, _mm256_max_ps(v, acc));
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, w, _CMP_UNORD_Q));
  }
  __m256 result() const { return _mm256_or_ps(acc, nan); }  // NaN lanes: all ones (a NaN)
};

// The first maximum of n taps in order (n a constant where the caller's is).
inline __m256 first_max(const __m256* tap, int64_t n) {
  Acc8 a(tap[0]);
  int64_t t = 1;
  for (; t + 1 < n; t += 2) a.take2(tap[t], tap[t + 1]);
  if (t < n) a.take(tap[t]);
  return a.result();
}

// Shuffled lane order of the stride-2 taps: output columns 0 1 4 5 | 2 3 6 7 become lanes
// 0 1 2 3 | 4 5 6 7 again with one vpermpd.
inline __m256 unshuffle(__m256 v) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
}

// Loads of a row: row[start, start + 8) (Plain: inside the row), or with -inf outside
// [0, w) (Clipped, for the columns whose windows reach into the padding: a -inf tap never
// replaces the running maximum, so the clipped window's value comes out bit for bit). Masked
// lanes are never read.
struct Plain {
  const float* row;
  __m256 load(int64_t start) const { return _mm256_loadu_ps(row + start); }
  __m256 gather(int64_t start, __m256i idx) const {
    return _mm256_i32gather_ps(row + start, idx, 4);
  }
};
struct Clipped {
  const float* row;
  int64_t w;
  __m256i valid(__m256i i) const {
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), i),
                               _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(w)), i));
  }
  __m256 load(int64_t start) const {
    const __m256i i = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(start)),
                                       _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i m = valid(i);
    const __m256 v = _mm256_maskload_ps(row + start, m);
    return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), v, _mm256_castsi256_ps(m));
  }
  __m256 gather(int64_t start, __m256i idx) const {
    const __m256i i = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(start)), idx);
    return _mm256_mask_i32gather_ps(_mm256_set1_ps(-INFINITY), row, i,
                                    _mm256_castsi256_ps(valid(i)), 4);
  }
};

// 8 output columns whose first tap is at row index `start` (= j * stride - pad); KW > 0: the
// kernel width at compile time (else kw). Each reads exactly the taps of its columns.
template <int KW, typename L>
inline __m256 block_s1(const L& in, int64_t start, int64_t kw) {
  if (KW > 0) {
    __m256 tap[KW > 0 ? KW : 1];
    for (int t = 0; t < KW; ++t) tap[t] = in.load(start + t);
    return first_max(tap, KW);
  }
  Acc8 a(in.load(start));
  for (int64_t t = 1; t < kw; ++t) a.take(in.load(start + t));
  return a.result();
}

// Stride 2: taps t and t + 1 are the even and odd elements of [t, t + 16) (two loads, one
// vshufps each); a last even tap alone reads [t, t + 15) (loads at t and t + 7).
template <int KW, typename L>
inline __m256 block_s2(const L& in, int64_t start, int64_t kw) {
  if (KW > 0) {
    __m256 tap[KW > 0 ? KW : 1];
    int t = 0;
    for (; t + 1 < KW; t += 2) {
      const __m256 lo = in.load(start + t), hi = in.load(start + t + 8);
      tap[t] = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
      tap[t + 1] = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
    }
    if (t < KW) {
      const __m256 lo = in.load(start + t), hi = in.load(start + t + 7);
      tap[t] = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 2, 0));
    }
    return unshuffle(first_max(tap, KW));
  }
  __m256 lo = in.load(start), hi = in.load(start + 7);
  Acc8 a(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 2, 0)));
  for (int64_t t = 1; t < kw; ++t) {
    lo = in.load(start + t);
    hi = in.load(start + t + 7);
    a.take(_mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 2, 0)));
  }
  return unshuffle(a.result());
}

// Wider strides: one gather per tap.
template <typename L>
inline __m256 block_gather(const L& in, int64_t start, int64_t kw, __m256i idx) {
  Acc8 a(in.gather(start, idx));
  for (int64_t t = 1; t < kw; ++t) a.take(in.gather(start + t, idx));
  return a.result();
}

// The per-stride blocks as functors (member functions get this file's target; the invoker
// of a lambda's function-pointer conversion would not).
template <int KW, typename L>
struct S1 {
  int64_t kw;
  __m256 operator()(const L& in, int64_t start) const { return block_s1<KW>(in, start, kw); }
};
template <int KW, typename L>
struct S2 {
  int64_t kw;
  __m256 operator()(const L& in, int64_t start) const { return block_s2<KW>(in, start, kw); }
};
template <typename L>
struct Gather {
  int64_t kw;
  __m256i idx;
  __m256 operator()(const L& in, int64_t start) const { return block_gather(in, start, kw, idx); }
};

// Columns [j_begin, j_end) (at least 8) in vectors of 8, the last one overlapping.
template <typename L, typename Block>
inline void hrow_blocks(const MaxPool2dShape& s, const L& in, int64_t j_begin, int64_t j_end,
                        float* out, const Block& block) {
  int64_t j = j_begin;
  for (; j + 8 <= j_end; j += 8) _mm256_storeu_ps(out + j, block(in, j * s.stride_w - s.pad_w));
  if (j < j_end) _mm256_storeu_ps(out + j_end - 8, block(in, (j_end - 8) * s.stride_w - s.pad_w));
}

// hrow over [j_begin, j_end) with the loads of L, the block picked by stride and width.
template <typename L>
void hrow_any(const MaxPool2dShape& s, const L& in, int64_t j_begin, int64_t j_end, float* out) {
  const int64_t kw = s.kw;
  if (s.stride_w == 1) {
    if (kw == 2) return hrow_blocks(s, in, j_begin, j_end, out, S1<2, L>{kw});
    if (kw == 3) return hrow_blocks(s, in, j_begin, j_end, out, S1<3, L>{kw});
    return hrow_blocks(s, in, j_begin, j_end, out, S1<0, L>{kw});
  }
  if (s.stride_w == 2) {
    if (kw == 2) return hrow_blocks(s, in, j_begin, j_end, out, S2<2, L>{kw});
    if (kw == 3) return hrow_blocks(s, in, j_begin, j_end, out, S2<3, L>{kw});
    return hrow_blocks(s, in, j_begin, j_end, out, S2<0, L>{kw});
  }
  const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                         _mm256_set1_epi32(static_cast<int>(s.stride_w)));
  hrow_blocks(s, in, j_begin, j_end, out, Gather<L>{kw, idx});
}

template <int N>
inline void vblocks(const float* const* rows, int64_t n, int64_t w, float* out) {
  const auto block = [&](int64_t j) {
    if (N > 0) {
      __m256 tap[N > 0 ? N : 1];
      for (int r = 0; r < N; ++r) tap[r] = _mm256_loadu_ps(rows[r] + j);
      _mm256_storeu_ps(out + j, first_max(tap, N));
      return;
    }
    Acc8 a(_mm256_loadu_ps(rows[0] + j));
    for (int64_t r = 1; r < n; ++r) a.take(_mm256_loadu_ps(rows[r] + j));
    _mm256_storeu_ps(out + j, a.result());
  };
  int64_t j = 0;
  for (; j + 8 <= w; j += 8) block(j);
  if (j < w) block(w - 8);
}

// Row indices of 32-bit lanes: strides up to 2^24 (7 * stride fits), rows under 2^30.
inline bool lanes_fit(const MaxPool2dShape& s) {
  return s.stride_w <= (int64_t{1} << 24) && s.w_in + s.kw < (int64_t{1} << 30);
}

struct Avx2Rows {
  static void hrow(const MaxPool2dShape& s, const float* row, int64_t j_begin, int64_t j_end,
                   float* out) {
    if (j_end - j_begin < 8 || !lanes_fit(s)) {
      for (int64_t j = j_begin; j < j_end; ++j) out[j] = hrow_clipped(s, row, j);
      return;
    }
    hrow_any(s, Plain{row}, j_begin, j_end, out);
  }

  static void hrow_edge(const MaxPool2dShape& s, const float* row, int64_t j_begin, int64_t j_end,
                        float* out) {
    if (j_end - j_begin < 8 || !lanes_fit(s)) {
      for (int64_t j = j_begin; j < j_end; ++j) out[j] = hrow_clipped(s, row, j);
      return;
    }
    hrow_any(s, Clipped{row, s.w_in}, j_begin, j_end, out);
  }

  static void vmax(const float* const* rows, int64_t n, int64_t w, float* out) {
    if (w < 8) {
      for (int64_t j = 0; j < w; ++j) {
        float acc = rows[0][j];
        for (int64_t r = 1; r < n; ++r) acc = pool_take(acc, rows[r][j]);
        out[j] = acc;
      }
      return;
    }
    switch (n) {
      case 1: return vblocks<1>(rows, n, w, out);
      case 2: return vblocks<2>(rows, n, w, out);
      case 3: return vblocks<3>(rows, n, w, out);
      default: return vblocks<0>(rows, n, w, out);
    }
  }
};

}  // namespace

void max_pool2d_planes_avx2(const MaxPool2dShape& s, const float* x, int64_t planes, float* scratch,
                            float* y) {
  max_pool2d_planes_impl<Avx2Rows>(s, x, planes, scratch, y);
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC pop_options

#endif  // defined(__x86_64__)
