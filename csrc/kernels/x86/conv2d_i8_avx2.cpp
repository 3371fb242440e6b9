// AVX2 integer conv2d (int8 activations x unsigned low-bit codes): the direct tile kernel
// (conv2d_i8_x86_tile.h with vpmaddubsw), the input packer of the direct layout, the
// weight panel builder and the per-image max |x|, compiled for AVX2+FMA+F16C via a target
// pragma and only called after run-time CPU detection. The AVX-512 row uses all but the tile.
#if defined(__x86_64__)

#include <cstdint>
#include <cstring>

#include "../conv2d_i8_impl.h"
#include "../dispatch.h"
#include "../packed_code.h"
#include "../with_bits.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#include "conv2d_i8_x86_tile.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

// Row k of codes (one per byte), 8 codes per BITS bytes; 4 and 8 bits vectorized.
template <int BITS>
void unpack_codes(const uint8_t* w, int64_t k, uint8_t* out) {
  int64_t j = 0;
  if constexpr (BITS == 8) {
    std::memcpy(out, w, static_cast<size_t>(k));
    return;
  }
  if constexpr (BITS == 4) {
    const __m128i m = _mm_set1_epi8(0x0f);
    for (; j + 32 <= k; j += 32) {
      const __m128i v = _mm_loadu_si128((const __m128i*)(w + j / 2));
      const __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
      _mm_storeu_si128((__m128i*)(out + j), _mm_unpacklo_epi8(lo, hi));
      _mm_storeu_si128((__m128i*)(out + j + 16), _mm_unpackhi_epi8(lo, hi));
    }
  }
  for (; j + 8 <= k; j += 8) {
    uint64_t v = 0;
    std::memcpy(&v, w + j / 8 * BITS, BITS);
    for (int i = 0; i < 8; ++i)
      out[j + i] = static_cast<uint8_t>((v >> (i * BITS)) & ((1u << BITS) - 1u));
  }
  for (; j < k; ++j) out[j] = static_cast<uint8_t>(code_at(w, j, BITS));
}

// Codes a panel row is unpacked through (a stack buffer: no std containers in this file).
constexpr int64_t kMaxCodes = 32768;
// Padded input row the packer quantizes through (wider rows take the portable packer).
constexpr int64_t kMaxRowPixels = 4096;

}  // namespace

bool absmax_avx2(const float* x, int64_t n, float* amax) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 fmax = _mm256_set1_ps(3.4028234663852886e38f);
  // Four independent maxima: one chain of vmaxps (4 cycles each) would read only 2 floats a
  // cycle, slower than the cache delivers them. max and or are exact in any order.
  __m256 mx = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  __m256 mx1 = mx, mx2 = mx, mx3 = mx, bad1 = bad, bad2 = bad, bad3 = bad;
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    const __m256 v0 = _mm256_and_ps(_mm256_loadu_ps(x + j), absmask);
    const __m256 v1 = _mm256_and_ps(_mm256_loadu_ps(x + j + 8), absmask);
    const __m256 v2 = _mm256_and_ps(_mm256_loadu_ps(x + j + 16), absmask);
    const __m256 v3 = _mm256_and_ps(_mm256_loadu_ps(x + j + 24), absmask);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(v0, fmax, _CMP_NLE_UQ));  // NaN or Inf
    bad1 = _mm256_or_ps(bad1, _mm256_cmp_ps(v1, fmax, _CMP_NLE_UQ));
    bad2 = _mm256_or_ps(bad2, _mm256_cmp_ps(v2, fmax, _CMP_NLE_UQ));
    bad3 = _mm256_or_ps(bad3, _mm256_cmp_ps(v3, fmax, _CMP_NLE_UQ));
    mx = _mm256_max_ps(mx, v0);
    mx1 = _mm256_max_ps(mx1, v1);
    mx2 = _mm256_max_ps(mx2, v2);
    mx3 = _mm256_max_ps(mx3, v3);
  }
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_and_ps(_mm256_loadu_ps(x + j), absmask);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, fmax, _CMP_NLE_UQ));
    mx = _mm256_max_ps(mx, v);
  }
  // (With a NaN the maxima depend on the order, but then `bad` is set and callers ignore amax.)
  mx = _mm256_max_ps(_mm256_max_ps(mx, mx1), _mm256_max_ps(mx2, mx3));
  bad = _mm256_or_ps(_mm256_or_ps(bad, bad1), _mm256_or_ps(bad2, bad3));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, mx);
  float m = 0.0f;
  for (int e = 0; e < 8; ++e) m = lanes[e] > m ? lanes[e] : m;
  bool finite = _mm256_movemask_ps(bad) == 0;
  for (; j < n; ++j) {
    const float v = x[j] < 0 ? -x[j] : x[j];
    finite = finite && v <= 3.4028234663852886e38f;
    m = v > m ? v : m;
  }
  *amax = m;
  return finite;
}

void conv2d_i8_pack_input_avx2(const float* x, const Conv2dShape& s, const float* scale,
                               int64_t u_begin, int64_t u_end, int8_t* out) {
  const ConvI8Layout l = conv_i8_layout(s);
  const int64_t cg = s.c_in / s.groups, plane = s.h_in * s.w_in;
  // packs_epi32 + packs_epi16 leave [c0 x0..3, c1 x0..3, c2 .., c3 ..] per 128-bit lane; this
  // puts each pixel's 4 channels together.
  const __m256i order = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4,
                                         8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i lane_ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  if (l.wp > kMaxRowPixels) return conv2d_i8_pack_input_portable(x, s, scale, u_begin, u_end, out);
  // The padding columns stay 0; 64 more zero bytes let the stride-2 gather below read whole
  // vectors past the last column it keeps.
  alignas(32) int8_t row[kMaxRowPixels * 4 + 96];
  std::memset(row, 0, static_cast<size_t>(l.wp * 4 + 64));
  for (int64_t u = u_begin; u < u_end; ++u) {
    const int64_t n = u / (s.groups * l.c4), g = (u / l.c4) % s.groups, b = u % l.c4;
    int8_t* dst = out + u * l.unit;
    const float sx = scale[n];
    if (!(sx > 0.0f)) {
      std::memset(dst, 0, static_cast<size_t>(l.unit));
      continue;
    }
    // Only the padding rows (and the rows a row phase holds past the padded image) need
    // zeros: every input row is written below, each with its zero padding columns.
    for (int64_t q = 0; q < l.copies; ++q)
      for (int64_t y = 0; y < s.stride_h * l.hq; ++y)
        if (y < s.pad_h || y >= s.pad_h + s.h_in)
          std::memset(dst + conv_i8_row_offset(s, l, q, y - s.pad_h), 0,
                      static_cast<size_t>(l.w * 4));
    const __m256 vs = _mm256_set1_ps(sx);
    const int64_t nc = cg - b * 4 < 4 ? cg - b * 4 : 4;
    const float* src[4];
    for (int64_t c = 0; c < 4; ++c)
      src[c] = c < nc ? x + (n * s.c_in + g * cg + b * 4 + c) * plane : nullptr;
    auto conv = [&](const float* p) {
      if (p == nullptr) return _mm256_setzero_si256();
      const __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(p), vs),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
    };
    // Each input row: quantized once into `row` (zero-padded, 4 channels per pixel), then
    // copied into the kw column-tap copies.
    for (int64_t iy = 0; iy < s.h_in; ++iy) {
      int8_t* pix = row + s.pad_w * 4;
      int64_t ix = 0;
      for (; ix + 8 <= s.w_in; ix += 8) {
        const int64_t o = iy * s.w_in + ix;
        const __m256i a = _mm256_packs_epi32(conv(src[0] ? src[0] + o : nullptr),
                                             conv(src[1] ? src[1] + o : nullptr));
        const __m256i c = _mm256_packs_epi32(conv(src[2] ? src[2] + o : nullptr),
                                             conv(src[3] ? src[3] + o : nullptr));
        _mm256_storeu_si256((__m256i*)(pix + ix * 4),
                            _mm256_shuffle_epi8(_mm256_packs_epi16(a, c), order));
      }
      if (ix < s.w_in) {  // 1..7 pixels: masked loads and store
        const int64_t rest = s.w_in - ix, o = iy * s.w_in + ix;
        const __m256i mask =
            _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rest)), lane_ids);
        auto convm = [&](const float* p) {
          if (p == nullptr) return _mm256_setzero_si256();
          const __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_maskload_ps(p, mask), vs),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
          return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
        };
        const __m256i a = _mm256_packs_epi32(convm(src[0] ? src[0] + o : nullptr),
                                             convm(src[1] ? src[1] + o : nullptr));
        const __m256i c = _mm256_packs_epi32(convm(src[2] ? src[2] + o : nullptr),
                                             convm(src[3] ? src[3] + o : nullptr));
        _mm256_maskstore_epi32((int*)(pix + ix * 4), mask,
                               _mm256_shuffle_epi8(_mm256_packs_epi16(a, c), order));
      }
      for (int64_t q = 0; q < l.copies; ++q) {
        int8_t* d = dst + conv_i8_row_offset(s, l, q, iy);
        const int8_t* from = row + q * s.dil_w * 4;
        if (l.one_copy) {
          std::memcpy(d, row, static_cast<size_t>(l.wp * 4));
        } else {
          int64_t ox = 0;
          if (s.stride_w == 2) {  // every other pixel: 8 per step from 16
            for (; ox + 8 <= l.wo; ox += 8) {
              const __m256 a = _mm256_loadu_ps(reinterpret_cast<const float*>(from + ox * 8));
              const __m256 c = _mm256_loadu_ps(reinterpret_cast<const float*>(from + ox * 8 + 32));
              const __m256 even = _mm256_shuffle_ps(a, c, 0x88);  // a0 a2 c0 c2 | a4 a6 c4 c6
              _mm256_storeu_ps(
                  reinterpret_cast<float*>(d + ox * 4),
                  _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), 0xD8)));
            }
          }
          for (; ox < l.wo; ++ox) std::memcpy(d + ox * 4, from + ox * s.stride_w * 4, 4);
        }
      }
    }
  }
}

void conv2d_i8_quantize_row_avx2(const float* x, int64_t n, float scale, int8_t* out) {
  if (!(scale > 0.0f)) {
    std::memset(out, 0, static_cast<size_t>(n));
    return;
  }
  const __m256 vs = _mm256_set1_ps(scale), lo = _mm256_set1_ps(-127.0f),
               hi = _mm256_set1_ps(127.0f);
  // packs_epi32 / packs_epi16 leave dwords [a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7].
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  auto conv = [&](const float* p) {
    const __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(p), vs),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i ab = _mm256_packs_epi32(conv(x + i), conv(x + i + 8));
    const __m256i cd = _mm256_packs_epi32(conv(x + i + 16), conv(x + i + 24));
    _mm256_storeu_si256((__m256i*)(out + i),
                        _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order));
  }
  for (; i + 8 <= n; i += 8) {
    const __m256i q = conv(x + i), q16 = _mm256_packs_epi32(q, q);
    const __m256i q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16, q16), order);
    _mm_storel_epi64((__m128i*)(out + i), _mm256_castsi256_si128(q8));
  }
  if (i < n) {  // the last 1..7 through a masked load (the lanes past n quantize 0.0)
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - i)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_maskload_ps(x + i, mask), vs),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256i q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
    const __m256i q16 = _mm256_packs_epi32(q, q);
    alignas(16) int8_t tail[16];
    _mm_store_si128((__m128i*)tail, _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
                                        _mm256_packs_epi16(q16, q16), order)));
    std::memcpy(out + i, tail, static_cast<size_t>(n - i));
  }
}

void conv2d_i8_patch_row_avx2(const int8_t* const src[4], int64_t stride_w, int64_t wo,
                              int8_t* dst) {
  if (stride_w > 2) return conv2d_i8_patch_row_portable(src, stride_w, wo, dst);
  const __m256i even = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1,
                                        0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1);
  // 16 pixels of one lane: 16 bytes (stride 1) or the even bytes of 32 (stride 2; the odd byte
  // past the last pixel is inside kPatchRowSlack).
  auto pixels = [&](const int8_t* p, int64_t ox) {
    if (p == nullptr) return _mm_setzero_si128();
    if (stride_w == 1) return _mm_loadu_si128((const __m128i*)(p + ox));
    const __m256i v = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i*)(p + 2 * ox)), even);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(v, 0x08));
  };
  int64_t ox = 0;
  for (; ox + 16 <= wo; ox += 16) {
    const __m128i a = pixels(src[0], ox), b = pixels(src[1], ox);
    const __m128i c = pixels(src[2], ox), d = pixels(src[3], ox);
    const __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
    const __m128i cd_lo = _mm_unpacklo_epi8(c, d), cd_hi = _mm_unpackhi_epi8(c, d);
    int8_t* o = dst + ox * 4;
    _mm_storeu_si128((__m128i*)o, _mm_unpacklo_epi16(ab_lo, cd_lo));
    _mm_storeu_si128((__m128i*)(o + 16), _mm_unpackhi_epi16(ab_lo, cd_lo));
    _mm_storeu_si128((__m128i*)(o + 32), _mm_unpacklo_epi16(ab_hi, cd_hi));
    _mm_storeu_si128((__m128i*)(o + 48), _mm_unpackhi_epi16(ab_hi, cd_hi));
  }
  for (int64_t lane = 0; lane < 4; ++lane)
    for (int64_t t = ox; t < wo; ++t)
      dst[t * 4 + lane] = src[lane] ? src[lane][t * stride_w] : static_cast<int8_t>(0);
}

void conv2d_i8_pack_weights_avx2(const Conv2dShape& s, const uint8_t* packed, int bits,
                                 int64_t co_begin, int64_t co_end, uint8_t* panel) {
  const ConvI8Layout l = conv_i8_layout(s);
  const int64_t k = s.k(), cg = s.c_in / s.groups, row_bytes = packed_row_bytes(k, bits);
  if (k + 64 > kMaxCodes)
    return conv2d_i8_pack_weights_portable(s, packed, bits, co_begin, co_end, panel);
  // codes[(4 c4 + lane) * taps + t] -> panel[(c4 * taps + t) * 4 + lane], 16 taps at a time:
  // two byte interleaves and two word interleaves make 16 dwords of 4 channels.
  alignas(64) uint8_t codes[kMaxCodes];
  std::memset(codes + k, 0, 64);
  for (int64_t o = co_begin; o < co_end; ++o) {
    with_bits(bits,
              [&](auto b) { unpack_codes<decltype(b)::value>(packed + o * row_bytes, k, codes); });
    uint8_t* row = panel + o * l.kb * 4;
    for (int64_t c4 = 0; c4 < l.c4; ++c4) {
      const int64_t nc = cg - c4 * 4 < 4 ? cg - c4 * 4 : 4;
      for (int64_t t0 = 0; t0 < l.taps; t0 += 16) {
        __m128i ch[4];
        for (int64_t lane = 0; lane < 4; ++lane)
          ch[lane] = lane < nc
                         ? _mm_loadu_si128((const __m128i*)(codes + (c4 * 4 + lane) * l.taps + t0))
                         : _mm_setzero_si128();
        const __m128i a = _mm_unpacklo_epi8(ch[0], ch[1]), b = _mm_unpacklo_epi8(ch[2], ch[3]);
        const __m128i c = _mm_unpackhi_epi8(ch[0], ch[1]), d = _mm_unpackhi_epi8(ch[2], ch[3]);
        const __m128i r[4] = {_mm_unpacklo_epi16(a, b), _mm_unpackhi_epi16(a, b),
                              _mm_unpacklo_epi16(c, d), _mm_unpackhi_epi16(c, d)};
        const int64_t n = l.taps - t0 < 16 ? l.taps - t0 : 16;
        uint8_t* dst = row + (c4 * l.taps + t0) * 4;
        // Past this block (if still in the row) the next block overwrites what was stored.
        if ((l.kb - c4 * l.taps - t0) * 4 >= 64) {
          for (int q = 0; q < 4; ++q) _mm_storeu_si128((__m128i*)(dst + 16 * q), r[q]);
        } else {
          alignas(16) uint8_t out[64];
          for (int q = 0; q < 4; ++q) _mm_store_si128((__m128i*)(out + 16 * q), r[q]);
          for (int64_t e = 0; e < n; ++e) std::memcpy(dst + 4 * e, out + 4 * e, 4);
        }
      }
    }
  }
}

void conv2d_i8_tile_avx2(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch) {
  with_bits(a.bits, [&](auto b) { tile<decltype(b)::value>(a, t, scratch); });
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC pop_options

#endif  // __x86_64__
