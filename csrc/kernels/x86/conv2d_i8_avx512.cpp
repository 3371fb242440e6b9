// AVX-512 (VNNI) direct integer conv2d tile: conv2d_i8_x86_tile.h with 256-bit vpdpbusd
// (AVX512-VNNI + VL), compiled for this file only and called only when the avx512 row's
// predicate holds. The layout, packers and epilogue are those of the AVX2 kernel, so the
// output is bit-identical to the scalar kernel's as well.
#if defined(__x86_64__)

#include <cstdint>

#include "../conv2d_i8_impl.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#include <immintrin.h>

#include "conv2d_i8_x86_tile.h"

namespace qpart {
namespace kernels {
namespace detail {

void conv2d_i8_tile_avx512(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch) {
  with_bits(a.bits, [&](auto b) { tile<true, decltype(b)::value>(a, t, scratch); });
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#pragma GCC pop_options

#endif  // __x86_64__
