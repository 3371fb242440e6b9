// Packed conv2d: an im2col kernel gathers the (c, r, s) patches of every output pixel into
// a (groups, pixels, k) buffer of the input dtype, then the batched GEMM of linear.cu (one
// batch item per conv group, weight rows offset by group) computes (groups, pixels,
// c_out / groups) in fp32; the glue permutes that to NCHW. k order (c, r, s) matches the
// flattened weight of docs/FORMAT.md.
#include "common.cuh"

namespace qpart {
namespace cuda {
namespace {

using namespace detail;

constexpr int kIm2colThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kIm2colThreads)
    im2col_kernel(const T* __restrict__ x, Conv2dShape s, int64_t h_out, int64_t w_out,
                  int64_t total, T* __restrict__ cols) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kIm2colThreads + threadIdx.x;
  if (idx >= total) return;
  const int64_t k = s.k();
  const int64_t pixels = s.batch * h_out * w_out;
  const int64_t kc = idx % k;
  const int64_t pm = (idx / k) % pixels;
  const int64_t g = idx / (k * pixels);
  const int64_t img = pm / (h_out * w_out);
  const int64_t oy = (pm / w_out) % h_out;
  const int64_t ox = pm % w_out;
  const int64_t c = kc / (s.kh * s.kw);
  const int64_t r = (kc / s.kw) % s.kh;
  const int64_t q = kc % s.kw;
  const int64_t iy = oy * s.stride_h - s.pad_h + r * s.dil_h;
  const int64_t ix = ox * s.stride_w - s.pad_w + q * s.dil_w;
  const int64_t ch = g * (s.c_in / s.groups) + c;
  T v = from_float<T>(0.0f);
  if (iy >= 0 && iy < s.h_in && ix >= 0 && ix < s.w_in)
    v = x[((img * s.c_in + ch) * s.h_in + iy) * s.w_in + ix];
  cols[idx] = v;
}

}  // namespace

cudaError_t conv2d(const void* x, DType dtype, const Conv2dShape& s, const uint8_t* packed,
                   const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                   int64_t group_size, int bits, void* workspace, float* y_gmn,
                   cudaStream_t stream) {
  const int64_t total = conv2d_workspace_elems(s);
  if (total <= 0) return cudaSuccess;
  const int64_t h_out = s.h_out(), w_out = s.w_out(), pixels = s.pixels(), k = s.k();
  const int64_t out_per_group = s.c_out / s.groups;
  QPART_DISPATCH_DTYPE(dtype, [&] {
    im2col_kernel<scalar_t><<<static_cast<unsigned>(detail::ceil_div(total, kIm2colThreads)),
                              kIm2colThreads, 0, stream>>>(
        static_cast<const scalar_t*>(x), s, h_out, w_out, total,
        static_cast<scalar_t*>(workspace));
  });
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  return linear(workspace, dtype, pixels, k, packed, scale_bits, zeros, bias, out_per_group,
                group_size, bits, y_gmn, s.groups, pixels * k, pixels * out_per_group, stream);
}

}  // namespace cuda
}  // namespace qpart
