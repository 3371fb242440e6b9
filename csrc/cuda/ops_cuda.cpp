// ATen glue: registers the torch-free CUDA kernels (csrc/cuda/*.cu, declared in
// qpart_cuda.h) for the CUDA dispatch key of the qpart ops (schemas in
// qpart_kernels/ops/library.py). Mirrors csrc/torch/ops_cpu.cpp: the same validation and
// error messages (the quantize / dequantize ops share their bodies with it:
// csrc/torch/shared/op_quantize-impl.h, with the Cuda policy below), outputs allocated
// through the caching allocator, kernels enqueued on the
// current stream of the input's device (c10::cuda::getCurrentCUDAStream, the same stream
// as at::cuda::getCurrentCUDAStream) under a CUDAGuard. Light headers only (no ATen/ATen.h).
// Compiled only when torch has CUDA (setup.py); Python selects it with
// QPART_CUDA_BACKEND=cuda (the default when these kernels are built in).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <array>
#include <atomic>
#include <optional>
#include <tuple>
#include <vector>

#include "../torch/op_checks.h"
#include "../torch/shared/op_quantize-impl.h"
#include "qpart_cuda.h"

namespace qpart {
namespace {

namespace qc = ::qpart::cuda;
namespace chk = ::qpart::op_checks;
using at::Tensor;

// Compute capability major per device, 0 = not yet queried.
std::array<std::atomic<int>, 64> g_capability{};

void check_capability(const char* op, const Tensor& t) {
  const int dev = t.device().index();
  int major = (dev >= 0 && dev < 64) ? g_capability[dev].load() : 0;
  int minor = 0;
  if (major == 0 || major < qc::kMinComputeMajor) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    if (dev >= 0 && dev < 64) g_capability[dev].store(major);
  }
  TORCH_CHECK(major >= qc::kMinComputeMajor, "qpart.", op,
              ": the QPART CUDA kernels need a GPU of compute capability 8.0 or newer (sm_80+), ",
              "but cuda:", dev, " is sm_", major, minor,
              "; select another backend with QPART_CUDA_BACKEND=triton or reference");
}

// The device the CUDA kernel runs on: `t` (the op's main tensor) must be a CUDA tensor.
at::Device cuda_device(const char* op, const char* name, const Tensor& t) {
  TORCH_CHECK_VALUE(t.device().is_cuda(), "qpart.", op, ": ", name,
                    " must be a CUDA tensor for the CUDA kernel, got ", t.device());
  return t.device();
}

qc::DType dtype_of(const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kHalf: return qc::DType::kFloat16;
    case at::kBFloat16: return qc::DType::kBFloat16;
    default: return qc::DType::kFloat32;
  }
}

const uint16_t* scale_ptr(const Tensor& scales) {
  return reinterpret_cast<const uint16_t*>(scales.const_data_ptr<at::Half>());
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// The CUDA device policy of the shared quantize / dequantize bodies
// (csrc/torch/shared/op_quantize-impl.h): kernels run on the main tensor's device, after the
// compute capability check, under a CUDAGuard.
struct Cuda {
  static void check_device(const char* op, const char* name, const Tensor& t) {
    cuda_device(op, name, t);
  }

  struct Guard {
    Guard(const char* op, const Tensor& t) : device_guard(enter(op, t)) {}
    static at::Device enter(const char* op, const Tensor& t) {
      check_capability(op, t);
      return t.device();
    }
    c10::cuda::CUDAGuard device_guard;
  };

  // Shared by weight and activation quantization: a 2-D float matrix in row groups.
  static std::tuple<Tensor, Tensor, Tensor> quantize_matrix(const char* op, const Tensor& x2d,
                                                            int64_t bits, int64_t group_size) {
    const Tensor x = x2d.contiguous();
    const int64_t rows = x.size(0), kdim = x.size(1), groups = kdim / group_size;
    auto byte_opts = x.options().dtype(at::kByte);
    Tensor packed =
        at::empty({rows, qc::packed_row_bytes(kdim, static_cast<int>(bits))}, byte_opts);
    Tensor scales = at::empty({rows, groups}, x.options().dtype(at::kHalf));
    Tensor zeros = at::empty({rows, groups}, byte_opts);
    Tensor status = at::empty({1}, x.options().dtype(at::kInt));
    int host_status = 0;
    C10_CUDA_CHECK(
        qc::quantize_rows(x.const_data_ptr(), dtype_of(x), rows, kdim, group_size,
                          static_cast<int>(bits), packed.mutable_data_ptr<uint8_t>(),
                          reinterpret_cast<uint16_t*>(scales.mutable_data_ptr<at::Half>()),
                          zeros.mutable_data_ptr<uint8_t>(), status.mutable_data_ptr<int>(),
                          &host_status, current_stream()));
    chk::quantize_status(op, bits, (host_status & qc::kStatusNonFinite) != 0,
                         (host_status & qc::kStatusScaleOverflow) != 0);
    return {packed, scales, zeros};
  }

  static Tensor dequantize_matrix(const Tensor& packed, const Tensor& scales, const Tensor& zeros,
                                  int64_t bits, int64_t kdim, int64_t group_size) {
    const Tensor p = packed.contiguous(), s = scales.contiguous(), z = zeros.contiguous();
    const int64_t rows = p.size(0);
    Tensor out = at::empty({rows, kdim}, p.options().dtype(at::kFloat));
    C10_CUDA_CHECK(qc::dequantize_rows(
        p.const_data_ptr<uint8_t>(), scale_ptr(s), z.const_data_ptr<uint8_t>(), rows, kdim,
        group_size, static_cast<int>(bits), out.mutable_data_ptr<float>(), current_stream()));
    return out;
  }
};

Tensor linear_cuda(const Tensor& input, const Tensor& packed, const Tensor& scales,
                   const Tensor& zeros, const std::optional<Tensor>& bias,
                   const c10::Scalar& bits_value, int64_t in_features, bool int8_activations) {
  const char* op = "linear";
  const int64_t bits = chk::bits_arg(op, bits_value);
  TORCH_CHECK_NOT_IMPLEMENTED(!int8_activations,
                              "qpart.linear: int8_activations=True has native kernels on CPU "
                              "only; use qpart_kernels.linear(..., int8_activations=True), "
                              "which emulates it elsewhere");
  cuda_device(op, "input", input);
  const chk::LinearDims dims = chk::linear(input, packed, scales, zeros, bias, bits, in_features);
  check_capability(op, input);
  const int64_t kdim = dims.k, n = dims.n, gs = dims.group_size, m = dims.m;
  const c10::cuda::CUDAGuard guard(input.device());

  std::vector<int64_t> out_shape(input.sizes().begin(), input.sizes().end());
  out_shape.back() = n;
  Tensor out = at::empty({m, n}, input.options().dtype(at::kFloat));
  if (m > 0) {
    const Tensor x = input.contiguous();
    const Tensor p = packed.contiguous(), s = scales.contiguous(), z = zeros.contiguous();
    Tensor b;
    if (bias.has_value()) b = bias->to(at::kFloat).contiguous();
    C10_CUDA_CHECK(qc::linear(
        x.const_data_ptr(), dtype_of(x), m, kdim, p.const_data_ptr<uint8_t>(), scale_ptr(s),
        z.const_data_ptr<uint8_t>(), b.defined() ? b.const_data_ptr<float>() : nullptr, n, gs,
        static_cast<int>(bits), out.mutable_data_ptr<float>(), 1, 0, 0, current_stream()));
  }
  return out.view(out_shape).to(input.scalar_type());
}

Tensor conv2d_cuda(const Tensor& input, const Tensor& packed, const Tensor& scales,
                   const Tensor& zeros, const std::optional<Tensor>& bias,
                   const c10::Scalar& bits_value, at::IntArrayRef weight_shape,
                   at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                   int64_t groups, bool int8_activations, const std::optional<Tensor>& residual,
                   bool relu) {
  const char* op = "conv2d";
  const int64_t bits = chk::bits_arg(op, bits_value);
  TORCH_CHECK_NOT_IMPLEMENTED(!int8_activations,
                              "qpart.conv2d: int8_activations=True has native kernels on CPU "
                              "only; use qpart_kernels.conv2d(..., int8_activations=True), "
                              "which emulates it elsewhere");
  cuda_device(op, "input", input);
  const chk::Conv2dDims d = chk::conv2d(input, packed, scales, zeros, bias, bits, weight_shape,
                                        stride, padding, dilation, groups);
  chk::conv2d_residual(residual, input, d);
  check_capability(op, input);
  const qc::Conv2dShape shape{d.batch,    d.c_in,     d.h_in,  d.w_in,  d.c_out, d.kh,    d.kw,
                              d.stride_h, d.stride_w, d.pad_h, d.pad_w, d.dil_h, d.dil_w, d.groups};
  const int64_t gs = d.group_size, ho = d.h_out, wo = d.w_out;
  const c10::cuda::CUDAGuard guard(input.device());

  const int64_t opg = shape.c_out / groups;
  if (shape.batch == 0) {
    return at::empty({0, shape.c_out, ho, wo}, input.options());
  }
  // The residual and ReLU as a separate add and clamp (the same values).
  const auto finish = [&](Tensor out) {
    if (residual.has_value()) out.add_(*residual);
    if (relu) out.clamp_min_(0);
    return out;
  };
  const Tensor x = input.contiguous();
  const Tensor p = packed.contiguous(), s = scales.contiguous(), z = zeros.contiguous();
  Tensor b;
  if (bias.has_value()) b = bias->to(at::kFloat).contiguous();
  Tensor workspace = at::empty({qc::conv2d_workspace_elems(shape)}, x.options());
  // (groups, batch, ho * wo, out_per_group) in fp32, permuted to NCHW below.
  Tensor gmn = at::empty({groups, shape.batch, ho * wo, opg}, x.options().dtype(at::kFloat));
  C10_CUDA_CHECK(qc::conv2d(x.const_data_ptr(), dtype_of(x), shape, p.const_data_ptr<uint8_t>(),
                            scale_ptr(s), z.const_data_ptr<uint8_t>(),
                            b.defined() ? b.const_data_ptr<float>() : nullptr, gs,
                            static_cast<int>(bits), workspace.mutable_data_ptr(),
                            gmn.mutable_data_ptr<float>(), current_stream()));
  // (g, n, p, o) -> (n, g, o, p) -> (n, c_out, ho, wo), in the input's dtype.
  return finish(gmn.permute({1, 0, 3, 2})
                    .to(input.scalar_type())
                    .contiguous()
                    .view({shape.batch, shape.c_out, ho, wo}));
}

}  // namespace

TORCH_LIBRARY_IMPL(qpart, CUDA, m) {
  m.impl("quantize_weight", &glue::quantize_weight_impl<Cuda>);
  m.impl("dequantize_weight", &glue::dequantize_weight_impl<Cuda>);
  m.impl("linear", &linear_cuda);
  m.impl("conv2d", &conv2d_cuda);
  m.impl("quantize_activation", &glue::quantize_activation_impl<Cuda>);
  m.impl("dequantize_activation", &glue::dequantize_activation_impl<Cuda>);
}

}  // namespace qpart
