// AVX-512 packed matmul for small batches (m <= kFusedMaxRows, GEMV-like and memory bound):
// float and int8 activations. Compiled for AVX-512 F/BW/VL/VNNI/VBMI (plus AVX2/FMA/F16C)
// through a target pragma and only called after run-time CPU detection (isa_table.cpp).
//
// Both kernels walk a tile of NR = 4 consecutive weight rows (4 interleaved byte streams)
// against MR <= 4 rows of x, one weight group at a time. Every stream software-prefetches the
// same position two tiles further on into L2 (2 * NR rows ahead, two whole tiles of lead time):
// with a fixed distance of a few hundred bytes, the first lines of each tile always missed,
// which cost up to 40 % of DRAM speed at widths 2 and 4.
// * every 64 codes (8 * BITS packed bytes) are unpacked to 64 u8 lanes in natural order by
//   Unpack64 (vpermb + vpmultishiftqb + mask; avx512_unpack.h); a group tail (< 64 codes:
//   per-channel rows with k % 64 != 0, or groups shorter than 64) uses masked loads, so no
//   byte past a row's last packed byte, or past x / q, is ever read;
// * int8 activations (q in x's natural order): vpdpbusd (u8 codes x s8 q, four products per
//   int32 lane, no saturation at any width) into int32 accumulators. Widths 1, 2 and 4 skip
//   the per-row vpermb: a broadcast load + vpmultishiftqb yields the codes in a fixed permuted
//   order and the q vector is permuted to match once per step (Bcast64); the group's exact dot is
//   reduced horizontally, the zero point is folded in integers (dot - zero * gsum), then one
//   convert, multiply by the group scale and add per (row, group), in the same order and with
//   the same roundings as linear_i8_scalar, so y is bit-exact with the scalar kernel;
// * float activations: the u8 codes of each 16-lane quarter are widened with a zero-masking
//   vpermb (byte 16q + l -> int32 lane l), converted (vcvtdq2ps) and FMA'd with x; the zero
//   point is folded per group as s * (sum x * code - z * sum_g x) with xsum precomputed, so
//   the result matches linear_f32_scalar up to float reassociation.
// The MR x NR accumulators of a group are reduced four at a time by one shuffle tree. Rows of
// x beyond 4 are handled as further MR blocks over the same weight tile, which is then still
// in L1/L2. The arithmetic for one output element never depends on [n_begin, n_end) or on the
// tiling, so results do not depend on the thread split.
#if defined(__x86_64__)

#include <cmath>
#include <cstdint>
#include <utility>

#include "../dispatch.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")
// GCC 12 reports its own _mm512_undefined_* self-initialisation (used by the unmasked
// shuffle/permute intrinsics) as maybe-uninitialized once inlined here: a false positive.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "avx512_unpack.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

/// The largest x row block of one tile (its accumulators must stay in the 32 zmm registers).
constexpr int kMaxMr = 4;

/// fp16 bit pattern -> float (exact).
inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

/// Returns v unchanged but opaque to the optimizer, so a product stays rounded to float on
/// its own: GCC would otherwise contract `acc + p * s` into an FMA, and the scalar reference
/// (built without FMA) rounds the product first. Keeps the integer kernel bit-exact.
inline float rounded(float v) {
  __asm__("" : "+v"(v));
  return v;
}

/// The same for four lanes.
inline __m128 rounded(__m128 v) {
  __asm__("" : "+v"(v));
  return v;
}

// ---- per-group parameters of a 4-row tile ------------------------------------------------------

/// r[j] lane 4l + e (row j, group 4l + e) -> out[e] lane 4l + j: unpacks within 128-bit lanes.
inline void transpose4x16(const __m512 (&r)[4], __m512 (&out)[4]) {
  const __m512 a = _mm512_unpacklo_ps(r[0], r[1]), b = _mm512_unpackhi_ps(r[0], r[1]);
  const __m512 c = _mm512_unpacklo_ps(r[2], r[3]), d = _mm512_unpackhi_ps(r[2], r[3]);
  out[0] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a), _mm512_castps_pd(c)));
  out[1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a), _mm512_castps_pd(c)));
  out[2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(b), _mm512_castps_pd(d)));
  out[3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(b), _mm512_castps_pd(d)));
}

inline void transpose4x16(const __m512i (&r)[4], __m512i (&out)[4]) {
  const __m512i a = _mm512_unpacklo_epi32(r[0], r[1]), b = _mm512_unpackhi_epi32(r[0], r[1]);
  const __m512i c = _mm512_unpacklo_epi32(r[2], r[3]), d = _mm512_unpackhi_epi32(r[2], r[3]);
  out[0] = _mm512_unpacklo_epi64(a, c);
  out[1] = _mm512_unpackhi_epi64(a, c);
  out[2] = _mm512_unpacklo_epi64(b, d);
  out[3] = _mm512_unpackhi_epi64(b, d);
}

/// Scales (as float) and zero points of 4 weight rows for a block of 16 groups, transposed so
/// that the 4 rows' values of one group are one 128-bit load: loaded with 4 (masked) row loads
/// and a 4 x 16 in-register transpose instead of 2 x 4 strided scalar loads per group.
struct GroupParams4 {
  static constexpr int64_t kBlock = 16;
  alignas(64) float s[64];
  alignas(64) int32_t z[64];

  /// Position of group g (of the block) in s / z: the transpose leaves group 4l + e of the
  /// block in 128-bit lane l of output vector e.
  static int64_t offset(int64_t g) { return ((g & 3) * 16 + ((g >> 2) & 3) * 4); }

  /// Loads groups [gb, gb + min(16, groups - gb)) of rows n0 .. n0 + 3 (no over-read).
  void load(const uint16_t* scale_bits, const uint8_t* zeros, int64_t n0, int64_t groups,
            int64_t gb) {
    const int64_t cnt = groups - gb < kBlock ? groups - gb : kBlock;
    const __mmask16 m = static_cast<__mmask16>((1u << cnt) - 1);
    __m512 sr[4], so[4];
    __m512i zr[4], zo[4];
    for (int j = 0; j < 4; ++j) {
      const int64_t base = (n0 + j) * groups + gb;
      sr[j] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, scale_bits + base));
      zr[j] = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, zeros + base));
    }
    transpose4x16(sr, so);
    transpose4x16(zr, zo);
    for (int e = 0; e < 4; ++e) {
      _mm512_store_ps(s + 16 * e, so[e]);
      _mm512_store_si512(z + 16 * e, zo[e]);
    }
  }
};

// ---- horizontal reductions ------------------------------------------------------------------

/// [sum v0, sum v1, sum v2, sum v3] (int32 lanes, wrapping adds: exact for exact sums).
/// Folds 128-bit lanes pairwise across the four vectors, then within each lane.
inline __m128i reduce4(__m512i v0, __m512i v1, __m512i v2, __m512i v3) {
  const __m512i s01 =
      _mm512_add_epi32(_mm512_shuffle_i64x2(v0, v1, 0x44), _mm512_shuffle_i64x2(v0, v1, 0xEE));
  const __m512i s23 =
      _mm512_add_epi32(_mm512_shuffle_i64x2(v2, v3, 0x44), _mm512_shuffle_i64x2(v2, v3, 0xEE));
  // 128-bit lane t now holds four partial sums of v_t.
  __m512i t =
      _mm512_add_epi32(_mm512_shuffle_i64x2(s01, s23, 0x88), _mm512_shuffle_i64x2(s01, s23, 0xDD));
  t = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_BADC));
  t = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_CDAB));
  return _mm512_castsi512_si128(_mm512_permutexvar_epi32(
      _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), t));
}

/// Same for float lanes (the order of the additions is fixed, independent of the tiling).
inline __m128 reduce4(__m512 v0, __m512 v1, __m512 v2, __m512 v3) {
  const __m512 s01 =
      _mm512_add_ps(_mm512_shuffle_f32x4(v0, v1, 0x44), _mm512_shuffle_f32x4(v0, v1, 0xEE));
  const __m512 s23 =
      _mm512_add_ps(_mm512_shuffle_f32x4(v2, v3, 0x44), _mm512_shuffle_f32x4(v2, v3, 0xEE));
  __m512 t =
      _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xDD));
  t = _mm512_add_ps(t, _mm512_shuffle_ps(t, t, 0x4E));
  t = _mm512_add_ps(t, _mm512_shuffle_ps(t, t, 0xB1));
  return _mm512_castps512_ps128(
      _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), t));
}

inline int32_t reduce1(__m512i v) { return _mm512_reduce_add_epi32(v); }
/// Lane 0 of reduce4: the same additions in the same order as in a 4-row tile, so a column's
/// float result does not depend on whether it falls in a tile or in a column tail.
inline float reduce1(__m512 v) {
  const __m512 z = _mm512_setzero_ps();
  return _mm_cvtss_f32(reduce4(v, z, z, z));
}

// ---- broadcast unpack (int8 path, widths 1, 2, 4) ----------------------------------------------

/// Widths dividing 64 without vpermb per weight row: a 64-code block is BITS whole qwords, and
/// one broadcast load (load port only) puts a copy of qword g % BITS in qword g, from which
/// vpmultishiftqb + mask take 8 codes. The codes come out in a fixed permuted order, so the
/// activations are permuted to match, once per step and x row (shared by the NR weight rows):
/// at m = 1 that is 1 instead of 4 vpermb per step, on the port the unpack is bound by.
template <int BITS>
constexpr bool kBcast = BITS == 1 || BITS == 2 || BITS == 4;

template <int BITS>
struct Bcast64 {
  static_assert(kBcast<BITS>, "widths 1, 2, 4");
  __m512i ctrl, mask, xperm;

  Bcast64() {
    alignas(64) uint8_t c[64], x[64];
    constexpr int kPerQword = 64 / BITS;  // codes per source qword
    for (int g = 0; g < 8; ++g)
      for (int t = 0; t < 8; ++t) {
        const int src = g % BITS, copy = g / BITS;  // qword g = copy `copy` of qword src
        const int code = copy * 8 + t;              // code of that qword, 0 .. kPerQword - 1
        c[g * 8 + t] = static_cast<uint8_t>(code * BITS);
        x[g * 8 + t] = static_cast<uint8_t>(src * kPerQword + code);  // natural position
      }
    ctrl = _mm512_load_si512(c);
    xperm = _mm512_load_si512(x);
    mask = _mm512_set1_epi8(static_cast<char>((1 << BITS) - 1));
  }

  /// The 64 codes whose 8 * BITS bytes start at p, in xperm's order; reads exactly those bytes.
  __m512i full(const uint8_t* p) const {
    __m512i raw;
    if constexpr (BITS == 1) {
      long long v;
      __builtin_memcpy(&v, p, 8);
      raw = _mm512_set1_epi64(v);
    } else if constexpr (BITS == 2) {
      raw = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    } else {
      raw = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    return _mm512_and_si512(_mm512_multishift_epi64_epi8(ctrl, raw), mask);
  }
};

// ---- shared tile geometry --------------------------------------------------------------------

/// Pointers and sizes of one NR-row weight tile against an MR-row block of activations.
template <int BITS, int MR, int NR, class X>
struct Tile {
  int64_t k, gs, groups;
  int64_t ahead;         // prefetch distance: the same position two tiles ahead
  const uint8_t* w[NR];  // weight row streams
  const X* x[MR];        // activation rows (float or int8), natural order

  Tile(const uint8_t* packed, const X* xbase, int64_t k_, int64_t gs_, int64_t i0, int64_t n0)
      : k(k_), gs(gs_), groups(k_ / gs_) {
    const int64_t row_bytes = packed_row_bytes(k, BITS);
    // Two tiles ahead into L2 (T1): a prefetch into L1 holds one of the few L1 fill buffers
    // until its line arrives, which capped the stream below DRAM speed (measured: ~15 % slower
    // at 4 and 8 bits with T0 one tile ahead).
    ahead = 2 * NR * row_bytes;
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) w[j] = packed + (n0 + j) * row_bytes;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) x[i] = xbase + (i0 + i) * k;
  }

  /// Codes [kc, kc + 64) of every row (kc % 8 == 0, so they start on a byte boundary), and a
  /// prefetch of the same bytes two tiles ahead (harmless past the end of the buffer).
  template <class Unpacker>
  inline __attribute__((always_inline)) void codes_full(const Unpacker& U, int64_t kc,
                                                        __m512i (&c)[NR]) const {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const uint8_t* p = w[j] + (kc >> 3) * BITS;
      _mm_prefetch(reinterpret_cast<const char*>(p + ahead), _MM_HINT_T1);
      c[j] = U.full(p);
    }
  }

  /// Codes [kc, kc + cnt) (cnt < 64), lanes >= cnt zero; reads only the bytes holding them.
  inline __attribute__((always_inline)) void codes_partial(const Unpack64<BITS>& U, int64_t kc,
                                                           int64_t cnt, __m512i (&c)[NR]) const {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) c[j] = U.partial(w[j] + (kc >> 3) * BITS, cnt);
  }
};

// ---- int8 activations -----------------------------------------------------------------------

/// acc[i][j] += sum over 4-lane blocks of codes[j] (u8) * q[i][kc..] (s8); lanes of q at or past
/// `cnt` are not read (masked) when partial.
/// With PERM, q is permuted by `xperm` first (codes from Bcast64).
template <bool PERM, int BITS, int MR, int NR>
inline __attribute__((always_inline)) void i8_step(const Tile<BITS, MR, NR, int8_t>& t,
                                                   const __m512i (&c)[NR], int64_t kc,
                                                   __mmask64 lanes, __m512i xperm,
                                                   __m512i (&acc)[MR][NR]) {
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    __m512i xv = _mm512_maskz_loadu_epi8(lanes, t.x[i] + kc);
    if constexpr (PERM) xv = _mm512_permutexvar_epi8(xperm, xv);
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], c[j], xv);
  }
}

/// y[i0 .. i0 + MR) x [n0 .. n0 + NR) of the integer kernel. NR == 4 runs the epilogue on
/// 4-lane vectors (lane j = weight row n0 + j); other NR (column tails) element by element.
/// Either way every lane sees exactly the scalar kernel's operations in its order.
template <int BITS, int MR, int NR>
void i8_tile(const LinearI8Args& a, const Unpack64<BITS>& U,
             const Bcast64<kBcast<BITS> ? BITS : 1>& B, int64_t i0, int64_t n0) {
  static_assert(NR == 4 || NR == 1, "4-row tiles and single-row tails");
  const Tile<BITS, MR, NR, int8_t> t(a.packed, a.q, a.k, a.group_size, i0, n0);
  const int64_t gs = t.gs, groups = t.groups;
  float out[MR][NR];  // NR == 1
  __m128 out4[MR];    // NR == 4
  GroupParams4 params;
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    out4[i] = _mm_setzero_ps();
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) out[i][j] = 0.0f;
  }

  for (int64_t g = 0; g < groups; ++g) {
    __m512i acc[MR][NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
    int64_t kc = g * gs;
    const int64_t end = kc + gs;
    __m512i c[NR];
    const __mmask64 all = ~static_cast<__mmask64>(0);
    if constexpr (kBcast<BITS>) {
      for (; kc + 64 <= end; kc += 64) {
        t.codes_full(B, kc, c);
        i8_step<true>(t, c, kc, all, B.xperm, acc);
      }
    } else {
      for (; kc + 64 <= end; kc += 64) {
        t.codes_full(U, kc, c);
        i8_step<false>(t, c, kc, all, U.perm, acc);
      }
    }
    if (kc < end) {  // natural order (Unpack64) for the tail: a block's dot is order-free
      t.codes_partial(U, kc, end - kc, c);
      i8_step<false>(t, c, kc, avx512_byte_mask(end - kc), U.perm, acc);
    }
    // Exact int32 dots of the group, the zero point folded in integers, then the scalar
    // kernel's float epilogue: out += rounded(float(dot) * scale).
    if constexpr (NR == 4) {
      if (g % GroupParams4::kBlock == 0) params.load(a.scale_bits, a.zeros, n0, groups, g);
      const int64_t off = GroupParams4::offset(g);
      const __m128 s4 = _mm_load_ps(params.s + off);
      const __m128i z4 = _mm_load_si128(reinterpret_cast<const __m128i*>(params.z + off));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m128i dot = reduce4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
        const __m128i zg = _mm_mullo_epi32(z4, _mm_set1_epi32(a.gsum[(i0 + i) * groups + g]));
        const __m128 p = _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(dot, zg)), s4);
        out4[i] = _mm_add_ps(out4[i], rounded(p));
      }
    } else {
      const int64_t wg = n0 * groups + g;
      const int32_t z = a.zeros[wg];
      const float s = half_to_float(a.scale_bits[wg]);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const int32_t d = reduce1(acc[i][0]) - z * a.gsum[(i0 + i) * groups + g];
        out[i][0] += rounded(static_cast<float>(d) * s);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const float sx = a.x_scale[i0 + i];
    float* y = a.y + (i0 + i) * a.n_total + n0;
    if constexpr (NR == 4) {
      const __m128 b = a.bias ? _mm_loadu_ps(a.bias + n0) : _mm_setzero_ps();
      _mm_storeu_ps(y, _mm_add_ps(rounded(_mm_mul_ps(out4[i], _mm_set1_ps(sx))), b));
    } else {
      y[0] = rounded(out[i][0] * sx) + (a.bias ? a.bias[n0] : 0.0f);
    }
  }
}

// ---- float activations ----------------------------------------------------------------------

/// acc[i][j] += x[i][kc + l] * code[j][l] for the lanes l < cnt (cnt <= 64; x read masked).
/// Quarter u of the 64 u8 codes is widened to int32 lanes by a zero-masking vpermb (one p5 uop
/// instead of an extract + vpmovzxbd pair).
template <int BITS, int MR, int NR>
inline __attribute__((always_inline)) void f32_step(const Tile<BITS, MR, NR, float>& t,
                                                    const __m512i (&c)[NR], int64_t kc, int64_t cnt,
                                                    const __m512i (&widen)[4],
                                                    __m512 (&acc)[MR][NR]) {
  constexpr __mmask64 kLow = 0x1111111111111111ull;  // byte 0 of every int32 lane
#pragma GCC unroll 4
  for (int u = 0; u < 4; ++u) {
    if (16 * u >= cnt) break;
    const __mmask16 xm = cnt >= 16 * (u + 1) ? static_cast<__mmask16>(0xFFFF)
                                             : static_cast<__mmask16>((1u << (cnt - 16 * u)) - 1);
    __m512 wv[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j)
      wv[j] = _mm512_cvtepi32_ps(_mm512_maskz_permutexvar_epi8(kLow, widen[u], c[j]));
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(xm, t.x[i] + kc + 16 * u);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
}

/// vpermb indices moving byte 16u + l to byte 4l (the other bytes are zeroed by the mask).
inline void widen_indices(__m512i (&widen)[4]) {
  alignas(64) uint8_t idx[64];
  for (int u = 0; u < 4; ++u) {
    for (int b = 0; b < 64; ++b) idx[b] = static_cast<uint8_t>(16 * u + b / 4);
    widen[u] = _mm512_load_si512(idx);
  }
}

/// y[i0 .. i0 + MR) x [n0 .. n0 + NR) of the float kernel (xsum already computed); the group
/// epilogue s * (dot - z * xsum) runs on 4-lane vectors for NR == 4 as in i8_tile.
template <int BITS, int MR, int NR>
void f32_tile(const LinearArgs& a, const Unpack64<BITS>& U, const __m512i (&widen)[4], int64_t i0,
              int64_t n0) {
  static_assert(NR == 4 || NR == 1, "4-row tiles and single-row tails");
  const Tile<BITS, MR, NR, float> t(a.packed, a.x, a.k, a.group_size, i0, n0);
  const int64_t gs = t.gs, groups = t.groups;
  __m128 out4[MR];  // lane j: weight row n0 + j (lane 0 only for NR == 1)
  GroupParams4 params;
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) out4[i] = _mm_setzero_ps();

  for (int64_t g = 0; g < groups; ++g) {
    __m512 acc[MR][NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
    int64_t kc = g * gs;
    const int64_t end = kc + gs;
    __m512i c[NR];
    for (; kc + 64 <= end; kc += 64) {
      t.codes_full(U, kc, c);
      f32_step(t, c, kc, 64, widen, acc);
    }
    if (kc < end) {
      t.codes_partial(U, kc, end - kc, c);
      f32_step(t, c, kc, end - kc, widen, acc);
    }
    __m128 s4, z4;
    if constexpr (NR == 4) {
      if (g % GroupParams4::kBlock == 0) params.load(a.scale_bits, a.zeros, n0, groups, g);
      const int64_t off = GroupParams4::offset(g);
      s4 = _mm_load_ps(params.s + off);
      z4 = _mm_cvtepi32_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(params.z + off)));
    } else {
      s4 = _mm_set_ss(half_to_float(a.scale_bits[n0 * groups + g]));
      z4 = _mm_set_ss(static_cast<float>(a.zeros[n0 * groups + g]));
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      __m128 dot;
      if constexpr (NR == 4) {
        dot = reduce4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
      } else {
        dot = _mm_set_ss(reduce1(acc[i][0]));
      }
      const __m128 xs = _mm_set1_ps(a.xsum[(i0 + i) * groups + g]);
      out4[i] = _mm_fmadd_ps(s4, _mm_fnmadd_ps(z4, xs, dot), out4[i]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* y = a.y + (i0 + i) * a.n_total + n0;
    if constexpr (NR == 4) {
      const __m128 b = a.bias ? _mm_loadu_ps(a.bias + n0) : _mm_setzero_ps();
      _mm_storeu_ps(y, _mm_add_ps(out4[i], b));
    } else {
      y[0] = _mm_cvtss_f32(out4[i]) + (a.bias ? a.bias[n0] : 0.0f);
    }
  }
}

/// xsum[i * groups + g] = sum of x[i] over group g (masked tail loads, no over-read).
void compute_xsum(const LinearArgs& a) {
  const int64_t gs = a.group_size, groups = a.k / gs;
  for (int64_t i = 0; i < a.m; ++i) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* p = a.x + i * a.k + g * gs;
      __m512 acc = _mm512_setzero_ps();
      int64_t j = 0;
      for (; j + 16 <= gs; j += 16) acc = _mm512_add_ps(acc, _mm512_loadu_ps(p + j));
      if (j < gs)
        acc = _mm512_add_ps(
            acc, _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << (gs - j)) - 1), p + j));
      a.xsum[i * groups + g] = _mm512_reduce_add_ps(acc);
    }
  }
}

// ---- float activations as int8 digits (m <= kDigitMaxRows)
// ---------------------------------------

/// Digits per activation: x = S * (d0 + d1 / 128 + d2 / 128^2 + d3 / 128^3) + r, with S a power
/// of two (max |x| / S in [63.5, 127]), |d0| <= 127, |d1..3| <= 64 and |r| <= S * 2^-22, i.e.
/// at most 2^-28 of the row's max |x|: finer than fp32's own rounding of that element.
constexpr int kDigits = 4;
using kDigitSeq = std::make_integer_sequence<int, kDigits>;
/// Largest group whose digit pairs (d0 * 128 + d1 and d2 * 128 + d3) times the codes sum
/// within int32: gs * 255 * (127 * 128 + 64) < 2^31.
constexpr int64_t kPairMaxGroup = 512;

/// Where the digits of a call live in its scratch (64-byte aligned pieces).
struct DigitScratch {
  int64_t plane_bytes;  // k rounded up to 64
  int8_t* planes;       // [row][digit][plane_bytes]
  int32_t* sums;        // [row][group][digit]: the digits' sums over each weight group
  float* scale;         // [row]: S
  int8_t* plane(int64_t i, int d) const { return planes + (i * kDigits + d) * plane_bytes; }
};

inline uint8_t* align64(void* p) {
  return reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t{63});
}

DigitScratch digit_scratch(const LinearArgs& a) {
  DigitScratch d;
  const int64_t groups = a.k / a.group_size;
  d.plane_bytes = (a.k + 63) / 64 * 64;
  uint8_t* p = align64(a.scratch);
  d.planes = reinterpret_cast<int8_t*>(p);
  p = align64(p + a.m * kDigits * d.plane_bytes);
  d.sums = reinterpret_cast<int32_t*>(p);
  p = align64(p + a.m * groups * kDigits * 4);
  d.scale = reinterpret_cast<float*>(p);
  return d;
}

/// Writes the digits of x's rows (in Bcast64's permuted order within every full 64-code block
/// of a group for widths 1, 2 and 4, natural order elsewhere), their group sums and scales.
/// Every step is exact: scaling by a power of two, rounding to an integer, and the remainders'
/// subtraction and scaling by 128.
template <int BITS>
void compute_digits(const LinearArgs& a, const DigitScratch& ds) {
  const int64_t k = a.k, gs = a.group_size, groups = k / gs;
  for (int64_t i = 0; i < a.m; ++i) {
    const float* x = a.x + i * k;
    float amax = 0.0f;
    absmax_avx2(x, k, &amax);  // finite: fold_exact holds for x
    int e = 0;
    if (amax > 0.0f) {
      int exp2 = 0;
      std::frexp(amax, &exp2);  // amax in [2^(exp2-1), 2^exp2)
      e = exp2 - 7;             // amax / 2^e in [64, 128)
      if (std::ldexp(amax, -e) > 127.0f) ++e;
      if (e < -126) e = -126;  // S stays normal (its inverse too)
    }
    ds.scale[i] = std::ldexp(1.0f, e);
    const __m512 inv = _mm512_set1_ps(std::ldexp(1.0f, -e)), radix = _mm512_set1_ps(128.0f);
    int8_t* planes[kDigits];
    for (int d = 0; d < kDigits; ++d) planes[d] = ds.plane(i, d);
    for (int64_t j = 0; j < k; j += 16) {
      const __mmask16 m = k - j >= 16 ? static_cast<__mmask16>(0xFFFF)
                                      : static_cast<__mmask16>((1u << (k - j)) - 1);
      __m512 t = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + j), inv);
      for (int d = 0; d < kDigits; ++d) {
        const __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_mask_storeu_epi8(planes[d] + j, m, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(r)));
        t = _mm512_mul_ps(_mm512_sub_ps(t, r), radix);
      }
    }
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t k0 = g * gs, k1 = k0 + gs;
      for (int d = 0; d < kDigits; ++d) {
        __m512i acc = _mm512_setzero_si512();
        for (int64_t kc = k0; kc < k1; kc += 64)
          acc = _mm512_dpbusd_epi32(
              acc, _mm512_set1_epi8(1),
              _mm512_maskz_loadu_epi8(avx512_byte_mask(k1 - kc), planes[d] + kc));
        ds.sums[(i * groups + g) * kDigits + d] = _mm512_reduce_add_epi32(acc);
      }
    }
    if constexpr (kBcast<BITS>) {  // full blocks in the order the broadcast unpack yields
      const Bcast64<BITS> B;
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t kc = g * gs; kc + 64 <= (g + 1) * gs; kc += 64)
          for (int d = 0; d < kDigits; ++d)
            _mm512_storeu_si512(planes[d] + kc, _mm512_permutexvar_epi8(
                                                    B.xperm, _mm512_loadu_si512(planes[d] + kc)));
    }
  }
}

/// acc[j] += codes[j] (u8) x digits dv (s8) for the 4 weight rows of a tile, as one asm
/// statement with the accumulators as register operands: from the intrinsics GCC moved the 16
/// accumulators to other registers every step and spilled one.
inline __attribute__((always_inline)) void digit_dots4(__m512i dv, const __m512i (&c)[4],
                                                       __m512i (&acc)[4]) {
  __asm__(
      "vpdpbusd %[dv], %[c0], %[a0]\n\t"
      "vpdpbusd %[dv], %[c1], %[a1]\n\t"
      "vpdpbusd %[dv], %[c2], %[a2]\n\t"
      "vpdpbusd %[dv], %[c3], %[a3]\n\t"
      : [a0] "+v"(acc[0]), [a1] "+v"(acc[1]), [a2] "+v"(acc[2]), [a3] "+v"(acc[3])
      : [dv] "v"(dv), [c0] "v"(c[0]), [c1] "v"(c[1]), [c2] "v"(c[2]), [c3] "v"(c[3]));
}

/// acc[d][j] += codes[j] (u8) x digit d of x (s8) over one 64-code step; digits past `lanes`
/// are not read. The digits unrolled by a fold over constant indices (keeps acc in registers).
template <int NR, int... D>
inline __attribute__((always_inline)) void digit_step(const int8_t* const (&dig)[kDigits],
                                                      int64_t kc, __mmask64 lanes,
                                                      const __m512i (&c)[NR],
                                                      __m512i (&acc)[kDigits][NR],
                                                      std::integer_sequence<int, D...>) {
  if constexpr (NR == 4) {
    (digit_dots4(_mm512_maskz_loadu_epi8(lanes, dig[D] + kc), c, acc[D]), ...);
  } else {
    ((acc[D][0] =
          _mm512_dpbusd_epi32(acc[D][0], c[0], _mm512_maskz_loadu_epi8(lanes, dig[D] + kc))),
     ...);
  }
}

/// y[i] x [n0 .. n0 + NR) of the float kernel on x's digits: per group the exact int32 dots of
/// the codes with each digit, the zero point folded in integers (dot - zero * digit sum), the
/// four combined exactly in double and scaled by S, one rounding to float, then the float
/// kernel's epilogue (out += s * value).
template <int BITS, int NR>
void digit_tile(const LinearArgs& a, const DigitScratch& ds, const Unpack64<BITS>& U,
                const Bcast64<kBcast<BITS> ? BITS : 1>& B, int64_t i, int64_t n0) {
  static_assert(NR == 4 || NR == 1, "4-row tiles and single-row tails");
  const Tile<BITS, 1, NR, float> t(a.packed, a.x, a.k, a.group_size, i, n0);
  const int64_t gs = t.gs, groups = t.groups;
  const int8_t* const dig[kDigits] = {ds.plane(i, 0), ds.plane(i, 1), ds.plane(i, 2),
                                      ds.plane(i, 3)};
  const double sx = ds.scale[i];
  GroupParams4 params;
  __m128 out4 = _mm_setzero_ps();
  const __mmask64 all = ~static_cast<__mmask64>(0);
  for (int64_t g = 0; g < groups; ++g) {
    __m512i acc[kDigits][NR];
#pragma GCC unroll 4
    for (int d = 0; d < kDigits; ++d)
#pragma GCC unroll 4
      for (int j = 0; j < NR; ++j) acc[d][j] = _mm512_setzero_si512();
    int64_t kc = g * gs;
    const int64_t end = kc + gs;
    __m512i c[NR];
    if constexpr (kBcast<BITS>) {
      for (; kc + 64 <= end; kc += 64) {
        t.codes_full(B, kc, c);
        digit_step(dig, kc, all, c, acc, kDigitSeq{});
      }
    } else {
      for (; kc + 64 <= end; kc += 64) {
        t.codes_full(U, kc, c);
        digit_step(dig, kc, all, c, acc, kDigitSeq{});
      }
    }
    if (kc < end) {  // natural order for the tail (so are its digits)
      t.codes_partial(U, kc, end - kc, c);
      digit_step(dig, kc, avx512_byte_mask(end - kc), c, acc, kDigitSeq{});
    }
    const int32_t* dsum = ds.sums + (i * groups + g) * kDigits;
    // Groups of at most kPairMaxGroup codes: digits paired in int32 lanes first (d0 * 128 + d1,
    // d2 * 128 + d3: exact there and in their reduced sums), so two horizontal reductions and
    // one double step instead of four; the value is the same exact number either way.
    const bool pairs = gs <= kPairMaxGroup;
    if constexpr (NR == 4) {
      if (g % GroupParams4::kBlock == 0) params.load(a.scale_bits, a.zeros, n0, groups, g);
      const int64_t off = GroupParams4::offset(g);
      const __m128 s4 = _mm_load_ps(params.s + off);
      const __m128i z4 = _mm_load_si128(reinterpret_cast<const __m128i*>(params.z + off));
      auto folded = [&](__m128i dot, int32_t sum) {  // dot - zero * digit sum (exact)
        return _mm256_cvtepi32_pd(_mm_sub_epi32(dot, _mm_mullo_epi32(z4, _mm_set1_epi32(sum))));
      };
      __m256d v;
      if (pairs) {
        __m512i p01[4], p23[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
          p01[j] = _mm512_add_epi32(_mm512_slli_epi32(acc[0][j], 7), acc[1][j]);
          p23[j] = _mm512_add_epi32(_mm512_slli_epi32(acc[2][j], 7), acc[3][j]);
        }
        const __m256d e01 =
            folded(reduce4(p01[0], p01[1], p01[2], p01[3]), dsum[0] * 128 + dsum[1]);
        const __m256d e23 =
            folded(reduce4(p23[0], p23[1], p23[2], p23[3]), dsum[2] * 128 + dsum[3]);
        v = _mm256_mul_pd(_mm256_fmadd_pd(e23, _mm256_set1_pd(1.0 / 16384.0), e01),
                          _mm256_set1_pd(1.0 / 128.0));
      } else {
        v = _mm256_setzero_pd();
        for (int d = kDigits - 1; d >= 0; --d)  // exact: 31-bit integers 7 bits apart
          v = _mm256_fmadd_pd(v, _mm256_set1_pd(1.0 / 128.0),
                              folded(reduce4(acc[d][0], acc[d][1], acc[d][2], acc[d][3]), dsum[d]));
      }
      out4 = _mm_fmadd_ps(s4, _mm256_cvtpd_ps(_mm256_mul_pd(v, _mm256_set1_pd(sx))), out4);
    } else {
      const int64_t wg = n0 * groups + g;
      const int32_t z = a.zeros[wg];
      double v = 0.0;
      if (pairs) {
        const __m512i p01 = _mm512_add_epi32(_mm512_slli_epi32(acc[0][0], 7), acc[1][0]);
        const __m512i p23 = _mm512_add_epi32(_mm512_slli_epi32(acc[2][0], 7), acc[3][0]);
        const double e01 = reduce1(p01) - z * (dsum[0] * 128 + dsum[1]);
        const double e23 = reduce1(p23) - z * (dsum[2] * 128 + dsum[3]);
        v = (e01 + e23 / 16384.0) / 128.0;
      } else {
        for (int d = kDigits - 1; d >= 0; --d) v = v / 128.0 + (reduce1(acc[d][0]) - z * dsum[d]);
      }
      const float s = half_to_float(a.scale_bits[wg]);
      out4 = _mm_fmadd_ss(_mm_set_ss(s), _mm_set_ss(static_cast<float>(v * sx)), out4);
    }
  }
  float* y = a.y + i * a.n_total + n0;
  if constexpr (NR == 4) {
    const __m128 b = a.bias ? _mm_loadu_ps(a.bias + n0) : _mm_setzero_ps();
    _mm_storeu_ps(y, _mm_add_ps(out4, b));
  } else {
    y[0] = _mm_cvtss_f32(out4) + (a.bias ? a.bias[n0] : 0.0f);
  }
}

/// Whether the float kernel runs on x's digits: few rows of x (each row re-reads the weight
/// tile from L1 and unpacks it again) and int32-safe groups.
inline bool use_digits(const LinearArgs& a) {
  return a.m <= kDigitMaxRows && a.group_size <= kDigitMaxGroup;
}

template <int BITS>
void digit_run(const LinearArgs& a) {
  const DigitScratch ds = digit_scratch(a);
  if (!a.prepared) compute_digits<BITS>(a, ds);  // later chunks: already in the scratch
  const Unpack64<BITS> U;
  const Bcast64<kBcast<BITS> ? BITS : 1> B;
  int64_t n = a.n_begin;
  for (; n + 4 <= a.n_end; n += 4)
    for (int64_t i = 0; i < a.m; ++i) digit_tile<BITS, 4>(a, ds, U, B, i, n);
  for (; n < a.n_end; ++n)
    for (int64_t i = 0; i < a.m; ++i) digit_tile<BITS, 1>(a, ds, U, B, i, n);
}

// ---- tiling over rows of x and weight rows ----------------------------------------------------

/// Weight rows per tile: independent row streams and accumulator chains enough to hide the
/// dpbusd / FMA latency, 4 x 4 accumulators at most, and one 4-lane vector per group epilogue.
constexpr int kNr = 4;

/// Runs Fn<MR, NR>(i0, n0) over the x row blocks (kMaxMr rows, then the rest) of one tile, so
/// a tile's weight bytes are streamed from DRAM once and re-read from L1/L2 by later blocks.
template <int NR, class Call>
inline void row_blocks(int64_t m, const Call& call, int64_t n0) {
  int64_t i = 0;
  for (; i + kMaxMr <= m; i += kMaxMr) call.template run<kMaxMr, NR>(i, n0);
  switch (m - i) {
    case 3: call.template run<3, NR>(i, n0); break;
    case 2: call.template run<2, NR>(i, n0); break;
    case 1: call.template run<1, NR>(i, n0); break;
    default: break;
  }
}

template <class Call>
void columns(int64_t m, int64_t n_begin, int64_t n_end, const Call& call) {
  constexpr int NR = kNr;
  int64_t n = n_begin;
  for (; n + NR <= n_end; n += NR) row_blocks<NR>(m, call, n);
  for (; n < n_end; ++n) row_blocks<1>(m, call, n);
}

template <int BITS>
struct I8Call {
  const LinearI8Args& a;
  const Unpack64<BITS>& U;
  const Bcast64<kBcast<BITS> ? BITS : 1>& B;  // unused for widths 3, 5..8
  template <int MR, int NR>
  void run(int64_t i0, int64_t n0) const {
    i8_tile<BITS, MR, NR>(a, U, B, i0, n0);
  }
};

template <int BITS>
struct F32Call {
  const LinearArgs& a;
  const Unpack64<BITS>& U;
  const __m512i (&widen)[4];
  template <int MR, int NR>
  void run(int64_t i0, int64_t n0) const {
    f32_tile<BITS, MR, NR>(a, U, widen, i0, n0);
  }
};

template <int BITS>
void i8_run(const LinearI8Args& a) {
  const Unpack64<BITS> U;
  const Bcast64<kBcast<BITS> ? BITS : 1> B;
  columns(a.m, a.n_begin, a.n_end, I8Call<BITS>{a, U, B});
}

template <int BITS>
void f32_run(const LinearArgs& a) {
  if (use_digits(a)) return digit_run<BITS>(a);
  const Unpack64<BITS> U;
  __m512i widen[4];
  widen_indices(widen);
  if (!a.prepared) compute_xsum(a);  // later chunks of linear_f32_chunks: already in a.xsum
  columns(a.m, a.n_begin, a.n_end, F32Call<BITS>{a, U, widen});
}

}  // namespace

void linear_f32_avx512_gemv(const LinearArgs& a) {
  with_bits(a.bits, [&](auto b) { f32_run<decltype(b)::value>(a); });
}

void linear_i8_avx512_gemv(const LinearI8Args& a) {
  with_bits(a.bits, [&](auto b) { i8_run<decltype(b)::value>(a); });
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC diagnostic pop
#pragma GCC pop_options

#endif  // __x86_64__
