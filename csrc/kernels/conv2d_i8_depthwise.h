// Internal: the depthwise path of the integer conv2d (conv2d_i8_depthwise.cpp, its per-ISA
// kernels x86/conv2d_i8_depthwise_avx2.cpp). Not installed, not stable.
//
// A depthwise conv (c_in == groups: each group one input channel, m = c_out / groups output
// channels per group) gains nothing from the direct kernel's 4-channel blocks (conv2d_i8_impl.h):
// it would pad the single channel to 4 and compute one output channel per 4-channel register
// tile. This path instead computes one output channel at a time, vectorized over its pixels.
//
// Input layout: per (image, channel) one unit of hp = h_in + 2 pad_h rows of `row` bytes, the
// quantized image zero-padded (pad_w zero columns on the left, zeros from pad_w + w_in to the
// row's end: the kernels read a little past the padded width, always zeros).
//
// Arithmetic: with w'[j] = code[j] - zero[o, g(j)] (in [-255, 255]), the group sum
// d[g] = sum_{j in g} v[j] * w'[j] is exactly dot - zero * sum of qpart_kernels.h (zero padding
// is v = 0, so out-of-bounds taps add nothing), then a = a + rounded(float(d) * scale_w) per
// group and y = rounded(a * scale_x) + bias, as the scalar kernel: bit-identical outputs.
//
// Work items follow Conv2dI8Plan's numbering with co_block = m (co_blocks = 1): a tile is the m
// output channels of one (image, channel) over a block of output rows, so the input rows it
// reads are loaded once for all m channels.
#pragma once

#include <cstdint>

#include "conv2d_i8_impl.h"
#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace detail {

/// Geometry of the depthwise layout and of the AVX2 kernel's pair rows.
///
/// Pair rows (AVX2): int32 lanes holding two int16 taps (v[a], v[b]) of one output pixel, so
/// that one vpmaddwd with the weight pair (w'[a], w'[b]) adds both taps exactly. Tap columns
/// come in pairs (2 t, 2 t + 1), t < pairs (an odd kw's last pair has weight 0 on its second
/// tap). Per padded input row y:
/// * stride_w == 1: one pair row P[i] = (v[y][i], v[y][i + dil_w]); pair t of output column ox
///   is P[ox + 2 t dil_w].
/// * stride_w > 1: `pairs` pair rows, row t: P_t[ox] = (v[y][ox sw + 2 t dw], v[y][ox sw +
///   (2 t + 1) dw]).
struct ConvI8DwLayout {
  int64_t hp;      // padded rows
  int64_t wp;      // padded columns
  int64_t row;     // bytes of one stored row (>= wp + 8, zeros past wp)
  int64_t unit;    // bytes of one (image, channel): hp * row
  int64_t wo8;     // output columns rounded up to 8
  int64_t pairs;   // tap pairs per kernel row: ceil(kw / 2)
  int64_t copies;  // pair rows per input row: 1 (stride_w 1) or pairs
  int64_t len;     // int32 lanes of one pair row (a multiple of 16)
};

inline ConvI8DwLayout conv_i8_dw_layout(const Conv2dShape& s) {
  auto up = [](int64_t v, int64_t m) { return (v + m - 1) / m * m; };
  ConvI8DwLayout l;
  l.hp = s.h_in + 2 * s.pad_h;
  l.wp = s.w_in + 2 * s.pad_w;
  l.wo8 = up(s.w_out(), 8);
  l.pairs = (s.kw + 1) / 2;
  l.copies = s.stride_w == 1 ? 1 : l.pairs;
  l.len = s.stride_w == 1 ? up(l.wo8 + 2 * (l.pairs - 1) * s.dil_w, 16) : up(l.wo8, 16);
  const int64_t reach = l.len * s.stride_w + (s.kw + 1) * s.dil_w + 16;
  l.row = up(l.wp + 8 > reach ? l.wp + 8 : reach, 16);
  l.unit = l.hp * l.row;
  return l;
}

/// Padded input rows a tile of output rows [oy0, oy1) reads: [oy0 sh, (oy1 - 1) sh + (kh - 1)
/// dh + 1).
inline int64_t conv_i8_dw_rows(const Conv2dShape& s, int64_t out_rows) {
  return (out_rows - 1) * s.stride_h + (s.kh - 1) * s.dil_h + 1;
}

/// Scratch bytes of one tile of up to `out_rows` output rows (any kernel of this path).
inline int64_t conv_i8_dw_scratch_bytes(const Conv2dShape& s, int64_t out_rows) {
  const ConvI8DwLayout l = conv_i8_dw_layout(s);
  const int64_t pair_rows = conv_i8_dw_rows(s, out_rows) * l.copies * l.len * 4 +
                            out_rows * (l.wo8 / 8) * 12;  // and the AVX2 tile's vectors
  const int64_t portable = l.wo8 * 8 + s.k() * 8;         // int32 sums, float accumulators, weights
  return (pair_rows > portable ? pair_rows : portable) + 128;
}

/// Whether conv2d_i8_plan takes this path for `s` on `isa`: a depthwise shape (c_in ==
/// groups), a row with a depthwise kernel, and QPART_CONV_I8_DEPTHWISE not set to 0 (read on
/// every call; a switch for benchmarks and tests, to run the generic kernels instead).
bool conv2d_i8_depthwise_applies(const Conv2dShape& s, CpuIsa isa);
/// The plan of this path (depthwise = true, panel_bytes = 0).
Conv2dI8Plan conv2d_i8_depthwise_plan(const Conv2dShape& s, int64_t group_size, CpuIsa isa,
                                      int threads);
/// Quantizes units [u_begin, u_end) (image * c_in + channel) into the layout above.
void conv2d_i8_depthwise_pack_input(const Conv2dI8Plan& plan, const float* x, const Conv2dShape& s,
                                    const float* scale, int64_t u_begin, int64_t u_end,
                                    int8_t* input);
/// Work items [item_begin, item_end) of the plan, then the epilogue of each.
void conv2d_i8_depthwise_items(const Conv2dI8Plan& plan, const Conv2dShape& s, const int8_t* input,
                               const float* scale, const uint8_t* packed,
                               const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                               int64_t group_size, int bits, int64_t item_begin, int64_t item_end,
                               void* scratch, float* y, const ConvEpilogue& ep);

/// The portable tile kernel (per output row and channel, a plain loop over the pixels).
void conv2d_i8_dw_tile_portable(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch);
/// w'[j] = code[j] - zero[o, j / group_size] of output channel o (k = kh * kw values).
void conv2d_i8_dw_weights(const Conv2dI8Args& a, int64_t o, int16_t* w);

#if defined(__x86_64__)
/// AVX2 tile: pair rows and vpmaddwd over 8-pixel vectors (exact int32 sums at every width).
void conv2d_i8_dw_tile_avx2(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch);
#endif

}  // namespace detail
}  // namespace kernels
}  // namespace qpart
