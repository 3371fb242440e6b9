// AVX2 integer conv2d (int8 activations x unsigned low-bit codes): the direct tile kernel, the
// input packer of the phase-split layout and the per-image max |x|, compiled for AVX2+FMA+F16C
// via a target pragma and only called after run-time CPU detection. The AVX-512 row runs them
// too.
//
// A tile (conv2d_i8_impl.h) computes 4 output channels x 16 virtual pixels at a time: per
// 4-code block of the weight panel, one vpbroadcastd of each channel's 4 codes and two 32-byte
// loads of the 16 pixels' 4 activations (a fixed offset per block in the phase-split layout),
// then vpmaddubsw (u8 codes x s8 activations, pairwise s16 sums). For widths <= 7 the s16
// sums are accumulated over as many blocks as cannot saturate (2 * 127 * (2^bits - 1) per lane
// and block) and then widened with vpmaddwd(ones); 8-bit codes are split into nibbles (two
// vpmaddubsw, the high one widened with vpmaddwd by 16). The int32 group sums are exact; the
// float epilogue is the scalar kernel's, operation for operation (products kept apart from FMA
// contraction), so the output is bit-identical to it.
#if defined(__x86_64__)

#include <cstdint>
#include <cstring>

#include "../conv2d_i8_impl.h"
#include "../with_bits.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

namespace qpart {
namespace kernels {
namespace detail {
namespace {

constexpr int64_t kPx = kConvI8Px;  // 2 vectors of 8 pixels
constexpr int kMr = static_cast<int>(kConvI8Mr);

// The product stays rounded to float on its own (no FMA contraction), as in the scalar kernel.
inline __m256 rounded(__m256 v) {
  __asm__("" : "+x"(v));
  return v;
}

inline int32_t load_u32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Blocks of s16 accumulation before a widening (no saturation possible).
template <int BITS>
constexpr int64_t kS16Blocks = BITS >= 8 ? 1 : 32767 / (2 * 127 * ((1 << BITS) - 1));

// The activation sums of every weight group over the tile's virtual pixels: sums[g * nv + p].
void activation_sums(const uint8_t* act, const int64_t* off, int64_t kb_per_g, int64_t groups,
                     int64_t jb0, int64_t nv, int32_t* sums) {
  const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t p = 0; p < nv; p += kPx) {
      __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
      int64_t kb = g * kb_per_g;
      const int64_t kend = kb + kb_per_g;
      while (kb < kend) {
        const int64_t stop = kb + 128 < kend ? kb + 128 : kend;  // 128 * 254 < 32768
        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
        for (; kb < stop; ++kb) {
          const uint8_t* x = act + off[kb] + jb0 + p * 4;
          s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i*)x)));
          s1 = _mm256_add_epi16(
              s1, _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i*)(x + 32))));
        }
        acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(s0, ones16));
        acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(s1, ones16));
      }
      _mm256_storeu_si256((__m256i*)(sums + g * nv + p), acc0);
      _mm256_storeu_si256((__m256i*)(sums + g * nv + p + 8), acc1);
    }
  }
}

struct TileCtx {
  const uint8_t* act;     // this (image, group)'s units
  const int64_t* off;     // byte offset of each 4-code block
  const int32_t* sums;    // activation sums [group][nv]
  int64_t kb_per_g, groups, nv, jb0;
};

// MR output channels x 16 virtual pixels [p, p + 16) of the tile: the float accumulators `a`
// (before the image scale) of the scalar kernel's epilogue.
template <int BITS, int MR>
void micro(const Conv2dI8Args& args, const TileCtx& c, const uint8_t* const* w, int64_t o,
           int64_t p, __m256 (&out)[MR][2]) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  const uint8_t* x_base = c.act + c.jb0 + p * 4;
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) out[i][0] = out[i][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < c.groups; ++g) {
    __m256i acc[MR][2];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    int64_t kb = g * c.kb_per_g;
    const int64_t kend = kb + c.kb_per_g;
    if constexpr (BITS == 8) {
      const __m256i nib = _mm256_set1_epi8(0x0f), sixteen = _mm256_set1_epi16(16);
      for (; kb < kend; ++kb) {
        const uint8_t* x = x_base + c.off[kb];
        const __m256i x0 = _mm256_loadu_si256((const __m256i*)x);
        const __m256i x1 = _mm256_loadu_si256((const __m256i*)(x + 32));
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i) {
          const __m256i wv = _mm256_set1_epi32(load_u32(w[i] + kb * 4));
          const __m256i lo = _mm256_and_si256(wv, nib);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), nib);
          acc[i][0] = _mm256_add_epi32(
              acc[i][0], _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), ones16),
                                          _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x0), sixteen)));
          acc[i][1] = _mm256_add_epi32(
              acc[i][1], _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, x1), ones16),
                                          _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), sixteen)));
        }
      }
    } else {
      while (kb < kend) {
        const int64_t stop = kb + kS16Blocks<BITS> < kend ? kb + kS16Blocks<BITS> : kend;
        __m256i a16[MR][2];
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i) a16[i][0] = a16[i][1] = _mm256_setzero_si256();
        for (; kb < stop; ++kb) {
          const uint8_t* x = x_base + c.off[kb];
          const __m256i x0 = _mm256_loadu_si256((const __m256i*)x);
          const __m256i x1 = _mm256_loadu_si256((const __m256i*)(x + 32));
#pragma GCC unroll 4
          for (int i = 0; i < MR; ++i) {
            const __m256i wv = _mm256_set1_epi32(load_u32(w[i] + kb * 4));
            a16[i][0] = _mm256_add_epi16(a16[i][0], _mm256_maddubs_epi16(wv, x0));
            a16[i][1] = _mm256_add_epi16(a16[i][1], _mm256_maddubs_epi16(wv, x1));
          }
        }
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i) {
          acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(a16[i][0], ones16));
          acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(a16[i][1], ones16));
        }
      }
    }
    // d = dot - zero * sum (exact int32), then a = a + float(d) * scale_w, each rounded.
    const int32_t* sums = c.sums + g * c.nv + p;
    const __m256i s0 = _mm256_loadu_si256((const __m256i*)sums);
    const __m256i s1 = _mm256_loadu_si256((const __m256i*)(sums + 8));
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const int64_t wgi = (o + i) * c.groups + g;
      const __m256i z = _mm256_set1_epi32(args.zeros[wgi]);
      const __m256 sw = _mm256_set1_ps(_cvtsh_ss(args.scale_bits[wgi]));
      const __m256i d0 = _mm256_sub_epi32(acc[i][0], _mm256_mullo_epi32(z, s0));
      const __m256i d1 = _mm256_sub_epi32(acc[i][1], _mm256_mullo_epi32(z, s1));
      out[i][0] = _mm256_add_ps(out[i][0], rounded(_mm256_mul_ps(_mm256_cvtepi32_ps(d0), sw)));
      out[i][1] = _mm256_add_ps(out[i][1], rounded(_mm256_mul_ps(_mm256_cvtepi32_ps(d1), sw)));
    }
  }
}

// y = a * scale_x + bias for the valid lanes of 16 virtual pixels starting at j (rows of wq
// virtual pixels, of which the first w_out are real).
template <int MR>
void store(const Conv2dI8Args& args, const Conv2dI8Tile& t, const ConvI8Layout& l, int64_t o,
           int64_t j, int64_t j_end, const __m256 (&a)[MR][2]) {
  const Conv2dShape& s = *args.s;
  const int64_t wo = s.w_out(), ho = s.h_out();
  const __m256 sx = _mm256_set1_ps(args.x_scale[t.image]);
  for (int i = 0; i < MR; ++i) {
    const float b = args.bias ? args.bias[o + i] : 0.0f;
    const __m256 bv = _mm256_set1_ps(b);
    float* plane = args.y + (t.image * s.c_out + o + i) * ho * wo;
    for (int v = 0; v < 2; ++v) {
      const __m256 yv = _mm256_add_ps(rounded(_mm256_mul_ps(a[i][v], sx)), bv);
      const int64_t jv = j + 8 * v, oy = jv / l.wq, ox = jv % l.wq;
      if (ox + 8 <= wo && jv + 8 <= j_end) {
        _mm256_storeu_ps(plane + oy * wo + ox, yv);
        continue;
      }
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, yv);
      for (int64_t e = 0; e < 8 && jv + e < j_end; ++e) {
        const int64_t je = jv + e, ye = je / l.wq, xe = je % l.wq;
        if (xe < wo) plane[ye * wo + xe] = lanes[e];
      }
    }
  }
}

template <int BITS, int MR>
void channels(const Conv2dI8Args& args, const Conv2dI8Tile& t, const TileCtx& c,
              const ConvI8Layout& l, int64_t o, int64_t j_end) {
  const uint8_t* w[MR];
  for (int i = 0; i < MR; ++i) w[i] = args.panel + (o + i) * l.kb * 4;
  for (int64_t p = 0; p < c.nv; p += kPx) {
    __m256 a[MR][2];
    micro<BITS, MR>(args, c, w, o, p, a);
    store<MR>(args, t, l, o, c.jb0 / 4 + p, j_end, a);
  }
}

template <int BITS>
void tile(const Conv2dI8Args& args, const Conv2dI8Tile& t, void* scratch) {
  const Conv2dShape& s = *args.s;
  const ConvI8Layout l = conv_i8_layout(s);
  const int64_t groups = s.k() / args.group_size;
  TileCtx c;
  c.act = reinterpret_cast<const uint8_t*>(args.input) +
          (t.image * s.groups + t.group) * l.c4 * l.unit;
  int64_t* off = static_cast<int64_t*>(scratch);
  for (int64_t kb = 0; kb < l.kb; ++kb) off[kb] = conv_i8_block_offset(s, l, kb);
  c.off = off;
  c.groups = groups;
  c.kb_per_g = groups == 1 ? l.kb : args.group_size / 4;
  const int64_t j0 = t.oy0 * l.wq, j_end = (t.oy1 - 1) * l.wq + s.w_out();
  c.jb0 = j0 * 4;
  c.nv = (j_end - j0 + kPx - 1) / kPx * kPx;
  int32_t* sums = reinterpret_cast<int32_t*>(off + l.kb);
  activation_sums(c.act, off, c.kb_per_g, groups, c.jb0, c.nv, sums);
  c.sums = sums;
  int64_t o = t.co0;
  const int64_t o_end = t.co0 + t.co_n;
  for (; o + kMr <= o_end; o += kMr) channels<BITS, kMr>(args, t, c, l, o, j_end);
  switch (o_end - o) {
    case 3: channels<BITS, 3>(args, t, c, l, o, j_end); break;
    case 2: channels<BITS, 2>(args, t, c, l, o, j_end); break;
    case 1: channels<BITS, 1>(args, t, c, l, o, j_end); break;
    default: break;
  }
}

inline int8_t quantize_one(float x, float s) {
  float r = (x / s + 12582912.0f) - 12582912.0f;
  r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
  return static_cast<int8_t>(static_cast<int>(r));
}

}  // namespace

bool absmax_avx2(const float* x, int64_t n, float* amax) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 fmax = _mm256_set1_ps(3.4028234663852886e38f);
  __m256 mx = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 v = _mm256_and_ps(_mm256_loadu_ps(x + j), absmask);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, fmax, _CMP_NLE_UQ));  // NaN or Inf
    mx = _mm256_max_ps(mx, v);
  }
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
  const __m256i order = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0,
                                         4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  for (int64_t u = u_begin; u < u_end; ++u) {
    const int64_t n = u / (s.groups * l.c4), g = (u / l.c4) % s.groups, b = u % l.c4;
    int8_t* dst = out + u * l.unit;
    std::memset(dst, 0, static_cast<size_t>(l.unit));
    const float sx = scale[n];
    if (!(sx > 0.0f)) continue;
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
    for (int64_t iy = 0; iy < s.h_in; ++iy) {
      const int64_t y = iy + s.pad_h;
      int8_t* row = dst + (((y % s.stride_h) * s.stride_w * l.hq + y / s.stride_h) * l.wq) * 4;
      // Position of padded column xx: phase xx % stride_w (phases are hq * wq pixels apart).
      auto at = [&](int64_t xx) {
        return row + ((xx % s.stride_w) * l.hq * l.wq + xx / s.stride_w) * 4;
      };
      int64_t ix = 0;
      for (; ix + 8 <= s.w_in; ix += 8) {
        const int64_t o = iy * s.w_in + ix;
        const __m256i a = _mm256_packs_epi32(conv(src[0] ? src[0] + o : nullptr),
                                             conv(src[1] ? src[1] + o : nullptr));
        const __m256i c = _mm256_packs_epi32(conv(src[2] ? src[2] + o : nullptr),
                                             conv(src[3] ? src[3] + o : nullptr));
        const __m256i v = _mm256_shuffle_epi8(_mm256_packs_epi16(a, c), order);
        const int64_t xx = ix + s.pad_w;
        if (s.stride_w == 1) {
          _mm256_storeu_si256((__m256i*)at(xx), v);
        } else {
          alignas(32) int32_t px[8];
          _mm256_store_si256((__m256i*)px, v);
          for (int e = 0; e < 8; ++e) std::memcpy(at(xx + e), px + e, 4);
        }
      }
      for (; ix < s.w_in; ++ix)
        for (int64_t c = 0; c < nc; ++c)
          at(ix + s.pad_w)[c] = quantize_one(src[c][iy * s.w_in + ix], sx);
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
