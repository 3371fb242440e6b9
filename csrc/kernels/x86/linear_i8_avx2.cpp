// AVX2 integer packed matmul (int8 activations x unsigned low-bit codes), compiled for
// AVX2+FMA+F16C via a target pragma and only called after run-time CPU detection.
//
// Per step, the codes of NR output columns are unpacked into u8 lanes once and multiplied
// with MR rows of int8 activations by vpmaddubsw (u8 x s8 -> pairwise s16 sums):
// * widths 1, 2, 4: 16 packed bytes = 16 * (8 / bits) codes; bit plane s is
//   (bytes >> s*bits) & mask and the activations were permuted to match (i8_plane_chunk);
// * widths 3, 5, 6, 7 (and the group tails of 1/2/4): 32 codes = 4 * bits bytes, unpacked by
//   vpshufb + vpmullw + vpsrlw + vpackuswb (Unpack32);
// * width 8: codes * activations would overflow vpmaddubsw's s16 pair sum (2 * 255 * 127 >
//   32767), so both are widened to s16 and multiplied with vpmaddwd.
// For widths <= 7 the s16 pair sums are accumulated over as many steps as cannot saturate
// (2 * 127 * (2^bits - 1) per lane and step), then widened to s32 with vpmaddwd(ones). The
// zero point is folded into the exact int32 group sum (- zero * sum_g q) before the group's
// one convert + FMA with its weight scale (grouped weights: the zero point is subtracted
// in float after the group loop instead, keeping the per-group epilogue at madd + cvt + FMA).
// Batch 1 reads the tiles' rows as one software-prefetched stream per thread
// (prefetch_stream.h: one prefetch per 64-byte line, about a tile ahead); larger batches,
// which revisit a panel per row block, prefetch each row stream kPrefetch bytes ahead per
// step (the stream was 7-18 % slower there at batch 64). Per-element results
// do not depend on the tiling or on [n_begin, n_end) (integer sums are exact; the float
// epilogue is per element).
#if defined(__x86_64__)

#include <cstdint>
#include <cstring>
#include <vector>

#include "../dispatch.h"
#include "../packed_code.h"
#include "../prefetch_stream.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#include "avx2_util.h"

namespace qpart {
namespace kernels {
namespace detail {
namespace {

constexpr int64_t kPrefetch = 512;

template <int BITS>
constexpr bool kPlane = BITS == 1 || BITS == 2 || BITS == 4;

// Unpacks 32 codes (4 * BITS bytes from a byte boundary, BITS <= 7) into 32 u8 lanes: the
// low 128-bit lane gets codes 0..15 (bytes from p), the high lane codes 16..31 (bytes from
// p + 2 * BITS). Per lane, vpshufb gathers the two bytes holding each code into a 16-bit word
// (codes 0..7 and 8..15 in two vectors), vpmullw by 2^(8 - shift) moves the code's bits to
// the word's high byte, vpsrlw 8 + vpackuswb put them back in order, and a mask cuts them.
template <int BITS>
struct Unpack32 {
  __m256i shuf_a, shuf_b, mul_a, mul_b, mask;

  Unpack32() {
    alignas(32) int8_t sa[32], sb[32];
    alignas(32) int16_t ma[16], mb[16];
    for (int lane = 0; lane < 2; ++lane)
      for (int w = 0; w < 8; ++w)
        for (int half = 0; half < 2; ++half) {
          const int c = half * 8 + w, bit = c * BITS, byte = bit >> 3;
          int8_t* sh = half ? sb : sa;
          int16_t* mu = half ? mb : ma;
          sh[lane * 16 + 2 * w] = static_cast<int8_t>(byte);
          sh[lane * 16 + 2 * w + 1] = static_cast<int8_t>(byte + 1 < 16 ? byte + 1 : 0x80);
          mu[lane * 8 + w] = static_cast<int16_t>(1 << (8 - (bit & 7)));
        }
    shuf_a = _mm256_load_si256(reinterpret_cast<const __m256i*>(sa));
    shuf_b = _mm256_load_si256(reinterpret_cast<const __m256i*>(sb));
    mul_a = _mm256_load_si256(reinterpret_cast<const __m256i*>(ma));
    mul_b = _mm256_load_si256(reinterpret_cast<const __m256i*>(mb));
    mask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
  }

  // Reads p[0, 16) and p[2 * BITS, 2 * BITS + 16).
  inline __m256i codes(const uint8_t* p) const {
    const __m256i v = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2 * BITS)), 1);
    const __m256i a = _mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(v, shuf_a), mul_a), 8);
    const __m256i b = _mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(v, shuf_b), mul_b), 8);
    return _mm256_and_si256(_mm256_packus_epi16(a, b), mask);
  }

  // Same near the end of the buffer: copies the block's 4 * BITS bytes first.
  inline __m256i codes_safe(const uint8_t* p) const {
    alignas(16) uint8_t tmp[48] = {};
    std::memcpy(tmp, p, 4 * BITS);
    return codes(tmp);
  }
};

// Steps of s16 accumulation before a widening (no saturation possible).
template <int BITS>
constexpr int kS16Steps(int vecs_per_step) {
  const int per_vec = 32767 / (2 * 127 * ((1 << BITS) - 1));
  const int s = per_vec / vecs_per_step;
  return s < 1 ? 1 : s;
}

template <int BITS, int MR, int NR, bool STREAM>
void tile(const LinearI8Args& a, int64_t i0, int64_t n0, TilePrefetch& pf) {
  const int64_t k = a.k, gs = a.group_size, groups = k / gs;
  const int64_t row_bytes = packed_row_bytes(k, BITS);
  const uint8_t* const tile0 = a.packed + n0 * row_bytes;
  // Prefetch at a step that reads bytes [done - step, done) of every row: the stream (batch
  // 1) follows it; otherwise each row's bytes kPrefetch further on.
  auto prefetch = [&](int64_t done, int64_t step) {
    if constexpr (STREAM) {
      pf.upto(TilePrefetch::target(tile0, NR, row_bytes, done));
    } else {
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) {
        const uint8_t* p = tile0 + j * row_bytes + (done - step) + kPrefetch;
        _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
      }
    }
  };
  const int64_t total_bytes = a.n_total * row_bytes;
  const uint8_t* w[NR];
#pragma GCC unroll 8
  for (int j = 0; j < NR; ++j) w[j] = a.packed + (n0 + j) * row_bytes;
  // bytes readable from w[NR-1] + off (Unpack32::codes reads up to off + 2*BITS + 16)
  const int64_t limit = total_bytes - (n0 + NR - 1) * row_bytes;
  const int8_t* xq[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) xq[i] = a.q + (i0 + i) * k;
  const __m256i ones16 = _mm256_set1_epi16(1);
  const __m256i bmask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
  __m256 facc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) facc[i][j] = _mm256_setzero_ps();

  constexpr int64_t kChunk = kPlane<BITS> ? 16 * (8 / BITS) : 32;  // codes per main step
  constexpr int kVecs = static_cast<int>(kChunk / 32);
  constexpr int kMainS16 = kS16Steps<BITS>(kVecs);
  constexpr int kGenS16 = kS16Steps<BITS>(1);
  static const Unpack32<BITS < 8 ? BITS : 7> U;

  // One group per row or a scalar tail: fold the zero point into the exact int32 group sum.
  // Otherwise (the common grouped case) keep the per-group epilogue at madd + cvt + FMA and
  // subtract sum_g scale * zero * gsum in float at the end.
  const bool int_fold = groups == 1 || gs % 32 != 0;
  // Short groups (all of a group's pair sums fit one s16 accumulation): a16 -> madd -> cvt ->
  // FMA directly, no int32 accumulator.
  bool single = false;
  if constexpr (kPlane<BITS>) {
    single = !int_fold && gs % kChunk == 0 && gs / kChunk <= kMainS16;
  } else if constexpr (BITS < 8) {
    single = !int_fold && gs / 32 <= kGenS16;
  }
  auto plane_step = [&](__m256i (&a16)[MR][NR], int64_t kc) {
    __m256i u[NR];
    prefetch(kc * BITS / 8 + 16, 16);
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[j] + kc * BITS / 8));
      u[j] = _mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, BITS), 1);
    }
#pragma GCC unroll 4
    for (int t = 0; t < kVecs; ++t) {
      __m256i c[NR];
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j)
        c[j] = _mm256_and_si256(t == 0 ? u[j] : _mm256_srli_epi16(u[j], 2 * t * BITS), bmask);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[i] + kc + 32 * t));
#pragma GCC unroll 8
        for (int j = 0; j < NR; ++j)
          a16[i][j] = _mm256_add_epi16(a16[i][j], _mm256_maddubs_epi16(c[j], xv));
      }
    }
  };
  auto gen_step = [&](__m256i (&a16)[MR][NR], int64_t kc) {
    const int64_t off = kc * BITS / 8;
    const bool fast = off + 2 * BITS + 16 <= limit;
    __m256i c[NR];
    prefetch(off + 4 * BITS, 4 * BITS);
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      c[j] = fast ? U.codes(w[j] + off) : U.codes_safe(w[j] + off);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[i] + kc));
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j)
        a16[i][j] = _mm256_add_epi16(a16[i][j], _mm256_maddubs_epi16(c[j], xv));
    }
  };
  for (int64_t g = 0; g < groups; ++g) {
    if (single) {
      __m256i a16[MR][NR];
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < NR; ++j) a16[i][j] = _mm256_setzero_si256();
      const int64_t g0 = g * gs;
      if constexpr (kPlane<BITS>) {
        for (int64_t kc = g0; kc < g0 + gs; kc += kChunk) plane_step(a16, kc);
      } else {
        for (int64_t kc = g0; kc < g0 + gs; kc += 32) gen_step(a16, kc);
      }
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) {
        const __m256 sw = _mm256_set1_ps(_cvtsh_ss(a.scale_bits[(n0 + j) * groups + g]));
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i)
          facc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(a16[i][j], ones16)),
                                       sw, facc[i][j]);
      }
      continue;
    }
    __m256i acc[MR][NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_si256();
    int64_t kc = g * gs;
    const int64_t gend = kc + gs;
    if constexpr (BITS == 8) {
      for (; kc + 32 <= gend; kc += 32) {
        __m256i c[NR][2];
        prefetch(kc + 32, 32);
#pragma GCC unroll 8
        for (int j = 0; j < NR; ++j) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[j] + kc));
          c[j][0] = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v));
          c[j][1] = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(v, 1));
        }
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[i] + kc));
          const __m256i x0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(xv));
          const __m256i x1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(xv, 1));
#pragma GCC unroll 8
          for (int j = 0; j < NR; ++j) {
            acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(c[j][0], x0));
            acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(c[j][1], x1));
          }
        }
      }
    } else {
      if constexpr (kPlane<BITS>) {
        const int64_t steps = gs / kChunk;
        for (int64_t s0 = 0; s0 < steps; s0 += kMainS16) {
          const int64_t s1 = s0 + kMainS16 < steps ? s0 + kMainS16 : steps;
          __m256i a16[MR][NR];
#pragma GCC unroll 8
          for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
            for (int j = 0; j < NR; ++j) a16[i][j] = _mm256_setzero_si256();
          for (int64_t s = s0; s < s1; ++s, kc += kChunk) plane_step(a16, kc);
#pragma GCC unroll 8
          for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
            for (int j = 0; j < NR; ++j)
              acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(a16[i][j], ones16));
        }
      }
      // 32-code blocks (Unpack32): the main loop of widths 3/5/6/7, the group tail of 1/2/4.
      while (kc + 32 <= gend) {
        __m256i a16[MR][NR];
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
          for (int j = 0; j < NR; ++j) a16[i][j] = _mm256_setzero_si256();
        for (int s = 0; s < kGenS16 && kc + 32 <= gend; ++s, kc += 32) gen_step(a16, kc);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
          for (int j = 0; j < NR; ++j)
            acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(a16[i][j], ones16));
      }
    }
    if (!int_fold) {  // zero point folded in float after the group loop
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) {
        const __m256 sw = _mm256_set1_ps(_cvtsh_ss(a.scale_bits[(n0 + j) * groups + g]));
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i)
          facc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][j]), sw, facc[i][j]);
      }
      continue;
    }
    // Scalar tail (< 32 codes), then fold the zero point and apply the group's scale.
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const int32_t z = a.zeros[(n0 + j) * groups + g];
      const __m256 sw = _mm256_set1_ps(_cvtsh_ss(a.scale_bits[(n0 + j) * groups + g]));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        int32_t t = -z * a.gsum[(i0 + i) * groups + g];
        for (int64_t jj = kc; jj < gend; ++jj) t += code_at(w[j], jj, BITS) * xq[i][jj];
        const __m256i tot = _mm256_add_epi32(acc[i][j], _mm256_setr_epi32(t, 0, 0, 0, 0, 0, 0, 0));
        facc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), sw, facc[i][j]);
      }
    }
  }
  // Groups outer: the MR x NR chains of one FMA per group are independent, so they overlap
  // (each output still sums its groups in order, with the same single-rounding FMA).
  float zterm[MR][NR] = {};
  if (!int_fold) {
    for (int64_t g = 0; g < groups; ++g)
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) {
        const int64_t wg = (n0 + j) * groups + g;
        const float sz = _cvtsh_ss(a.scale_bits[wg]) * static_cast<float>(a.zeros[wg]);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i)
          zterm[i][j] += sz * static_cast<float>(a.gsum[(i0 + i) * groups + g]);
      }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const float sx = a.x_scale[i0 + i];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const float b = a.bias ? a.bias[n0 + j] : 0.0f;
      a.y[(i0 + i) * a.n_total + n0 + j] = (hsum(facc[i][j]) - zterm[i][j]) * sx + b;
    }
  }
}

template <int BITS, int MR, int NR, bool STREAM>
void columns(const LinearI8Args& a, int64_t i0, int64_t n_begin, int64_t n_end) {
  const int64_t row_bytes = packed_row_bytes(a.k, BITS);
  TilePrefetch pf{a.packed + n_begin * row_bytes, a.packed + a.n_total * row_bytes};
  int64_t n = n_begin;
  for (; n + NR <= n_end; n += NR) tile<BITS, MR, NR, STREAM>(a, i0, n, pf);
  for (; n < n_end; ++n) tile<BITS, MR, 1, STREAM>(a, i0, n, pf);
}

// Column panels of kPanel weight rows (L1/L2-resident) x all row blocks of MR = 3.
constexpr int64_t kPanel = 8;

// ---- Packed-panel GEMM (batches >= kPanelMinRows) -----------------------------------------
//
// The activations are copied once per call into row blocks of kPMR (or 4) rows and the codes
// of kPanelCols weight rows at a time are unpacked once (the same unpack as tile()'s steps),
// both interleaved per 32-byte unit: layout [unit][row or column][32 bytes]. Widths 1..7 keep
// u8 codes and int8 activations (unit u = positions [32 u, 32 u + 32) of q's layout); width 8
// widens both to s16 (unit u = 16 positions, two units per 32-code step). Per-channel tails
// (< 32 codes) stay in q and the packed row. Every 6- or 4-row block then runs a 2-column asm
// tile over the panel (other blocks and a last odd column run tile()), one pass per group:
// * widths 1..5: a vpmaddubsw + vpaddw per output and unit into s16 sums, widened by
//   vpmaddwd(ones) after each s16 accumulation (kS16Steps) and at the end of each group;
// * widths 6, 7 (s16 windows of 2 / 1 units; measured slower) and 8: straight into int32
//   sums, vpmaddubsw + vpmaddwd(ones) + vpaddd (vpmaddwd + vpaddd at width 8) per unit;
// then, per group, convert + FMA with the weight scale into 8 float lanes per output, in
// group order (per-channel: the scalar tail and zero point are added to lane 0 first).
// Each output gets exactly tile()'s 8 int32 lanes per group (lane L of each 32-code step holds
// its positions 4L..4L+3 - 2L, 2L+1, 16+2L, 17+2L at width 8 - and integer sums do not depend
// on when s16 sums are widened), so the results are bit-identical to tile()'s.
constexpr int64_t kPanelMinRows = 4;
constexpr int kPMR = 6;
constexpr int64_t kPanelCols = 12;

// The asm tiles: output (i, j) accumulates in ymm(2 i + j); ymm12/13 hold the two columns'
// unit, the row's unit is a memory operand, ymm14/15 take the products. F32 epilogues FMA
// into facc (memory, 8 floats per output: facc = sums * scale + facc, one rounding).
#define QPART_I8_ZERO2(r0, r1) "vpxor %%xmm" #r0 ", %%xmm" #r0 ", %%xmm" #r0 "\n\t" \
  "vpxor %%xmm" #r1 ", %%xmm" #r1 ", %%xmm" #r1 "\n\t"
// u8 x s8 into s16 sums
#define QPART_I8_ROW_W(i, r0, r1)                          \
  "vpmaddubsw " #i "*32(%[xp]), %%ymm12, %%ymm15\n\t"     \
  "vpaddw %%ymm15, %%ymm" #r0 ", %%ymm" #r0 "\n\t"         \
  "vpmaddubsw " #i "*32(%[xp]), %%ymm13, %%ymm14\n\t"     \
  "vpaddw %%ymm14, %%ymm" #r1 ", %%ymm" #r1 "\n\t"
// u8 x s8 straight into int32 sums
#define QPART_I8_ROW_D(i, r0, r1)                          \
  "vpmaddubsw " #i "*32(%[xp]), %%ymm12, %%ymm15\n\t"     \
  "vpmaddwd (%[ones]), %%ymm15, %%ymm15\n\t"               \
  "vpaddd %%ymm15, %%ymm" #r0 ", %%ymm" #r0 "\n\t"         \
  "vpmaddubsw " #i "*32(%[xp]), %%ymm13, %%ymm14\n\t"     \
  "vpmaddwd (%[ones]), %%ymm14, %%ymm14\n\t"               \
  "vpaddd %%ymm14, %%ymm" #r1 ", %%ymm" #r1 "\n\t"
// s16 x s16 into int32 sums (width 8)
#define QPART_I8_ROW_E(i, r0, r1)                          \
  "vpmaddwd " #i "*32(%[xp]), %%ymm12, %%ymm15\n\t"       \
  "vpaddd %%ymm15, %%ymm" #r0 ", %%ymm" #r0 "\n\t"         \
  "vpmaddwd " #i "*32(%[xp]), %%ymm13, %%ymm14\n\t"       \
  "vpaddd %%ymm14, %%ymm" #r1 ", %%ymm" #r1 "\n\t"
// The same for a group's first unit, straight into the (not yet zeroed) sums.
#define QPART_I8_ROW_W1(i, r0, r1)                               \
  "vpmaddubsw " #i "*32(%[xp]), %%ymm12, %%ymm" #r0 "\n\t"     \
  "vpmaddubsw " #i "*32(%[xp]), %%ymm13, %%ymm" #r1 "\n\t"
#define QPART_I8_ROW_D1(i, r0, r1)                               \
  "vpmaddubsw " #i "*32(%[xp]), %%ymm12, %%ymm" #r0 "\n\t"     \
  "vpmaddwd (%[ones]), %%ymm" #r0 ", %%ymm" #r0 "\n\t"          \
  "vpmaddubsw " #i "*32(%[xp]), %%ymm13, %%ymm" #r1 "\n\t"     \
  "vpmaddwd (%[ones]), %%ymm" #r1 ", %%ymm" #r1 "\n\t"
#define QPART_I8_ROW_E1(i, r0, r1)                               \
  "vpmaddwd " #i "*32(%[xp]), %%ymm12, %%ymm" #r0 "\n\t"       \
  "vpmaddwd " #i "*32(%[xp]), %%ymm13, %%ymm" #r1 "\n\t"
// A group's units: the first one peeled (no zeroing), then nvec1 = nvec - 1 more.
#define QPART_I8_GROUP_UNITS(MR, ROW, ROW1)                                        \
  QPART_I8_HEAD QPART_I8_ROWS_##MR(ROW1) QPART_I8_ADV(MR) "mov %[nvec1], %%rax\n\t" \
  "test %%rax, %%rax\n\t"                                                          \
  "jz 4f\n\t"                                                                      \
  "1:\n\t" QPART_I8_HEAD QPART_I8_ROWS_##MR(ROW) QPART_I8_ADV(MR) "dec %%rax\n\t"   \
  "jnz 1b\n\t"                                                                     \
  "4:\n\t"
#define QPART_I8_HEAD "vmovdqu (%[cp]), %%ymm12\n\t" "vmovdqu 32(%[cp]), %%ymm13\n\t"
#define QPART_I8_ADV(mr) "add $64, %[cp]\n\t" "add $" #mr "*32, %[xp]\n\t"
// s16 sums -> int32 sums in ymm(r) (W kernels only)
#define QPART_I8_WIDEN(r) "vpmaddwd (%[ones]), %%ymm" #r ", %%ymm" #r "\n\t"
#define QPART_I8_F32(r, sw)                                \
  "vcvtdq2ps %%ymm" #r ", %%ymm" #r "\n\t"                 \
  "vfmadd213ps " #r "*32(%[f]), %%ymm" #sw ", %%ymm" #r "\n\t" \
  "vmovups %%ymm" #r ", " #r "*32(%[f])\n\t"
// int32 sums of a window added to the int32 sums in memory
#define QPART_I8_ADDI(r)                                 \
  "vpaddd " #r "*32(%[acc]), %%ymm" #r ", %%ymm" #r "\n\t" \
  "vmovdqu %%ymm" #r ", " #r "*32(%[acc])\n\t"
#define QPART_I8_LOADI(r) "vmovdqu " #r "*32(%[acc]), %%ymm" #r "\n\t"
#define QPART_I8_CLOBBERS                                                                  \
  "cc", "memory", "rax", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", \
      "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"

#define QPART_I8_EACH4(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)
#define QPART_I8_EACH6(M) QPART_I8_EACH4(M) M(8) M(9) M(10) M(11)
#define QPART_I8_ZERO_4 QPART_I8_ZERO2(0, 1) QPART_I8_ZERO2(2, 3) QPART_I8_ZERO2(4, 5) \
  QPART_I8_ZERO2(6, 7)
#define QPART_I8_ZERO_6 QPART_I8_ZERO_4 QPART_I8_ZERO2(8, 9) QPART_I8_ZERO2(10, 11)
#define QPART_I8_ROWS_4(R) R(0, 0, 1) R(1, 2, 3) R(2, 4, 5) R(3, 6, 7)
#define QPART_I8_ROWS_6(R) QPART_I8_ROWS_4(R) R(4, 8, 9) R(5, 10, 11)
#define QPART_I8_F32_4 QPART_I8_F32(0, 12) QPART_I8_F32(1, 13) QPART_I8_F32(2, 12) \
  QPART_I8_F32(3, 13) QPART_I8_F32(4, 12) QPART_I8_F32(5, 13) QPART_I8_F32(6, 12)  \
  QPART_I8_F32(7, 13)
#define QPART_I8_F32_6 QPART_I8_F32_4 QPART_I8_F32(8, 12) QPART_I8_F32(9, 13) \
  QPART_I8_F32(10, 12) QPART_I8_F32(11, 13)
#define QPART_I8_SW                      \
  "vbroadcastss (%[sw0]), %%ymm12\n\t"   \
  "vbroadcastss (%[sw1]), %%ymm13\n\t"   \
  "add $4, %[sw0]\n\t"                   \
  "add $4, %[sw1]\n\t"

// Per MR: groups_w (s16 windows; the int32 sums of a group collect in acc memory), groups_d
// (int32 straight, ROW = QPART_I8_ROW_D or _E), each with an F32 epilogue per group, and
// sums_d (one pass over `units`, int32 sums stored to acc).
#define QPART_I8_KERNELS(MR)                                                                    \
  /* every group: windows of w units (the last `last`), then F32 epilogue */                   \
  inline void i8_groups_w_##MR(const uint8_t* cp, const int8_t* xp, const float* sw0,           \
                               const float* sw1, int64_t groups, int64_t nwin, int64_t w,       \
                               int64_t last, const int16_t* ones, int32_t* acc, float* facc) {  \
    asm volatile(                                                                               \
        "2:\n\t"                                                                                \
        "mov %[nwin], %%rdx\n\t" QPART_I8_EACH##MR(QPART_I8_ZEROI)                              \
        "3:\n\t" QPART_I8_ZERO_##MR "mov %[w], %%rax\n\t"                                       \
        "cmp $1, %%rdx\n\t"                                                                     \
        "cmove %[last], %%rax\n\t"                                                              \
        "1:\n\t" QPART_I8_HEAD QPART_I8_ROWS_##MR(QPART_I8_ROW_W) QPART_I8_ADV(MR)              \
        "dec %%rax\n\t"                                                                         \
        "jnz 1b\n\t" QPART_I8_EACH##MR(QPART_I8_WIDEN) QPART_I8_EACH##MR(QPART_I8_ADDI)         \
        "dec %%rdx\n\t"                                                                         \
        "jnz 3b\n\t" QPART_I8_SW QPART_I8_F32_##MR                                              \
        "dec %[ng]\n\t"                                                                         \
        "jnz 2b\n\t"                                                                            \
        : [cp] "+r"(cp), [xp] "+r"(xp), [sw0] "+r"(sw0), [sw1] "+r"(sw1), [ng] "+r"(groups)    \
        : [nwin] "r"(nwin), [w] "r"(w), [last] "r"(last), [ones] "r"(ones), [acc] "r"(acc),   \
          [f] "r"(facc)                                                                         \
        : QPART_I8_CLOBBERS, "rdx");                                                            \
  }                                                                                             \
  /* windows of w units (the last `last`) added into the int32 sums in acc (zeroed first) */  \
  inline void i8_sums_w_##MR(const uint8_t* cp, const int8_t* xp, int64_t nwin, int64_t w,     \
                             int64_t last, const int16_t* ones, int32_t* acc) {                \
    asm volatile(QPART_I8_EACH##MR(QPART_I8_ZEROI) "3:\n\t" QPART_I8_ZERO_##MR                 \
                 "mov %[w], %%rax\n\t"                                                         \
                 "cmp $1, %[nw]\n\t"                                                           \
                 "cmove %[last], %%rax\n\t"                                                    \
                 "1:\n\t" QPART_I8_HEAD QPART_I8_ROWS_##MR(QPART_I8_ROW_W) QPART_I8_ADV(MR)     \
                 "dec %%rax\n\t"                                                               \
                 "jnz 1b\n\t" QPART_I8_EACH##MR(QPART_I8_WIDEN) QPART_I8_EACH##MR(QPART_I8_ADDI) \
                 "dec %[nw]\n\t"                                                               \
                 "jnz 3b\n\t"                                                                  \
                 : [cp] "+r"(cp), [xp] "+r"(xp), [nw] "+r"(nwin)                                \
                 : [w] "r"(w), [last] "r"(last), [ones] "r"(ones), [acc] "r"(acc)               \
                 : QPART_I8_CLOBBERS);                                                          \
  }                                                                                             \
  /* every group of nvec (<= one s16 accumulation) units, then F32 epilogue */                 \
  inline void i8_groups_s_##MR(const uint8_t* cp, const int8_t* xp, const float* sw0,           \
                               const float* sw1, int64_t groups, int64_t nvec,                  \
                               const int16_t* ones, float* facc) {                              \
    asm volatile("2:\n\t" QPART_I8_GROUP_UNITS(MR, QPART_I8_ROW_W, QPART_I8_ROW_W1)            \
                     QPART_I8_EACH##MR(QPART_I8_WIDEN) QPART_I8_SW QPART_I8_F32_##MR            \
                 "dec %[ng]\n\t"                                                                \
                 "jnz 2b\n\t"                                                                   \
                 : [cp] "+r"(cp), [xp] "+r"(xp), [sw0] "+r"(sw0), [sw1] "+r"(sw1),              \
                   [ng] "+r"(groups)                                                            \
                 : [nvec1] "r"(nvec - 1), [ones] "r"(ones), [f] "r"(facc)                       \
                 : QPART_I8_CLOBBERS);                                                          \
  }                                                                                             \
  QPART_I8_DIRECT(MR, d, QPART_I8_ROW_D, QPART_I8_ROW_D1)                                                      \
  QPART_I8_DIRECT(MR, e, QPART_I8_ROW_E, QPART_I8_ROW_E1)

#define QPART_I8_ZEROI(r) "vpxor %%xmm" #r ", %%xmm" #r ", %%xmm" #r "\n\t" \
  "vmovdqu %%ymm" #r ", " #r "*32(%[acc])\n\t"
#define QPART_I8_STOREI(r) "vmovdqu %%ymm" #r ", " #r "*32(%[acc])\n\t"

#define QPART_I8_DIRECT(MR, name, ROW, ROW1)                                                          \
  /* every group of nvec units straight into int32 sums, then F32 epilogue */                   \
  inline void i8_groups_##name##_##MR(const uint8_t* cp, const int8_t* xp, const float* sw0,     \
                                      const float* sw1, int64_t groups, int64_t nvec,            \
                                      const int16_t* ones, float* facc) {                        \
    asm volatile("2:\n\t" QPART_I8_GROUP_UNITS(MR, ROW, ROW1) QPART_I8_SW QPART_I8_F32_##MR       \
                 "dec %[ng]\n\t"                                                                 \
                 "jnz 2b\n\t"                                                                    \
                 : [cp] "+r"(cp), [xp] "+r"(xp), [sw0] "+r"(sw0), [sw1] "+r"(sw1),               \
                   [ng] "+r"(groups)                                                             \
                 : [nvec1] "r"(nvec - 1), [ones] "r"(ones), [f] "r"(facc)                        \
                 : QPART_I8_CLOBBERS);                                                           \
  }                                                                                              \
  /* units (>= 1) straight into int32 sums, stored to acc */                                    \
  inline void i8_sums_##name##_##MR(const uint8_t* cp, const int8_t* xp, int64_t units,          \
                                    const int16_t* ones, int32_t* acc) {                         \
    asm volatile(QPART_I8_ZERO_##MR "1:\n\t" QPART_I8_HEAD QPART_I8_ROWS_##MR(ROW)               \
                     QPART_I8_ADV(MR) "dec %[n]\n\t"                                             \
                     "jnz 1b\n\t" QPART_I8_EACH##MR(QPART_I8_STOREI)                             \
                 : [cp] "+r"(cp), [xp] "+r"(xp), [n] "+r"(units)                                 \
                 : [ones] "r"(ones), [acc] "r"(acc)                                              \
                 : QPART_I8_CLOBBERS);                                                           \
  }

QPART_I8_KERNELS(4)
QPART_I8_KERNELS(6)

// The asm kernels of an MR x 2 tile, by name.
template <int MR>
struct AsmTile;
#define QPART_I8_ASM_TILE(MR)                                                                  \
  template <>                                                                                  \
  struct AsmTile<MR> {                                                                         \
    static constexpr auto groups_w = i8_groups_w_##MR;                                         \
    static constexpr auto groups_s = i8_groups_s_##MR;                                         \
    static constexpr auto groups_d = i8_groups_d_##MR;                                         \
    static constexpr auto groups_e = i8_groups_e_##MR;                                         \
    static constexpr auto sums_w = i8_sums_w_##MR;                                             \
    static constexpr auto sums_d = i8_sums_d_##MR;                                             \
    static constexpr auto sums_e = i8_sums_e_##MR;                                             \
  };
QPART_I8_ASM_TILE(4)
QPART_I8_ASM_TILE(6)
#undef QPART_I8_ASM_TILE
#undef QPART_I8_KERNELS
#undef QPART_I8_DIRECT
#undef QPART_I8_ZERO2
#undef QPART_I8_ROW_W
#undef QPART_I8_ROW_D
#undef QPART_I8_ROW_E
#undef QPART_I8_ROW_W1
#undef QPART_I8_ROW_D1
#undef QPART_I8_ROW_E1
#undef QPART_I8_GROUP_UNITS
#undef QPART_I8_HEAD
#undef QPART_I8_ADV
#undef QPART_I8_WIDEN
#undef QPART_I8_F32
#undef QPART_I8_ADDI
#undef QPART_I8_LOADI
#undef QPART_I8_CLOBBERS
#undef QPART_I8_EACH4
#undef QPART_I8_EACH6
#undef QPART_I8_ZERO_4
#undef QPART_I8_ZERO_6
#undef QPART_I8_ROWS_4
#undef QPART_I8_ROWS_6
#undef QPART_I8_F32_4
#undef QPART_I8_F32_6
#undef QPART_I8_SW
#undef QPART_I8_ZEROI
#undef QPART_I8_STOREI

// Bytes of a row in the panel / activation layout (whole 32-code steps only).
template <int BITS>
constexpr int64_t panel_row_bytes(int64_t k) {
  return (k / 32) * (BITS == 8 ? 64 : 32);
}

// Unpacks columns [n0, n0 + cols) into blocks of 2 columns (the last one may have 1):
// block layout [unit][column][32 bytes]; converts their weight scales (sw[j * groups + g])
// and forms scale * zero (sz, the zero-point term's factor, as tile() computes it).
template <int BITS>
void panel_unpack(const LinearI8Args& a, int64_t n0, int64_t cols, uint8_t* panel, float* sw,
                  float* sz) {
  const int64_t k = a.k, gs = a.group_size, groups = k / gs, rb = panel_row_bytes<BITS>(k);
  const int64_t row_bytes = packed_row_bytes(k, BITS);
  const int64_t limit_all = a.n_total * row_bytes;
  for (int64_t j = 0; j < cols; ++j) {
    const uint8_t* w = a.packed + (n0 + j) * row_bytes;
    const int64_t jb = j & ~int64_t{1}, nr = cols - jb < 2 ? cols - jb : 2;
    uint8_t* out = panel + jb * rb + (j - jb) * 32;  // unit u at out + u * stride
    const int64_t stride = nr * 32;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t wg = (n0 + j) * groups + g;
      sw[j * groups + g] = _cvtsh_ss(a.scale_bits[wg]);
      sz[j * groups + g] = _cvtsh_ss(a.scale_bits[wg]) * static_cast<float>(a.zeros[wg]);
    }
    if constexpr (BITS == 8) {
      for (int64_t kc = 0; kc + 32 <= k; kc += 32) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + kc));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (kc / 16) * stride),
                            _mm256_cvtepu8_epi16(_mm256_castsi256_si128(v)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + (kc / 16 + 1) * stride),
                            _mm256_cvtepu8_epi16(_mm256_extracti128_si256(v, 1)));
      }
    } else {
      const __m256i bmask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
      constexpr int64_t kChunk = kPlane<BITS> ? 16 * (8 / BITS) : 32;
      constexpr int kVecs = static_cast<int>(kChunk / 32);
      static const Unpack32<BITS> U;
      const int64_t limit = limit_all - (n0 + j) * row_bytes;
      for (int64_t g = 0; g < groups; ++g) {
        int64_t kc = g * gs;
        const int64_t gend = kc + gs;
        if constexpr (kPlane<BITS>) {
          for (; kc + kChunk <= gend; kc += kChunk) {
            const __m128i v =
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + kc * BITS / 8));
            const __m256i u =
                _mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, BITS), 1);
#pragma GCC unroll 4
            for (int t = 0; t < kVecs; ++t)
              _mm256_storeu_si256(
                  reinterpret_cast<__m256i*>(out + (kc / 32 + t) * stride),
                  _mm256_and_si256(t == 0 ? u : _mm256_srli_epi16(u, 2 * t * BITS), bmask));
          }
        }
        for (; kc + 32 <= gend; kc += 32) {
          const int64_t off = kc * BITS / 8;
          const __m256i c =
              off + 2 * BITS + 16 <= limit ? U.codes(w + off) : U.codes_safe(w + off);
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + kc / 32 * stride), c);
        }
      }
    }
  }
}

// One MR x 2 tile (MR = 4 or 6): rows [i0, i0 + MR) (activation block xb), columns
// n0 + [jp, jp + 2) (panel block cb).
template <int BITS, int MR>
void panel_tile(const LinearI8Args& a, const uint8_t* cb, const int8_t* xb, const float* sw,
                const float* sz, const float* gsf, int64_t i0, int64_t n0, int64_t jp) {
  constexpr int NR = 2;
  using T = AsmTile<MR>;
  const int64_t k = a.k, gs = a.group_size, groups = k / gs;
  const int64_t row_bytes = packed_row_bytes(k, BITS);
  constexpr int64_t kW = kS16Steps<BITS < 8 ? BITS : 7>(1);
  constexpr bool kDirect = BITS >= 6;  // int32 sums straight (windows of <= 2 units)
  const int64_t nvec = gs / 32 * (BITS == 8 ? 2 : 1);  // units per group
  alignas(32) static const int16_t ones[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  alignas(32) float facc[MR * NR * 8];
  alignas(32) int32_t acc[MR * NR * 8];  // written by the kernels before it is read
#pragma GCC unroll 12
  for (int r = 0; r < MR * NR; ++r) _mm256_store_ps(facc + 8 * r, _mm256_setzero_ps());
  const float* sw0 = sw + jp * groups;
  const float* sw1 = sw + (jp + 1) * groups;
  if (groups == 1) {
    // int32 sums of the whole row, then the scalar tail and zero point in lane 0
    if (nvec > 0) {
      if constexpr (BITS == 8) {
        T::sums_e(cb, xb, nvec, ones, acc);
      } else if constexpr (kDirect) {
        T::sums_d(cb, xb, nvec, ones, acc);
      } else {
        const int64_t nwin = (nvec + kW - 1) / kW, last = nvec - (nwin - 1) * kW;
        T::sums_w(cb, xb, nwin, kW, last, ones, acc);
      }
    } else {
      for (int r = 0; r < MR * NR; ++r)
        _mm256_store_si256(reinterpret_cast<__m256i*>(acc + 8 * r), _mm256_setzero_si256());
    }
    const int64_t kt = 32 * (k / 32);
    for (int j = 0; j < NR; ++j) {
      const int32_t z = a.zeros[n0 + jp + j];
      const __m256 s = _mm256_set1_ps(sw[(jp + j) * groups]);
      const uint8_t* w = a.packed + (n0 + jp + j) * row_bytes;
      for (int i = 0; i < MR; ++i) {
        const int8_t* xq = a.q + (i0 + i) * k;
        int32_t t = -z * a.gsum[i0 + i];
        for (int64_t jj = kt; jj < k; ++jj) t += code_at(w, jj, BITS) * xq[jj];
        const int r = i * NR + j;
        const __m256i tot =
            _mm256_add_epi32(_mm256_load_si256(reinterpret_cast<const __m256i*>(acc + 8 * r)),
                             _mm256_setr_epi32(t, 0, 0, 0, 0, 0, 0, 0));
        _mm256_store_ps(facc + 8 * r, _mm256_fmadd_ps(_mm256_cvtepi32_ps(tot), s,
                                                      _mm256_load_ps(facc + 8 * r)));
      }
    }
  } else if constexpr (BITS == 8) {
    T::groups_e(cb, xb, sw0, sw1, groups, nvec, ones, facc);
  } else if constexpr (kDirect) {
    T::groups_d(cb, xb, sw0, sw1, groups, nvec, ones, facc);
  } else if (nvec <= kW) {
    T::groups_s(cb, xb, sw0, sw1, groups, nvec, ones, facc);
  } else {
    const int64_t nwin = (nvec + kW - 1) / kW, last = nvec - (nwin - 1) * kW;
    T::groups_w(cb, xb, sw0, sw1, groups, nwin, kW, last, ones, acc, facc);
  }
  // sum_g scale * zero * gsum per output, rows in lanes (gsf: the block's float group sums,
  // [g][8]); the same single-rounding FMA per group, in group order, as tile()'s scalar loop.
  alignas(32) float zterm[NR][8] = {};
  if (groups > 1) {
#pragma GCC unroll 2
    for (int j = 0; j < NR; ++j) {
      __m256 zt = _mm256_setzero_ps();
      const float* szj = sz + (jp + j) * groups;
      for (int64_t g = 0; g < groups; ++g)
        zt = _mm256_fmadd_ps(_mm256_broadcast_ss(szj + g), _mm256_loadu_ps(gsf + 8 * g), zt);
      _mm256_store_ps(zterm[j], zt);
    }
  }
  for (int i = 0; i < MR; ++i) {
    const float sx = a.x_scale[i0 + i];
    for (int j = 0; j < NR; ++j) {
      const float b = a.bias ? a.bias[n0 + jp + j] : 0.0f;
      a.y[(i0 + i) * a.n_total + n0 + jp + j] =
          (hsum(_mm256_load_ps(facc + 8 * (i * NR + j))) - zterm[j][i]) * sx + b;
    }
  }
}

// Per-thread buffers of the panel path (grown, never shrunk).
struct PanelScratch {
  std::vector<uint8_t> panel;
  std::vector<float> sw;
  std::vector<int8_t> x;
  std::vector<float> gsf;
};

template <int BITS>
void run_panel_rows(const LinearI8Args& a) {
  const int64_t k = a.k, groups = k / a.group_size, rb = panel_row_bytes<BITS>(k);
  const int64_t steps = k / 32;
  thread_local PanelScratch scratch;
  auto grow = [](auto& v, int64_t n) {
    if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  };
  grow(scratch.panel, kPanelCols * rb);
  grow(scratch.sw, 2 * kPanelCols * groups);
  grow(scratch.x, a.m * rb);
  uint8_t* panel = scratch.panel.data();
  float* sw = scratch.sw.data();
  float* sz = sw + kPanelCols * groups;
  int8_t* xs = scratch.x.data();
  // Row blocks: 6 rows, then one of 4 (or leftover rows that run tile()).
  const int64_t m6 = a.m / 6 * 6, m4 = a.m - m6 >= 4 ? m6 + 4 : m6;
  auto pack_rows = [&](int64_t i0, int64_t mr) {
    int8_t* xb = xs + i0 * rb;
    for (int64_t s = 0; s < steps; ++s)
      for (int64_t i = 0; i < mr; ++i) {
        const int8_t* src = a.q + (i0 + i) * k + s * 32;
        if constexpr (BITS == 8) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(xb + ((2 * s) * mr + i) * 32),
                              _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(xb + ((2 * s + 1) * mr + i) * 32),
                              _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1)));
        } else {
          std::memcpy(xb + (s * mr + i) * 32, src, 32);
        }
      }
  };
  for (int64_t i0 = 0; i0 < m6; i0 += 6) pack_rows(i0, 6);
  if (m4 > m6) pack_rows(m6, 4);
  // Float group sums of each row block, [block][g][8] (rows in lanes, unused lanes 0).
  const int64_t blocks = m4 > m6 ? m6 / 6 + 1 : m6 / 6;
  grow(scratch.gsf, groups > 1 ? blocks * groups * 8 : 0);
  float* gsf = scratch.gsf.data();
  if (groups > 1)
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t i = 0; i < 8; ++i)
          gsf[(b * groups + g) * 8 + i] =
              6 * b + i < m4 && i < 6 ? static_cast<float>(a.gsum[(6 * b + i) * groups + g]) : 0.0f;
  TilePrefetch pf{a.packed, a.packed};  // unused by the non-stream tiles
  for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += kPanelCols) {
    const int64_t cols = n0 + kPanelCols < a.n_end ? kPanelCols : a.n_end - n0;
    const int64_t pairs = cols / 2;
    panel_unpack<BITS>(a, n0, pairs * 2, panel, sw, sz);
    for (int64_t i0 = 0; i0 < m6; i0 += 6)
      for (int64_t p = 0; p < pairs; ++p)
        panel_tile<BITS, 6>(a, panel + 2 * p * rb, xs + i0 * rb, sw, sz, gsf + i0 / 6 * groups * 8,
                            i0, n0, 2 * p);
    if (m4 > m6)
      for (int64_t p = 0; p < pairs; ++p)
        panel_tile<BITS, 4>(a, panel + 2 * p * rb, xs + m6 * rb, sw, sz, gsf + m6 / 6 * groups * 8,
                            m6, n0, 2 * p);
    // leftover rows (1..3) x the panel's columns, and a last odd column x every row
    int64_t i = m4;
    for (; i + 2 <= a.m; i += 2) columns<BITS, 2, 2, false>(a, i, n0, n0 + pairs * 2);
    if (i < a.m) columns<BITS, 1, 2, false>(a, i, n0, n0 + pairs * 2);
    if (cols % 2) {
      const int64_t n = n0 + cols - 1;
      int64_t r = 0;
      for (; r + 3 <= a.m; r += 3) tile<BITS, 3, 1, false>(a, r, n, pf);
      for (; r < a.m; ++r) tile<BITS, 1, 1, false>(a, r, n, pf);
    }
  }
}

// Rows per pass of run_panel_rows: bounds the activation copy (96 x k bytes, 2x at 8 bits) and
// keeps it L2-resident; each pass unpacks the panels again (amortized over 96 rows).
constexpr int64_t kPanelRowChunk = 96;

template <int BITS>
void run_panels(const LinearI8Args& a) {
  for (int64_t r0 = 0; r0 < a.m; r0 += kPanelRowChunk) {
    LinearI8Args part = a;
    const int64_t groups = a.k / a.group_size;
    part.m = a.m - r0 < kPanelRowChunk ? a.m - r0 : kPanelRowChunk;
    part.q = a.q + r0 * a.k;
    part.x_scale = a.x_scale + r0;
    part.gsum = a.gsum + r0 * groups;
    part.y = a.y + r0 * a.n_total;
    run_panel_rows<BITS>(part);
  }
}

template <int BITS>
void run(const LinearI8Args& a) {
  if (a.m == 1) return columns<BITS, 1, 4, true>(a, 0, a.n_begin, a.n_end);
  // Groups of whole 32-code steps (quantize_weight's rule) or one group per row.
  const bool steps_fit = a.group_size % 32 == 0 || a.group_size == a.k;
  if (a.m >= kPanelMinRows && steps_fit) return run_panels<BITS>(a);
  for (int64_t n0 = a.n_begin; n0 < a.n_end; n0 += kPanel) {
    const int64_t n1 = n0 + kPanel < a.n_end ? n0 + kPanel : a.n_end;
    int64_t i = 0;
    for (; i + 3 <= a.m; i += 3) columns<BITS, 3, 2, false>(a, i, n0, n1);
    if (a.m - i == 2) columns<BITS, 2, 2, false>(a, i, n0, n1);
    else if (a.m - i == 1) columns<BITS, 1, 2, false>(a, i, n0, n1);
  }
}

}  // namespace

bool quantize_row_i8_avx2(const float* x, int64_t k, int8_t* q, float* scale) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 fmax = _mm256_set1_ps(3.4028234663852886e38f);
  __m256 mx = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= k; j += 8) {
    const __m256 v = _mm256_and_ps(_mm256_loadu_ps(x + j), absmask);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, fmax, _CMP_NLE_UQ));  // NaN or Inf
    mx = _mm256_max_ps(mx, v);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, mx);
  float amax = 0.0f;
  for (int t = 0; t < 8; ++t) amax = lanes[t] > amax ? lanes[t] : amax;
  bool finite = _mm256_movemask_ps(bad) == 0;
  for (; j < k; ++j) {
    const float v = x[j] < 0 ? -x[j] : x[j];
    finite = finite && v <= 3.4028234663852886e38f;
    amax = v > amax ? v : amax;
  }
  if (!finite) amax = 0.0f;
  const float s = amax / 127.0f;
  *scale = s;
  if (!(s > 0.0f)) {
    std::memset(q, 0, static_cast<size_t>(k));
    return finite;
  }
  const __m256 vs = _mm256_set1_ps(s), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  auto conv = [&](const float* p) {
    __m256 r = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(p), vs),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
  };
  j = 0;
  for (; j + 32 <= k; j += 32) {
    const __m256i a = _mm256_packs_epi32(conv(x + j), conv(x + j + 8));
    const __m256i b = _mm256_packs_epi32(conv(x + j + 16), conv(x + j + 24));
    const __m256i v = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b),
                                                  _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + j), v);
  }
  for (; j < k; ++j) {
    float r = (x[j] / s + 12582912.0f) - 12582912.0f;
    r = r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r);
    q[j] = static_cast<int8_t>(static_cast<int>(r));
  }
  return true;
}

void linear_i8_avx2(const LinearI8Args& a) {
  with_bits(a.bits, [&](auto b) { run<decltype(b)::value>(a); });
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC pop_options

#endif  // __x86_64__
