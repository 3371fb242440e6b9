// ATen glue of qpart::max_pool2d on CPU: validates (op_checks.h), converts float16 / bfloat16
// to float32 and back (exact: a max pool only selects values) and pools the N * C planes of
// the contiguous NCHW tensor in parallel with the kernel core's max_pool2d_f32.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../kernels/qpart_kernels.h"
#include "op_checks.h"
#include "output_pool.h"

namespace qpart {
namespace {

namespace k = ::qpart::kernels;
namespace chk = ::qpart::op_checks;
using at::Tensor;

// Input floats per parallel chunk at least: smaller pools (an MNIST batch's 14x14 planes) run
// a few planes per thread hand-off rather than one.
constexpr int64_t kGrainFloats = 16384;

Tensor max_pool2d_cpu(const Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                      at::IntArrayRef padding) {
  chk::on_device("max_pool2d", "input", input, at::Device(at::kCPU));
  const chk::MaxPool2dDims d = chk::max_pool2d(input, kernel_size, stride, padding);
  const k::MaxPool2dShape s{d.h_in, d.w_in, d.kh, d.kw, d.stride_h, d.stride_w, d.pad_h, d.pad_w};
  const Tensor x = input.to(at::kFloat).contiguous();
  Tensor out = glue::pooled_empty({d.batch, d.channels, d.h_out, d.w_out}, x.options());
  const int64_t planes = d.batch * d.channels;
  if (planes > 0) {
    const float* src = x.const_data_ptr<float>();
    float* dst = out.mutable_data_ptr<float>();
    const int64_t in_plane = d.h_in * d.w_in, out_plane = d.h_out * d.w_out;
    const int64_t grain = std::max<int64_t>(1, kGrainFloats / in_plane);
    const k::CpuIsa isa = k::active_cpu_isa();
    at::parallel_for(0, planes, grain, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(static_cast<size_t>(k::max_pool2d_scratch_floats(s)));
      k::max_pool2d_f32(isa, s, src + begin * in_plane, end - begin, scratch.data(),
                        dst + begin * out_plane);
    });
  }
  return out.to(input.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(qpart, CPU, m) {
  m.impl("max_pool2d", &max_pool2d_cpu);  // float max pool of NCHW planes (max_pool2d_impl.h)
}

}  // namespace qpart
