// Device helpers shared by the QPART CUDA kernels (no torch, no SIMD headers).
// Compiled with torch's flags (-D__CUDA_NO_HALF_CONVERSIONS__ etc.), so every half/bf16
// conversion below is an explicit intrinsic.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "qpart_cuda.h"

namespace qpart {
namespace cuda {
namespace detail {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

/// Exact float value of an fp16 bit pattern.
__device__ __forceinline__ float half_bits_to_float(uint16_t bits) {
  return __half2float(__ushort_as_half(bits));
}

/// `code - zero` as an exact float, via the 2^23 magic number: the bit pattern
/// 0x4B000000 | code is the float 2^23 + code, and subtracting (2^23 + zero), also exact,
/// leaves code - zero. One LOP + one FADD instead of an I2F conversion.
__device__ __forceinline__ float magic_code(uint32_t code) {
  return __uint_as_float(0x4B000000u | code);
}
constexpr float kMagic = 8388608.0f;  // 2^23

/// Code j of a little-endian bit stream held in registers (`w` 32-bit words). With `j`
/// a compile-time constant after unrolling, every index and shift folds to a constant.
template <int BITS>
__device__ __forceinline__ uint32_t extract_code(const uint32_t* w, int j) {
  const int p = j * BITS;
  const int wi = p >> 5;
  const int sh = p & 31;
  uint32_t v = w[wi] >> sh;
  if (sh + BITS > 32) v |= w[wi + 1] << (32 - sh);
  return v & ((1u << BITS) - 1u);
}

/// Up to 8 bytes starting at `p` as a little-endian word; bytes at or beyond `avail` are 0.
__device__ __forceinline__ uint64_t load_bytes_le(const uint8_t* p, int nbytes, int64_t avail) {
  uint64_t v = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    if (i < nbytes && i < avail) v |= static_cast<uint64_t>(__ldg(p + i)) << (8 * i);
  }
  return v;
}

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kFloat32;
};
template <>
struct DTypeOf<__half> {
  static constexpr DType value = DType::kFloat16;
};
template <>
struct DTypeOf<__nv_bfloat16> {
  static constexpr DType value = DType::kBFloat16;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace detail
}  // namespace cuda
}  // namespace qpart

/// Calls F.template operator()<T>() with T the C++ type of a DType.
#define QPART_DISPATCH_DTYPE(dtype, ...)                        \
  [&] {                                                         \
    switch (dtype) {                                            \
      case ::qpart::cuda::DType::kFloat16: {                    \
        using scalar_t = __half;                                \
        return __VA_ARGS__();                                   \
      }                                                         \
      case ::qpart::cuda::DType::kBFloat16: {                   \
        using scalar_t = __nv_bfloat16;                         \
        return __VA_ARGS__();                                   \
      }                                                         \
      default: {                                                \
        using scalar_t = float;                                 \
        return __VA_ARGS__();                                   \
      }                                                         \
    }                                                           \
  }()

/// Runs the lambda with `constexpr int BITS` = bits (1..8).
#define QPART_DISPATCH_BITS(bits, ...)                          \
  [&] {                                                         \
    switch (bits) {                                             \
      case 1: { constexpr int BITS = 1; return __VA_ARGS__(); } \
      case 2: { constexpr int BITS = 2; return __VA_ARGS__(); } \
      case 3: { constexpr int BITS = 3; return __VA_ARGS__(); } \
      case 4: { constexpr int BITS = 4; return __VA_ARGS__(); } \
      case 5: { constexpr int BITS = 5; return __VA_ARGS__(); } \
      case 6: { constexpr int BITS = 6; return __VA_ARGS__(); } \
      case 7: { constexpr int BITS = 7; return __VA_ARGS__(); } \
      default: { constexpr int BITS = 8; return __VA_ARGS__(); } \
    }                                                           \
  }()
