// AVX2 depthwise integer conv2d (conv2d_i8_depthwise.h): the input packer and the tile kernel,
// compiled for AVX2+FMA+F16C via a target pragma and only called after run-time CPU detection
// (the avx2 and avx512 rows).
//
// The tile first turns the padded int8 rows it reads into pair rows (int16 pairs of taps per
// output pixel, conv2d_i8_depthwise.h), once for all its output channels and rows; then each
// vector of 8 output pixels of one channel takes one vpmaddwd per tap pair with the broadcast
// weight pair (w'[a], w'[b]) (|v w'| <= 127 * 255: exact int32 sums at every width 1..8 and
// any zero point), one int32 sum per weight group, and the scalar kernel's float epilogue.
#if defined(__x86_64__)

#include <cstdint>
#include <cstring>

#include "../conv2d_i8_depthwise.h"
#include "../conv2d_i8_impl.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#include "avx2_util.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

// Taps per kernel the tile handles with its stack tables (larger kernels: portable tile).
constexpr int64_t kMaxTaps = 1024;

// Pair rows of padded input row `src` (conv2d_i8_depthwise.h) into dst (copies * len lanes).
void build_pair_rows(const Conv2dShape& s, const ConvI8DwLayout& l, const int8_t* src,
                     int32_t* dst) {
  const int64_t dw = s.dil_w;
  if (s.stride_w == 1) {  // P[i] = (v[i], v[i + dw]), 16 at a time
    for (int64_t i = 0; i < l.len; i += 16) {
      const __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(src + i)));
      const __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(src + i + dw)));
      const __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);
      _mm256_storeu_si256((__m256i*)(dst + i), _mm256_permute2x128_si256(lo, hi, 0x20));
      _mm256_storeu_si256((__m256i*)(dst + i + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
  } else if (s.stride_w == 2 && dw == 1) {  // P_t[ox] = (v[2 ox + 2 t], v[2 ox + 2 t + 1])
    for (int64_t t = 0; t < l.pairs; ++t)
      for (int64_t ox = 0; ox < l.len; ox += 8)
        _mm256_storeu_si256(
            (__m256i*)(dst + t * l.len + ox),
            _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(src + 2 * ox + 2 * t))));
  } else {
    for (int64_t t = 0; t < l.pairs; ++t) {
      int16_t* d = reinterpret_cast<int16_t*>(dst + t * l.len);
      for (int64_t ox = 0; ox < l.len; ++ox) {
        d[2 * ox] = src[ox * s.stride_w + 2 * t * dw];
        d[2 * ox + 1] = src[ox * s.stride_w + (2 * t + 1) * dw];
      }
    }
  }
}

struct PairTerm {
  int64_t off;    // lanes from the output row's first pair row
  int32_t wpair;  // (w'[a] low, w'[b] high) as int16s
};

// One vector of 8 output pixels: its first pair-row lane, its first output (floats from the
// tile's first output row) and how many of its 8 pixels to store (8: a plain store; one
// running into the next row is fine when that row is stored later by the same tile).
struct Pos {
  int32_t src, dst, n;
};

// NV vectors of one output channel (any rows and columns of the tile).
template <int NV>
inline void block(const int32_t* pr, const Pos* pos, const PairTerm* terms, const int64_t* first,
                  const float* sg, int64_t wgroups, __m256 sx, __m256 bias, float* y) {
  __m256 acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = _mm256_setzero_ps();
  for (int64_t g = 0; g < wgroups; ++g) {
    __m256i d[NV];
    for (int v = 0; v < NV; ++v) d[v] = _mm256_setzero_si256();
    for (int64_t e = first[g]; e < first[g + 1]; ++e) {
      const __m256i w = _mm256_set1_epi32(terms[e].wpair);
      const int32_t* p = pr + terms[e].off;
      for (int v = 0; v < NV; ++v)
        d[v] = _mm256_add_epi32(
            d[v], _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(p + pos[v].src)), w));
    }
    const __m256 sc = _mm256_set1_ps(sg[g]);
    for (int v = 0; v < NV; ++v)
      acc[v] = _mm256_add_ps(acc[v], rounded(_mm256_mul_ps(_mm256_cvtepi32_ps(d[v]), sc)));
  }
  const __m256i lane_ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int v = 0; v < NV; ++v) {
    const __m256 yv = _mm256_add_ps(rounded(_mm256_mul_ps(acc[v], sx)), bias);
    if (pos[v].n == 8) {
      _mm256_storeu_ps(y + pos[v].dst, yv);
    } else {
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(pos[v].n), lane_ids);
      _mm256_maskstore_ps(y + pos[v].dst, mask, yv);
    }
  }
}

}  // namespace

void conv2d_i8_dw_tile_avx2(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch) {
  const Conv2dShape& s = *a.s;
  const int64_t k = s.k(), gs = a.group_size, wgroups = k / gs;
  if (k > kMaxTaps) return conv2d_i8_dw_tile_portable(a, t, scratch);
  const ConvI8DwLayout l = conv_i8_dw_layout(s);
  const int64_t ho = s.h_out(), wo = s.w_out(), row_lanes = l.copies * l.len;
  const int64_t y0 = t.oy0 * s.stride_h, nrows = conv_i8_dw_rows(s, t.oy1 - t.oy0);
  const int8_t* plane = a.input + (t.image * s.c_in + t.group) * l.unit;
  int32_t* pr = reinterpret_cast<int32_t*>((reinterpret_cast<uintptr_t>(scratch) + 63) &
                                           ~static_cast<uintptr_t>(63));
  for (int64_t y = 0; y < nrows; ++y)
    build_pair_rows(s, l, plane + (y0 + y) * l.row, pr + y * row_lanes);
  // The tile's vectors in output order (rows, then columns), stored in that order: blocks of
  // 4 vectors keep 4 independent sums in flight however narrow the rows are.
  Pos* pos = reinterpret_cast<Pos*>(pr + nrows * row_lanes);
  const int64_t tile_px = (t.oy1 - t.oy0) * wo;
  int64_t npos = 0;
  for (int64_t oy = t.oy0; oy < t.oy1; ++oy) {
    for (int64_t ox = 0; ox < wo; ox += 8) {
      const int64_t dst = (oy - t.oy0) * wo + ox;
      pos[npos].src = static_cast<int32_t>((oy * s.stride_h - y0) * row_lanes + ox);
      pos[npos].dst = static_cast<int32_t>(dst);
      pos[npos].n = static_cast<int32_t>(dst + 8 <= tile_px ? 8 : tile_px - dst);
      ++npos;
    }
  }

  int16_t w[kMaxTaps];
  float sg[kMaxTaps];
  PairTerm terms[kMaxTaps];
  int64_t first[kMaxTaps + 1];
  const __m256 sx = _mm256_set1_ps(a.x_scale[t.image]);
  for (int64_t o = t.co0; o < t.co0 + t.co_n; ++o) {
    conv2d_i8_dw_weights(a, o, w);
    // Per weight group, the tap pairs holding one of its taps (the other tap's weight 0 when
    // it lies outside the group or past kw).
    int64_t n = 0;
    for (int64_t g = 0; g < wgroups; ++g) {
      first[g] = n;
      sg[g] = half_bits_to_float(a.scale_bits[o * wgroups + g]);
      const int64_t j0 = g * gs, j1 = j0 + gs;
      for (int64_t r = j0 / s.kw; r <= (j1 - 1) / s.kw; ++r) {
        for (int64_t p = 0; p < l.pairs; ++p) {
          const int64_t ja = r * s.kw + 2 * p, jb = ja + 1;
          const bool in_a = ja >= j0 && ja < j1, in_b = 2 * p + 1 < s.kw && jb >= j0 && jb < j1;
          if (!in_a && !in_b) continue;
          const uint16_t wa = static_cast<uint16_t>(in_a ? w[ja] : 0);
          const uint16_t wb = static_cast<uint16_t>(in_b ? w[jb] : 0);
          terms[n].off = r * s.dil_h * row_lanes + (s.stride_w == 1 ? 2 * p * s.dil_w : p * l.len);
          terms[n].wpair =
              static_cast<int32_t>(static_cast<uint32_t>(wa) | (static_cast<uint32_t>(wb) << 16));
          ++n;
        }
      }
    }
    first[wgroups] = n;
    const __m256 bias = _mm256_set1_ps(a.bias ? a.bias[o] : 0.0f);
    float* y = a.y + ((t.image * s.c_out + o) * ho + t.oy0) * wo;
    int64_t i = 0;
    for (; i + 4 <= npos; i += 4) block<4>(pr, pos + i, terms, first, sg, wgroups, sx, bias, y);
    switch (npos - i) {
      case 3: block<3>(pr, pos + i, terms, first, sg, wgroups, sx, bias, y); break;
      case 2: block<2>(pr, pos + i, terms, first, sg, wgroups, sx, bias, y); break;
      case 1: block<1>(pr, pos + i, terms, first, sg, wgroups, sx, bias, y); break;
      default: break;
    }
  }
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC pop_options

#endif  // __x86_64__
