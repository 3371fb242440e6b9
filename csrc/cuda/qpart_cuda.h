// QPART CUDA kernels: torch-free host launchers on raw device pointers + a cudaStream_t.
//
// The kernels (quantize.cu, linear.cu, conv2d.cu) read and write exactly the packed format
// of docs/FORMAT.md, like the CPU kernel core (csrc/kernels/qpart_kernels.h): every backend
// produces the same bytes. No torch header is included here or in the .cu files, so they
// compile in seconds and can be checked with nvcc alone (scripts/cuda_compile_check.sh);
// the ATen glue is csrc/cuda/ops_cuda.cpp.
//
// Conventions: matrices are row-major and contiguous; a packed matrix of `rows` x `k` codes
// is `rows` bit streams of packed_row_bytes(k, bits) bytes; scales are fp16 bit patterns
// (uint16_t) and zero points uint8, both `rows` x (k / group_size). group_size divides k
// and is a multiple of 32 or equals k. Every launcher enqueues on `stream` and returns the
// launch status (cudaGetLastError()); quantize_rows also synchronizes `stream` to report
// bad inputs. The kernels need compute capability 8.0+ (checked by the glue).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#if defined(__CUDACC__)
#define QPART_HOST_DEVICE __host__ __device__
#else
#define QPART_HOST_DEVICE
#endif

namespace qpart {
namespace cuda {

/// Element type of a float input (activations, weights to quantize).
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

/// Bits of the status word quantize_rows reports.
constexpr int kStatusNonFinite = 1;      // a NaN or Inf input value
constexpr int kStatusScaleOverflow = 2;  // a group's range is too wide for an fp16 scale

/// Smallest compute capability (major) the kernels support.
constexpr int kMinComputeMajor = 8;

/// Largest batch (rows of x) the GEMV kernel takes; larger batches use the tiled GEMM.
constexpr int64_t kGemvMaxBatch = 8;

inline int64_t packed_row_bytes(int64_t k, int bits) {
  return (k * static_cast<int64_t>(bits) + 7) / 8;
}

/// Quantizes a `rows` x `k` matrix (of `dtype`) in groups of `group_size` along k, writing
/// packed codes, fp16 scale bits and zero points. `status_dev` is one int of device scratch;
/// after the kernels ran, the stream is synchronized and *status_host receives an OR of
/// kStatus* flags (0 when every group was fine).
cudaError_t quantize_rows(const void* x, DType dtype, int64_t rows, int64_t k,
                          int64_t group_size, int bits, uint8_t* packed, uint16_t* scale_bits,
                          uint8_t* zeros, int* status_dev, int* status_host,
                          cudaStream_t stream);

/// Dequantizes a packed `rows` x `k` matrix into float32 `out` (row-major).
cudaError_t dequantize_rows(const uint8_t* packed, const uint16_t* scale_bits,
                            const uint8_t* zeros, int64_t rows, int64_t k, int64_t group_size,
                            int bits, float* out, cudaStream_t stream);

/// Batched packed linear: for b in [0, batch_count):
///   y_b[m, n] = sum_k x_b[m, k] * W[b * n_total + n, k] + bias[b * n_total + n]
/// with x_b = x + b * x_batch_stride (elements of `dtype`, row-major m x k) and
/// y_b = y + b * y_batch_stride (float32, row-major m x n_total). W is the packed matrix of
/// batch_count * n_total rows (one block of n_total rows per batch item: conv groups).
/// `bias` may be null. fp32 accumulation. m <= kGemvMaxBatch with k % 128 == 0 (and 16-byte
/// aligned x / packed) runs the GEMV kernel; anything else
/// the tiled GEMM (tensor cores through WMMA for fp16/bf16, SIMT fp32 for float32).
cudaError_t linear(const void* x, DType dtype, int64_t m, int64_t k, const uint8_t* packed,
                   const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                   int64_t n_total, int64_t group_size, int bits, float* y, int64_t batch_count,
                   int64_t x_batch_stride, int64_t y_batch_stride, cudaStream_t stream);

/// Shape of a 2-D convolution over NCHW input, weight (c_out, c_in / groups, kh, kw).
struct Conv2dShape {
  int64_t batch, c_in, h_in, w_in;
  int64_t c_out, kh, kw;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t groups;

  QPART_HOST_DEVICE int64_t h_out() const { return (h_in + 2 * pad_h - dil_h * (kh - 1) - 1) / stride_h + 1; }
  QPART_HOST_DEVICE int64_t w_out() const { return (w_in + 2 * pad_w - dil_w * (kw - 1) - 1) / stride_w + 1; }
  QPART_HOST_DEVICE int64_t k() const { return (c_in / groups) * kh * kw; }
  QPART_HOST_DEVICE int64_t pixels() const { return batch * h_out() * w_out(); }
};

/// Elements (of the input dtype) of the im2col buffer conv2d needs: groups * pixels * k.
inline int64_t conv2d_workspace_elems(const Conv2dShape& s) {
  return s.groups * s.pixels() * s.k();
}

/// Packed conv2d as im2col + the batched GEMM (one batch item per conv group).
/// `workspace` holds conv2d_workspace_elems(s) elements of `dtype`. The result goes to
/// `y_gmn`, float32 laid out (groups, batch * h_out * w_out, c_out / groups) - the caller
/// permutes it to NCHW. `bias` may be null.
cudaError_t conv2d(const void* x, DType dtype, const Conv2dShape& s, const uint8_t* packed,
                   const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                   int64_t group_size, int bits, void* workspace, float* y_gmn,
                   cudaStream_t stream);

}  // namespace cuda
}  // namespace qpart
