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
#include "../packed_code.h"
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

// One block of the 4-channel register tile: a16[i][v] += maddubs(codes of channel i, pixels
// 8v..8v+7). Written as one asm statement with the 8 accumulators as register operands: from
// the intrinsics GCC kept two accumulators on the stack and copied the others every block
// (~20% slower). A 6-channel tile (12 accumulators) made GCC spill them every block.
inline void step4(const uint8_t* x, const uint8_t* const* w, int64_t wo, __m256i (&a)[4][2]) {
  __m256i x0, x1, wv, t;
  __asm__(
      "vmovdqu (%[x]), %[x0]\n\t"
      "vmovdqu 32(%[x]), %[x1]\n\t"
      "vpbroadcastd (%[w0],%[wo]), %[wv]\n\t"
      "vpmaddubsw %[x0], %[wv], %[t]\n\t"
      "vpaddw %[t], %[a00], %[a00]\n\t"
      "vpmaddubsw %[x1], %[wv], %[t]\n\t"
      "vpaddw %[t], %[a01], %[a01]\n\t"
      "vpbroadcastd (%[w1],%[wo]), %[wv]\n\t"
      "vpmaddubsw %[x0], %[wv], %[t]\n\t"
      "vpaddw %[t], %[a10], %[a10]\n\t"
      "vpmaddubsw %[x1], %[wv], %[t]\n\t"
      "vpaddw %[t], %[a11], %[a11]\n\t"
      "vpbroadcastd (%[w2],%[wo]), %[wv]\n\t"
      "vpmaddubsw %[x0], %[wv], %[t]\n\t"
      "vpaddw %[t], %[a20], %[a20]\n\t"
      "vpmaddubsw %[x1], %[wv], %[t]\n\t"
      "vpaddw %[t], %[a21], %[a21]\n\t"
      "vpbroadcastd (%[w3],%[wo]), %[wv]\n\t"
      "vpmaddubsw %[x0], %[wv], %[t]\n\t"
      "vpaddw %[t], %[a30], %[a30]\n\t"
      "vpmaddubsw %[x1], %[wv], %[t]\n\t"
      "vpaddw %[t], %[a31], %[a31]\n\t"
      : [a00] "+x"(a[0][0]), [a01] "+x"(a[0][1]), [a10] "+x"(a[1][0]), [a11] "+x"(a[1][1]),
        [a20] "+x"(a[2][0]), [a21] "+x"(a[2][1]), [a30] "+x"(a[3][0]), [a31] "+x"(a[3][1]),
        [x0] "=&x"(x0), [x1] "=&x"(x1), [wv] "=&x"(wv), [t] "=&x"(t)
      : [x] "r"(x), [w0] "r"(w[0]), [w1] "r"(w[1]), [w2] "r"(w[2]), [w3] "r"(w[3]),
        [wo] "r"(wo));  // reads only buffers this tile never writes: no memory clobber
}

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
          s0 = _mm256_add_epi16(s0,
                                _mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i*)x)));
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
  const uint8_t* act;   // this (image, group)'s units
  const int64_t* off;   // byte offset of each 4-code block
  const int32_t* sums;  // activation sums [group][nv]
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
  // The int32 sums live in memory: they are touched once per s16 run, and keeping them in
  // registers next to the 2 * MR s16 accumulators made GCC spill inside the inner loop.
  alignas(32) int32_t accm[MR][2][8];
  for (int64_t g = 0; g < c.groups; ++g) {
    std::memset(accm, 0, sizeof accm);
    auto acc_add = [&](int i, int v, __m256i add) {
      __m256i* p = reinterpret_cast<__m256i*>(accm[i][v]);
      _mm256_store_si256(p, _mm256_add_epi32(_mm256_load_si256(p), add));
    };
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
          acc_add(i, 0,
                  _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), ones16),
                                   _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x0), sixteen)));
          acc_add(i, 1,
                  _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, x1), ones16),
                                   _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), sixteen)));
        }
      }
    } else {
      while (kb < kend) {
        const int64_t stop = kb + kS16Blocks<BITS> < kend ? kb + kS16Blocks<BITS> : kend;
        __m256i a16[MR][2];
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i) a16[i][0] = a16[i][1] = _mm256_setzero_si256();
        if constexpr (MR == 4) {
          for (; kb < stop; ++kb) step4(x_base + c.off[kb], w, kb * 4, a16);
        }
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
          acc_add(i, 0, _mm256_madd_epi16(a16[i][0], ones16));
          acc_add(i, 1, _mm256_madd_epi16(a16[i][1], ones16));
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
      const __m256i d0 = _mm256_sub_epi32(_mm256_load_si256((const __m256i*)accm[i][0]),
                                          _mm256_mullo_epi32(z, s0));
      const __m256i d1 = _mm256_sub_epi32(_mm256_load_si256((const __m256i*)accm[i][1]),
                                          _mm256_mullo_epi32(z, s1));
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
  c.act =
      reinterpret_cast<const uint8_t*>(args.input) + (t.image * s.groups + t.group) * l.c4 * l.unit;
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
  const __m256i order = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4,
                                         8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  const __m256i lane_ids = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
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
        } else if (s.stride_w == 2) {  // pixels ix, ix + 2, .. share a phase: 4 + 4 dwords
          const __m256i d =
              _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
          _mm_storeu_si128((__m128i*)at(xx), _mm256_castsi256_si128(d));
          _mm_storeu_si128((__m128i*)at(xx + 1), _mm256_extracti128_si256(d, 1));
        } else {
          alignas(32) int32_t px[8];
          _mm256_store_si256((__m256i*)px, v);
          for (int e = 0; e < 8; ++e) std::memcpy(at(xx + e), px + e, 4);
        }
      }
      if (ix < s.w_in) {  // 1..7 pixels: masked loads, masked / partial stores
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
        const __m256i v = _mm256_shuffle_epi8(_mm256_packs_epi16(a, c), order);
        const int64_t xx = ix + s.pad_w;
        if (s.stride_w == 1) {
          _mm256_maskstore_epi32((int*)at(xx), mask, v);
        } else {
          alignas(32) int32_t px[8];
          _mm256_store_si256((__m256i*)px, v);
          for (int64_t e = 0; e < rest; ++e) std::memcpy(at(xx + e), px + e, 4);
        }
      }
    }
  }
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
