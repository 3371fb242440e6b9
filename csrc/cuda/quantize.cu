// Quantizer and dequantizer kernels (docs/FORMAT.md): group parameters (fp16 scale rounded
// *up*, integer zero point), codes with IEEE division (__fdiv_rn) and round-half-even
// (rintf), dense LSB-first packing; dequantization back to float32.
#include "common.cuh"

namespace qpart {
namespace cuda {
namespace {

using namespace detail;

constexpr int kParamThreads = 256;
constexpr int kElemThreads = 256;

/// One block per group: min/max with 0, NaN/Inf detection, then the scale and zero point.
template <typename T>
__global__ void __launch_bounds__(kParamThreads)
    group_params_kernel(const T* __restrict__ x, int64_t k, int64_t group_size,
                        int64_t groups_per_row, int bits, uint16_t* __restrict__ scale_bits,
                        uint8_t* __restrict__ zeros, int* __restrict__ status) {
  const int64_t gid = blockIdx.x;
  const int64_t row = gid / groups_per_row;
  const int64_t g = gid % groups_per_row;
  const T* base = x + row * k + g * group_size;
  float lo = 0.0f, hi = 0.0f;
  bool bad = false;
  for (int64_t i = threadIdx.x; i < group_size; i += kParamThreads) {
    const float v = to_float(base[i]);
    bad |= !isfinite(v);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    lo = fminf(lo, __shfl_xor_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_xor_sync(0xffffffffu, hi, off));
  }
  bad = __any_sync(0xffffffffu, bad);
  __shared__ float s_lo[kParamThreads / 32], s_hi[kParamThreads / 32];
  __shared__ int s_bad[kParamThreads / 32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
    s_lo[warp] = lo;
    s_hi[warp] = hi;
    s_bad[warp] = bad;
  }
  __syncthreads();
  if (threadIdx.x != 0) return;
  int any_bad = 0;
  for (int w = 0; w < kParamThreads / 32; ++w) {
    lo = fminf(lo, s_lo[w]);
    hi = fmaxf(hi, s_hi[w]);
    any_bad |= s_bad[w];
  }
  const float qmax = static_cast<float>((1 << bits) - 1);
  uint16_t sb = 0;
  uint8_t z = 0;
  if (any_bad) {
    atomicOr(status, kStatusNonFinite);
  } else if (hi != lo) {
    const float delta = __fdiv_rn(hi - lo, qmax);
    const __half h = __float2half_rn(delta);  // round to nearest even ...
    sb = __half_as_ushort(h);
    if (__half2float(h) < delta) ++sb;  // ... then one ulp up if that fell below delta
    if (sb == 0) sb = 1;                // delta underflowed: 2^-24, the smallest fp16
    if ((sb & 0x7FFFu) >= 0x7C00u) {
      atomicOr(status, kStatusScaleOverflow);
    } else {
      const float s = half_bits_to_float(sb);
      const float zf = fminf(fmaxf(rintf(__fdiv_rn(-lo, s)), 0.0f), qmax);
      z = static_cast<uint8_t>(zf);
    }
  }
  scale_bits[gid] = sb;
  zeros[gid] = z;
}

/// One thread per 8 consecutive codes of a row (a chunk starts at a multiple of 8, so it
/// never straddles a group and fills exactly `BITS` bytes; the last chunk of a row may be
/// partial, and its padding bits are zero).
template <int BITS, typename T>
__global__ void __launch_bounds__(kElemThreads)
    quantize_pack_kernel(const T* __restrict__ x, int64_t rows, int64_t k, int64_t group_size,
                         int64_t groups_per_row, int64_t row_bytes,
                         const uint16_t* __restrict__ scale_bits,
                         const uint8_t* __restrict__ zeros, uint8_t* __restrict__ packed) {
  const int64_t chunks = (k + 7) / 8;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kElemThreads + threadIdx.x;
  if (idx >= rows * chunks) return;
  const int64_t row = idx / chunks;
  const int64_t col0 = (idx % chunks) * 8;
  const int64_t gid = row * groups_per_row + col0 / group_size;
  const float s = half_bits_to_float(scale_bits[gid]);
  const float z = static_cast<float>(zeros[gid]);
  constexpr float qmax = static_cast<float>((1 << BITS) - 1);
  const T* src = x + row * k;
  uint64_t word = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    if (col0 + j < k && s != 0.0f) {
      const float q = fminf(fmaxf(rintf(__fdiv_rn(to_float(src[col0 + j]), s)) + z, 0.0f), qmax);
      word |= static_cast<uint64_t>(static_cast<uint32_t>(q)) << (j * BITS);
    }
  }
  uint8_t* dst = packed + row * row_bytes + (col0 / 8) * BITS;
  const int64_t avail = row_bytes - (col0 / 8) * BITS;
#pragma unroll
  for (int b = 0; b < BITS; ++b) {
    if (b < avail) dst[b] = static_cast<uint8_t>(word >> (8 * b));
  }
}

/// One thread per 8 codes: unpack and write (code - zero) * scale as float32.
template <int BITS>
__global__ void __launch_bounds__(kElemThreads)
    dequantize_kernel(const uint8_t* __restrict__ packed,
                      const uint16_t* __restrict__ scale_bits,
                      const uint8_t* __restrict__ zeros, int64_t rows, int64_t k,
                      int64_t group_size, int64_t groups_per_row, int64_t row_bytes,
                      float* __restrict__ out) {
  const int64_t chunks = (k + 7) / 8;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kElemThreads + threadIdx.x;
  if (idx >= rows * chunks) return;
  const int64_t row = idx / chunks;
  const int64_t col0 = (idx % chunks) * 8;
  const int64_t gid = row * groups_per_row + col0 / group_size;
  const float s = half_bits_to_float(scale_bits[gid]);
  const float zoff = kMagic + static_cast<float>(zeros[gid]);
  const int64_t byte0 = (col0 / 8) * BITS;
  const uint64_t word = load_bytes_le(packed + row * row_bytes + byte0, BITS, row_bytes - byte0);
  float* dst = out + row * k;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    if (col0 + j < k) {
      const uint32_t code = static_cast<uint32_t>(word >> (j * BITS)) & ((1u << BITS) - 1u);
      dst[col0 + j] = (magic_code(code) - zoff) * s;
    }
  }
}

}  // namespace

cudaError_t quantize_rows(const void* x, DType dtype, int64_t rows, int64_t k,
                          int64_t group_size, int bits, uint8_t* packed, uint16_t* scale_bits,
                          uint8_t* zeros, int* status_dev, int* status_host,
                          cudaStream_t stream) {
  *status_host = 0;
  if (rows <= 0 || k <= 0) return cudaSuccess;
  const int64_t groups_per_row = k / group_size;
  const int64_t row_bytes = packed_row_bytes(k, bits);
  const int64_t chunks = rows * ((k + 7) / 8);
  cudaError_t err = cudaMemsetAsync(status_dev, 0, sizeof(int), stream);
  if (err != cudaSuccess) return err;
  QPART_DISPATCH_DTYPE(dtype, [&] {
    const auto* xt = static_cast<const scalar_t*>(x);
    group_params_kernel<scalar_t><<<static_cast<unsigned>(rows * groups_per_row), kParamThreads,
                                    0, stream>>>(xt, k, group_size, groups_per_row, bits,
                                                 scale_bits, zeros, status_dev);
    QPART_DISPATCH_BITS(bits, [&] {
      quantize_pack_kernel<BITS, scalar_t>
          <<<static_cast<unsigned>(detail::ceil_div(chunks, kElemThreads)), kElemThreads, 0,
             stream>>>(xt, rows, k, group_size, groups_per_row, row_bytes, scale_bits, zeros,
                       packed);
    });
  });
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  err = cudaMemcpyAsync(status_host, status_dev, sizeof(int), cudaMemcpyDeviceToHost, stream);
  if (err != cudaSuccess) return err;
  return cudaStreamSynchronize(stream);
}

cudaError_t dequantize_rows(const uint8_t* packed, const uint16_t* scale_bits,
                            const uint8_t* zeros, int64_t rows, int64_t k, int64_t group_size,
                            int bits, float* out, cudaStream_t stream) {
  if (rows <= 0 || k <= 0) return cudaSuccess;
  const int64_t chunks = rows * ((k + 7) / 8);
  QPART_DISPATCH_BITS(bits, [&] {
    dequantize_kernel<BITS><<<static_cast<unsigned>(detail::ceil_div(chunks, kElemThreads)),
                              kElemThreads, 0, stream>>>(packed, scale_bits, zeros, rows, k,
                                                         group_size, k / group_size,
                                                         packed_row_bytes(k, bits), out);
  });
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace qpart
