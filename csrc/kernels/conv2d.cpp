// Packed conv2d, tiled: every (image, group) is cut into tiles of output channels x output
// pixels (Conv2dPlan), so that even batch 1 with one group has several independent work
// items for the threads. The plan's ISA row (isa_table.cpp) decides how a tile runs:
//
// * rows with a conv2d_tile kernel (x86 AVX2 / AVX-512, x86/conv2d_x86_tile.h): a direct NCHW
//   kernel per tile: a dequantized fp32 weight panel of its channels times its pixels (read
//   straight from zero-padded input rows for stride 1, from K-major im2col panels otherwise)
//   in a register-tiled micro-kernel of the row's conv_tile shape.
// * every other row (scalar reference, NEON): per tile, a row-major im2col of its pixels,
//   linear_f32 (so the NEON GEMM is reused) over its channels, and a transpose into NCHW.
#include <algorithm>

#include "conv2d_impl.h"
#include "isa_table.h"
#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace {

// Output channels per tile, and the pixel count a tile aims at (its pixels are balanced so
// the last tile is not a sliver); row tiles (stride 1, direct kernels) may be larger (L2-resident
// accumulator), which halves the weight dequantizations.
constexpr int64_t kCoBlock = 128;
constexpr int64_t kPxTarget = detail::kConvPxMax;  // a multiple of every SIMD width
constexpr int64_t kRowPxTarget = 384;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Pixel tiles of about kPxTarget, balanced, rounded up to `lanes` so SIMD panels are full.
int64_t pixel_block(int64_t pixels, int64_t lanes) {
  const int64_t tiles = std::max<int64_t>(1, ceil_div(pixels, kPxTarget));
  return std::max<int64_t>(1, std::min(round_up(ceil_div(pixels, tiles), lanes), pixels));
}

// Row tiles (conv2d_row_tiles): whole output rows, at most about kRowPxTarget padded-width
// pixels per tile. Among those sizes, the one with the least work on the busiest of `threads`
// threads (items per thread x computed lanes of a tile, plus a per-tile cost for the weight
// dequantization); ties go to the larger tile.
int64_t row_block(const Conv2dShape& s, int threads, int64_t co_items, int64_t nr) {
  const int64_t ho = s.h_out(), wp = detail::conv2d_padded_width(s);
  const int64_t most = std::max<int64_t>(1, std::min(ho, kRowPxTarget / wp));
  constexpr int64_t kTileCost = 16;  // lanes
  int64_t best_rows = most, best_cost = -1;
  for (int64_t rows = most; rows >= 1; --rows) {
    const int64_t items = co_items * ceil_div(ho, rows);
    const int64_t cost = ceil_div(items, threads) * (round_up(rows * wp, nr) + kTileCost);
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best_rows = rows;
    }
  }
  return best_rows * s.w_out();
}

// Pixels [p_begin, p_end) of one image/group as a row-major [pixels, k] matrix.
void im2col_rows(const float* image, const Conv2dShape& s, int64_t g, int64_t p_begin,
                 int64_t p_end, float* cols) {
  const int64_t cg = s.c_in / s.groups;
  const int64_t wo = s.w_out(), k = s.k();
  for (int64_t p = p_begin; p < p_end; ++p) {
    const int64_t oy = p / wo, ox = p % wo;
    float* col = cols + (p - p_begin) * k;
    for (int64_t c = 0; c < cg; ++c) {
      const float* plane = image + (g * cg + c) * s.h_in * s.w_in;
      for (int64_t r = 0; r < s.kh; ++r) {
        const int64_t iy = oy * s.stride_h - s.pad_h + r * s.dil_h;
        for (int64_t q = 0; q < s.kw; ++q) {
          const int64_t ix = ox * s.stride_w - s.pad_w + q * s.dil_w;
          const bool inside = iy >= 0 && iy < s.h_in && ix >= 0 && ix < s.w_in;
          *col++ = inside ? plane[iy * s.w_in + ix] : 0.0f;
        }
      }
    }
  }
}

// Portable tile: im2col rows, the dispatched packed matmul over the tile's channels, then a
// transpose of the [pixels, channels] product into the NCHW planes.
void conv2d_tile_generic(const detail::Conv2dArgs& a, const detail::Conv2dTile& t, float* scratch) {
  const Conv2dShape& s = *a.s;
  const int64_t k = s.k(), pixels = s.h_out() * s.w_out();
  const int64_t groups = k / a.group_size, row_bytes = packed_row_bytes(k, a.bits);
  float* cols = scratch;
  float* prod = scratch + t.p_n * k;  // [p_n, co_n]
  im2col_rows(a.x + t.image * s.c_in * s.h_in * s.w_in, s, t.group, t.p0, t.p0 + t.p_n, cols);
  linear_f32(cols, t.p_n, k, a.packed + t.co0 * row_bytes, a.scale_bits + t.co0 * groups,
             a.zeros + t.co0 * groups, a.bias ? a.bias + t.co0 : nullptr, t.co_n, a.group_size,
             a.bits, 0, t.co_n, prod);
  for (int64_t c = 0; c < t.co_n; ++c) {
    float* out = a.y + (t.image * s.c_out + t.co0 + c) * pixels + t.p0;
    for (int64_t p = 0; p < t.p_n; ++p) out[p] = prod[p * t.co_n + c];
  }
}

detail::Conv2dTile tile_of(const Conv2dPlan& plan, const Conv2dShape& s, int64_t item) {
  const int64_t per_group = s.c_out / s.groups, pixels = s.h_out() * s.w_out();
  const int64_t pt = item % plan.px_blocks;
  const int64_t ct = (item / plan.px_blocks) % plan.co_blocks;
  const int64_t bg = item / (plan.px_blocks * plan.co_blocks);
  detail::Conv2dTile t;
  t.image = bg / s.groups;
  t.group = bg % s.groups;
  t.co0 = t.group * per_group + ct * plan.co_block;
  t.co_n = std::min(plan.co_block, per_group - ct * plan.co_block);
  t.p0 = pt * plan.px_block;
  t.p_n = std::min(plan.px_block, pixels - t.p0);
  return t;
}

// The direct-kernel tiling: channel blocks of up to kCoBlock, pixel blocks as above; if there
// are few items that do not split evenly over `threads`, the channel blocks are halved (a
// multiple of the register tile) until they do. Harmless to the values: a direct tile's sums
// never depend on the tile sizes.
void direct_blocks(const Conv2dShape& s, const detail::ConvTileShape& tile, int threads,
                   Conv2dPlan* plan) {
  const int64_t per_group = s.c_out / s.groups, pixels = s.h_out() * s.w_out();
  const int64_t mr = tile.mr, nr = tile.nr;
  int64_t co_block = std::max<int64_t>(1, std::min(kCoBlock, per_group));
  const int64_t co_items = s.batch * s.groups * ceil_div(per_group, co_block);
  plan->px_block =
      std::max<int64_t>(1, detail::conv2d_row_tiles(s) ? row_block(s, threads, co_items, nr)
                                                       : pixel_block(pixels, tile.lanes));
  plan->px_blocks = ceil_div(pixels, plan->px_block);
  auto items = [&](int64_t cb) {
    return s.batch * s.groups * ceil_div(per_group, cb) * plan->px_blocks;
  };
  while (threads > 1 && items(co_block) % threads != 0 && items(co_block) < 4 * threads &&
         co_block >= 4 * mr) {
    co_block = round_up(ceil_div(co_block, 2), mr);
  }
  plan->co_block = co_block;
  plan->co_blocks = ceil_div(per_group, co_block);
  plan->scratch_floats = detail::conv2d_x86_scratch_floats(s, co_block, plan->px_block, mr, nr);
}

}  // namespace

Conv2dPlan conv2d_plan(const Conv2dShape& s, CpuIsa isa, int threads) {
  const int64_t per_group = s.c_out / s.groups, pixels = s.h_out() * s.w_out();
  Conv2dPlan plan;
  plan.isa = isa;
  const detail::IsaKernels& row = detail::isa_kernels(isa);
  if (row.fn.conv2d_tile != nullptr) {
    direct_blocks(s, row.conv_tile, threads > 1 ? threads : 1, &plan);
  } else {
    // Fixed tiles (no thread hint): linear_f32's summation order may depend on the row count.
    plan.co_block = std::max<int64_t>(1, std::min(kCoBlock, per_group));
    plan.px_block = std::max<int64_t>(1, pixel_block(pixels, 1));
    plan.co_blocks = ceil_div(per_group, plan.co_block);
    plan.px_blocks = ceil_div(pixels, plan.px_block);
    plan.scratch_floats = plan.px_block * (s.k() + plan.co_block);
  }
  plan.items = s.batch * s.groups * plan.co_blocks * plan.px_blocks;
  return plan;
}

Conv2dPlan conv2d_plan(const Conv2dShape& s, int threads) {
  return conv2d_plan(s, active_cpu_isa(), threads);
}

void conv2d_f32_items(const Conv2dPlan& plan, const float* x, const Conv2dShape& s,
                      const uint8_t* packed, const uint16_t* scale_bits, const uint8_t* zeros,
                      const float* bias, int64_t group_size, int bits, int64_t item_begin,
                      int64_t item_end, float* scratch, float* y, const ConvEpilogue& ep) {
  const detail::Conv2dArgs args{x, &s, packed, scale_bits, zeros, bias, group_size, bits, y};
  const auto tile_kernel = detail::isa_kernels(plan.isa).fn.conv2d_tile;
  for (int64_t item = item_begin; item < item_end; ++item) {
    const detail::Conv2dTile t = tile_of(plan, s, item);
    if (tile_kernel != nullptr) {
      tile_kernel(args, t, scratch);
    } else {
      conv2d_tile_generic(args, t, scratch);
    }
    if (ep.active()) conv2d_epilogue(ep, s, t.image, t.co0, t.co_n, t.p0, t.p_n, y);
  }
}

void conv2d_epilogue(const ConvEpilogue& ep, const Conv2dShape& s, int64_t image, int64_t co0,
                     int64_t co_n, int64_t p0, int64_t p_n, float* y) {
  const int64_t pixels = s.h_out() * s.w_out();
  for (int64_t o = co0; o < co0 + co_n; ++o) {
    const int64_t base = (image * s.c_out + o) * pixels + p0;
    float* v = y + base;
    if (ep.residual != nullptr) {
      const float* r = ep.residual + base;
      for (int64_t i = 0; i < p_n; ++i) v[i] = v[i] + r[i];
    }
    if (ep.relu) {
      for (int64_t i = 0; i < p_n; ++i) v[i] = v[i] < 0.0f ? 0.0f : v[i];
    }
  }
}

int64_t conv2d_scratch_floats(const Conv2dShape& s) {
  int64_t most = 0;
  for (const detail::IsaKernels& row : detail::isa_table())
    most = std::max(most, conv2d_plan(s, row.isa).scratch_floats);
  return most;
}

void conv2d_f32(const float* x, const Conv2dShape& s, const uint8_t* packed,
                const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                int64_t group_size, int bits, int64_t item_begin, int64_t item_end, float* scratch,
                float* y, const ConvEpilogue& ep) {
  // The tiles of (image, group) item i are the contiguous plan items [i * per, (i + 1) * per).
  // Operands the folding direct kernels would get wrong (NaN/Inf) run the portable tiles.
  const int64_t groups = s.k() / group_size;
  const bool exact =
      fold_exact(x, s.batch * s.c_in * s.h_in * s.w_in, scale_bits, s.c_out * groups);
  const Conv2dPlan plan = exact ? conv2d_plan(s) : conv2d_plan(s, CpuIsa::kScalar);
  const int64_t per = plan.co_blocks * plan.px_blocks;
  conv2d_f32_items(plan, x, s, packed, scale_bits, zeros, bias, group_size, bits, item_begin * per,
                   item_end * per, scratch, y, ep);
}

}  // namespace kernels
}  // namespace qpart
