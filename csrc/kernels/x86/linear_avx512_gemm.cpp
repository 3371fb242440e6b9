// AVX-512 packed matmul for larger batches (m > kFusedMaxRows): float activations (FMA) and
// int8 activations (VNNI), compiled for AVX-512 F/BW/VL/VNNI/VBMI via a target pragma and only
// called after run-time CPU detection (isa_table.cpp).
//
// Both kernels share one weight-panel builder. A panel is kNr = 32 output columns; each
// 64-code chunk of a column is unpacked to 64 u8 lanes with Unpack64 (vpermb +
// vpmultishiftqb), and 16 columns' chunks (16 zmm of 16 dword "quads" of 4 consecutive codes)
// are transposed as a 16x16 dword matrix, giving per quad one zmm = 16 columns x 4 codes:
// exactly the u8 operand layout of vpdpbusd.
//
// * int8 (linear_i8_avx512_gemm): the u8 quad panel of kI8Kc codes x 32 columns (16 KiB) is
//   built once per (row block, column panel, K block) and reused by every MR-row tile of the
//   row block: per quad, two aligned panel loads and, per row, a broadcast of 4 activation
//   bytes into two vpdpbusd. int32 dot products are exact; at each group end the epilogue is
//   the scalar kernel's: acc += float(dot - zero * gsum) * scale in group order, then
//   y = acc * x_scale + bias, with explicitly rounded mul/add (never contracted to FMA), so
//   the result is bit-identical to linear_i8_scalar.
// * float (linear_f32_avx512_gemm): the quads are split into their 4 codes (shift + mask),
//   converted and dequantized exactly as dequantize_rows ((code - zero) * scale) into a
//   k-major fp32 panel of kF32Kc x 32 (32 KiB, L1-resident), then an MR x 32 FMA tile (2 zmm
//   per row, x broadcast from memory) accumulates in k order; partial sums go through y
//   between K blocks, bias is added after the last one.
// Rows are processed in blocks (activations of a block stay in L2) and each output
// element's arithmetic never depends on [n_begin, n_end) or the tiling, so results do not
// depend on the thread split.
#if defined(__x86_64__)

#include <cstdint>
#include <cstring>

#include "../dispatch.h"

#pragma GCC push_options
// (+ AMX for linear_i8_amx_gemm: no AMX instruction is emitted outside its tiles.)
#pragma GCC target( \
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,amx-tile,amx-int8")
// GCC 12 flags the _mm512_undefined_* pass-through inside the intrinsics (a false positive).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include "avx512_unpack.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

constexpr int kNr = static_cast<int>(kAvx512Nr);  // columns per panel (two 16-lane halves)
constexpr int64_t kI8Kc = kAvx512I8Kc, kI8Mc = kAvx512I8Mc;
constexpr int64_t kF32Kc = kAvx512F32Kc, kF32Mc = kAvx512F32Mc;
// Explicit round-to-nearest (the default mode) keeps the compiler from fusing mul + add.
constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

// ---- shared panel builder --------------------------------------------------------------------

// In-register transpose of a 16x16 dword matrix: r[j] lane q -> r[q] lane j.
inline void transpose16(__m512i r[16]) {
  __m512i v[16];
  // 4x4 transposes inside each 128-bit lane, rows 4G..4G+3: v[4G + c] lane L = dwords 4L + c.
  for (int g = 0; g < 4; ++g) {
    const __m512i* s = r + 4 * g;
    const __m512i t0 = _mm512_unpacklo_epi32(s[0], s[1]), t1 = _mm512_unpackhi_epi32(s[0], s[1]);
    const __m512i t2 = _mm512_unpacklo_epi32(s[2], s[3]), t3 = _mm512_unpackhi_epi32(s[2], s[3]);
    v[4 * g + 0] = _mm512_unpacklo_epi64(t0, t2);
    v[4 * g + 1] = _mm512_unpackhi_epi64(t0, t2);
    v[4 * g + 2] = _mm512_unpacklo_epi64(t1, t3);
    v[4 * g + 3] = _mm512_unpackhi_epi64(t1, t3);
  }
  // 4x4 transpose of 128-bit lanes across the row groups: r[4L + c] = lane L of v[4G + c].
  for (int c = 0; c < 4; ++c) {
    const __m512i a = _mm512_shuffle_i32x4(v[c], v[4 + c], 0x44);
    const __m512i b = _mm512_shuffle_i32x4(v[c], v[4 + c], 0xEE);
    const __m512i e = _mm512_shuffle_i32x4(v[8 + c], v[12 + c], 0x44);
    const __m512i f = _mm512_shuffle_i32x4(v[8 + c], v[12 + c], 0xEE);
    r[0 + c] = _mm512_shuffle_i32x4(a, e, 0x88);
    r[4 + c] = _mm512_shuffle_i32x4(a, e, 0xDD);
    r[8 + c] = _mm512_shuffle_i32x4(b, f, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(b, f, 0xDD);
  }
}

// Codes [k0, k0 + len) (len <= 64, k0 % 64 == 0) of the nc <= 16 columns whose packed rows
// start at `rows`, as quads: q[t] lane j = codes k0 + 4t .. k0 + 4t + 3 of column j (u8 each).
// Columns >= nc and codes >= len are zero; no byte outside those rows' codes is read (the
// prefetch may point past them: prefetches never fault). Each row is read in short bursts
// (one K block, then the tiles run), which the hardware prefetcher follows poorly for 16
// strided rows, so the bytes 256 codes ahead are prefetched (a few % at batch 64).
template <int BITS>
inline void load_quads(const Unpack64<BITS>& U, const uint8_t* rows, int64_t row_bytes, int nc,
                       int64_t k0, int64_t len, __m512i q[16]) {
  const int64_t off = k0 * BITS / 8;
  for (int j = 0; j < 16; ++j) {
    const uint8_t* p = rows + j * row_bytes + off;
    if (j >= nc) {
      q[j] = _mm512_setzero_si512();
    } else {
      _mm_prefetch(reinterpret_cast<const char*>(p + 32 * BITS), _MM_HINT_T0);
      q[j] = len == 64 ? U.full(p) : U.partial(p, len);
    }
  }
  transpose16(q);
}

// fp16 scales of group g for columns n0 .. n0 + 31 as floats (0 for columns >= nc).
inline void group_scales(const uint16_t* scale_bits, int64_t groups, int64_t n0, int nc, int64_t g,
                         float* out) {
  alignas(64) uint16_t h[kNr];
  for (int j = 0; j < kNr; ++j) h[j] = j < nc ? scale_bits[(n0 + j) * groups + g] : 0;
  _mm512_store_ps(out, _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(h))));
  _mm512_store_ps(out + 16,
                  _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(h + 16))));
}

// Zero points of group g for columns n0 .. n0 + 31 as int32 (0 for columns >= nc).
inline void group_zeros(const uint8_t* zeros, int64_t groups, int64_t n0, int nc, int64_t g,
                        int32_t* out) {
  for (int j = 0; j < kNr; ++j) out[j] = j < nc ? zeros[(n0 + j) * groups + g] : 0;
}

inline __mmask16 lane_mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF)
                 : static_cast<__mmask16>((1u << (n > 0 ? n : 0)) - 1u);
}

// Row block size: rows whose activations (row_bytes each) fit about 1 MiB (half the L2),
// at least 32 and at most `most`, a multiple of 16.
inline int64_t row_block(int64_t row_bytes, int64_t most) {
  int64_t mc = (int64_t{1} << 20) / (row_bytes > 0 ? row_bytes : 1);
  mc = mc < 32 ? 32 : (mc > most ? most : mc);
  return mc / 16 * 16;
}

// ---- int8 activations (VNNI) -----------------------------------------------------------------

constexpr int kI8Mr = 8;  // rows per register tile (2 x 8 int32 accumulators)

// Per-thread working memory of the int8 kernel (LinearI8Args carries no scratch): the u8 quad
// panel, per-group scales / zero points of the current K block, and the per-(row, column)
// int32 partial dot product and float sum carried across K blocks.
struct I8Work {
  alignas(64) uint8_t panel[kI8Kc * kNr];
  alignas(64) float scale[(kI8Kc / 8 + 2) * kNr];
  alignas(64) int32_t zero[(kI8Kc / 8 + 2) * kNr];
  alignas(64) int32_t dot[kI8Mc * kNr];
  alignas(64) float acc[kI8Mc * kNr];
};

I8Work& i8_work() {
  static thread_local I8Work w;
  return w;
}

// Builds the quad panel of columns [n0, n0 + nc) x codes [kb, ke) (kb % 64 == 0): quad t of
// the block at panel + t * 128, columns 0..15 then 16..31.
template <int BITS>
void build_i8_panel(const LinearI8Args& a, const Unpack64<BITS>& U, int64_t n0, int nc, int64_t kb,
                    int64_t ke, uint8_t* panel) {
  const int64_t row_bytes = packed_row_bytes(a.k, BITS);
  for (int64_t c0 = kb; c0 < ke; c0 += 64) {
    const int64_t len = ke - c0 < 64 ? ke - c0 : 64;
    for (int h = 0; h < 2; ++h) {
      __m512i q[16];
      const int hc = nc - 16 * h;
      load_quads<BITS>(U, a.packed + (n0 + 16 * h) * row_bytes, row_bytes, hc < 0 ? 0 : hc, c0, len,
                       q);
      uint8_t* dst = panel + (c0 - kb) / 4 * 128 + 64 * h;
      const int nq = static_cast<int>((len + 3) / 4);
      for (int t = 0; t < nq; ++t) _mm512_store_si512(dst + t * 128, q[t]);
    }
  }
}

// Group-end epilogue inputs for one tile: per-column scales / zero points of the group, the
// rows' group sums (row stride gstride) and the rows' float sums (row stride kNr).
struct I8Epilogue {
  const float* scale;
  const int32_t* zero;
  const int32_t* gsum;
  int64_t gstride;
  float* acc;
};

// float(dot - zero * gsum), exactly. For group_size <= 512 every operand and the result are
// integers below 2^24 in magnitude (|code - zero| <= 255, |q| <= 127), so one fnmadd on their
// float images is exact; larger groups take the int32 product (vpmulld, slower).
template <bool FLOAT_EXACT>
__attribute__((always_inline)) inline __m512 corrected(__m512i dot, __m512i zero, __m512 zero_f,
                                                       int32_t gsum) {
  if (FLOAT_EXACT) {
    return _mm512_fnmadd_ps(zero_f, _mm512_set1_ps(static_cast<float>(gsum)),
                            _mm512_cvtepi32_ps(dot));
  }
  return _mm512_cvtepi32_ps(
      _mm512_sub_epi32(dot, _mm512_mullo_epi32(zero, _mm512_set1_epi32(gsum))));
}

// acc += float(dot - zero * gsum) * scale for MR rows x 32 columns at their group's end, in
// the scalar kernel's order and rounding.
template <int MR, bool FLOAT_EXACT>
__attribute__((always_inline)) inline void i8_group_end(const __m512i (&d0)[MR],
                                                        const __m512i (&d1)[MR],
                                                        const I8Epilogue& epi) {
  const __m512 s0 = _mm512_load_ps(epi.scale), s1 = _mm512_load_ps(epi.scale + 16);
  const __m512i z0 = _mm512_load_si512(epi.zero), z1 = _mm512_load_si512(epi.zero + 16);
  const __m512 zf0 = _mm512_cvtepi32_ps(z0), zf1 = _mm512_cvtepi32_ps(z1);
#pragma GCC unroll 16
  for (int s = 0; s < MR; ++s) {
    const int32_t gs = epi.gsum[s * epi.gstride];
    float* acc = epi.acc + s * kNr;
    const __m512 p0 = _mm512_mul_round_ps(corrected<FLOAT_EXACT>(d0[s], z0, zf0, gs), s0, kRne);
    const __m512 p1 = _mm512_mul_round_ps(corrected<FLOAT_EXACT>(d1[s], z1, zf1, gs), s1, kRne);
    _mm512_store_ps(acc, _mm512_add_round_ps(_mm512_load_ps(acc), p0, kRne));
    _mm512_store_ps(acc + 16, _mm512_add_round_ps(_mm512_load_ps(acc + 16), p1, kRne));
  }
}

// One segment of a group (never crossing a group or K block end) for MR rows x 32 columns:
// dot products += nq panel quads from wp x activation bytes p[s * ldq + 4t ..], the last quad
// holding only `last` (1..4) codes. The accumulators live in registers for the segment (every
// loop over them is unrolled; no pointer to them escapes): they start at 0 when the segment
// starts its group, else from `dot` (the group's earlier K block). With `epi` the group ends
// here: acc += float(dot - zero * gsum) * scale, in the scalar kernel's order and rounding;
// else the partial sums go back to `dot`.
template <int MR, bool FLOAT_EXACT>
void i8_segment(const int8_t* p, int64_t ldq, const uint8_t* wp, int64_t nq, int64_t last,
                bool group_start, int32_t* dot, const I8Epilogue* epi) {
  __m512i d0[MR], d1[MR];
#pragma GCC unroll 16
  for (int s = 0; s < MR; ++s) {
    d0[s] = group_start ? _mm512_setzero_si512() : _mm512_load_si512(dot + s * kNr);
    d1[s] = group_start ? _mm512_setzero_si512() : _mm512_load_si512(dot + s * kNr + 16);
  }
  const int64_t full = last == 4 ? nq : nq - 1;
  for (int64_t t = 0; t < full; ++t, wp += 128, p += 4) {
    const __m512i w0 = _mm512_load_si512(wp), w1 = _mm512_load_si512(wp + 64);
#pragma GCC unroll 16
    for (int s = 0; s < MR; ++s) {
      int32_t v;
      std::memcpy(&v, p + s * ldq, 4);
      const __m512i x = _mm512_set1_epi32(v);
      d0[s] = _mm512_dpbusd_epi32(d0[s], w0, x);
      d1[s] = _mm512_dpbusd_epi32(d1[s], w1, x);
    }
  }
  if (full < nq) {  // K % 4 != 0: read only the row's remaining bytes
    const __m512i w0 = _mm512_load_si512(wp), w1 = _mm512_load_si512(wp + 64);
    const __mmask16 mk = static_cast<__mmask16>((1u << last) - 1u);
#pragma GCC unroll 16
    for (int s = 0; s < MR; ++s) {
      const __m512i x = _mm512_broadcastd_epi32(_mm_maskz_loadu_epi8(mk, p + s * ldq));
      d0[s] = _mm512_dpbusd_epi32(d0[s], w0, x);
      d1[s] = _mm512_dpbusd_epi32(d1[s], w1, x);
    }
  }
  if (!epi) {
#pragma GCC unroll 16
    for (int s = 0; s < MR; ++s) {
      _mm512_store_si512(dot + s * kNr, d0[s]);
      _mm512_store_si512(dot + s * kNr + 16, d1[s]);
    }
    return;
  }
  i8_group_end<MR, FLOAT_EXACT>(d0, d1, *epi);
}

// The group-end epilogue of MR rows whose group's dot products are in `dot` (the AMX tiles).
template <int MR, bool FLOAT_EXACT>
void i8_group_end_from(const int32_t* dot, const I8Epilogue& epi) {
  __m512i d0[MR], d1[MR];
#pragma GCC unroll 16
  for (int s = 0; s < MR; ++s) {
    d0[s] = _mm512_load_si512(dot + s * kNr);
    d1[s] = _mm512_load_si512(dot + s * kNr + 16);
  }
  i8_group_end<MR, FLOAT_EXACT>(d0, d1, epi);
}

// One MR-row tile (first row r within the row block, absolute row i) over codes [kb, ke) of
// the current panel, split at group ends.
template <int MR, bool FLOAT_EXACT>
void i8_tile(const LinearI8Args& a, I8Work& w, int64_t r, int64_t i, int64_t kb, int64_t ke) {
  const int64_t k = a.k, gs = a.group_size, groups = k / gs, g0 = kb / gs;
  for (int64_t t0 = kb; t0 < ke;) {
    const int64_t g = t0 / gs, gend = (g + 1) * gs;
    const int64_t t1 = gend < ke ? gend : ke;
    // Quads of the segment; a partial one only ends a row (K % 4 != 0).
    const int64_t nq = (t1 - t0 + 3) / 4, last = t1 - t0 - 4 * (nq - 1);
    const I8Epilogue epi{w.scale + (g - g0) * kNr, w.zero + (g - g0) * kNr, a.gsum + i * groups + g,
                         groups, w.acc + r * kNr};
    i8_segment<MR, FLOAT_EXACT>(a.q + i * k + t0, k, w.panel + (t0 - kb) / 4 * 128, nq, last,
                                t0 == g * gs, w.dot + r * kNr, t1 == gend ? &epi : nullptr);
    t0 = t1;
  }
}

template <int MR>
void i8_tile_dispatch(const LinearI8Args& a, I8Work& w, int64_t r, int64_t i, int64_t rows,
                      int64_t kb, int64_t ke) {
  if constexpr (MR > 1) {
    if (rows < MR) return i8_tile_dispatch<MR - 1>(a, w, r, i, rows, kb, ke);
  }
  if (a.group_size <= 512) return i8_tile<MR, true>(a, w, r, i, kb, ke);
  i8_tile<MR, false>(a, w, r, i, kb, ke);
}

// y = acc * x_scale + bias for rows [i0, i0 + rows) of the panel at n0 (nc columns).
void i8_store(const LinearI8Args& a, const I8Work& w, int64_t i0, int64_t rows, int64_t n0,
              int nc) {
  for (int h = 0; h < 2; ++h) {
    const __mmask16 mk = lane_mask(nc - 16 * h);
    if (!mk) continue;
    const __m512 b = a.bias ? _mm512_maskz_loadu_ps(mk, a.bias + n0 + 16 * h) : _mm512_setzero_ps();
    for (int64_t r = 0; r < rows; ++r) {
      const __m512 acc = _mm512_load_ps(w.acc + r * kNr + 16 * h);
      const __m512 v = _mm512_add_round_ps(
          _mm512_mul_round_ps(acc, _mm512_set1_ps(a.x_scale[i0 + r]), kRne), b, kRne);
      _mm512_mask_storeu_ps(a.y + (i0 + r) * a.n_total + n0 + 16 * h, mk, v);
    }
  }
}

// K block of the int8 kernel: a multiple of 64 codes and, when it fits, of the group size
// (so groups rarely straddle blocks).
inline int64_t i8_kblock(int64_t gs) {
  if (gs % 64 == 0 && gs <= kI8Kc) return kI8Kc / gs * gs;
  return kI8Kc;
}

// ---- int8 activations on AMX (tdpbsud) -------------------------------------------------------
//
// The same panels and epilogue; the products of 16 activation rows x 64 codes (an s8 tile
// read in place from q, rows k bytes apart) by 16 quads x 16 columns of the panel (a u8 tile:
// quad rows 128 bytes apart, one half of the 32 columns) accumulate in 16 x 16 int32 tiles:
// 32 rows x 32 columns = four C tiles, two A, two B. Segments go through `dot` (the same
// int32 partial sums the VNNI tile keeps), and a segment that ends its group runs
// i8_segment's epilogue on them, so the result is the VNNI kernel's, bit for bit.

// Tile registers: C 0..3 = [row half][column half], A (activations) 4, 5, B (panel) 6, 7.
struct alignas(64) AmxConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// Whether every segment (group or K block) is a whole number of 64-code steps.
inline bool amx_fits(const LinearI8Args& a) { return a.k % 64 == 0 && a.group_size % 64 == 0; }

// 16 * RB rows x 32 columns over `steps` 64-code steps from activations p (row stride ldq) and
// panel wp, starting from `dot` unless the segment starts its group; the sums go to `dot`.
template <int RB>
void amx_segment(const int8_t* p, int64_t ldq, const uint8_t* wp, int64_t steps, bool group_start,
                 int32_t* dot) {
  constexpr int64_t kDotRow = kNr * 4;  // bytes per row of dot
  if (group_start) {
    _tile_zero(0);
    _tile_zero(1);
    if constexpr (RB == 2) {
      _tile_zero(2);
      _tile_zero(3);
    }
  } else {
    _tile_loadd(0, dot, kDotRow);
    _tile_loadd(1, dot + 16, kDotRow);
    if constexpr (RB == 2) {
      _tile_loadd(2, dot + 16 * kNr, kDotRow);
      _tile_loadd(3, dot + 16 * kNr + 16, kDotRow);
    }
  }
  for (int64_t t = 0; t < steps; ++t, p += 64, wp += 16 * 128) {
    _tile_loadd(6, wp, 128);
    _tile_loadd(7, wp + 64, 128);
    _tile_loadd(4, p, ldq);
    _tile_dpbsud(0, 4, 6);
    _tile_dpbsud(1, 4, 7);
    if constexpr (RB == 2) {
      _tile_loadd(5, p + 16 * ldq, ldq);
      _tile_dpbsud(2, 5, 6);
      _tile_dpbsud(3, 5, 7);
    }
  }
  _tile_stored(0, dot, kDotRow);
  _tile_stored(1, dot + 16, kDotRow);
  if constexpr (RB == 2) {
    _tile_stored(2, dot + 16 * kNr, kDotRow);
    _tile_stored(3, dot + 16 * kNr + 16, kDotRow);
  }
}

// i8_tile for 16 * RB rows on AMX (amx_fits): segments at group ends, then the group-end
// epilogue of every 8 rows from `dot`.
template <int RB, bool FLOAT_EXACT>
void amx_tile(const LinearI8Args& a, I8Work& w, int64_t r, int64_t i, int64_t kb, int64_t ke) {
  const int64_t k = a.k, gs = a.group_size, groups = k / gs, g0 = kb / gs;
  for (int64_t t0 = kb; t0 < ke;) {
    const int64_t g = t0 / gs, gend = (g + 1) * gs;
    const int64_t t1 = gend < ke ? gend : ke;
    amx_segment<RB>(a.q + i * k + t0, k, w.panel + (t0 - kb) / 4 * 128, (t1 - t0) / 64,
                    t0 == g * gs, w.dot + r * kNr);
    if (t1 == gend) {
      for (int64_t s = 0; s < 16 * RB; s += kI8Mr) {
        const I8Epilogue epi{w.scale + (g - g0) * kNr, w.zero + (g - g0) * kNr,
                             a.gsum + (i + s) * groups + g, groups, w.acc + (r + s) * kNr};
        i8_group_end_from<kI8Mr, FLOAT_EXACT>(w.dot + (r + s) * kNr, epi);
      }
    }
    t0 = t1;
  }
}

// Rows [r, rows) of the row block: AMX for whole 16-row tiles (when `amx`), VNNI for the rest.
void i8_rows(const LinearI8Args& a, I8Work& w, bool amx, int64_t i0, int64_t rows, int64_t kb,
             int64_t ke) {
  int64_t r = 0;
  if (amx) {
    const bool exact = a.group_size <= 512;
    for (; r + 32 <= rows; r += 32)
      exact ? amx_tile<2, true>(a, w, r, i0 + r, kb, ke)
            : amx_tile<2, false>(a, w, r, i0 + r, kb, ke);
    for (; r + 16 <= rows; r += 16)
      exact ? amx_tile<1, true>(a, w, r, i0 + r, kb, ke)
            : amx_tile<1, false>(a, w, r, i0 + r, kb, ke);
  }
  for (; r < rows; r += kI8Mr) i8_tile_dispatch<kI8Mr>(a, w, r, i0 + r, rows - r, kb, ke);
}

template <int BITS>
void gemm_i8(const LinearI8Args& a, bool amx) {
  const Unpack64<BITS> U;
  I8Work& w = i8_work();
  const int64_t k = a.k, gs = a.group_size, groups = k / gs;
  const int64_t mc = row_block(k, kI8Mc), kc = i8_kblock(gs);
  if (amx) {
    static const AmxConfig config;
    _tile_loadconfig(&config);
  }
  for (int64_t i0 = 0; i0 < a.m; i0 += mc) {
    const int64_t rows = a.m - i0 < mc ? a.m - i0 : mc;
    for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += kNr) {
      const int nc = static_cast<int>(a.n_end - n0 < kNr ? a.n_end - n0 : kNr);
      std::memset(w.acc, 0, sizeof(float) * rows * kNr);
      for (int64_t kb = 0; kb < k; kb += kc) {
        const int64_t ke = kb + kc < k ? kb + kc : k;
        build_i8_panel<BITS>(a, U, n0, nc, kb, ke, w.panel);
        for (int64_t g = kb / gs; g * gs < ke; ++g) {
          group_scales(a.scale_bits, groups, n0, nc, g, w.scale + (g - kb / gs) * kNr);
          group_zeros(a.zeros, groups, n0, nc, g, w.zero + (g - kb / gs) * kNr);
        }
        i8_rows(a, w, amx, i0, rows, kb, ke);
      }
      i8_store(a, w, i0, rows, n0, nc);
    }
  }
  if (amx) _tile_release();
}

// ---- float activations (FMA) -----------------------------------------------------------------

constexpr int kF32Mr = 8;  // rows per register tile (2 x 8 fp32 accumulators)

// Dequantized k-major panel of columns [n0, n0 + nc) x codes [kb, ke) (kb % 64 == 0):
// panel[(t - kb) * 32 + j] = (code - zero) * scale, as dequantize_rows; columns >= nc are 0.
template <int BITS>
void build_f32_panel(const LinearArgs& a, const Unpack64<BITS>& U, int64_t n0, int nc, int64_t kb,
                     int64_t ke, float* panel, float* scale, float* zero) {
  const int64_t row_bytes = packed_row_bytes(a.k, BITS);
  const int64_t gs = a.group_size, groups = a.k / gs, g0 = kb / gs;
  for (int64_t g = g0; g * gs < ke; ++g) {
    group_scales(a.scale_bits, groups, n0, nc, g, scale + (g - g0) * kNr);
    alignas(64) int32_t z[kNr];
    group_zeros(a.zeros, groups, n0, nc, g, z);
    for (int j = 0; j < kNr; ++j) zero[(g - g0) * kNr + j] = static_cast<float>(z[j]);
  }
  const __m512i byte = _mm512_set1_epi32(0xFF);
  for (int64_t c0 = kb; c0 < ke; c0 += 64) {
    const int64_t len = ke - c0 < 64 ? ke - c0 : 64;
    for (int h = 0; h < 2; ++h) {
      __m512i q[16];
      const int hc = nc - 16 * h;
      load_quads<BITS>(U, a.packed + (n0 + 16 * h) * row_bytes, row_bytes, hc < 0 ? 0 : hc, c0, len,
                       q);
      const int nq = static_cast<int>((len + 3) / 4);
      for (int t = 0; t < nq; ++t) {
        // A quad never straddles groups (group_size % 8 == 0, or one group per row).
        const int64_t kq = c0 + 4 * t, gi = kq / gs - g0;
        const __m512 s = _mm512_load_ps(scale + gi * kNr + 16 * h);
        const __m512 z = _mm512_load_ps(zero + gi * kNr + 16 * h);
        float* dst = panel + (kq - kb) * kNr + 16 * h;
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b) {
          const __m512i code = _mm512_and_si512(_mm512_srli_epi32(q[t], 8 * b), byte);
          const __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(code), z), s);
          _mm512_store_ps(dst + b * kNr, v);
        }
      }
    }
  }
}

// y[i, n0 + j] for MR rows and the panel's columns (masks m0, m1): acc = (first ? 0 : y) +
// sum_t x[i, kb + t] * panel[t, j] in t order, + bias when given (last K block).
template <int MR>
void f32_tile(const float* x, int64_t ldx, const float* panel, int64_t len, float* y, int64_t ldy,
              __mmask16 m0, __mmask16 m1, bool first, const float* bias) {
  __m512 c[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    c[i][0] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m0, y + i * ldy);
    c[i][1] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m1, y + i * ldy + 16);
  }
  for (int64_t t = 0; t < len; ++t) {
    const __m512 w0 = _mm512_load_ps(panel + t * kNr), w1 = _mm512_load_ps(panel + t * kNr + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 xb = _mm512_set1_ps(x[i * ldx + t]);
      c[i][0] = _mm512_fmadd_ps(xb, w0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(xb, w1, c[i][1]);
    }
  }
  if (bias) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, bias), b1 = _mm512_maskz_loadu_ps(m1, bias + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      c[i][0] = _mm512_add_ps(c[i][0], b0);
      c[i][1] = _mm512_add_ps(c[i][1], b1);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    _mm512_mask_storeu_ps(y + i * ldy, m0, c[i][0]);
    _mm512_mask_storeu_ps(y + i * ldy + 16, m1, c[i][1]);
  }
}

template <int MR>
void f32_tile_dispatch(int64_t rows, const float* x, int64_t ldx, const float* panel, int64_t len,
                       float* y, int64_t ldy, __mmask16 m0, __mmask16 m1, bool first,
                       const float* bias) {
  if constexpr (MR > 1) {
    if (rows < MR)
      return f32_tile_dispatch<MR - 1>(rows, x, ldx, panel, len, y, ldy, m0, m1, first, bias);
  }
  f32_tile<MR>(x, ldx, panel, len, y, ldy, m0, m1, first, bias);
}

template <int BITS>
void gemm_f32(const LinearArgs& a) {
  const Unpack64<BITS> U;
  // 64-byte aligned panel (aligned loads in the tile), then per-group scales and zeros.
  float* panel = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(a.scratch) + 63) &
                                          ~static_cast<uintptr_t>(63));
  float* scale = panel + kF32Kc * kNr;
  float* zero = scale + kAvx512Groups * kNr;
  const int64_t k = a.k;
  const int64_t mc = row_block(k * 4, kF32Mc);
  for (int64_t i0 = 0; i0 < a.m; i0 += mc) {
    const int64_t rows = a.m - i0 < mc ? a.m - i0 : mc;
    for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += kNr) {
      const int nc = static_cast<int>(a.n_end - n0 < kNr ? a.n_end - n0 : kNr);
      const __mmask16 m0 = lane_mask(nc), m1 = lane_mask(nc - 16);
      for (int64_t kb = 0; kb < k; kb += kF32Kc) {
        const int64_t ke = kb + kF32Kc < k ? kb + kF32Kc : k;
        build_f32_panel<BITS>(a, U, n0, nc, kb, ke, panel, scale, zero);
        const float* bias = ke == k && a.bias ? a.bias + n0 : nullptr;
        for (int64_t r = 0; r < rows; r += kF32Mr) {
          const int64_t i = i0 + r;
          f32_tile_dispatch<kF32Mr>(rows - r, a.x + i * k + kb, k, panel, ke - kb,
                                    a.y + i * a.n_total + n0, a.n_total, m0, m1, kb == 0, bias);
        }
      }
    }
  }
}

}  // namespace

void linear_f32_avx512_gemm(const LinearArgs& a) {
  with_bits(a.bits, [&](auto b) { gemm_f32<decltype(b)::value>(a); });
}

void linear_i8_avx512_gemm(const LinearI8Args& a) {
  with_bits(a.bits, [&](auto b) { gemm_i8<decltype(b)::value>(a, false); });
}

void linear_i8_amx_gemm(const LinearI8Args& a) {
  with_bits(a.bits, [&](auto b) { gemm_i8<decltype(b)::value>(a, amx_fits(a) && a.m >= 16); });
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC diagnostic pop
#pragma GCC pop_options

#endif  // defined(__x86_64__)
