// AMX (AMX-TILE + AMX-INT8) direct integer conv2d tile for the amx row, on the direct layout
// of conv2d_i8_impl.h. One tdpbusd multiplies a 16 x 64 u8 tile of weight codes (16 output
// channels x 16 four-channel blocks of one kernel tap) by a 16 x 64 s8 tile of activations
// (the same 16 blocks x 16 pixels: one tile row per block, rows `unit` bytes apart in the
// direct layout) into 16 x 16 int32 sums; a block is 2 x 2 such products (32 channels x 32
// pixels in the 8 tile registers). Weights come from their own panel (conv_i8_amx_panel_bytes):
// per 16 output channels, tap and chunk of 16 blocks one 1 KiB tile in tdpbusd's row order,
// zero-padded. A chunk always spans 16 blocks (min(16, c4) rows when there are fewer): the last
// one starts 16 blocks before the end and has zero codes for the blocks the chunk before
// already covered, so no tile reads past the image's blocks. The int32 sums are exact, and
// the zero-point correction and float epilogue are the AVX2/AVX-512 tile's (conv2d_i8_x86_tile.h),
// operation for operation, so the output is bit-identical to the scalar kernel's.
#if defined(__x86_64__)

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../conv2d_i8_impl.h"
#include "../qpart_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,amx-tile,amx-int8")
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

constexpr int64_t kTileBytes = 1024;  // one 16 x 64-byte tile

// Tile registers: C (int32 sums) 0..3 = [channel block][pixel block], A (codes) 4, 5, B
// (activations) 6, 7.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

TileConfig tile_config(int64_t kr) {
  TileConfig c;
  for (int i = 0; i < 4; ++i) c.rows[i] = 16, c.colsb[i] = 64;  // 16 x 16 int32
  for (int i = 4; i < 6; ++i) c.rows[i] = 16, c.colsb[i] = static_cast<uint16_t>(4 * kr);
  for (int i = 6; i < 8; ++i) c.rows[i] = static_cast<uint8_t>(kr), c.colsb[i] = 64;
  return c;
}

// The scalar kernel's epilogue for one channel o and 16 pixels: d = dot - zero * sum (the
// zero-folded products as they are), a = 0 + float(d) * scale_w (the product rounded on its
// own), then store16 (conv2d_i8_zmm.h).
void finish(const Conv2dI8Args& args, const Conv2dI8Tile& t, int64_t plane_floats, int64_t o,
            const int32_t* dot, __m512i act_sums, const Segments& sg) {
  // Zero-folded: the products already are sum x (code - zero), exactly dot - zero * sum.
  const __m512i dot_v = _mm512_loadu_si512(dot);
  const __m512i d =
      args.zero_folded
          ? dot_v
          : _mm512_sub_epi32(dot_v, _mm512_mullo_epi32(_mm512_set1_epi32(args.zeros[o]), act_sums));
  const __m512 sw = _mm512_set1_ps(_cvtsh_ss(args.scale_bits[o]));
  const __m512 a =
      _mm512_add_ps(_mm512_setzero_ps(), rounded16(_mm512_mul_ps(_mm512_cvtepi32_ps(d), sw)));
  store16(args, t, plane_floats, o, a, sg);
}

// The 16-pixel rows of a stored block still to finish, worked off a few at a time inside the
// next block's product loop: the matrix unit multiplies while the vector units run the
// epilogue (the two in turn cost their sum; in step, nearer their maximum).
struct PendingRows {
  const Conv2dI8Args* args = nullptr;
  const Conv2dI8Tile* t = nullptr;
  int64_t plane_floats = 0;
  const int32_t* sums = nullptr;  // the block's int32 products (not overwritten until done)
  int64_t ob = 0, co_end = 0;
  int nb = 1, next = 0, total = 0;  // rows numbered (channel row, pixel half): next..total
  const Segments* seg = nullptr;    // the block's two pixel halves (the tile's, not copied:
  const __m512i* asum = nullptr;    // a copy would stall on store forwarding)

  // Finishes up to n more rows.
  void run(int n) {
    for (; n > 0 && next < total; --n, ++next) {
      const int rr = next / nb, ib = next % nb;  // channel row 0..31, pixel half
      const int64_t o = ob + rr;
      if (o >= co_end) {  // rows past the last channel: nothing more
        next = total;
        return;
      }
      finish(*args, *t, plane_floats, o, sums + ((rr / 16) * 2 + ib) * 256 + (rr % 16) * 16,
             asum[ib], seg[ib]);
    }
  }
};

// NA x NB products of 16 channels x 16 pixels over the nk (tap, chunk) steps, stored to
// sums[(ia * 2 + ib) * 256 + channel * 16 + pixel].
template <int NA, int NB, bool S8>
void block(const uint8_t* a, int64_t a_next, const uint8_t* act, const int64_t* boff, int64_t nk,
           int64_t unit, int64_t kr, int32_t* sums, PendingRows& pending) {
  const int per_step = static_cast<int>((pending.total - pending.next + nk - 1) / nk);
  _tile_zero(0);
  if constexpr (NB == 2) _tile_zero(1);
  if constexpr (NA == 2) _tile_zero(2);
  if constexpr (NA == 2 && NB == 2) _tile_zero(3);
  for (int64_t kk = 0; kk < nk; ++kk) {
    const uint8_t* x = act + boff[kk];
    // All loads first, then the products (~4 % faster than interleaving them, measured in an
    // isolated loop on Sapphire Rapids-class cores).
    _tile_loadd(4, a + kk * kTileBytes, 64);
    _tile_loadd(6, x, unit);
    if constexpr (NA == 2) _tile_loadd(5, a + a_next + kk * kTileBytes, 64);
    if constexpr (NB == 2) _tile_loadd(7, x + 64, unit);
    // The next pixel block's activation rows (kr rows `unit` bytes apart, a stream per row
    // that the hardware prefetchers miss): 3-15 % on ResNet-18's layers at batch 1.
    for (int64_t r = 0; r < kr; ++r)
      _mm_prefetch(reinterpret_cast<const char*>(x + 2 * 64 + r * unit), _MM_HINT_T0);
    if constexpr (S8) {  // zero-folded panel: int8 codes - zero
      _tile_dpbssd(0, 4, 6);
      if constexpr (NA == 2) _tile_dpbssd(2, 5, 6);
      if constexpr (NB == 2) _tile_dpbssd(1, 4, 7);
      if constexpr (NA == 2 && NB == 2) _tile_dpbssd(3, 5, 7);
    } else {
      _tile_dpbusd(0, 4, 6);
      if constexpr (NA == 2) _tile_dpbusd(2, 5, 6);
      if constexpr (NB == 2) _tile_dpbusd(1, 4, 7);
      if constexpr (NA == 2 && NB == 2) _tile_dpbusd(3, 5, 7);
    }
    pending.run(per_step);  // the previous block's epilogue, beside these products
  }
  pending.run(pending.total);
  _tile_stored(0, sums, 64);
  if constexpr (NB == 2) _tile_stored(1, sums + 256, 64);
  if constexpr (NA == 2) _tile_stored(2, sums + 512, 64);
  if constexpr (NA == 2 && NB == 2) _tile_stored(3, sums + 768, 64);
}

// block<na, nb, folded> for the runtime shape of a block.
void products(bool folded, int na, int nb, const uint8_t* a, int64_t a_next, const uint8_t* act,
              const int64_t* boff, int64_t nk, int64_t unit, int64_t kr, int32_t* sums,
              PendingRows& pending) {
  switch ((folded ? 4 : 0) + (na == 2 ? 2 : 0) + (nb == 2 ? 1 : 0)) {
    case 7: return block<2, 2, true>(a, a_next, act, boff, nk, unit, kr, sums, pending);
    case 6: return block<2, 1, true>(a, a_next, act, boff, nk, unit, kr, sums, pending);
    case 5: return block<1, 2, true>(a, a_next, act, boff, nk, unit, kr, sums, pending);
    case 4: return block<1, 1, true>(a, a_next, act, boff, nk, unit, kr, sums, pending);
    case 3: return block<2, 2, false>(a, a_next, act, boff, nk, unit, kr, sums, pending);
    case 2: return block<2, 1, false>(a, a_next, act, boff, nk, unit, kr, sums, pending);
    case 1: return block<1, 2, false>(a, a_next, act, boff, nk, unit, kr, sums, pending);
    default: return block<1, 1, false>(a, a_next, act, boff, nk, unit, kr, sums, pending);
  }
}

}  // namespace

void conv2d_i8_pack_weights_amx(const Conv2dShape& s, const uint8_t* packed, int bits,
                                const uint8_t* zeros, int64_t co_begin, int64_t co_end,
                                uint8_t* panel) {
  const ConvAmxGeometry g = conv_i8_amx_geometry(s);
  const int64_t k = s.k(), cg = s.c_in / s.groups, row_bytes = packed_row_bytes(k, bits);
  auto row = [&](int64_t o, int64_t kk) {
    return panel + ((o / 16) * g.steps + kk) * kTileBytes + (o % 16) * 64;
  };
  std::vector<uint8_t> codes(static_cast<size_t>(k));
  for (int64_t o = co_begin; o < co_end; ++o) {
    unpack_rows(packed + o * row_bytes, 1, k, bits, codes.data());
    if (zeros != nullptr)  // int8 code - zero (fits: conv2d_i8_zero_folded); padding stays 0
      for (uint8_t& c : codes) c = static_cast<uint8_t>(static_cast<int>(c) - zeros[o]);
    for (int64_t tap = 0; tap < g.taps; ++tap) {
      for (int64_t ch = 0; ch < g.chunks; ++ch) {
        uint8_t* dst = row(o, tap * g.chunks + ch);
        std::memset(dst, 0, 64);
        const int64_t start = conv_i8_amx_chunk_start(g, ch);
        for (int64_t i = std::max<int64_t>(0, ch * 16 - start); i < g.kr; ++i)
          for (int64_t lane = 0; lane < 4; ++lane) {
            const int64_t ci = 4 * (start + i) + lane;
            if (ci < cg) dst[4 * i + lane] = codes[static_cast<size_t>(ci * g.taps + tap)];
          }
      }
    }
  }
  if (co_end == s.c_out)  // the zero rows that pad the last 16-channel block
    for (int64_t o = s.c_out; o < g.co_pad; ++o)
      for (int64_t kk = 0; kk < g.steps; ++kk) std::memset(row(o, kk), 0, 64);
}

void conv2d_i8_tile_amx(const Conv2dI8Args& args, const Conv2dI8Tile& t, void* scratch) {
  const Conv2dShape& s = *args.s;
  const ConvI8Layout l = conv_i8_layout(s);
  const ConvAmxGeometry g = conv_i8_amx_geometry(s);
  // Scratch: block offsets (activation sums), activation sums, B offsets, int32 products.
  const TileCtx c = tile_ctx(args, t, l, scratch);  // one weight group (conv_i8_amx_applies)
  const int64_t* off = c.off;
  const int64_t j_end = c.j_end, jb0 = c.jb0, nv = c.nv;
  int32_t* act_sums = c.sums;
  const uint8_t* act = c.act;
  if (!args.zero_folded) activation_sums512(act, off, l.kb, 1, jb0, nv, act_sums);
  int64_t* boff = reinterpret_cast<int64_t*>(act_sums + nv);
  for (int64_t tap = 0; tap < g.taps; ++tap)
    for (int64_t ch = 0; ch < g.chunks; ++ch)
      boff[tap * g.chunks + ch] = off[conv_i8_amx_chunk_start(g, ch) * g.taps + tap];
  auto* sums = reinterpret_cast<int32_t*>((reinterpret_cast<uintptr_t>(boff + g.steps) + 63) &
                                          ~static_cast<uintptr_t>(63));

  const TileConfig cfg = tile_config(g.kr);
  _tile_loadconfig(&cfg);
  const int64_t co_end = t.co0 + t.co_n, a_next = g.steps * kTileBytes;
  const int64_t plane_floats = s.h_out() * l.wo;
  // Two product buffers: a block's epilogue reads one while the next block fills the other.
  int32_t* buffers[2] = {sums, sums + 1024};
  PendingRows pending;
  pending.args = &args;
  pending.t = &t;
  pending.plane_floats = plane_floats;
  pending.co_end = co_end;
  int cur = 0;
  // Segments and activation sums of this pixel block and the one before (which the pending
  // rows may still read).
  Segments segs[2][2];
  __m512i asums[2][2];
  for (int64_t p = 0; p < nv; p += 2 * kPx) {
    const int nb = nv - p > kPx ? 2 : 1;
    const uint8_t* x = act + jb0 + p * 4;
    Segments* seg = segs[(p / (2 * kPx)) % 2];
    __m512i* asum = asums[(p / (2 * kPx)) % 2];
    asum[0] = asum[1] = _mm512_setzero_si512();
    for (int ib = 0; ib < nb; ++ib) {
      segments(l, jb0 / 4 + p + ib * kPx, j_end, &seg[ib]);
      if (!args.zero_folded) asum[ib] = _mm512_loadu_si512(act_sums + p + ib * kPx);
    }
    for (int64_t ob = t.co0; ob < co_end; ob += 32) {
      const int na = co_end - ob > 16 ? 2 : 1;
      const uint8_t* a = args.panel + (ob / 16) * a_next;
      products(args.zero_folded, na, nb, a, a_next, x, boff, g.steps, l.unit, g.kr, buffers[cur],
               pending);
      pending.sums = buffers[cur];
      pending.ob = ob;
      pending.nb = nb;
      pending.next = 0;
      pending.total = 32 * nb;
      pending.seg = seg;
      pending.asum = asum;
      cur ^= 1;
    }
  }
  pending.run(pending.total);
  _tile_release();
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC pop_options

#endif  // __x86_64__
