// Internal: the pieces of the integer conv2d (conv2d_i8.cpp) shared with its per-ISA direct
// tile kernels (x86/conv2d_i8_avx2.cpp, arm/conv2d_i8_neon*.cpp). Not installed, not stable.
//
// Direct kernels read the int8 image in a layout, 4 channels interleaved, that turns every
// (channel block, kernel tap) pair into a fixed offset from a pixel index j, for any stride and
// dilation: per (image, group, block of 4 input channels c4) one contiguous unit of
//   [copies][stride_h row phases ph][hq rows i][w columns][4 channels] int8
// holding the zero-padded image (hp = h_in + 2 pad_h rows, wp = w_in + 2 pad_w columns), row
// phase ph / row i standing for padded row i * stride_h + ph, so that output row oy at tap row r
// is row oy + (r dil_h) / stride_h of phase (r dil_h) % stride_h. Along the width:
// * stride_w == 1: one copy of the padded rows (w = wp); tap column s is a shift by s * dil_w,
//   and the pixel index is j = oy * wp + ox: a tile computes every j of its output rows and drops
//   the wp - w_out columns past each row's end (taps of neighbouring columns share cache lines).
// * stride_w > 1: kw copies, copy s holding padded column ox * stride_w + s * dil_w at column ox
//   (w = w_out), and j = oy * w_out + ox: nothing is computed twice or dropped.
// Either way 4 channels x L consecutive pixels are one contiguous load of 4 L bytes (no im2col).
// Weights are unpacked into a u8 panel whose row of output channel o holds, per block
// kb = c4 * kh * kw + r * kw + s, the codes of input channels 4 c4 .. 4 c4 + 3 at tap (r, s)
// (0 past the group's channels).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace detail {

/// Whether the kernel switch `name` (an environment variable, read at every plan) leaves its
/// kernel on: unset or anything but "0" (QPART_CONV_I8_DEPTHWISE, QPART_CONV_I8_LANES).
inline bool conv_i8_switch_on(const char* name) {
  const char* env = std::getenv(name);
  return env == nullptr || std::strcmp(env, "0") != 0;
}

/// Geometry of the direct layout (see above).
struct ConvI8Layout {
  int64_t c4;      // 4-channel blocks per group: ceil(c_in / groups / 4)
  int64_t taps;    // kh * kw
  int64_t hq;      // rows of one row phase: ceil(hp / stride_h)
  int64_t wo;      // output columns w_out
  int64_t wp;      // padded input width w_in + 2 pad_w
  bool one_copy;   // stride_w == 1: one copy, tap columns are shifts (else kw copies)
  int64_t copies;  // 1 or kw
  int64_t w;       // columns of a stored row: wp (one copy) or w_out (kw copies)
  int64_t unit;    // bytes of one (image, group, c4) unit: copies * stride_h * hq * w * 4
  int64_t kb;      // 4-code blocks per weight panel row: c4 * taps
  int64_t slack;   // bytes readable past the last unit (the tail of a tile's last chunk)
};

inline ConvI8Layout conv_i8_layout(const Conv2dShape& s) {
  ConvI8Layout l;
  l.c4 = (s.c_in / s.groups + 3) / 4;
  l.taps = s.kh * s.kw;
  l.hq = (s.h_in + 2 * s.pad_h + s.stride_h - 1) / s.stride_h;
  l.wo = s.w_out();
  l.wp = s.w_in + 2 * s.pad_w;
  l.one_copy = s.stride_w == 1;
  l.copies = l.one_copy ? 1 : s.kw;
  l.w = l.one_copy ? l.wp : l.wo;
  l.unit = l.copies * s.stride_h * l.hq * l.w * 4;
  l.kb = l.c4 * l.taps;
  l.slack = (l.w + 64) * 4 + 64;
  return l;
}

/// Byte offset (inside an image-group's run of units) of block kb's 4 channels at pixel 0.
inline int64_t conv_i8_block_offset(const Conv2dShape& s, const ConvI8Layout& l, int64_t kb) {
  const int64_t c4 = kb / l.taps, t = kb % l.taps, r = t / s.kw, q = t % s.kw;
  const int64_t dy = r * s.dil_h;
  const int64_t copy = l.one_copy ? 0 : q, shift = l.one_copy ? q * s.dil_w : 0;
  return c4 * l.unit +
         (((copy * s.stride_h + dy % s.stride_h) * l.hq + dy / s.stride_h) * l.w + shift) * 4;
}

/// Byte offset inside a unit of copy `q`, input row `iy` (unpadded), column 0.
inline int64_t conv_i8_row_offset(const Conv2dShape& s, const ConvI8Layout& l, int64_t q,
                                  int64_t iy) {
  const int64_t y = iy + s.pad_h;
  return (((q * s.stride_h + y % s.stride_h) * l.hq + y / s.stride_h) * l.w) * 4;
}

/// Everything one tile needs (whole tensors; the tile picks its part).
struct Conv2dI8Args {
  const Conv2dShape* s;
  const int8_t* input;   // conv2d_i8_pack_input's buffer (layout of the plan)
  const uint8_t* panel;  // conv2d_i8_pack_weights's buffer (direct kernels)
  const float* x_scale;  // per image
  const uint8_t* packed;
  const uint16_t* scale_bits;
  const uint8_t* zeros;
  const float* bias;
  int64_t group_size;
  int bits;
  float* y;
  /// The residual add / ReLU to apply while storing, for tiles that fuse it (the AMX tile);
  /// null: conv2d_i8_items applies it in a pass after the tile.
  const ConvEpilogue* ep = nullptr;
  /// The AMX panel holds code - zero as int8 (conv2d_i8_zero_folded): no activation sums.
  bool zero_folded = false;
};

/// One work item: output channels [co0, co0 + co_n) (absolute) of group `group` of image
/// `image`, output rows [oy0, oy1).
struct Conv2dI8Tile {
  int64_t image, group, co0, co_n, oy0, oy1;
};

/// Output pixels per register tile of the direct kernels (x86: 2 x 8 lanes, NEON: 4 x 4).
constexpr int64_t kConvI8Px = 16;
/// Output channels per register tile.
constexpr int64_t kConvI8Mr = 4;

/// Scratch bytes of one direct tile of up to `rows` output rows: the block offsets and the
/// per-(weight group, pixel) activation sums.
inline int64_t conv_i8_scratch_bytes(const Conv2dShape& s, int64_t group_size, int64_t rows) {
  const ConvI8Layout l = conv_i8_layout(s);
  const int64_t vpx = (rows * l.w + kConvI8Px - 1) / kConvI8Px * kConvI8Px;
  return l.kb * 8 + (s.k() / group_size) * vpx * 4 + 128;
}

/// Returns v unchanged but opaque to the optimizer, so that a product is rounded to float on
/// its own: GCC would otherwise contract `acc + p * s` into an FMA where the target has one.
/// (The SIMD files define their vector versions under their own target.)
inline float conv_i8_rounded(float v) {
#if defined(__x86_64__)
  __asm__("" : "+x"(v));
#elif defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile float keep = v;
  v = keep;
#endif
  return v;
}

/// Geometry of the AMX tile's weight panel (x86/conv2d_i8_amx.cpp): the 4-channel blocks of
/// each tap in chunks of 16 (kr = min(16, c4) tile rows; the last chunk of c4 >= 16 starts at
/// c4 - 16), one 16 x 64-byte tile per (16 output channels, tap, chunk).
struct ConvAmxGeometry {
  int64_t c4, taps, kr, chunks, steps, co_pad;  // steps = taps * chunks; co_pad: c_out to 16
};

inline ConvAmxGeometry conv_i8_amx_geometry(const Conv2dShape& s) {
  ConvAmxGeometry g;
  g.c4 = (s.c_in / s.groups + 3) / 4;
  g.taps = s.kh * s.kw;
  g.kr = g.c4 < 16 ? g.c4 : 16;
  g.chunks = (g.c4 + 15) / 16;
  g.steps = g.taps * g.chunks;
  g.co_pad = (s.c_out + 15) / 16 * 16;
  return g;
}

/// First 4-channel block of chunk `ch` (see ConvAmxGeometry).
inline int64_t conv_i8_amx_chunk_start(const ConvAmxGeometry& g, int64_t ch) {
  return g.c4 < 16 ? 0 : (ch * 16 < g.c4 - 16 ? ch * 16 : g.c4 - 16);
}

/// Whether the AMX tile runs a conv: one group, one weight group per row (per-channel
/// scales) and at least 8 four-channel blocks per tap (fewer leave most of each tile empty).
inline bool conv_i8_amx_applies(const Conv2dShape& s, int64_t group_size) {
  return s.groups == 1 && group_size == s.k() && (s.c_in + 3) / 4 >= 8;
}

/// Bytes of the AMX weight panel.
inline int64_t conv_i8_amx_panel_bytes(const Conv2dShape& s) {
  const ConvAmxGeometry g = conv_i8_amx_geometry(s);
  return g.co_pad * g.steps * 64;
}

/// Scratch bytes the AMX tile needs beyond conv_i8_scratch_bytes: the chunk offsets, the
/// int32 products of two 32 x 32 blocks and their 64-byte alignment.
inline int64_t conv_i8_amx_extra_scratch_bytes(const Conv2dShape& s) {
  return conv_i8_amx_geometry(s).steps * 8 + 8 * 1024 + 64;
}

/// Whether the lanes tile (output channels in the vector lanes, x86/conv2d_i8_lanes_avx512.cpp)
/// runs a direct conv: one group of whole 16-channel vectors, an output plane of at most 1024
/// pixels (where the pixel tile's 16-pixel vectors fill worst) and at least 128 codes per
/// output (the lanes tile stores each 16 outputs with one scatter).
bool conv_i8_lanes_applies(const Conv2dShape& s, int64_t group_size);

/// Byte offset of output channel o's codes at block 0 in the lanes tile's weight panel:
/// per 16 output channels, kb blocks of 16 channels x 4 codes (64 bytes, one vector load).
inline int64_t conv_i8_lanes_panel_offset(const ConvI8Layout& l, int64_t o) {
  return (o / 16) * l.kb * 64 + (o % 16) * 4;
}

/// The portable direct-layout input packer (conv2d_i8.cpp).
void conv2d_i8_pack_input_portable(const float* x, const Conv2dShape& s, const float* scale,
                                   int64_t u_begin, int64_t u_end, int8_t* out);
/// The patch-matrix packer of im2col plans (conv2d_i8.cpp): units [u_begin, u_end) of
/// (image, group, 4-channel block, `rows` output rows), numbered with the row part fastest,
/// into the direct layout of the plan's tile_shape (a 1x1 conv over k = c_in / groups * kh * kw
/// channels; channel j = the input value of code j at each output pixel, 0 in the padding and
/// past k up to the next multiple of 4). Quantizes and gathers with `isa`'s row kernels below.
void conv2d_i8_pack_patches(CpuIsa isa, const float* x, const Conv2dShape& s, const float* scale,
                            int64_t rows, int64_t u_begin, int64_t u_end, int8_t* out);
/// Bytes readable past the quantized rows a patch row kernel reads from.
constexpr int64_t kPatchRowSlack = 64;
/// Quantizes n floats with `scale` (the conv's element quantizer, 0 for scale <= 0).
void conv2d_i8_quantize_row_portable(const float* x, int64_t n, float scale, int8_t* out);
/// One output row of a patch-matrix block: dst[4 ox + lane] = src[lane][ox * stride_w] for
/// ox < wo (0 where src[lane] is null).
void conv2d_i8_patch_row_portable(const int8_t* const src[4], int64_t stride_w, int64_t wo,
                                  int8_t* dst);
/// The portable weight panel builder (conv2d_i8.cpp).
void conv2d_i8_pack_weights_portable(const Conv2dShape& s, const uint8_t* packed, int bits,
                                     int64_t co_begin, int64_t co_end, uint8_t* panel);

#if defined(__x86_64__)
void conv2d_i8_tile_avx2(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch);
/// The same tile with 256-bit vpdpbusd (AVX512-VNNI/VL), for the avx512 row.
void conv2d_i8_tile_avx512(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch);
/// The lanes tile (conv_i8_lanes_applies) and its weight panel of output channels
/// [co_begin, co_end) (conv_i8_lanes_panel_offset; c_out * kb * 4 bytes in all).
void conv2d_i8_lanes_tile_avx512(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch);
void conv2d_i8_lanes_pack_weights_avx512(const Conv2dShape& s, const uint8_t* packed, int bits,
                                         int64_t co_begin, int64_t co_end, uint8_t* panel);
/// Quantizes units [u_begin, u_end) into the direct layout (bit-exact with the portable one,
/// conv2d_i8_pack_input_portable, which it falls back to for very wide rows).
void conv2d_i8_pack_input_avx2(const float* x, const Conv2dShape& s, const float* scale,
                               int64_t u_begin, int64_t u_end, int8_t* out);
/// The weight panel of output channels [co_begin, co_end) (same bytes as the portable one).
void conv2d_i8_pack_weights_avx2(const Conv2dShape& s, const uint8_t* packed, int bits,
                                 int64_t co_begin, int64_t co_end, uint8_t* panel);
/// The AMX (AMX-INT8) tile, for plans where conv_i8_amx_applies (amx row).
void conv2d_i8_tile_amx(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch);
/// Its weight panel of output channels [co_begin, co_end) (conv_i8_amx_panel_bytes in all):
/// the u8 codes, or with `zeros` given the int8 codes minus their channel's zero point (the
/// caller checks that they fit: conv2d_i8_zero_folded).
void conv2d_i8_pack_weights_amx(const Conv2dShape& s, const uint8_t* packed, int bits,
                                const uint8_t* zeros, int64_t co_begin, int64_t co_end,
                                uint8_t* panel);
/// conv2d_i8_quantize_row_portable, bit-exact.
void conv2d_i8_quantize_row_avx2(const float* x, int64_t n, float scale, int8_t* out);
/// conv2d_i8_patch_row_portable (16 pixels per step for strides 1 and 2), same bytes.
void conv2d_i8_patch_row_avx2(const int8_t* const src[4], int64_t stride_w, int64_t wo,
                              int8_t* dst);
#endif
#if defined(__aarch64__)
void conv2d_i8_tile_neon(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch);
void conv2d_i8_tile_neon_dot(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch);
#endif

}  // namespace detail
}  // namespace kernels
}  // namespace qpart
