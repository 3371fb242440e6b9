// Internal: pieces the AVX-512 integer conv tiles (x86/conv2d_i8_avx512.cpp,
// x86/conv2d_i8_amx.cpp) share. How they store 16 output pixels of one channel: the scalar
// kernel's last steps (y = a * scale_x + bias, the product rounded on its own),
// conv2d_epilogue's residual add and ReLU, and one masked store per output row the pixels
// touch; and the activation sums of the zero-point correction. Include after the file's
// `#pragma GCC target(...)` (AVX-512 F/BW/VNNI) and <immintrin.h>; internal linkage, so each
// ISA file gets its own copy.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../conv2d_i8_impl.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

/// `v` unchanged but opaque to the optimizer, so that a product stays rounded to float on its
/// own (no FMA contraction): the scalar kernel rounds every product.
inline __m512 rounded16(__m512 v) {
  __asm__("" : "+v"(v));
  return v;
}

/// Where the 16 values [j, j + 16) of a pixel vector land in an output plane: one masked store
/// per output row the pixels touch (columns past w_out of a one-copy layout dropped), as offsets
/// from the plane (minus the first lane, so that the whole vector is stored) and lane masks.
/// The same for every channel, so computed once per 16 pixels.
struct Segments {
  int n = 0;
  int64_t off[16];
  __mmask16 mask[16];
};

/// Fills *sg in place (returning the struct by value made callers copy it with vector loads
/// right after the scalar store of n: a store-forwarding stall).
inline void segments(const ConvI8Layout& l, int64_t j, int64_t j_end, Segments* sg) {
  int n_seg = 0;
  const int64_t lanes = std::min<int64_t>(16, j_end - j);
  int64_t oy = j / l.w, ox = j % l.w;
  for (int64_t lane = 0; lane < lanes; ++oy, ox = 0) {
    const int64_t n = std::min(std::max<int64_t>(l.wo - ox, 0), lanes - lane);
    if (n > 0) {
      sg->off[n_seg] = oy * l.wo + ox - lane;
      sg->mask[n_seg++] = static_cast<__mmask16>(((1u << n) - 1u) << lane);
    }
    lane += l.w - ox;
  }
  sg->n = n_seg;
}

/// Stores channel o's 16 pixels whose float accumulator (before the image scale) is `a`:
/// y = a * scale_x + bias, then the residual add and ReLU of args.ep (`v < 0 ? 0 : v`:
/// max(0, v) keeps -0 and NaN as the second operand), by the pixels' segments.
inline void store16(const Conv2dI8Args& args, const Conv2dI8Tile& t, int64_t plane_floats,
                    int64_t o, __m512 a, const Segments& sg) {
  const Conv2dShape& s = *args.s;
  const __m512 y = _mm512_add_ps(rounded16(_mm512_mul_ps(a, _mm512_set1_ps(args.x_scale[t.image]))),
                                 _mm512_set1_ps(args.bias ? args.bias[o] : 0.0f));
  const int64_t base = (t.image * s.c_out + o) * plane_floats;
  float* plane = args.y + base;
  const ConvEpilogue* ep = args.ep;
  if (ep == nullptr) {
    for (int i = 0; i < sg.n; ++i) _mm512_mask_storeu_ps(plane + sg.off[i], sg.mask[i], y);
    return;
  }
  for (int i = 0; i < sg.n; ++i) {
    __m512 v = y;
    if (ep->residual != nullptr)
      v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(sg.mask[i], ep->residual + base + sg.off[i]));
    if (ep->relu) v = _mm512_max_ps(_mm512_setzero_ps(), v);
    _mm512_mask_storeu_ps(plane + sg.off[i], sg.mask[i], v);
  }
}

/// Pixel vectors summed at once by activation_sums512.
constexpr int kSumVecs = 4;

// The activation sums of every weight group over the tile's pixels, sums[g * nv + p]: one
// vpdpbusd with a vector of ones per 16 pixels and block (the AVX2 version needs four
// instructions for it), four pixel vectors at a time for independent accumulator chains.
inline void activation_sums512(const uint8_t* act, const int64_t* off, int64_t kb_per_g,
                               int64_t groups, int64_t jb0, int64_t nv, int32_t* sums) {
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t kb0 = g * kb_per_g, kend = kb0 + kb_per_g;
    for (int64_t p = 0; p < nv; p += 16 * kSumVecs) {
      const int nb = static_cast<int>(std::min<int64_t>(kSumVecs, (nv - p) / 16));
      __m512i acc[kSumVecs] = {_mm512_setzero_si512(), _mm512_setzero_si512(),
                               _mm512_setzero_si512(), _mm512_setzero_si512()};
      const uint8_t* base = act + jb0 + p * 4;
      if (nb == kSumVecs) {
        for (int64_t kb = kb0; kb < kend; ++kb) {
          const uint8_t* x = base + off[kb];
#pragma GCC unroll 4
          for (int v = 0; v < kSumVecs; ++v)
            acc[v] = _mm512_dpbusd_epi32(acc[v], ones, _mm512_loadu_si512(x + 64 * v));
        }
      } else {
        for (int64_t kb = kb0; kb < kend; ++kb)
          for (int v = 0; v < nb; ++v)
            acc[v] = _mm512_dpbusd_epi32(acc[v], ones, _mm512_loadu_si512(base + off[kb] + 64 * v));
      }
      for (int v = 0; v < nb; ++v) _mm512_storeu_si512(sums + g * nv + p + 16 * v, acc[v]);
    }
  }
}

}  // namespace
}  // namespace detail
}  // namespace kernels
}  // namespace qpart
