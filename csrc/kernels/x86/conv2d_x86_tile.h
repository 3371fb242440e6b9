// Internal: the ISA-generic body of the x86 conv2d tile kernels (conv2d_avx2.cpp,
// conv2d_avx512.cpp). Include after <immintrin.h> under the file's `#pragma GCC target`;
// every definition has internal linkage, so each ISA gets its own copy.
//
// A tile is co_n output channels x p_n output pixels of one (image, group). For each depth
// block of kConvKc:
//   1. the tile's weight rows [k0, k0 + kc) are dequantized into an fp32 panel (row-major,
//      row stride kConvKc; rows padded with zeros up to a multiple of kMr),
//   2. the pixel source is prepared:
//      * row tiles (stride 1, conv2d_row_tiles; the tile is whole output rows): the input
//        rows the tile needs, of the channels the block touches, are copied once into a
//        zero-padded buffer. Every column of the padded width wp is computed (the extra
//        (kw - 1) * dil_w per row are dropped at the end), so pixel p = row * wp + col of
//        depth (c, r, q) sits at a fixed offset (c, r * dil_h * wp + q * dil_w) from p:
//        the micro-kernel reads the padded rows directly, no im2col and no bounds checks;
//      * other strides: the pixels are im2col'ed into k-major panels of kNr pixels
//        (im2col_panels): split once per tile into runs within one output row, each run of
//        a depth row a (masked) copy of an input row segment with zeros for the padding,
//   3. for every kNr-pixel panel and every kMr-row slice of the weight panel, the
//      micro-kernel keeps kMr x kNr outputs in registers: per depth step it loads
//      kNr / kLanes pixel vectors, broadcasts kMr weights and issues kMr * kNr / kLanes
//      FMAs; it starts from the bias (first block) or from the partial sums (later blocks)
//      and stores them back (into y's NCHW planes, or a [co_n, padded pixels] accumulator
//      for row tiles), masked on the last, partial pixel vector.
// The pixels of a panel (kConvKc x kNr floats) stay in L1 while the weight slices stream from
// L2. Sums over depth always run in the same order, so a result never depends on the tiling
// or on threads.
//
// V (the ISA traits) provides: Vec, kLanes, kMr, kNr, zero(), set1(f), load(p) (aligned),
// loadu(p), fma(a, b, c),
// load_n(p, n) / store_n(p, v, n) (n < kLanes touches only n floats), load_range(p, lo, hi)
// (lanes in [lo, hi) from p, others zero and not read), and for the weight panel: Code (the
// type of one unpacked code), Unpacker<BITS> (its per-width unpack constants),
// unpack<BITS>(unpacker, row, k0, kc, codes) (codes [k0, k0 + kc) of a packed row) and
// dequant_codes(codes, k0, kc, scale_bits, zeros, group_size, out) (exactly
// (code - zero) * scale, group by group).
#pragma once

#include <cstdint>
#include <cstring>

#include "../conv2d_impl.h"
#include "../with_bits.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

// A run of output pixels inside one output row and one pixel panel: pixels (oy, ox .. ox + n)
// land in panel `panel` from lane `lane` on.
struct PixelRun {
  int64_t oy, ox, n, panel, lane;
};

/// Most runs a tile can have: one per pixel plus one per panel boundary.
constexpr int64_t kMaxPixelRuns = 2 * kConvPxMax + 8;

// Splits the tile's pixels [p0, p0 + p_n) into runs (once per tile, not per depth row).
inline int64_t pixel_runs(int64_t wo, int64_t p0, int64_t p_n, int64_t nr, PixelRun* runs) {
  int64_t count = 0, oy = p0 / wo, ox = p0 % wo;
  for (int64_t j = 0; j < p_n;) {
    const int64_t lane = j % nr;
    int64_t n = wo - ox;
    if (n > nr - lane) n = nr - lane;
    if (n > p_n - j) n = p_n - j;
    runs[count++] = PixelRun{oy, ox, n, j / nr, lane};
    j += n;
    ox += n;
    if (ox == wo) {
      ox = 0;
      ++oy;
    }
  }
  return count;
}

// dst[t] = row[ix0 + t * sw] for t in [0, n), 0 where the column falls outside [0, w_in)
// (row == nullptr: the whole run is padding). Stride 1 is a masked vector copy: lanes
// outside the row are never read.
template <class V>
inline void im2col_run(const float* row, int64_t w_in, int64_t ix0, int64_t sw, int64_t n,
                       float* dst) {
  constexpr int64_t L = V::kLanes;
  if (row == nullptr) {
    for (int64_t t = 0; t < n; t += L) V::store_n(dst + t, V::zero(), n - t);
    return;
  }
  // Columns t in [lo, hi) land inside the row: 0 <= ix0 + t * sw < w_in (no division for
  // stride 1: this runs once per run and depth row).
  // Ceiling divisions written so that no intermediate overflows for any stride (an int64-max
  // stride is valid geometry: one output column).
  int64_t lo = ix0 >= 0 ? 0 : (-ix0) / sw + ((-ix0) % sw != 0);
  int64_t hi = ix0 >= w_in ? 0 : (w_in - ix0) / sw + ((w_in - ix0) % sw != 0);
  if (lo > n) lo = n;
  if (hi > n) hi = n;
  if (hi < lo) hi = lo;
  if (sw == 1) {
    for (int64_t t = 0; t < n; t += L)
      V::store_n(dst + t, V::load_range(row + ix0 + t, lo - t, hi - t), n - t);
    return;
  }
  for (int64_t t = 0; t < lo; ++t) dst[t] = 0.0f;
  for (int64_t t = lo; t < hi; ++t) dst[t] = row[ix0 + t * sw];
  for (int64_t t = hi; t < n; ++t) dst[t] = 0.0f;
}

// im2col of depth rows [k0, k0 + kc) of the tile's pixels (runs) into k-major panels of kNr
// pixels: panel i starts at cols + i * kc * kNr, its row kk holds depth k0 + kk; lanes past
// the last pixel are zero.
template <class V>
void im2col_panels(const float* image, const Conv2dShape& s, int64_t g, int64_t k0, int64_t kc,
                   const PixelRun* runs, int64_t nruns, int64_t p_n, float* cols) {
  constexpr int64_t NR = V::kNr;
  const int64_t cg = s.c_in / s.groups, taps = s.kh * s.kw;
  const int64_t last = (p_n - 1) / NR, tail = p_n - last * NR;
  int64_t c = k0 / taps, r = (k0 % taps) / s.kw, q = k0 % s.kw;  // depth k0 + kk = (c, r, q)
  for (int64_t kk = 0; kk < kc; ++kk) {
    const float* plane = image + (g * cg + c) * s.h_in * s.w_in;
    float* base = cols + kk * NR;
    for (int64_t i = 0; i < nruns; ++i) {
      const PixelRun& u = runs[i];
      const int64_t iy = u.oy * s.stride_h - s.pad_h + r * s.dil_h;
      const float* row = iy >= 0 && iy < s.h_in ? plane + iy * s.w_in : nullptr;
      im2col_run<V>(row, s.w_in, u.ox * s.stride_w - s.pad_w + q * s.dil_w, s.stride_w, u.n,
                    base + u.panel * kc * NR + u.lane);
    }
    if (tail < NR) im2col_run<V>(nullptr, 0, 0, 1, NR - tail, base + last * kc * NR + tail);
    if (++q == s.kw) {
      q = 0;
      if (++r == s.kh) {
        r = 0;
        ++c;
      }
    }
  }
}

// Where the micro-kernel reads its pixels: depth row kk of an im2col panel (aligned), or of
// the padded input rows directly (row tiles: a per-depth offset, unaligned).
template <class V>
struct PanelSource {
  static constexpr bool kAligned = true;
  const float* cols;
  const float* row(int64_t kk) const { return cols + kk * V::kNr; }
};
struct ShiftSource {
  static constexpr bool kAligned = false;
  const float* base;
  const int64_t* offset;
  const float* row(int64_t kk) const { return base + offset[kk]; }
};

template <class V, int NV, class Src>
void conv_micro(const float* w, const Src& src, int64_t kc, int64_t rows, int64_t px, float* y,
                int64_t ldy, const float* bias, bool first) {
  using Vec = typename V::Vec;
  constexpr int MR = V::kMr, L = V::kLanes;
  Vec acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (r >= rows) {
        acc[r][v] = V::zero();  // a zero padding row of the panel: computed, never stored
      } else if (first) {
        acc[r][v] = bias ? V::set1(bias[r]) : V::zero();
      } else {
        acc[r][v] = V::load_n(y + r * ldy + v * L, px - v * L);
      }
    }
  }
  for (int64_t kk = 0; kk < kc; ++kk) {
    Vec b[NV];
    const float* brow = src.row(kk);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      b[v] = Src::kAligned ? V::load(brow + v * L) : V::loadu(brow + v * L);
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const Vec a = V::set1(w[r * kConvKc + kk]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = V::fma(a, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    if (r >= rows) break;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) V::store_n(y + r * ldy + v * L, acc[r][v], px - v * L);
  }
}

// Picks the micro-kernel with just enough pixel vectors for `px` (1..kNr) pixels.
template <class V, class Src>
void conv_micro_any(const float* w, const Src& src, int64_t kc, int64_t rows, int64_t px, float* y,
                    int64_t ldy, const float* bias, bool first) {
  constexpr int NV = V::kNr / V::kLanes;
  static_assert(NV >= 1 && NV <= 3, "1 to 3 pixel vectors per micro-tile");
  const int64_t nv = (px + V::kLanes - 1) / V::kLanes;
  if constexpr (NV >= 3) {
    if (nv == 3) return conv_micro<V, 3>(w, src, kc, rows, px, y, ldy, bias, first);
  }
  if constexpr (NV >= 2) {
    if (nv == 2) return conv_micro<V, 2>(w, src, kc, rows, px, y, ldy, bias, first);
  }
  conv_micro<V, 1>(w, src, kc, rows, px, y, ldy, bias, first);
}

// Rows [0, co_n) of the panel (row stride kConvKc): the tile's channels at depth
// [k0, k0 + kc), exactly (code - zero) * scale.
template <class V, int BITS>
void conv_dequant_panel(const Conv2dArgs& a, const Conv2dTile& t, int64_t k0, int64_t kc,
                        float* panel) {
  static_assert(kConvKc % 64 == 0, "whole 64-code unpack stores");
  const typename V::template Unpacker<BITS> u;
  const int64_t k = a.s->k(), groups = k / a.group_size;
  const int64_t row_bytes = packed_row_bytes(k, BITS);
  alignas(64) typename V::Code codes[kConvKc];
  for (int64_t r = 0; r < t.co_n; ++r) {
    const int64_t n = t.co0 + r;
    V::template unpack<BITS>(u, a.packed + n * row_bytes, k0, kc, codes);
    V::dequant_codes(codes, k0, kc, a.scale_bits + n * groups, a.zeros + n * groups, a.group_size,
                     panel + r * kConvKc);
  }
}

template <class V>
void conv_dequant_panel_any(const Conv2dArgs& a, const Conv2dTile& t, int64_t k0, int64_t kc,
                            float* panel) {
  with_bits(a.bits,
            [&](auto b) { conv_dequant_panel<V, decltype(b)::value>(a, t, k0, kc, panel); });
}

inline float* align64(float* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  return reinterpret_cast<float*>((u + 63) & ~static_cast<uintptr_t>(63));
}

// Row tiles: input rows [iy0, iy0 + nrows) of channels [c0, c0 + nch) of one image/group,
// each padded to wp = w_in + 2 * pad_w columns (zeros outside the image), channel-major;
// `slack` zeros follow (the last panel of the last channel reads past its plane).
inline void pad_rows(const float* image, const Conv2dShape& s, int64_t g, int64_t c0, int64_t nch,
                     int64_t iy0, int64_t nrows, int64_t slack, float* xpad) {
  const int64_t cg = s.c_in / s.groups, wp = s.w_in + 2 * s.pad_w;
  const size_t pad_bytes = static_cast<size_t>(s.pad_w) * sizeof(float);
  for (int64_t c = 0; c < nch; ++c) {
    const float* plane = image + (g * cg + c0 + c) * s.h_in * s.w_in;
    for (int64_t j = 0; j < nrows; ++j) {
      float* dst = xpad + (c * nrows + j) * wp;
      const int64_t iy = iy0 + j;
      if (iy < 0 || iy >= s.h_in) {
        std::memset(dst, 0, static_cast<size_t>(wp) * sizeof(float));
        continue;
      }
      std::memset(dst, 0, pad_bytes);
      std::memcpy(dst + s.pad_w, plane + iy * s.w_in, static_cast<size_t>(s.w_in) * sizeof(float));
      std::memset(dst + s.pad_w + s.w_in, 0, pad_bytes);
    }
  }
  std::memset(xpad + nch * nrows * wp, 0, static_cast<size_t>(slack) * sizeof(float));
}

// Row tiles: computed pixel p (= local row * wp + column) of depth (c, r, q) is
// xpad[c][r * dil_h * wp + q * dil_w + p], so depth row kk of every panel is the padded rows
// shifted by offset[kk].
inline void row_offsets(const Conv2dShape& s, int64_t c_first, int64_t nrows, int64_t k0,
                        int64_t kc, int64_t* offset) {
  const int64_t taps = s.kh * s.kw, wp = s.w_in + 2 * s.pad_w;
  int64_t c = k0 / taps, r = (k0 % taps) / s.kw, q = k0 % s.kw;  // depth k0 + kk = (c, r, q)
  for (int64_t kk = 0; kk < kc; ++kk) {
    offset[kk] = ((c - c_first) * nrows + r * s.dil_h) * wp + q * s.dil_w;
    if (++q == s.kw) {
      q = 0;
      if (++r == s.kh) {
        r = 0;
        ++c;
      }
    }
  }
}

template <class V>
void conv_tile_rows(const Conv2dArgs& a, const Conv2dTile& t, float* scratch) {
  constexpr int64_t MR = V::kMr, NR = V::kNr;
  const Conv2dShape& s = *a.s;
  const int64_t k = s.k(), taps = s.kh * s.kw, wo = s.w_out(), pixels = s.h_out() * wo;
  const int64_t wp = s.w_in + 2 * s.pad_w, rows = t.p_n / wo, oy0 = t.p0 / wo;
  const int64_t in_rows = rows + (s.kh - 1) * s.dil_h;
  const int64_t computed = rows * wp, ld = (computed + NR - 1) / NR * NR;
  const int64_t panels = ld / NR, rows_padded = (t.co_n + MR - 1) / MR * MR;
  float* panel = align64(scratch);
  float* acc = align64(panel + rows_padded * kConvKc);  // [co_n, ld] sums so far
  float* xpad = align64(acc + t.co_n * ld);
  std::memset(panel + t.co_n * kConvKc, 0,
              static_cast<size_t>((rows_padded - t.co_n) * kConvKc) * sizeof(float));
  const float* image = a.x + t.image * s.c_in * s.h_in * s.w_in;
  const float* bias = a.bias ? a.bias + t.co0 : nullptr;
  int64_t offset[kConvKc];
  for (int64_t k0 = 0; k0 < k; k0 += kConvKc) {
    const int64_t kc = k - k0 < kConvKc ? k - k0 : kConvKc;
    conv_dequant_panel_any<V>(a, t, k0, kc, panel);
    const int64_t c_first = k0 / taps, nch = (k0 + kc - 1) / taps - c_first + 1;
    const int64_t slack = NR + (s.kw - 1) * s.dil_w + 16;
    pad_rows(image, s, t.group, c_first, nch, oy0 - s.pad_h, in_rows, slack, xpad);
    row_offsets(s, c_first, in_rows, k0, kc, offset);
    for (int64_t i = 0; i < panels; ++i) {
      const int64_t px = computed - i * NR < NR ? computed - i * NR : NR;
      for (int64_t r0 = 0; r0 < t.co_n; r0 += MR) {
        conv_micro_any<V>(panel + r0 * kConvKc, ShiftSource{xpad + i * NR, offset}, kc, t.co_n - r0,
                          px, acc + r0 * ld + i * NR, ld, bias ? bias + r0 : nullptr, k0 == 0);
      }
    }
  }
  // Keep the w_out valid columns of every computed row.
  for (int64_t c = 0; c < t.co_n; ++c) {
    float* out = a.y + (t.image * s.c_out + t.co0 + c) * pixels + t.p0;
    for (int64_t j = 0; j < rows; ++j) {
      std::memcpy(out + j * wo, acc + c * ld + j * wp, static_cast<size_t>(wo) * sizeof(float));
    }
  }
}

template <class V>
void conv_tile(const Conv2dArgs& a, const Conv2dTile& t, float* scratch) {
  constexpr int64_t MR = V::kMr, NR = V::kNr;
  const Conv2dShape& s = *a.s;
  if (conv2d_row_tiles(s)) return conv_tile_rows<V>(a, t, scratch);
  const int64_t k = s.k(), pixels = s.h_out() * s.w_out();
  const int64_t rows_padded = (t.co_n + MR - 1) / MR * MR;
  float* panel = align64(scratch);
  float* cols = align64(panel + rows_padded * kConvKc);
  // Padding rows stay zero for every depth block (dequant writes only rows < co_n).
  std::memset(panel + t.co_n * kConvKc, 0,
              static_cast<size_t>((rows_padded - t.co_n) * kConvKc) * sizeof(float));
  const float* image = a.x + t.image * s.c_in * s.h_in * s.w_in;
  float* y0 = a.y + (t.image * s.c_out + t.co0) * pixels + t.p0;
  const float* bias = a.bias ? a.bias + t.co0 : nullptr;
  PixelRun runs[kMaxPixelRuns];
  const int64_t nruns = pixel_runs(s.w_out(), t.p0, t.p_n, NR, runs);
  for (int64_t k0 = 0; k0 < k; k0 += kConvKc) {
    const int64_t kc = k - k0 < kConvKc ? k - k0 : kConvKc;
    conv_dequant_panel_any<V>(a, t, k0, kc, panel);
    im2col_panels<V>(image, s, t.group, k0, kc, runs, nruns, t.p_n, cols);
    for (int64_t i = 0; i * NR < t.p_n; ++i) {
      const int64_t px = t.p_n - i * NR < NR ? t.p_n - i * NR : NR;
      for (int64_t r0 = 0; r0 < t.co_n; r0 += MR) {
        conv_micro_any<V>(panel + r0 * kConvKc, PanelSource<V>{cols + i * kc * NR}, kc, t.co_n - r0,
                          px, y0 + r0 * pixels + i * NR, pixels, bias ? bias + r0 : nullptr,
                          k0 == 0);
      }
    }
  }
}

}  // namespace
}  // namespace detail
}  // namespace kernels
}  // namespace qpart
