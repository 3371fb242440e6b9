// AVX-512 (VNNI) direct integer conv2d tile for the avx512 row (and the amx row's convs that
// the AMX tile does not take), on the direct layout of conv2d_i8_impl.h.
//
// A register tile is 4 output channels x 64 pixels: per 4-code block of the weight panel, four
// 64-byte loads of the pixels' 4 activations (16 pixels each, a fixed offset per block in the
// direct layout), one vpbroadcastd of each channel's 4 codes and 16 zmm vpdpbusd (u8 codes x
// s8 activations, four products per int32 lane, no saturation at any width) into 16
// accumulators. Per block that is 8 loads for 1024 products, where the AVX2 tile's 4 channels
// x 16 pixels (shared with AVX2, conv2d_i8_x86_tile.h) needed 6 loads for 256: it ran the
// ResNet-18 3x3 layers at about 40 % of PyTorch's int8 conv speed on Zen 4.
//
// The int32 group sums are exact, the zero-point correction (activation sums) and float
// epilogue are the scalar kernel's operation for operation (products kept apart from FMA
// contraction), so the output is bit-identical to it. The residual add and ReLU are applied
// as the tile stores (conv2d_i8_zmm.h), so conv2d_i8_items runs no pass after it.
#if defined(__x86_64__)

#include <algorithm>
#include <cstdint>
#include <type_traits>

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

/// Pixel vectors (16 pixels each) of the register tile.
constexpr int kVecs = 4;

// One block of a 4-channel register tile of NB pixel vectors: a[i][v] += dpbusd(codes of channel
// i, pixels 16v..16v+15). Two asm statements (channels 0-1, then 2-3: GCC allows 30 operands
// per statement) with the accumulators as register operands: from the intrinsics GCC moved
// the accumulators to other registers every block (a move per product), and with narrower
// tiles stored every accumulator to the stack after every block. They read only buffers the
// tile never writes: no memory clobber.
template <int NB>
inline __attribute__((always_inline)) void step4(const uint8_t* x, const uint8_t* const* w,
                                                 int64_t wo, __m512i (&a)[4][NB]) {
  static_assert(NB >= 1 && NB <= 4, "1..4 pixel vectors");
  if constexpr (NB == 4) {
    __m512i x0, x1, x2, x3, wv;
    __asm__(
        "vmovdqu64 (%[x]), %[x0]\n\t"
        "vmovdqu64 64(%[x]), %[x1]\n\t"
        "vmovdqu64 128(%[x]), %[x2]\n\t"
        "vmovdqu64 192(%[x]), %[x3]\n\t"
        "vpbroadcastd (%[w0],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a00]\n\t"
        "vpdpbusd %[x1], %[wv], %[a01]\n\t"
        "vpdpbusd %[x2], %[wv], %[a02]\n\t"
        "vpdpbusd %[x3], %[wv], %[a03]\n\t"
        "vpbroadcastd (%[w1],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a10]\n\t"
        "vpdpbusd %[x1], %[wv], %[a11]\n\t"
        "vpdpbusd %[x2], %[wv], %[a12]\n\t"
        "vpdpbusd %[x3], %[wv], %[a13]\n\t"
        : [a00] "+v"(a[0][0]), [a01] "+v"(a[0][1]), [a02] "+v"(a[0][2]), [a03] "+v"(a[0][3]),
          [a10] "+v"(a[1][0]), [a11] "+v"(a[1][1]), [a12] "+v"(a[1][2]), [a13] "+v"(a[1][3]),
          [x0] "=&v"(x0), [x1] "=&v"(x1), [x2] "=&v"(x2), [x3] "=&v"(x3), [wv] "=&v"(wv)
        : [x] "r"(x), [w0] "r"(w[0]), [w1] "r"(w[1]), [wo] "r"(wo));
    __asm__(
        "vpbroadcastd (%[w2],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a20]\n\t"
        "vpdpbusd %[x1], %[wv], %[a21]\n\t"
        "vpdpbusd %[x2], %[wv], %[a22]\n\t"
        "vpdpbusd %[x3], %[wv], %[a23]\n\t"
        "vpbroadcastd (%[w3],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a30]\n\t"
        "vpdpbusd %[x1], %[wv], %[a31]\n\t"
        "vpdpbusd %[x2], %[wv], %[a32]\n\t"
        "vpdpbusd %[x3], %[wv], %[a33]\n\t"
        : [a20] "+v"(a[2][0]), [a21] "+v"(a[2][1]), [a22] "+v"(a[2][2]), [a23] "+v"(a[2][3]),
          [a30] "+v"(a[3][0]), [a31] "+v"(a[3][1]), [a32] "+v"(a[3][2]), [a33] "+v"(a[3][3]),
          [wv] "=&v"(wv)
        : [x0] "v"(x0), [x1] "v"(x1), [x2] "v"(x2), [x3] "v"(x3), [w2] "r"(w[2]), [w3] "r"(w[3]),
          [wo] "r"(wo));
  }
  if constexpr (NB == 3) {
    __m512i x0, x1, x2, wv;
    __asm__(
        "vmovdqu64 (%[x]), %[x0]\n\t"
        "vmovdqu64 64(%[x]), %[x1]\n\t"
        "vmovdqu64 128(%[x]), %[x2]\n\t"
        "vpbroadcastd (%[w0],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a00]\n\t"
        "vpdpbusd %[x1], %[wv], %[a01]\n\t"
        "vpdpbusd %[x2], %[wv], %[a02]\n\t"
        "vpbroadcastd (%[w1],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a10]\n\t"
        "vpdpbusd %[x1], %[wv], %[a11]\n\t"
        "vpdpbusd %[x2], %[wv], %[a12]\n\t"
        : [a00] "+v"(a[0][0]), [a01] "+v"(a[0][1]), [a02] "+v"(a[0][2]), [a10] "+v"(a[1][0]),
          [a11] "+v"(a[1][1]), [a12] "+v"(a[1][2]), [x0] "=&v"(x0), [x1] "=&v"(x1), [x2] "=&v"(x2),
          [wv] "=&v"(wv)
        : [x] "r"(x), [w0] "r"(w[0]), [w1] "r"(w[1]), [wo] "r"(wo));
    __asm__(
        "vpbroadcastd (%[w2],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a20]\n\t"
        "vpdpbusd %[x1], %[wv], %[a21]\n\t"
        "vpdpbusd %[x2], %[wv], %[a22]\n\t"
        "vpbroadcastd (%[w3],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a30]\n\t"
        "vpdpbusd %[x1], %[wv], %[a31]\n\t"
        "vpdpbusd %[x2], %[wv], %[a32]\n\t"
        : [a20] "+v"(a[2][0]), [a21] "+v"(a[2][1]), [a22] "+v"(a[2][2]), [a30] "+v"(a[3][0]),
          [a31] "+v"(a[3][1]), [a32] "+v"(a[3][2]), [wv] "=&v"(wv)
        : [x0] "v"(x0), [x1] "v"(x1), [x2] "v"(x2), [w2] "r"(w[2]), [w3] "r"(w[3]), [wo] "r"(wo));
  }
  if constexpr (NB == 2) {
    __m512i x0, x1, wv;
    __asm__(
        "vmovdqu64 (%[x]), %[x0]\n\t"
        "vmovdqu64 64(%[x]), %[x1]\n\t"
        "vpbroadcastd (%[w0],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a00]\n\t"
        "vpdpbusd %[x1], %[wv], %[a01]\n\t"
        "vpbroadcastd (%[w1],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a10]\n\t"
        "vpdpbusd %[x1], %[wv], %[a11]\n\t"
        : [a00] "+v"(a[0][0]), [a01] "+v"(a[0][1]), [a10] "+v"(a[1][0]), [a11] "+v"(a[1][1]),
          [x0] "=&v"(x0), [x1] "=&v"(x1), [wv] "=&v"(wv)
        : [x] "r"(x), [w0] "r"(w[0]), [w1] "r"(w[1]), [wo] "r"(wo));
    __asm__(
        "vpbroadcastd (%[w2],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a20]\n\t"
        "vpdpbusd %[x1], %[wv], %[a21]\n\t"
        "vpbroadcastd (%[w3],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a30]\n\t"
        "vpdpbusd %[x1], %[wv], %[a31]\n\t"
        : [a20] "+v"(a[2][0]), [a21] "+v"(a[2][1]), [a30] "+v"(a[3][0]), [a31] "+v"(a[3][1]),
          [wv] "=&v"(wv)
        : [x0] "v"(x0), [x1] "v"(x1), [w2] "r"(w[2]), [w3] "r"(w[3]), [wo] "r"(wo));
  }
  if constexpr (NB == 1) {
    __m512i x0, wv;
    __asm__(
        "vmovdqu64 (%[x]), %[x0]\n\t"
        "vpbroadcastd (%[w0],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a00]\n\t"
        "vpbroadcastd (%[w1],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a10]\n\t"
        : [a00] "+v"(a[0][0]), [a10] "+v"(a[1][0]), [x0] "=&v"(x0), [wv] "=&v"(wv)
        : [x] "r"(x), [w0] "r"(w[0]), [w1] "r"(w[1]), [wo] "r"(wo));
    __asm__(
        "vpbroadcastd (%[w2],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a20]\n\t"
        "vpbroadcastd (%[w3],%[wo]), %[wv]\n\t"
        "vpdpbusd %[x0], %[wv], %[a30]\n\t"
        : [a20] "+v"(a[2][0]), [a30] "+v"(a[3][0]), [wv] "=&v"(wv)
        : [x0] "v"(x0), [w2] "r"(w[2]), [w3] "r"(w[3]), [wo] "r"(wo));
  }
}

// The exact int32 dots of weight blocks [kb0, kend) (one weight group) for MR channels x NB
// pixel vectors, stored to `dots`.
template <int MR, int NB>
inline __attribute__((always_inline)) void group_dots(const uint8_t* x_base, const int64_t* off,
                                                      const uint8_t* const* w, int64_t kb0,
                                                      int64_t kend, int32_t (&dots)[MR][NB][16]) {
  __m512i acc[MR][NB];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NB; ++v) acc[i][v] = _mm512_setzero_si512();
  if constexpr (MR == 4) {
    for (int64_t kb = kb0; kb < kend; ++kb) step4<NB>(x_base + off[kb], w, kb * 4, acc);
  } else {  // channel tails (fewer than 4 channels left in a tile): rare, plain intrinsics
    for (int64_t kb = kb0; kb < kend; ++kb) {
      const uint8_t* x = x_base + off[kb];
      __m512i xv[NB];
      for (int v = 0; v < NB; ++v) xv[v] = _mm512_loadu_si512(x + 64 * v);
      for (int i = 0; i < MR; ++i) {
        const __m512i wv = _mm512_set1_epi32(load_u32(w[i] + kb * 4));
        for (int v = 0; v < NB; ++v) acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], wv, xv[v]);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NB; ++v) _mm512_store_si512(dots[i][v], acc[i][v]);
}

// MR output channels x NB * 16 pixels [p, p + 16 NB) of the tile: the float accumulators `out`
// (before the image scale) of the scalar kernel's epilogue, over every weight group. `out`
// lives in memory: it is touched once per group, and kept in registers beside the int32
// accumulators it made GCC spill those inside the block loop.
template <int MR, int NB>
inline __attribute__((always_inline)) void products(const Conv2dI8Args& args, const TileCtx& c,
                                                    const uint8_t* const* w, int64_t o, int64_t p,
                                                    float (&out)[MR][NB][16]) {
  const uint8_t* x_base = c.act + c.jb0 + p * 4;
  alignas(64) int32_t dots[MR][NB][16];
  for (int64_t g = 0; g < c.groups; ++g) {
    group_dots<MR, NB>(x_base, c.off, w, g * c.kb_per_g, (g + 1) * c.kb_per_g, dots);
    // d = dot - zero * sum (exact int32), then out = out + float(d) * scale_w, rounded.
    const int32_t* sums = c.sums + g * c.nv + p;
    __m512i sv[NB];
#pragma GCC unroll 4
    for (int v = 0; v < NB; ++v) sv[v] = _mm512_loadu_si512(sums + 16 * v);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const int64_t wgi = (o + i) * c.groups + g;
      const __m512i z = _mm512_set1_epi32(args.zeros[wgi]);
      const __m512 sw = _mm512_set1_ps(_cvtsh_ss(args.scale_bits[wgi]));
#pragma GCC unroll 4
      for (int v = 0; v < NB; ++v) {
        const __m512i d =
            _mm512_sub_epi32(_mm512_load_si512(dots[i][v]), _mm512_mullo_epi32(z, sv[v]));
        const __m512 before = g == 0 ? _mm512_setzero_ps() : _mm512_load_ps(out[i][v]);
        _mm512_store_ps(out[i][v],
                        _mm512_add_ps(before, rounded16(_mm512_mul_ps(_mm512_cvtepi32_ps(d), sw))));
      }
    }
  }
}

// Output channels [o, o + MR) over every pixel of the tile.
template <int MR>
void channels(const Conv2dI8Args& args, const Conv2dI8Tile& t, const TileCtx& c,
              const ConvI8Layout& l, int64_t o, int64_t j_end) {
  const uint8_t* w[MR];
  for (int i = 0; i < MR; ++i) w[i] = args.panel + (o + i) * l.kb * 4;
  const int64_t plane_floats = args.s->h_out() * l.wo;
  Segments seg[kVecs];
  auto run = [&](auto nb_tag, int64_t p) {
    constexpr int NB = decltype(nb_tag)::value;
    alignas(64) float a[MR][NB][16];
    products<MR, NB>(args, c, w, o, p, a);
    for (int v = 0; v < NB; ++v) segments(l, c.jb0 / 4 + p + 16 * v, j_end, &seg[v]);
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NB; ++v)
        store16(args, t, plane_floats, o + i, _mm512_load_ps(a[i][v]), seg[v]);
  };
  int64_t p = 0;
  for (; p + 16 * kVecs <= c.nv; p += 16 * kVecs) run(std::integral_constant<int, kVecs>{}, p);
  switch ((c.nv - p) / 16) {
    case 3: run(std::integral_constant<int, 3>{}, p); break;
    case 2: run(std::integral_constant<int, 2>{}, p); break;
    case 1: run(std::integral_constant<int, 1>{}, p); break;
    default: break;
  }
}

}  // namespace

void conv2d_i8_tile_avx512(const Conv2dI8Args& args, const Conv2dI8Tile& t, void* scratch) {
  const ConvI8Layout l = conv_i8_layout(*args.s);
  const TileCtx c = tile_ctx(args, t, l, scratch);
  const int64_t j_end = c.j_end;
  activation_sums512(c.act, c.off, c.kb_per_g, c.groups, c.jb0, c.nv, c.sums);
  int64_t o = t.co0;
  const int64_t o_end = t.co0 + t.co_n;
  for (; o + 4 <= o_end; o += 4) channels<4>(args, t, c, l, o, j_end);
  switch (o_end - o) {
    case 3: channels<3>(args, t, c, l, o, j_end); break;
    case 2: channels<2>(args, t, c, l, o, j_end); break;
    case 1: channels<1>(args, t, c, l, o, j_end); break;
    default: break;
  }
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC pop_options

#endif  // __x86_64__
