// AVX-512 (VNNI) integer conv2d tile with the output channels in the vector lanes, for the
// avx512 and amx rows' convs with few output pixels (conv_i8_lanes_applies), on the direct
// layout of conv2d_i8_impl.h.
//
// The pixel tile (x86/conv2d_i8_avx512.cpp) puts 16 consecutive pixel indices in a vector: an
// output plane of 7 x 7 pixels (9 x 7 indices with the padded columns of a stride-1 layout)
// fills 64 lanes with 49 useful ones, a 14 x 14 plane 224 with 196. Here a vector holds 16
// output channels of one pixel, so only real output pixels are computed, in chunks of 6: per
// 4-code block, one 64-byte load of each 16-channel group's codes (the lanes panel,
// conv_i8_lanes_panel_offset) and one vpdpbusd per (channel vector, pixel) whose s8 operand is
// the pixel's 4 activations broadcast from memory. A register tile is 4 channel vectors x 6
// pixels: 24 accumulators, 4 weight loads per 24 vpdpbusd.
//
// The int32 group sums are exact and the zero-point correction (activation sums) and float
// epilogue are the scalar kernel's, operation for operation (products kept apart from FMA
// contraction), so the output is bit-identical to it. The residual add and ReLU are applied
// as the tile stores (one scatter of 16 channels per pixel).
#if defined(__x86_64__)

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../conv2d_i8_impl.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#include <immintrin.h>

#include "conv2d_i8_x86_tile.h"
#include "conv2d_i8_zmm.h"
// GCC 12's _mm512_cvtepi32_ps starts from _mm512_undefined_ps(), which -Wmaybe-uninitialized
// reports once inlined (a false positive: every lane is written).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

/// Channel vectors (16 channels each) and pixels of the register tile.
constexpr int kChVecs = 4;
constexpr int kPixels = 6;

// One block for one pixel: a[i] += dpbusd(codes w[i] of 16 channels, the pixel's 4 activations
// at x + o broadcast from memory). asm with the accumulators as register operands: from the
// intrinsics GCC copied every accumulator to the stack and to another register each block.
// It reads only buffers the tile never writes: no memory clobber.
template <int NC>
inline __attribute__((always_inline)) void pixel_step(const uint8_t* x, int64_t o,
                                                      const __m512i (&w)[NC], __m512i* a) {
  static_assert(NC >= 1 && NC <= 4, "1..4 channel vectors");
  if constexpr (NC == 4) {
    __asm__(
        "vpdpbusd (%[x],%[o])%{1to16%}, %[w0], %[a0]\n\t"
        "vpdpbusd (%[x],%[o])%{1to16%}, %[w1], %[a1]\n\t"
        "vpdpbusd (%[x],%[o])%{1to16%}, %[w2], %[a2]\n\t"
        "vpdpbusd (%[x],%[o])%{1to16%}, %[w3], %[a3]\n\t"
        : [a0] "+v"(a[0]), [a1] "+v"(a[1]), [a2] "+v"(a[2]), [a3] "+v"(a[3])
        : [x] "r"(x), [o] "r"(o), [w0] "v"(w[0]), [w1] "v"(w[1]), [w2] "v"(w[2]), [w3] "v"(w[3]));
  }
  if constexpr (NC == 3) {
    __asm__(
        "vpdpbusd (%[x],%[o])%{1to16%}, %[w0], %[a0]\n\t"
        "vpdpbusd (%[x],%[o])%{1to16%}, %[w1], %[a1]\n\t"
        "vpdpbusd (%[x],%[o])%{1to16%}, %[w2], %[a2]\n\t"
        : [a0] "+v"(a[0]), [a1] "+v"(a[1]), [a2] "+v"(a[2])
        : [x] "r"(x), [o] "r"(o), [w0] "v"(w[0]), [w1] "v"(w[1]), [w2] "v"(w[2]));
  }
  if constexpr (NC == 2) {
    __asm__(
        "vpdpbusd (%[x],%[o])%{1to16%}, %[w0], %[a0]\n\t"
        "vpdpbusd (%[x],%[o])%{1to16%}, %[w1], %[a1]\n\t"
        : [a0] "+v"(a[0]), [a1] "+v"(a[1])
        : [x] "r"(x), [o] "r"(o), [w0] "v"(w[0]), [w1] "v"(w[1]));
  }
  if constexpr (NC == 1) {
    __asm__("vpdpbusd (%[x],%[o])%{1to16%}, %[w0], %[a0]\n\t"
            : [a0] "+v"(a[0])
            : [x] "r"(x), [o] "r"(o), [w0] "v"(w[0]));
  }
}

// The exact int32 dots of weight blocks [kb0, kend) (one weight group) for NC channel vectors
// x NP pixels: acc[p][i] += dpbusd(codes of channels 16i..16i+15, activations of pixel p).
template <int NC, int NP>
inline __attribute__((always_inline)) void lane_dots(const uint8_t* const* px, const int64_t* off,
                                                     const uint8_t* w, int64_t w_stride,
                                                     int64_t kb0, int64_t kend,
                                                     __m512i (&acc)[NP][NC]) {
#pragma GCC unroll 6
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 4
    for (int i = 0; i < NC; ++i) acc[p][i] = _mm512_setzero_si512();
  for (int64_t kb = kb0; kb < kend; ++kb) {
    const int64_t o = off[kb];
    __m512i wv[NC];
#pragma GCC unroll 4
    for (int i = 0; i < NC; ++i) wv[i] = _mm512_loadu_si512(w + i * w_stride + kb * 64);
#pragma GCC unroll 6
    for (int p = 0; p < NP; ++p) pixel_step<NC>(px[p], o, wv, acc[p]);
  }
}

// The zero points and weight scales of channels [o, o + 16) for weight group g.
inline void group_params(const Conv2dI8Args& args, int64_t groups, int64_t o, int64_t g, __m512i* z,
                         __m512* sw) {
  if (groups == 1) {
    *z = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(args.zeros + o)));
    *sw =
        _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(args.scale_bits + o)));
    return;
  }
  alignas(64) int32_t zi[16];
  alignas(32) uint16_t si[16];
  for (int c = 0; c < 16; ++c) {
    zi[c] = args.zeros[(o + c) * groups + g];
    si[c] = args.scale_bits[(o + c) * groups + g];
  }
  *z = _mm512_load_si512(zi);
  *sw = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(si)));
}

// Output channels [o, o + 16 NC) x the NP output pixels at plane offsets q[p] (layout pixel
// indices jr[p] past the tile's first): every weight group, the epilogue and the stores.
template <int NC, int NP>
void lane_tile(const Conv2dI8Args& args, const Conv2dI8Tile& t, const TileCtx& c,
               const ConvI8Layout& l, int64_t o, const int64_t* q, const int64_t* jr) {
  const Conv2dShape& s = *args.s;
  const uint8_t* px[NP];
  for (int p = 0; p < NP; ++p) px[p] = c.act + c.jb0 + 4 * jr[p];
  const int64_t w_stride = l.kb * 64;
  const uint8_t* w = args.panel + conv_i8_lanes_panel_offset(l, o);
  alignas(64) float out[NC][NP][16];
  for (int64_t g = 0; g < c.groups; ++g) {
    __m512i acc[NP][NC];
    lane_dots<NC, NP>(px, c.off, w, w_stride, g * c.kb_per_g, (g + 1) * c.kb_per_g, acc);
    __m512i sv[NP];
#pragma GCC unroll 6
    for (int p = 0; p < NP; ++p) sv[p] = _mm512_set1_epi32(c.sums[g * c.nv + jr[p]]);
#pragma GCC unroll 4
    for (int i = 0; i < NC; ++i) {
      __m512i z;
      __m512 sw;
      group_params(args, c.groups, o + 16 * i, g, &z, &sw);
#pragma GCC unroll 6
      for (int p = 0; p < NP; ++p) {
        // d = dot - zero * sum (exact int32), then out = out + float(d) * scale_w, rounded.
        const __m512i d = _mm512_sub_epi32(acc[p][i], _mm512_mullo_epi32(z, sv[p]));
        const __m512 before = g == 0 ? _mm512_setzero_ps() : _mm512_load_ps(out[i][p]);
        _mm512_store_ps(out[i][p],
                        _mm512_add_ps(before, rounded16(_mm512_mul_ps(_mm512_cvtepi32_ps(d), sw))));
      }
    }
  }
  // y = out * scale_x + bias (the product rounded on its own), the epilogue, one scatter of
  // 16 channel planes per pixel.
  const int64_t plane = s.h_out() * s.w_out();
  const __m512i lane_planes =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int32_t>(plane)));
  const __m512 sx = _mm512_set1_ps(args.x_scale[t.image]);
  const ConvEpilogue* ep = args.ep;
  for (int i = 0; i < NC; ++i) {
    const int64_t oc = o + 16 * i;
    const __m512 bias = args.bias ? _mm512_loadu_ps(args.bias + oc) : _mm512_setzero_ps();
    const int64_t base = (t.image * s.c_out + oc) * plane;
    for (int p = 0; p < NP; ++p) {
      __m512 v = _mm512_add_ps(rounded16(_mm512_mul_ps(_mm512_load_ps(out[i][p]), sx)), bias);
      if (ep != nullptr) {
        if (ep->residual != nullptr)
          v = _mm512_add_ps(v, _mm512_i32gather_ps(lane_planes, ep->residual + base + q[p], 4));
        if (ep->relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
      }
      _mm512_i32scatter_ps(args.y + base + q[p], lane_planes, v, 4);
    }
  }
}

// Output channels [o, o + 16 NC) over every output pixel of the tile, in chunks of at most 6
// pixels of balanced sizes (49 pixels: 4 x 6 + 5 x 5; a last chunk of one pixel would run
// a 4-product block per weight load at a tenth of the rate).
template <int NC>
void lane_channels(const Conv2dI8Args& args, const Conv2dI8Tile& t, const TileCtx& c,
                   const ConvI8Layout& l, int64_t o) {
  const int64_t wo = l.wo, q0 = t.oy0 * wo, total = (t.oy1 - t.oy0) * wo;
  const int64_t chunks = (total + kPixels - 1) / kPixels;
  int64_t q[kPixels], jr[kPixels];
  for (int64_t ch = 0, qb = q0; ch < chunks; ++ch) {
    const int n = static_cast<int>(total / chunks + (ch < total % chunks ? 1 : 0));
    for (int p = 0; p < n; ++p) {
      q[p] = qb + p;
      jr[p] = (q[p] / wo - t.oy0) * l.w + q[p] % wo;
    }
    qb += n;
    switch (n) {
      case 6: lane_tile<NC, 6>(args, t, c, l, o, q, jr); break;
      case 5: lane_tile<NC, 5>(args, t, c, l, o, q, jr); break;
      case 4: lane_tile<NC, 4>(args, t, c, l, o, q, jr); break;
      case 3: lane_tile<NC, 3>(args, t, c, l, o, q, jr); break;
      case 2: lane_tile<NC, 2>(args, t, c, l, o, q, jr); break;
      default: lane_tile<NC, 1>(args, t, c, l, o, q, jr); break;
    }
  }
}

}  // namespace

void conv2d_i8_lanes_tile_avx512(const Conv2dI8Args& args, const Conv2dI8Tile& t, void* scratch) {
  const ConvI8Layout l = conv_i8_layout(*args.s);
  const TileCtx c = tile_ctx(args, t, l, scratch);
  activation_sums512(c.act, c.off, c.kb_per_g, c.groups, c.jb0, c.nv, c.sums);
  int64_t o = t.co0;
  const int64_t o_end = t.co0 + t.co_n;  // both multiples of 16 (conv_i8_lanes_applies)
  for (; o + 16 * kChVecs <= o_end; o += 16 * kChVecs) lane_channels<kChVecs>(args, t, c, l, o);
  switch ((o_end - o) / 16) {
    case 3: lane_channels<3>(args, t, c, l, o); break;
    case 2: lane_channels<2>(args, t, c, l, o); break;
    case 1: lane_channels<1>(args, t, c, l, o); break;
    default: break;
  }
}

void conv2d_i8_lanes_pack_weights_avx512(const Conv2dShape& s, const uint8_t* packed, int bits,
                                         int64_t co_begin, int64_t co_end, uint8_t* panel) {
  const ConvI8Layout l = conv_i8_layout(s);
  const int64_t row_bytes = packed_row_bytes(s.k(), bits);
  std::vector<uint8_t> row(static_cast<size_t>(l.kb * 4));
  for (int64_t o = co_begin; o < co_end; ++o) {
    // The pixel tile's panel row of channel o, then its 4-code blocks to channel o's lane.
    conv2d_i8_pack_weights_avx2(s, packed + o * row_bytes, bits, 0, 1, row.data());
    uint8_t* dst = panel + conv_i8_lanes_panel_offset(l, o);
    for (int64_t kb = 0; kb < l.kb; ++kb) std::memcpy(dst + kb * 64, row.data() + kb * 4, 4);
  }
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC pop_options

#endif  // __x86_64__
