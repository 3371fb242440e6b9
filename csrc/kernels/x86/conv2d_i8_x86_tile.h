// Internal: the AVX2 direct integer conv2d tile (conv2d_i8_impl.h; x86/conv2d_i8_avx2.cpp) and
// the pieces the AVX-512 and AMX tiles share with it (kPx, load_u32, TileCtx, tile_ctx).
// Include after the file's `#pragma GCC target(...)` and <immintrin.h>; internal linkage, so
// each ISA file gets its own copy.
//
// A tile computes 4 output channels x 16 pixels at a time: per 4-code block of the
// weight panel, one vpbroadcastd of each channel's 4 codes and two 32-byte loads of the 16
// pixels' 4 activations (a fixed offset per block in the direct layout): vpmaddubsw
// (u8 codes x s8 activations, pairwise s16 sums); for widths <= 7 the s16 sums are accumulated
// over as many blocks as cannot saturate (2 * 127 * (2^bits - 1) per lane and block), then
// widened with vpmaddwd(ones); 8-bit codes are split into nibbles (two vpmaddubsw, the high
// one widened with vpmaddwd by 16). The int32 group sums
// are exact; the float epilogue is the scalar kernel's, operation for operation (products
// kept apart from FMA contraction), so the output is bit-identical to it.
#pragma once

#include <cstdint>
#include <cstring>

#include "../conv2d_i8_impl.h"
#include "../with_bits.h"
#include "avx2_util.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

constexpr int64_t kPx = kConvI8Px;  // 2 vectors of 8 pixels
constexpr int kMr = static_cast<int>(kConvI8Mr);

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

// The activation sums of every weight group over the tile's pixels: sums[g * nv + p].
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
  const uint8_t* act;  // this (image, group)'s units
  const int64_t* off;  // byte offset of each 4-code block
  int32_t* sums;       // activation sums [group][nv] (scratch after `off`; the tile fills it)
  int64_t kb_per_g, groups, nv, jb0;
  int64_t j_end;  // pixel index past the tile's last output pixel
};

// A direct tile's context: its image-group's units, the block offsets (written to `scratch`),
// its pixel range rounded up to whole 16-pixel vectors, and where its activation sums go.
inline TileCtx tile_ctx(const Conv2dI8Args& args, const Conv2dI8Tile& t, const ConvI8Layout& l,
                        void* scratch) {
  const Conv2dShape& s = *args.s;
  TileCtx c;
  c.act =
      reinterpret_cast<const uint8_t*>(args.input) + (t.image * s.groups + t.group) * l.c4 * l.unit;
  int64_t* off = static_cast<int64_t*>(scratch);
  for (int64_t kb = 0; kb < l.kb; ++kb) off[kb] = conv_i8_block_offset(s, l, kb);
  c.off = off;
  c.groups = s.k() / args.group_size;
  c.kb_per_g = c.groups == 1 ? l.kb : args.group_size / 4;
  const int64_t j0 = t.oy0 * l.w;
  c.j_end = (t.oy1 - 1) * l.w + l.wo;
  c.jb0 = j0 * 4;
  c.nv = (c.j_end - j0 + kPx - 1) / kPx * kPx;
  c.sums = reinterpret_cast<int32_t*>(off + l.kb);
  return c;
}

// MR output channels x 16 pixels [p, p + 16) of the tile: the float accumulators `a`
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
          for (; kb + 4 <= stop; kb += 4) {  // four blocks per trip: less loop overhead
            step4(x_base + c.off[kb], w, kb * 4, a16);
            step4(x_base + c.off[kb + 1], w, kb * 4 + 4, a16);
            step4(x_base + c.off[kb + 2], w, kb * 4 + 8, a16);
            step4(x_base + c.off[kb + 3], w, kb * 4 + 12, a16);
          }
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

// y = a * scale_x + bias for the pixels [j, j + 16) below j_end (j = oy * w + ox; columns
// ox >= w_out of a one-copy layout are dropped).
template <int MR>
void store(const Conv2dI8Args& args, const Conv2dI8Tile& t, const ConvI8Layout& l, int64_t o,
           int64_t j, int64_t j_end, const __m256 (&a)[MR][2]) {
  const Conv2dShape& s = *args.s;
  const int64_t plane_size = s.h_out() * l.wo;
  const __m256 sx = _mm256_set1_ps(args.x_scale[t.image]);
  for (int i = 0; i < MR; ++i) {
    const __m256 bv = _mm256_set1_ps(args.bias ? args.bias[o + i] : 0.0f);
    float* plane = args.y + (t.image * s.c_out + o + i) * plane_size;
    for (int v = 0; v < 2; ++v) {
      const __m256 yv = _mm256_add_ps(rounded(_mm256_mul_ps(a[i][v], sx)), bv);
      const int64_t jv = j + 8 * v, oy = jv / l.w, ox = jv % l.w;
      if (jv + 8 <= j_end && (l.w == l.wo || ox + 8 <= l.wo)) {  // every lane a real pixel
        _mm256_storeu_ps(plane + oy * l.wo + ox, yv);
        continue;
      }
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, yv);
      for (int64_t e = 0; e < 8 && jv + e < j_end; ++e) {
        const int64_t je = jv + e, ye = je / l.w, xe = je % l.w;
        if (xe < l.wo) plane[ye * l.wo + xe] = lanes[e];
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
  const ConvI8Layout l = conv_i8_layout(*args.s);
  const TileCtx c = tile_ctx(args, t, l, scratch);
  const int64_t j_end = c.j_end;
  activation_sums(c.act, c.off, c.kb_per_g, c.groups, c.jb0, c.nv, c.sums);
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

}  // namespace
}  // namespace detail
}  // namespace kernels
}  // namespace qpart
