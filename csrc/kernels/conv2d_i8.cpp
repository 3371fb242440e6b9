// Integer conv2d (opt-in int8 activations, see qpart_kernels.h): per-image scales, the plan,
// the operand packers, the portable scalar kernel (the reference of the direct SIMD kernels in
// x86/conv2d_i8_avx2.cpp and arm/conv2d_i8_neon*.cpp) and the work-item dispatch.
//
// The scalar kernel reads the quantized image in NCHW order and computes every output element
// straight from the definition (bounds-checked taps, the codes read from the packed rows).
// Direct kernels read the direct layout and the unpacked weight panel of conv2d_i8_impl.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "conv2d_i8_depthwise.h"
#include "conv2d_i8_impl.h"
#include "dispatch.h"
#include "isa_table.h"
#include "packed_code.h"
#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace {

using detail::Conv2dI8Args;
using detail::Conv2dI8Tile;
using detail::ConvI8Layout;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Bytes of activations (k x virtual pixels) a direct tile aims to keep in L2.
constexpr int64_t kActBudget = 384 * 1024;
// Output channels per tile at most.
constexpr int64_t kCoBlock = 128;
// Where the lanes tile runs (measured on Zen 4, docs/OPS.md): output planes up to 32 x 32
// (at 56 x 56 the pixel tile's vectors are full and it was 3 % faster) and at least 128 codes
// per output (it stores 16 outputs with one scatter: at 64 codes, a 1x1 conv over 64
// channels, it was 20 % slower).
constexpr int64_t kLanesMaxPlane = 32 * 32;
constexpr int64_t kLanesMinCodes = 128;

// The linear_i8 element quantizer: |x / s| <= 127.00001, so the magic-number rounding is exact
// round-half-to-even of the true quotient (as _mm256_round_ps of _mm256_div_ps).
inline int8_t quantize_one(float x, float s) {
  if (!(s > 0.0f)) return 0;
  float r = (x / s + 12582912.0f) - 12582912.0f;
  r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
  return static_cast<int8_t>(static_cast<int>(r));
}

bool absmax_scalar(const float* x, int64_t n, float* amax) {
  float m = 0.0f;
  bool finite = true;
  for (int64_t j = 0; j < n; ++j) {
    const float a = std::fabs(x[j]);
    finite = finite && a <= 3.4028234663852886e38f;  // false for NaN and Inf
    m = a > m ? a : m;
  }
  *amax = m;
  return finite;
}

// Scalar plan: units are up to 4 channel planes of one group in plain NCHW int8.
void pack_input_nchw(const float* x, const Conv2dShape& s, const float* scale, int64_t u_begin,
                     int64_t u_end, int8_t* out) {
  const int64_t cg = s.c_in / s.groups, c4 = ceil_div(cg, 4), plane = s.h_in * s.w_in;
  for (int64_t u = u_begin; u < u_end; ++u) {
    const int64_t n = u / (s.groups * c4), g = (u / c4) % s.groups, b = u % c4;
    const float sx = scale[n];
    for (int64_t c = b * 4; c < std::min(cg, b * 4 + 4); ++c) {
      const int64_t off = (n * s.c_in + g * cg + c) * plane;
      for (int64_t i = 0; i < plane; ++i) out[off + i] = quantize_one(x[off + i], sx);
    }
  }
}

template <int BITS>
void unpack_row(const uint8_t* w, int64_t k, uint8_t* out) {
  int64_t j = 0;
  for (; j + 8 <= k; j += 8) {
    uint64_t v = 0;
    std::memcpy(&v, w + j / 8 * BITS, BITS);
    for (int i = 0; i < 8; ++i)
      out[j + i] = static_cast<uint8_t>((v >> (i * BITS)) & ((1u << BITS) - 1u));
  }
  for (; j < k; ++j) out[j] = static_cast<uint8_t>(detail::code_at(w, j, BITS));
}

// The reference: every output element from the definition (qpart_kernels.h).
void tile_scalar(const Conv2dI8Args& a, const Conv2dI8Tile& t) {
  const Conv2dShape& s = *a.s;
  const int64_t cg = s.c_in / s.groups, k = s.k(), taps = s.kh * s.kw;
  const int64_t gs = a.group_size, wgroups = k / gs, ho = s.h_out(), wo = s.w_out();
  const int64_t row_bytes = packed_row_bytes(k, a.bits);
  const int8_t* img = a.input + (t.image * s.c_in + t.group * cg) * s.h_in * s.w_in;
  const float sx = a.x_scale[t.image];
  for (int64_t o = t.co0; o < t.co0 + t.co_n; ++o) {
    const uint8_t* w = a.packed + o * row_bytes;
    const float b = a.bias ? a.bias[o] : 0.0f;
    for (int64_t oy = t.oy0; oy < t.oy1; ++oy) {
      for (int64_t ox = 0; ox < wo; ++ox) {
        float acc = 0.0f;
        for (int64_t g = 0; g < wgroups; ++g) {
          int32_t dot = 0, sum = 0;
          for (int64_t j = g * gs; j < (g + 1) * gs; ++j) {
            const int64_t ci = j / taps, r = (j % taps) / s.kw, q = j % s.kw;
            const int64_t iy = oy * s.stride_h - s.pad_h + r * s.dil_h;
            const int64_t ix = ox * s.stride_w - s.pad_w + q * s.dil_w;
            if (iy < 0 || iy >= s.h_in || ix < 0 || ix >= s.w_in) continue;
            const int32_t v = img[(ci * s.h_in + iy) * s.w_in + ix];
            dot += v * detail::code_at(w, j, a.bits);
            sum += v;
          }
          const int32_t d = dot - static_cast<int32_t>(a.zeros[o * wgroups + g]) * sum;
          acc = acc + detail::conv_i8_rounded(static_cast<float>(d) *
                                              half_bits_to_float(a.scale_bits[o * wgroups + g]));
        }
        a.y[((t.image * s.c_out + o) * ho + oy) * wo + ox] = detail::conv_i8_rounded(acc * sx) + b;
      }
    }
  }
}

// Whether the direct layout fits the weight groups: each one covers whole 4-channel blocks
// (the direct layout's blocks are 4 channels at one tap; the patch matrix's, any 4 codes).
// A 1..3-channel stem stays direct too: its patches cost more to gather (one byte per code
// and pixel) than the padding to 4 channels costs in products (measured on ResNet's stem).
bool direct_layout_fits(const Conv2dShape& s, int64_t group_size) {
  return group_size == s.k() || group_size % (4 * s.kh * s.kw) == 0;
}

// The 1x1 convolution over the patch matrix that an im2col plan's tiles compute: per (image,
// group) k = c_in / groups * kh * kw "channels" of h_out x w_out pixels, channel j holding code
// j's input value at every output pixel (0 where the tap falls into the padding).
Conv2dShape patch_matrix_shape(const Conv2dShape& s) {
  Conv2dShape v = s;
  v.c_in = s.groups * s.k();
  v.h_in = s.h_out();
  v.w_in = s.w_out();
  v.kh = v.kw = 1;
  v.stride_h = v.stride_w = 1;
  v.pad_h = v.pad_w = 0;
  v.dil_h = v.dil_w = 1;
  return v;
}

}  // namespace

namespace detail {

bool conv_i8_lanes_applies(const Conv2dShape& s, int64_t group_size) {
  return s.groups == 1 && s.c_out % 16 == 0 && direct_layout_fits(s, group_size) &&
         s.h_out() * s.w_out() <= kLanesMaxPlane && s.k() >= kLanesMinCodes;
}

}  // namespace detail

Status int8_scale(CpuIsa isa, const float* x, int64_t n, float* scale) {
  const auto absmax = detail::isa_kernels(isa).fn.absmax_f32;
  float amax = 0.0f;
  const bool finite = absmax ? absmax(x, n, &amax) : absmax_scalar(x, n, &amax);
  *scale = finite ? amax / 127.0f : 0.0f;
  return finite ? Status::kOk : Status::kNonFinite;
}

Status conv2d_i8_scales(CpuIsa isa, const float* x, const Conv2dShape& s, float* scale) {
  const int64_t n = s.c_in * s.h_in * s.w_in;
  Status status = Status::kOk;
  for (int64_t i = 0; i < s.batch; ++i)
    if (int8_scale(isa, x + i * n, n, scale + i) != Status::kOk) status = Status::kNonFinite;
  return status;
}

Conv2dI8Plan conv2d_i8_plan(const Conv2dShape& s, int64_t group_size, CpuIsa isa, int threads) {
  if (detail::conv2d_i8_depthwise_applies(s, isa))
    return detail::conv2d_i8_depthwise_plan(s, group_size, isa, threads);
  const detail::IsaKernels& row = detail::isa_kernels(isa);
  const int64_t per_group = s.c_out / s.groups, ho = s.h_out();
  const int64_t c4 = ceil_div(s.c_in / s.groups, 4);
  Conv2dI8Plan p{};
  p.isa = isa;
  const bool fits = direct_layout_fits(s, group_size);
  // The patch matrix needs groups of whole 4-code blocks (the API's are multiples of 32).
  p.direct = row.fn.conv2d_i8_tile != nullptr && (fits || group_size % 4 == 0);
  // With AMX, a 1-3 channel conv (a stem: one 4-channel block, too few for the AMX tile) with
  // enough codes per output runs AMX on the patch matrix: the products then cost little next to the
  // gather (without AMX the direct layout is faster for stems, docs/OPS.md).
  const bool amx_row = row.fn.conv2d_i8_amx_tile != nullptr;
  const bool amx_patches = amx_row && s.c_in / s.groups < 4 && s.kh * s.kw > 1 &&
                           !detail::conv_i8_amx_applies(s, group_size) &&
                           detail::conv_i8_amx_applies(patch_matrix_shape(s), group_size);
  p.im2col = p.direct && (!fits || amx_patches);
  p.tile_shape = p.im2col ? patch_matrix_shape(s) : s;
  p.amx = p.direct && amx_row && detail::conv_i8_amx_applies(p.tile_shape, group_size);
  p.lanes = p.direct && !p.im2col && !p.amx && row.fn.conv2d_i8_lanes_tile != nullptr &&
            detail::conv_i8_lanes_applies(s, group_size) &&
            detail::conv_i8_switch_on("QPART_CONV_I8_LANES");  // 0: the pixel tile
  p.input_units = s.batch * s.groups * c4;
  threads = std::max(threads, 1);
  if (p.im2col) {  // split the rows too, so that a batch-1 stem (one unit) packs on all threads
    const int64_t parts = std::clamp<int64_t>(2 * threads / std::max<int64_t>(1, p.input_units), 1,
                                              std::max<int64_t>(1, ho));
    p.im2col_rows = ceil_div(ho, parts);
    p.input_units *= ceil_div(ho, p.im2col_rows);
  }
  if (p.direct) {
    const Conv2dShape& ts = p.tile_shape;
    const ConvI8Layout l = detail::conv_i8_layout(ts);
    int64_t rows = std::clamp<int64_t>(kActBudget / std::max<int64_t>(1, l.kb * 4 * l.w), 1, ho);
    rows = ceil_div(ho, ceil_div(ho, rows));  // balanced row tiles
    int64_t co_block = std::min(per_group, kCoBlock);
    auto items = [&](int64_t cb, int64_t r) {
      return s.batch * s.groups * ceil_div(per_group, cb) * ceil_div(ho, r);
    };
    // Enough items for the threads: halve the channel blocks, then the row blocks. Channel
    // blocks stay multiples of the register tile's channels: 4, or 32 (two tiles of 16, the
    // unit of its weight panel) for AMX.
    // 16 (one vector of channels) for the lanes tile.
    const int64_t step = p.amx ? 32 : (p.lanes ? 16 : detail::kConvI8Mr);
    const int64_t smallest = p.amx ? 32 : (p.lanes ? 16 : 2 * step);
    while (items(co_block, rows) < 2 * threads && co_block >= 2 * smallest)
      co_block = ceil_div(ceil_div(co_block, 2), step) * step;
    while (items(co_block, rows) < 2 * threads && rows > 1) rows = ceil_div(rows, 2);
    // A few items per thread split unevenly (ResNet's stem at batch 1: 7 items, 4 against 3
    // on two threads): shorter row blocks, up to twice as many, for a multiple of the threads.
    const int64_t blocks = ceil_div(ho, rows);
    for (int64_t b = blocks; items(co_block, rows) % threads != 0 && b < 2 * blocks; ++b) {
      const int64_t r = ceil_div(ho, b);
      if (items(co_block, r) % threads == 0) rows = r;
    }
    p.co_block = co_block;
    p.px_block = rows;
    p.input_bytes = ts.batch * ts.groups * l.c4 * l.unit + l.slack;
    p.panel_bytes = p.amx ? detail::conv_i8_amx_panel_bytes(ts) : s.c_out * l.kb * 4;
    p.scratch_bytes = detail::conv_i8_scratch_bytes(ts, group_size, rows) +
                      (p.amx ? detail::conv_i8_amx_extra_scratch_bytes(ts) : 0);
  } else {
    p.co_block = per_group;
    p.px_block =
        std::max<int64_t>(1, std::min<int64_t>(ho, 1024 / std::max<int64_t>(1, s.w_out())));
    p.px_block = ceil_div(ho, ceil_div(ho, p.px_block));
    p.input_bytes = s.batch * s.c_in * s.h_in * s.w_in;
    p.panel_bytes = 0;
    p.scratch_bytes = 0;
  }
  p.co_blocks = ceil_div(per_group, p.co_block);
  p.px_blocks = ceil_div(ho, p.px_block);
  p.items = s.batch * s.groups * p.co_blocks * p.px_blocks;
  return p;
}

void conv2d_i8_pack_input(const Conv2dI8Plan& plan, const float* x, const Conv2dShape& s,
                          const float* scale, int64_t u_begin, int64_t u_end, int8_t* input) {
  if (plan.depthwise)
    return detail::conv2d_i8_depthwise_pack_input(plan, x, s, scale, u_begin, u_end, input);
  if (!plan.direct) return pack_input_nchw(x, s, scale, u_begin, u_end, input);
  if (plan.im2col) {
    detail::conv2d_i8_pack_patches(plan.isa, x, s, scale, plan.im2col_rows, u_begin, u_end, input);
  } else if (const auto packer = detail::isa_kernels(plan.isa).fn.conv2d_i8_pack_input) {
    packer(x, s, scale, u_begin, u_end, input);
  } else {
    detail::conv2d_i8_pack_input_portable(x, s, scale, u_begin, u_end, input);
  }
  if (u_end == plan.input_units) {  // the slack past the last unit (read, never used)
    const ConvI8Layout l = detail::conv_i8_layout(plan.tile_shape);
    std::memset(input + plan.input_bytes - l.slack, 0, static_cast<size_t>(l.slack));
  }
}

bool conv2d_i8_zero_folded(const Conv2dI8Plan& plan, const Conv2dShape& s, int bits,
                           const uint8_t* zeros) {
  if (!plan.amx) return false;           // AMX plans are direct ones
  const int lo = (1 << bits) - 1 - 127;  // the largest code minus the zero must be <= 127
  for (int64_t o = 0; o < s.c_out; ++o)  // (one weight group per row: conv_i8_amx_applies)
    if (zeros[o] > 128 || zeros[o] < lo) return false;
  return true;
}

void conv2d_i8_pack_weights(const Conv2dI8Plan& plan, const Conv2dShape& s, const uint8_t* packed,
                            int bits, const uint8_t* zeros, int64_t co_begin, int64_t co_end,
                            uint8_t* panel) {
  if (plan.depthwise) return;  // no panel: the depthwise tiles read the packed codes
  if (!plan.direct) return;
  const Conv2dShape& ts = plan.tile_shape;  // the panel follows the tiles' shape (patch matrix)
  if (plan.lanes)
    return detail::isa_kernels(plan.isa).fn.conv2d_i8_lanes_pack_weights(ts, packed, bits, co_begin,
                                                                         co_end, panel);
  if (plan.amx) {
    const uint8_t* fold = conv2d_i8_zero_folded(plan, s, bits, zeros) ? zeros : nullptr;
    return detail::isa_kernels(plan.isa).fn.conv2d_i8_amx_pack_weights(ts, packed, bits, fold,
                                                                       co_begin, co_end, panel);
  }
  const auto builder = detail::isa_kernels(plan.isa).fn.conv2d_i8_pack_weights;
  if (builder) return builder(ts, packed, bits, co_begin, co_end, panel);
  detail::conv2d_i8_pack_weights_portable(ts, packed, bits, co_begin, co_end, panel);
}

namespace detail {

void conv2d_i8_pack_input_portable(const float* x, const Conv2dShape& s, const float* scale,
                                   int64_t u_begin, int64_t u_end, int8_t* out) {
  const ConvI8Layout l = conv_i8_layout(s);
  const int64_t cg = s.c_in / s.groups;
  std::vector<int8_t> row(static_cast<size_t>(l.wp));  // one quantized, zero-padded input row
  for (int64_t u = u_begin; u < u_end; ++u) {
    const int64_t n = u / (s.groups * l.c4), g = (u / l.c4) % s.groups, b = u % l.c4;
    int8_t* dst = out + u * l.unit;
    std::memset(dst, 0, static_cast<size_t>(l.unit));
    for (int64_t c = b * 4; c < std::min(cg, b * 4 + 4); ++c) {
      const float* src = x + (n * s.c_in + g * cg + c) * s.h_in * s.w_in;
      for (int64_t iy = 0; iy < s.h_in; ++iy) {
        for (int64_t ix = 0; ix < s.w_in; ++ix)
          row[s.pad_w + ix] = quantize_one(src[iy * s.w_in + ix], scale[n]);
        for (int64_t q = 0; q < l.copies; ++q) {
          int8_t* d = dst + conv_i8_row_offset(s, l, q, iy) + (c & 3);
          if (l.one_copy) {
            for (int64_t x = 0; x < l.wp; ++x) d[x * 4] = row[x];
          } else {
            for (int64_t ox = 0; ox < l.wo; ++ox) d[ox * 4] = row[ox * s.stride_w + q * s.dil_w];
          }
        }
      }
    }
  }
}

void conv2d_i8_pack_weights_portable(const Conv2dShape& s, const uint8_t* packed, int bits,
                                     int64_t co_begin, int64_t co_end, uint8_t* panel) {
  const ConvI8Layout l = detail::conv_i8_layout(s);
  const int64_t k = s.k(), cg = s.c_in / s.groups, row_bytes = packed_row_bytes(k, bits);
  const int64_t kp = l.kb * 4;
  std::vector<uint8_t> codes(static_cast<size_t>(k));
  for (int64_t o = co_begin; o < co_end; ++o) {
    with_bits(bits, [&](auto b) {
      unpack_row<decltype(b)::value>(packed + o * row_bytes, k, codes.data());
    });
    uint8_t* dst = panel + o * kp;
    if (cg % 4) std::memset(dst + (l.c4 - 1) * l.taps * 4, 0, static_cast<size_t>(l.taps * 4));
    for (int64_t ci = 0; ci < cg; ++ci) {
      uint8_t* block = dst + (ci / 4) * l.taps * 4 + (ci & 3);
      const uint8_t* src = codes.data() + ci * l.taps;
      for (int64_t t = 0; t < l.taps; ++t) block[t * 4] = src[t];
    }
  }
}

void conv2d_i8_quantize_row_portable(const float* x, int64_t n, float scale, int8_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = quantize_one(x[i], scale);
}

void conv2d_i8_patch_row_portable(const int8_t* const src[4], int64_t stride_w, int64_t wo,
                                  int8_t* dst) {
  for (int64_t lane = 0; lane < 4; ++lane) {
    const int8_t* p = src[lane];
    if (p == nullptr) {
      for (int64_t ox = 0; ox < wo; ++ox) dst[ox * 4 + lane] = 0;
    } else {
      for (int64_t ox = 0; ox < wo; ++ox) dst[ox * 4 + lane] = p[ox * stride_w];
    }
  }
}

void conv2d_i8_pack_patches(CpuIsa isa, const float* x, const Conv2dShape& s, const float* scale,
                            int64_t rows, int64_t u_begin, int64_t u_end, int8_t* out) {
  const IsaEntryPoints& fn = isa_kernels(isa).fn;
  const auto quantize_row =
      fn.conv2d_i8_quantize_row ? fn.conv2d_i8_quantize_row : conv2d_i8_quantize_row_portable;
  const auto patch_row =
      fn.conv2d_i8_patch_row ? fn.conv2d_i8_patch_row : conv2d_i8_patch_row_portable;
  const int64_t cg = s.c_in / s.groups, taps = s.kh * s.kw, k = cg * taps;
  const int64_t ho = s.h_out(), wo = s.w_out(), c4s = ceil_div(cg, 4), parts = ceil_div(ho, rows);
  const int64_t block = ho * wo * 4, wp = s.w_in + 2 * s.pad_w, blocks = ceil_div(k, 4);
  // The unit's channels, quantized, zero-padded, its rows only (+ kPatchRowSlack readable bytes).
  std::vector<int8_t> planes;
  for (int64_t u = u_begin; u < u_end; ++u) {
    const int64_t part = u % parts, c4 = (u / parts) % c4s, ng = u / (parts * c4s);
    const int64_t n = ng / s.groups, g = ng % s.groups;
    const int64_t oy0 = part * rows, oy1 = std::min(ho, oy0 + rows);
    const int64_t py0 = oy0 * s.stride_h,
                  nr = (oy1 - 1) * s.stride_h + (s.kh - 1) * s.dil_h + 1 - py0;
    const int64_t nc = std::min<int64_t>(4, cg - 4 * c4);
    planes.assign(static_cast<size_t>(nc * nr * wp + kPatchRowSlack), 0);
    for (int64_t c = 0; c < nc; ++c) {
      const float* src = x + ((n * s.c_in + g * cg + 4 * c4 + c) * s.h_in) * s.w_in;
      for (int64_t r = 0; r < nr; ++r) {
        const int64_t iy = py0 + r - s.pad_h;
        if (iy >= 0 && iy < s.h_in)
          quantize_row(src + iy * s.w_in, s.w_in, scale[n],
                       planes.data() + (c * nr + r) * wp + s.pad_w);
      }
    }
    // Codes [4 c4 taps, min(4 (c4 + 1) taps, k)): whole blocks, the group's last one padded.
    const int64_t j0 = 4 * c4 * taps, j1 = std::min(4 * (c4 + 1) * taps, k);
    int8_t* base = out + ng * blocks * block;
    for (int64_t b = j0 / 4; b < ceil_div(j1, 4); ++b) {
      int64_t lane_row[4] = {0, 0, 0, 0};  // code 4b + lane's first row and column in `planes`
      for (int64_t lane = 0; lane < 4 && 4 * b + lane < j1; ++lane) {
        const int64_t j = 4 * b + lane;
        const int64_t c = j / taps - 4 * c4, t = j % taps, r = t / s.kw, q = t % s.kw;
        lane_row[lane] = (c * nr + r * s.dil_h) * wp + q * s.dil_w;
      }
      for (int64_t oy = oy0; oy < oy1; ++oy) {
        const int8_t* row = planes.data() + (oy - oy0) * s.stride_h * wp;
        const int8_t* src[4];
        for (int64_t lane = 0; lane < 4; ++lane)  // null past the row's last code
          src[lane] = 4 * b + lane < j1 ? row + lane_row[lane] : nullptr;
        patch_row(src, s.stride_w, wo, base + b * block + oy * wo * 4);
      }
    }
  }
}

}  // namespace detail

void conv2d_i8_items(const Conv2dI8Plan& plan, const Conv2dShape& s, const int8_t* input,
                     const uint8_t* panel, const float* scale, const uint8_t* packed,
                     const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                     int64_t group_size, int bits, int64_t item_begin, int64_t item_end,
                     void* scratch, float* y, const ConvEpilogue& ep) {
  if (plan.depthwise)
    return detail::conv2d_i8_depthwise_items(plan, s, input, scale, packed, scale_bits, zeros, bias,
                                             group_size, bits, item_begin, item_end, scratch, y,
                                             ep);
  // The AVX-512 and AMX tiles apply the epilogue as they store; the others leave it to a pass
  // below.
  const detail::IsaKernels& row = detail::isa_kernels(plan.isa);
  const bool fused = plan.direct && row.conv_i8_tile_fuses_epilogue;
  Conv2dI8Args args{&plan.tile_shape, input, panel, scale, packed, scale_bits, zeros, bias,
                    group_size,       bits,  y};
  args.ep = fused && ep.active() ? &ep : nullptr;
  args.zero_folded = conv2d_i8_zero_folded(plan, s, bits, zeros);
  const detail::IsaEntryPoints& fn = row.fn;
  const auto direct =
      plan.amx ? fn.conv2d_i8_amx_tile : (plan.lanes ? fn.conv2d_i8_lanes_tile : fn.conv2d_i8_tile);
  const int64_t per_group = s.c_out / s.groups, ho = s.h_out();
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t pt = item % plan.px_blocks;
    const int64_t ct = (item / plan.px_blocks) % plan.co_blocks;
    const int64_t bg = item / (plan.px_blocks * plan.co_blocks);
    Conv2dI8Tile t;
    t.image = bg / s.groups;
    t.group = bg % s.groups;
    t.co0 = t.group * per_group + ct * plan.co_block;
    t.co_n = std::min(plan.co_block, per_group - ct * plan.co_block);
    t.oy0 = pt * plan.px_block;
    t.oy1 = std::min(ho, t.oy0 + plan.px_block);
    if (plan.direct) {
      direct(args, t, scratch);
    } else {
      tile_scalar(args, t);
    }
    if (ep.active() && !fused) {
      const int64_t wo = s.w_out();
      conv2d_epilogue(ep, s, t.image, t.co0, t.co_n, t.oy0 * wo, (t.oy1 - t.oy0) * wo, y);
    }
  }
}

Status conv2d_i8(CpuIsa isa, const float* x, const Conv2dShape& s, const uint8_t* packed,
                 const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                 int64_t group_size, int bits, float* y, const ConvEpilogue& ep) {
  std::vector<float> scale(static_cast<size_t>(s.batch));
  if (conv2d_i8_scales(isa, x, s, scale.data()) != Status::kOk) return Status::kNonFinite;
  const Conv2dI8Plan plan = conv2d_i8_plan(s, group_size, isa);
  std::vector<int8_t> input(static_cast<size_t>(plan.input_bytes));
  std::vector<uint8_t> panel(static_cast<size_t>(std::max<int64_t>(plan.panel_bytes, 1)));
  std::vector<uint8_t> scratch(static_cast<size_t>(std::max<int64_t>(plan.scratch_bytes, 1)));
  conv2d_i8_pack_input(plan, x, s, scale.data(), 0, plan.input_units, input.data());
  conv2d_i8_pack_weights(plan, s, packed, bits, zeros, 0, s.c_out, panel.data());
  conv2d_i8_items(plan, s, input.data(), panel.data(), scale.data(), packed, scale_bits, zeros,
                  bias, group_size, bits, 0, plan.items, scratch.data(), y, ep);
  return Status::kOk;
}

}  // namespace kernels
}  // namespace qpart
