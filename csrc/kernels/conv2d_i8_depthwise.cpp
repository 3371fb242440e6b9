// The depthwise path of the integer conv2d (conv2d_i8_depthwise.h): when it applies, its plan,
// the portable packer and tile kernel, and the work-item loop. conv2d_i8.cpp hands depthwise
// plans here; the per-ISA tiles are rows of the ISA table (conv2d_i8_dw_tile), the packer
// quantizes with the row's conv2d_i8_quantize_row.
#include "conv2d_i8_depthwise.h"

#include <algorithm>
#include <cstring>

#include "conv2d_i8_impl.h"
#include "isa_table.h"
#include "packed_code.h"
#include "qpart_kernels.h"
#include "with_bits.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Bytes of pair rows a tile aims to keep in L2.
constexpr int64_t kRowBudget = 96 * 1024;

}  // namespace

bool conv2d_i8_depthwise_applies(const Conv2dShape& s, CpuIsa isa) {
  if (s.c_in != s.groups || isa_kernels(isa).fn.conv2d_i8_dw_tile == nullptr) return false;
  return conv_i8_switch_on("QPART_CONV_I8_DEPTHWISE");
}

Conv2dI8Plan conv2d_i8_depthwise_plan(const Conv2dShape& s, int64_t /*group_size*/, CpuIsa isa,
                                      int threads) {
  const ConvI8DwLayout l = conv_i8_dw_layout(s);
  const int64_t ho = s.h_out(), planes = s.batch * s.groups;
  // Output rows per tile: the pair rows they read within the budget, then balanced; split
  // further while there are fewer than two items per thread.
  const int64_t per_row = std::max<int64_t>(1, l.copies * l.len * 4 * s.stride_h);
  int64_t rows = std::clamp<int64_t>(kRowBudget / per_row, 1, ho);
  rows = ceil_div(ho, ceil_div(ho, rows));
  threads = std::max(threads, 1);
  while (planes * ceil_div(ho, rows) < 2 * threads && rows > 1) rows = ceil_div(rows, 2);
  Conv2dI8Plan p{};
  p.isa = isa;
  p.direct = false;
  p.depthwise = true;
  p.tile_shape = s;
  p.co_block = s.c_out / s.groups;
  p.co_blocks = 1;
  p.px_block = rows;
  p.px_blocks = ceil_div(ho, rows);
  p.items = planes * p.px_blocks;
  p.input_units = planes;
  p.input_bytes = planes * l.unit + 64;
  p.panel_bytes = 0;
  p.scratch_bytes = conv_i8_dw_scratch_bytes(s, rows);
  return p;
}

void conv2d_i8_depthwise_pack_input(const Conv2dI8Plan& plan, const float* x, const Conv2dShape& s,
                                    const float* scale, int64_t u_begin, int64_t u_end,
                                    int8_t* input) {
  const auto row_kernel = isa_kernels(plan.isa).fn.conv2d_i8_quantize_row;
  const auto quantize_row = row_kernel ? row_kernel : conv2d_i8_quantize_row_portable;
  const ConvI8DwLayout l = conv_i8_dw_layout(s);
  for (int64_t u = u_begin; u < u_end; ++u) {
    const float* src = x + u * s.h_in * s.w_in;
    int8_t* dst = input + u * l.unit;
    std::memset(dst, 0, static_cast<size_t>(l.unit));  // padding and slack
    for (int64_t iy = 0; iy < s.h_in; ++iy)
      quantize_row(src + iy * s.w_in, s.w_in, scale[u / s.c_in],
                   dst + (iy + s.pad_h) * l.row + s.pad_w);
  }
  if (u_end == plan.input_units)  // the slack past the last unit
    std::memset(input + plan.input_units * l.unit, 0, 64);
}

void conv2d_i8_dw_weights(const Conv2dI8Args& a, int64_t o, int16_t* w) {
  const int64_t k = a.s->k(), gs = a.group_size, wgroups = k / gs;
  const uint8_t* row = a.packed + o * packed_row_bytes(k, a.bits);
  with_bits(a.bits, [&](auto b) {
    constexpr int BITS = decltype(b)::value;
    int64_t j = 0;
    for (; j + 8 <= k; j += 8) {  // 8 codes per BITS bytes
      uint64_t v = 0;
      std::memcpy(&v, row + j / 8 * BITS, BITS);
      for (int i = 0; i < 8; ++i)
        w[j + i] = static_cast<int16_t>((v >> (i * BITS)) & ((1u << BITS) - 1u));
    }
    for (; j < k; ++j) w[j] = static_cast<int16_t>(code_at(row, j, BITS));
  });
  for (int64_t g = 0; g < wgroups; ++g) {
    const int16_t z = a.zeros[o * wgroups + g];
    for (int64_t j = g * gs; j < (g + 1) * gs; ++j) w[j] = static_cast<int16_t>(w[j] - z);
  }
}

void conv2d_i8_dw_tile_portable(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch) {
  const Conv2dShape& s = *a.s;
  const ConvI8DwLayout l = conv_i8_dw_layout(s);
  const int64_t k = s.k(), gs = a.group_size, wgroups = k / gs, ho = s.h_out(), wo = s.w_out();
  int32_t* dsum = static_cast<int32_t*>(scratch);
  float* acc = reinterpret_cast<float*>(dsum + l.wo8);
  int16_t* w = reinterpret_cast<int16_t*>(acc + l.wo8);
  const int8_t* plane = a.input + (t.image * s.c_in + t.group) * l.unit;
  const float sx = a.x_scale[t.image];
  for (int64_t o = t.co0; o < t.co0 + t.co_n; ++o) {
    conv2d_i8_dw_weights(a, o, w);
    const float b = a.bias ? a.bias[o] : 0.0f;
    for (int64_t oy = t.oy0; oy < t.oy1; ++oy) {
      for (int64_t ox = 0; ox < wo; ++ox) acc[ox] = 0.0f;
      for (int64_t g = 0; g < wgroups; ++g) {
        for (int64_t ox = 0; ox < wo; ++ox) dsum[ox] = 0;
        for (int64_t j = g * gs; j < (g + 1) * gs; ++j) {
          const int64_t r = j / s.kw, q = j % s.kw;
          const int8_t* src = plane + (oy * s.stride_h + r * s.dil_h) * l.row + q * s.dil_w;
          const int32_t wj = w[j];
          if (s.stride_w == 1) {
            for (int64_t ox = 0; ox < wo; ++ox) dsum[ox] += src[ox] * wj;
          } else {
            for (int64_t ox = 0; ox < wo; ++ox) dsum[ox] += src[ox * s.stride_w] * wj;
          }
        }
        const float sw = half_bits_to_float(a.scale_bits[o * wgroups + g]);
        for (int64_t ox = 0; ox < wo; ++ox)
          acc[ox] = acc[ox] + conv_i8_rounded(static_cast<float>(dsum[ox]) * sw);
      }
      float* yrow = a.y + ((t.image * s.c_out + o) * ho + oy) * wo;
      for (int64_t ox = 0; ox < wo; ++ox) yrow[ox] = conv_i8_rounded(acc[ox] * sx) + b;
    }
  }
}

void conv2d_i8_depthwise_items(const Conv2dI8Plan& plan, const Conv2dShape& s, const int8_t* input,
                               const float* scale, const uint8_t* packed,
                               const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                               int64_t group_size, int bits, int64_t item_begin, int64_t item_end,
                               void* scratch, float* y, const ConvEpilogue& ep) {
  const Conv2dI8Args args{&s,    input, nullptr,    scale, packed, scale_bits,
                          zeros, bias,  group_size, bits,  y};
  const auto kernel = isa_kernels(plan.isa).fn.conv2d_i8_dw_tile;
  const int64_t m = s.c_out / s.groups, ho = s.h_out(), wo = s.w_out();
  for (int64_t item = item_begin; item < item_end; ++item) {
    const int64_t pt = item % plan.px_blocks, bg = item / plan.px_blocks;
    Conv2dI8Tile t;
    t.image = bg / s.groups;
    t.group = bg % s.groups;
    t.co0 = t.group * m;
    t.co_n = m;
    t.oy0 = pt * plan.px_block;
    t.oy1 = std::min(ho, t.oy0 + plan.px_block);
    if (kernel) {
      kernel(args, t, scratch);
    } else {
      conv2d_i8_dw_tile_portable(args, t, scratch);
    }
    if (ep.active())
      conv2d_epilogue(ep, s, t.image, t.co0, t.co_n, t.oy0 * wo, (t.oy1 - t.oy0) * wo, y);
  }
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart
