// Body of the aarch64 direct integer conv2d tile, included by conv2d_i8_neon.cpp (plain NEON)
// and conv2d_i8_neon_dot.cpp (sdot, compiled with +dotprod and used only when the CPU reports
// HWCAP_ASIMDDP). The includer defines QPART_I8_DOT(acc, x, w) (acc int32x4_t += per lane the
// dot product of 4 int8 of x and w) and QPART_CONV_I8_ENTRY (the function name).
//
// Same structure as x86/conv2d_i8_avx2.cpp: 4 output channels x 16 pixels (4 vectors of
// 4 pixels x 4 channels), one 4-code broadcast per channel and block. Codes are used as signed
// bytes: widths <= 7 directly; width 8 as code - 128 (xor 0x80), with the offset folded into the
// zero point (sum q (c - z) = sum q (c - 128) - (z - 128) sum q). Exact int32 group sums, then
// the scalar kernel's float epilogue operation for operation: bit-identical to it.
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "../conv2d_i8_impl.h"
#include "../with_bits.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

constexpr int64_t kPx = kConvI8Px;  // 4 vectors of 4 pixels
constexpr int kMr = static_cast<int>(kConvI8Mr);

// The product stays rounded to float on its own (no FMA contraction), as in the scalar kernel.
inline float32x4_t rounded(float32x4_t v) {
  __asm__("" : "+w"(v));
  return v;
}

struct TileCtx {
  const int8_t* act;
  const int64_t* off;
  const int32_t* sums;
  int64_t kb_per_g, groups, nv, jb0;
};

void activation_sums(const TileCtx& c, int32_t* sums) {
  const int8x16_t ones = vdupq_n_s8(1);
  for (int64_t g = 0; g < c.groups; ++g)
    for (int64_t p = 0; p < c.nv; p += kPx) {
      int32x4_t acc[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
      for (int64_t kb = g * c.kb_per_g; kb < (g + 1) * c.kb_per_g; ++kb) {
        const int8_t* x = c.act + c.off[kb] + c.jb0 + p * 4;
        for (int v = 0; v < 4; ++v) QPART_I8_DOT(acc[v], vld1q_s8(x + 16 * v), ones);
      }
      for (int v = 0; v < 4; ++v) vst1q_s32(sums + g * c.nv + p + 4 * v, acc[v]);
    }
}

template <int BITS, int MR>
void micro(const Conv2dI8Args& args, const TileCtx& c, const uint8_t* const* w, int64_t o,
           int64_t p, float32x4_t (&out)[MR][4]) {
  const int8_t* x_base = c.act + c.jb0 + p * 4;
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < 4; ++v) out[i][v] = vdupq_n_f32(0.0f);
  for (int64_t g = 0; g < c.groups; ++g) {
    int32x4_t acc[MR][4];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < 4; ++v) acc[i][v] = vdupq_n_s32(0);
    for (int64_t kb = g * c.kb_per_g; kb < (g + 1) * c.kb_per_g; ++kb) {
      const int8_t* x = x_base + c.off[kb];
      int8x16_t xv[4];
#pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) xv[v] = vld1q_s8(x + 16 * v);
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) {
        uint32_t code4;
        std::memcpy(&code4, w[i] + kb * 4, 4);
        if constexpr (BITS == 8) code4 ^= 0x80808080u;
        const int8x16_t wv = vreinterpretq_s8_u32(vdupq_n_u32(code4));
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) QPART_I8_DOT(acc[i][v], xv[v], wv);
      }
    }
    const int32_t* sums = c.sums + g * c.nv + p;
    for (int i = 0; i < MR; ++i) {
      const int64_t wgi = (o + i) * c.groups + g;
      const int32x4_t z =
          vdupq_n_s32(static_cast<int32_t>(args.zeros[wgi]) - (BITS == 8 ? 128 : 0));
      const float32x4_t sw = vdupq_n_f32(half_bits_to_float(args.scale_bits[wgi]));
      for (int v = 0; v < 4; ++v) {
        const int32x4_t d = vsubq_s32(acc[i][v], vmulq_s32(z, vld1q_s32(sums + 4 * v)));
        out[i][v] = vaddq_f32(out[i][v], rounded(vmulq_f32(vcvtq_f32_s32(d), sw)));
      }
    }
  }
}

template <int MR>
void store(const Conv2dI8Args& args, const Conv2dI8Tile& t, const ConvI8Layout& l, int64_t o,
           int64_t j, int64_t j_end, const float32x4_t (&a)[MR][4]) {
  const Conv2dShape& s = *args.s;
  const int64_t plane_size = s.h_out() * l.wo;
  const float32x4_t sx = vdupq_n_f32(args.x_scale[t.image]);
  for (int i = 0; i < MR; ++i) {
    const float32x4_t bv = vdupq_n_f32(args.bias ? args.bias[o + i] : 0.0f);
    float* plane = args.y + (t.image * s.c_out + o + i) * plane_size;
    for (int v = 0; v < 4; ++v) {
      const float32x4_t yv = vaddq_f32(rounded(vmulq_f32(a[i][v], sx)), bv);
      const int64_t jv = j + 4 * v, oy = jv / l.w, ox = jv % l.w;
      if (jv + 4 <= j_end && (l.w == l.wo || ox + 4 <= l.wo)) {  // every lane a real pixel
        vst1q_f32(plane + oy * l.wo + ox, yv);
        continue;
      }
      float lanes[4];
      vst1q_f32(lanes, yv);
      for (int64_t e = 0; e < 4 && jv + e < j_end; ++e) {
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
    float32x4_t a[MR][4];
    micro<BITS, MR>(args, c, w, o, p, a);
    store<MR>(args, t, l, o, c.jb0 / 4 + p, j_end, a);
  }
}

template <int BITS>
void tile(const Conv2dI8Args& args, const Conv2dI8Tile& t, void* scratch) {
  const Conv2dShape& s = *args.s;
  const ConvI8Layout l = conv_i8_layout(s);
  const int64_t groups = s.k() / args.group_size;
  TileCtx c;
  c.act = args.input + (t.image * s.groups + t.group) * l.c4 * l.unit;
  int64_t* off = static_cast<int64_t*>(scratch);
  for (int64_t kb = 0; kb < l.kb; ++kb) off[kb] = conv_i8_block_offset(s, l, kb);
  c.off = off;
  c.groups = groups;
  c.kb_per_g = groups == 1 ? l.kb : args.group_size / 4;
  const int64_t j0 = t.oy0 * l.w, j_end = (t.oy1 - 1) * l.w + l.wo;
  c.jb0 = j0 * 4;
  c.nv = (j_end - j0 + kPx - 1) / kPx * kPx;
  int32_t* sums = reinterpret_cast<int32_t*>(off + l.kb);
  c.sums = sums;
  activation_sums(c, sums);
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

void QPART_CONV_I8_ENTRY(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch) {
  with_bits(a.bits, [&](auto b) { tile<decltype(b)::value>(a, t, scratch); });
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart
