// Packed low-bit linear: y = x @ W^T (+ bias), W packed per docs/FORMAT.md, fp32 accumulation.
//
// * GEMV (m <= kGemvMaxBatch, k % 128 == 0): each warp owns kGemvRows weight rows and streams them in
//   units of 128 codes per lane = 16 * BITS bytes = BITS 128-bit loads (the unit is whole
//   8-code chunks and 16-byte aligned when k % 128 == 0), unpacks in registers with
//   compile-time shifts, multiplies by x (read through L1, 128-bit loads) for every batch
//   row, and reduces across the warp with shuffles. The zero point is folded into the
//   code -> float conversion ((2^23 | code) - (2^23 + zero) is exactly code - zero), and the
//   scale is applied once per 32 codes: acc += s_g * sum(x * (q - z)).
// * GEMM (larger m), 64x64 output tiles, K steps of 32: fp16/bf16 inputs dequantize the
//   weight tile into shared memory as fp16/bf16 and run WMMA 16x16x16 on tensor cores with
//   fp32 accumulators (4 warps, 32x32 each); float32 inputs use a SIMT tile (256 threads,
//   4x4 outputs each) with fp32 weights, which keeps fp32 results at fp32 accuracy.
// Both take a batch index (grid z) so conv2d runs all its groups in one launch.
#include <mma.h>

#include "common.cuh"

namespace qpart {
namespace cuda {
namespace {

using namespace detail;

// ---- GEMV -----------------------------------------------------------------------------

constexpr int kGemvWarps = 8;
constexpr int kGemvRows = 2;  // weight rows per warp (they share the x loads)
constexpr int kUnitCodes = 128;

/// 8 consecutive x values as float: one (half/bf16) or two (float) 128-bit loads.
template <typename T>
__device__ __forceinline__ void load_x8(const T* p, float* out) {
  if constexpr (sizeof(T) == 4) {
    const float4 a = __ldg(reinterpret_cast<const float4*>(p));
    const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
    out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
    out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
  } else {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
    const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = to_float(e[j]);
  }
}

/// Requires k % 128 == 0 and 16-byte aligned x and packed rows (the launcher checks; other
/// shapes take the GEMM tiles, which are bounds-checked).
template <int BITS, int MB, typename T>
__global__ void __launch_bounds__(kGemvWarps * 32)
    gemv_kernel(const T* __restrict__ x, int m_count, int64_t k,
                const uint8_t* __restrict__ packed, int64_t row_bytes,
                const uint16_t* __restrict__ scale_bits, const uint8_t* __restrict__ zeros,
                int64_t groups_per_row, int64_t group_size, const float* __restrict__ bias,
                int64_t n_total, float* __restrict__ y, int64_t x_batch_stride,
                int64_t y_batch_stride) {
  constexpr int kWords = kUnitCodes * BITS / 32;  // 4 * BITS 32-bit words per unit
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int64_t b = blockIdx.y;
  x += b * x_batch_stride;
  y += b * y_batch_stride;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kGemvWarps + warp) * kGemvRows;
  if (n0 >= n_total) return;  // warp-uniform
  const int nrows = n_total - n0 < kGemvRows ? static_cast<int>(n_total - n0) : kGemvRows;
  const int64_t wrow0 = b * n_total + n0;  // first packed row of this warp

  float acc[kGemvRows][MB];
#pragma unroll
  for (int r = 0; r < kGemvRows; ++r)
#pragma unroll
    for (int m = 0; m < MB; ++m) acc[r][m] = 0.0f;

  const int64_t units = (k + kUnitCodes - 1) / kUnitCodes;
  for (int64_t u = lane; u < units; u += 32) {
    const int64_t col0 = u * kUnitCodes;
    const int64_t byte0 = u * (kUnitCodes / 8) * BITS;
    uint32_t w[kGemvRows][kWords];
#pragma unroll
    for (int r = 0; r < kGemvRows; ++r) {
      // A missing second row re-reads the first (its result is discarded).
      const uint4* src = reinterpret_cast<const uint4*>(
          packed + (wrow0 + (r < nrows ? r : 0)) * row_bytes + byte0);
#pragma unroll
      for (int i = 0; i < BITS; ++i) {
        const uint4 v = __ldg(src + i);
        w[r][4 * i + 0] = v.x;
        w[r][4 * i + 1] = v.y;
        w[r][4 * i + 2] = v.z;
        w[r][4 * i + 3] = v.w;
      }
    }
#pragma unroll
    for (int sb = 0; sb < kUnitCodes / 32; ++sb) {  // 32 codes share one group
      const int64_t c0 = col0 + sb * 32;
      {
        const int64_t g = c0 / group_size;
        float s[kGemvRows], zoff[kGemvRows];
#pragma unroll
        for (int r = 0; r < kGemvRows; ++r) {
          const int64_t gi = (wrow0 + (r < nrows ? r : 0)) * groups_per_row + g;
          s[r] = r < nrows ? half_bits_to_float(__ldg(scale_bits + gi)) : 0.0f;
          zoff[r] = kMagic + static_cast<float>(__ldg(zeros + gi));
        }
        float dot[kGemvRows][MB];
#pragma unroll
        for (int r = 0; r < kGemvRows; ++r)
#pragma unroll
          for (int m = 0; m < MB; ++m) dot[r][m] = 0.0f;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int64_t cc = c0 + 8 * c;
          float wq[kGemvRows][8];
#pragma unroll
          for (int r = 0; r < kGemvRows; ++r)
#pragma unroll
            for (int j = 0; j < 8; ++j)
              wq[r][j] = magic_code(extract_code<BITS>(w[r], sb * 32 + c * 8 + j)) - zoff[r];
#pragma unroll
          for (int m = 0; m < MB; ++m) {
            if (m < m_count) {
              float xv[8];
              load_x8(x + m * k + cc, xv);
#pragma unroll
              for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int r = 0; r < kGemvRows; ++r) dot[r][m] = fmaf(xv[j], wq[r][j], dot[r][m]);
            }
          }
        }
#pragma unroll
        for (int r = 0; r < kGemvRows; ++r)
#pragma unroll
          for (int m = 0; m < MB; ++m) acc[r][m] = fmaf(s[r], dot[r][m], acc[r][m]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kGemvRows; ++r) {
#pragma unroll
    for (int m = 0; m < MB; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (lane == 0 && r < nrows && m < m_count) {
        if (bias != nullptr) v += bias[wrow0 + r];
        y[m * n_total + n0 + r] = v;
      }
    }
  }
}

// ---- GEMM: shared pieces ----------------------------------------------------------------

constexpr int kTileM = 64;
constexpr int kTileN = 64;

/// Dequantizes codes [col0, col0 + 8) of packed row `wrow` into `out` (0 past k).
template <int BITS>
__device__ __forceinline__ void dequant_chunk8(const uint8_t* __restrict__ packed,
                                               int64_t row_bytes, int64_t wrow, int64_t col0,
                                               int64_t k, float s, float zoff, float* out) {
  const int64_t byte0 = (col0 / 8) * BITS;
  const uint64_t word =
      col0 < k ? load_bytes_le(packed + wrow * row_bytes + byte0, BITS, row_bytes - byte0) : 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const uint32_t code = static_cast<uint32_t>(word >> (j * BITS)) & ((1u << BITS) - 1u);
    out[j] = col0 + j < k ? (magic_code(code) - zoff) * s : 0.0f;
  }
}

/// Writes a 64x64 fp32 tile from shared memory to y (+ bias), bounds-checked.
template <int LD, int THREADS>
__device__ __forceinline__ void store_tile(const float (*cs)[LD], int64_t m0, int64_t n0,
                                           int64_t m, int64_t n_total, int64_t wrow_base,
                                           const float* __restrict__ bias, float* __restrict__ y) {
  for (int idx = threadIdx.x; idx < kTileM * kTileN; idx += THREADS) {
    const int r = idx / kTileN, c = idx % kTileN;
    const int64_t gm = m0 + r, gn = n0 + c;
    if (gm < m && gn < n_total) {
      float v = cs[r][c];
      if (bias != nullptr) v += bias[wrow_base + gn];
      y[gm * n_total + gn] = v;
    }
  }
}

// ---- GEMM on tensor cores (fp16 / bf16) --------------------------------------------------

constexpr int kWmmaK = 32;        // K step of a tile
constexpr int kWmmaThreads = 128;  // 4 warps, 2x2 of 32x32
constexpr int kAB_LD = kWmmaK + 8;  // padded leading dim (elements): 80 bytes, no bank clash
constexpr int kC_LD = kTileN + 4;

template <int BITS, typename T>
__global__ void __launch_bounds__(kWmmaThreads)
    gemm_wmma_kernel(const T* __restrict__ x, int64_t m, int64_t k,
                     const uint8_t* __restrict__ packed, int64_t row_bytes,
                     const uint16_t* __restrict__ scale_bits, const uint8_t* __restrict__ zeros,
                     int64_t groups_per_row, int64_t group_size, const float* __restrict__ bias,
                     int64_t n_total, float* __restrict__ y, int64_t x_batch_stride,
                     int64_t y_batch_stride, bool vec) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  __shared__ __align__(128) T a_s[kTileM][kAB_LD];
  __shared__ __align__(128) T b_s[kTileN][kAB_LD];  // b_s[n][k]: B (k x n) column-major
  __shared__ __align__(128) float c_s[kTileM][kC_LD];

  const int64_t b = blockIdx.z;
  x += b * x_batch_stride;
  y += b * y_batch_stride;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTileM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTileN;
  const int64_t wrow_base = b * n_total;
  const int tid = threadIdx.x, warp = tid >> 5;
  const int wm = warp >> 1, wn = warp & 1;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  // Loader roles: thread t -> tile row t / 2, 16 columns at 16 * (t % 2).
  const int lr = tid >> 1, lc = (tid & 1) * 16;
  const int64_t am = m0 + lr;
  const int64_t bn = n0 + lr;
  const bool b_row_ok = bn < n_total;
  const int64_t wrow = wrow_base + (b_row_ok ? bn : 0);

  for (int64_t k0 = 0; k0 < k; k0 += kWmmaK) {
    // A tile: x[m0 .. m0+64, k0 .. k0+32) as T.
    {
      const int64_t kc = k0 + lc;
      T* dst = &a_s[lr][lc];
      if (am < m && vec && kc + 16 <= k) {
        const uint4* src = reinterpret_cast<const uint4*>(x + am * k + kc);
        reinterpret_cast<uint4*>(dst)[0] = __ldg(src);
        reinterpret_cast<uint4*>(dst)[1] = __ldg(src + 1);
      } else {
#pragma unroll
        for (int j = 0; j < 16; ++j)
          dst[j] = (am < m && kc + j < k) ? x[am * k + kc + j] : from_float<T>(0.0f);
      }
    }
    // B tile: dequantized W[n0 .. n0+64, k0 .. k0+32); the 32 columns share one group.
    {
      float s = 0.0f, zoff = kMagic;
      if (b_row_ok) {
        const int64_t gi = wrow * groups_per_row + k0 / group_size;
        s = half_bits_to_float(__ldg(scale_bits + gi));
        zoff = kMagic + static_cast<float>(__ldg(zeros + gi));
      }
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        float v[8];
        dequant_chunk8<BITS>(packed, row_bytes, wrow, k0 + lc + 8 * c, b_row_ok ? k : 0, s, zoff,
                             v);
#pragma unroll
        for (int j = 0; j < 8; ++j) b_s[lr][lc + 8 * c + j] = from_float<T>(v[j]);
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kWmmaK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &a_s[wm * 32 + 16 * i][kk], kAB_LD);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &b_s[wn * 32 + 16 * j][kk], kAB_LD);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&c_s[wm * 32 + 16 * i][wn * 32 + 16 * j], acc[i][j], kC_LD,
                              wmma::mem_row_major);
  __syncthreads();
  store_tile<kC_LD, kWmmaThreads>(c_s, m0, n0, m, n_total, wrow_base, bias, y);
#else
  __trap();  // the glue refuses GPUs below sm_80
#endif
}

// ---- GEMM on SIMT cores (float32) --------------------------------------------------------

constexpr int kSimtK = 16;
constexpr int kSimtThreads = 256;  // 16 x 16 threads, 4 x 4 outputs each

template <int BITS>
__global__ void __launch_bounds__(kSimtThreads)
    gemm_simt_kernel(const float* __restrict__ x, int64_t m, int64_t k,
                     const uint8_t* __restrict__ packed, int64_t row_bytes,
                     const uint16_t* __restrict__ scale_bits, const uint8_t* __restrict__ zeros,
                     int64_t groups_per_row, int64_t group_size, const float* __restrict__ bias,
                     int64_t n_total, float* __restrict__ y, int64_t x_batch_stride,
                     int64_t y_batch_stride) {
  __shared__ float a_s[kSimtK][kTileM + 4];  // transposed: a_s[k][m]
  __shared__ float b_s[kSimtK][kTileN + 4];  // b_s[k][n]
  __shared__ float c_s[kTileM][kTileN + 4];

  const int64_t b = blockIdx.z;
  x += b * x_batch_stride;
  y += b * y_batch_stride;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTileM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kTileN;
  const int64_t wrow_base = b * n_total;
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;

  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

  for (int64_t k0 = 0; k0 < k; k0 += kSimtK) {
    // A: 64 x 16 floats, 4 per thread (consecutive k, coalesced along k).
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int idx = tid + e * kSimtThreads;
      const int r = idx / kSimtK, c = idx % kSimtK;
      const int64_t gm = m0 + r, gk = k0 + c;
      a_s[c][r] = (gm < m && gk < k) ? __ldg(x + gm * k + gk) : 0.0f;
    }
    // B: 64 rows x 16 codes = 128 chunks of 8 codes, one per thread of the first half.
    if (tid < 2 * kTileN) {
      const int r = tid >> 1, c = (tid & 1) * 8;
      const int64_t gn = n0 + r;
      float v[8];
      if (gn < n_total) {
        const int64_t wrow = wrow_base + gn;
        const int64_t gi = wrow * groups_per_row + k0 / group_size;
        dequant_chunk8<BITS>(packed, row_bytes, wrow, k0 + c, k,
                             half_bits_to_float(__ldg(scale_bits + gi)),
                             kMagic + static_cast<float>(__ldg(zeros + gi)), v);
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = 0.0f;
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) b_s[c + j][r] = v[j];
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSimtK; ++kk) {
      float av[4], bv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = a_s[kk][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = b_s[kk][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) c_s[ty * 4 + i][tx * 4 + j] = acc[i][j];
  __syncthreads();
  store_tile<kTileN + 4, kSimtThreads>(c_s, m0, n0, m, n_total, wrow_base, bias, y);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

template <int BITS, typename T>
cudaError_t launch_linear(const T* x, int64_t m, int64_t k, const uint8_t* packed,
                          const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                          int64_t n_total, int64_t group_size, float* y, int64_t batch_count,
                          int64_t x_batch_stride, int64_t y_batch_stride, cudaStream_t stream) {
  const int64_t row_bytes = packed_row_bytes(k, BITS);
  const int64_t groups_per_row = k / group_size;
  // 128-bit loads need every 128-code unit 16-byte aligned: k % 128 == 0 makes both the
  // packed rows (16 * BITS * k / 128 bytes) and the x rows multiples of 16 bytes.
  const bool gemv_ok = k % kUnitCodes == 0 && aligned16(x) && aligned16(packed) &&
                       (x_batch_stride * static_cast<int64_t>(sizeof(T))) % 16 == 0;
  if (m <= kGemvMaxBatch && gemv_ok) {
    const dim3 grid(static_cast<unsigned>(ceil_div(n_total, kGemvWarps * kGemvRows)),
                    static_cast<unsigned>(batch_count));
    const int mc = static_cast<int>(m);
#define QPART_GEMV(MB)                                                                        \
  gemv_kernel<BITS, MB, T><<<grid, kGemvWarps * 32, 0, stream>>>(                             \
      x, mc, k, packed, row_bytes, scale_bits, zeros, groups_per_row, group_size, bias,      \
      n_total, y, x_batch_stride, y_batch_stride)
    if (m <= 1) {
      QPART_GEMV(1);
    } else if (m <= 2) {
      QPART_GEMV(2);
    } else if (m <= 4) {
      QPART_GEMV(4);
    } else {
      QPART_GEMV(8);
    }
#undef QPART_GEMV
    return cudaGetLastError();
  }
  const dim3 grid(static_cast<unsigned>(ceil_div(m, kTileM)),
                  static_cast<unsigned>(ceil_div(n_total, kTileN)),
                  static_cast<unsigned>(batch_count));
  if constexpr (sizeof(T) == 2) {
    const bool vec = k % 8 == 0 && aligned16(x) &&
                     (x_batch_stride * static_cast<int64_t>(sizeof(T))) % 16 == 0;
    gemm_wmma_kernel<BITS, T><<<grid, kWmmaThreads, 0, stream>>>(
        x, m, k, packed, row_bytes, scale_bits, zeros, groups_per_row, group_size, bias, n_total,
        y, x_batch_stride, y_batch_stride, vec);
  } else {
    gemm_simt_kernel<BITS><<<grid, kSimtThreads, 0, stream>>>(
        x, m, k, packed, row_bytes, scale_bits, zeros, groups_per_row, group_size, bias, n_total,
        y, x_batch_stride, y_batch_stride);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t linear(const void* x, DType dtype, int64_t m, int64_t k, const uint8_t* packed,
                   const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                   int64_t n_total, int64_t group_size, int bits, float* y, int64_t batch_count,
                   int64_t x_batch_stride, int64_t y_batch_stride, cudaStream_t stream) {
  if (m <= 0 || n_total <= 0 || batch_count <= 0) return cudaSuccess;
  return QPART_DISPATCH_DTYPE(dtype, [&] {
    return QPART_DISPATCH_BITS(bits, [&] {
      return launch_linear<BITS, scalar_t>(static_cast<const scalar_t*>(x), m, k, packed,
                                           scale_bits, zeros, bias, n_total, group_size, y,
                                           batch_count, x_batch_stride, y_batch_stride, stream);
    });
  });
}

}  // namespace cuda
}  // namespace qpart
