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
  float zterm[MR][NR] = {};
  if (!int_fold) {
    for (int j = 0; j < NR; ++j)
      for (int64_t g = 0; g < groups; ++g) {
        const int64_t wg = (n0 + j) * groups + g;
        const float sz = _cvtsh_ss(a.scale_bits[wg]) * static_cast<float>(a.zeros[wg]);
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

template <int BITS>
void run(const LinearI8Args& a) {
  if (a.m == 1) return columns<BITS, 1, 4, true>(a, 0, a.n_begin, a.n_end);
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
