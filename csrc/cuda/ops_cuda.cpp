// ATen glue: registers the torch-free CUDA kernels (csrc/cuda/*.cu, declared in
// qpart_cuda.h) for the CUDA dispatch key of the qpart ops (schemas in
// qpart_kernels/ops/library.py). Mirrors csrc/torch/ops_cpu.cpp: the same validation and
// error messages, outputs allocated through the caching allocator, kernels enqueued on the
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

#include "qpart_cuda.h"

namespace qpart {
namespace {

namespace qc = ::qpart::cuda;
using at::Tensor;

constexpr int kMinBits = 1;
constexpr int kMaxBits = 8;

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
              ": the QPART CUDA kernels need a GPU of compute capability 8.0 or newer (sm_80+), "
              "but cuda:", dev, " is sm_", major, minor,
              "; select another backend with QPART_CUDA_BACKEND=triton or reference");
}

void check_bits(const char* op, int64_t bits) {
  TORCH_CHECK_VALUE(bits >= kMinBits && bits <= kMaxBits, "qpart.", op,
                    ": bits must be in 1..8, got ", bits);
}

void check_cuda(const char* op, const char* name, const Tensor& t, const at::Device& device) {
  TORCH_CHECK_VALUE(t.device().is_cuda(), "qpart.", op, ": ", name,
                    " must be a CUDA tensor for the CUDA kernel, got ", t.device());
  TORCH_CHECK_VALUE(t.device() == device, "qpart.", op, ": ", name, " is on ", t.device(),
                    " but the other tensors are on ", device);
}

void check_float(const char* op, const char* name, const Tensor& t) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kHalf || st == at::kBFloat16, "qpart.", op,
                   ": ", name, " must be float32, float16 or bfloat16, got ", st);
}

qc::DType dtype_of(const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kHalf:
      return qc::DType::kFloat16;
    case at::kBFloat16:
      return qc::DType::kBFloat16;
    default:
      return qc::DType::kFloat32;
  }
}

void check_group_size(const char* op, int64_t kdim, int64_t group_size) {
  TORCH_CHECK_VALUE(group_size > 0 && kdim % group_size == 0, "qpart.", op, ": group_size ",
                    group_size, " must be positive and divide the reduction size ", kdim);
  TORCH_CHECK_VALUE(group_size == kdim || group_size % 32 == 0, "qpart.", op, ": group_size ",
                    group_size, " must be a multiple of 32 (or equal the reduction size ",
                    kdim, " for one group per row)");
}

// Validates a packed weight of `kdim` columns and returns its group size.
int64_t check_packed(const char* op, const Tensor& packed, const Tensor& scales,
                     const Tensor& zeros, int64_t bits, int64_t kdim) {
  check_bits(op, bits);
  check_cuda(op, "packed weight", packed, packed.device());
  check_cuda(op, "scales", scales, packed.device());
  check_cuda(op, "zeros", zeros, packed.device());
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kByte, "qpart.", op,
                   ": packed weight must be uint8, got ", packed.scalar_type());
  TORCH_CHECK_TYPE(scales.scalar_type() == at::kHalf, "qpart.", op,
                   ": scales must be float16, got ", scales.scalar_type());
  TORCH_CHECK_TYPE(zeros.scalar_type() == at::kByte, "qpart.", op,
                   ": zeros must be uint8, got ", zeros.scalar_type());
  TORCH_CHECK_VALUE(packed.dim() == 2 && scales.dim() == 2 && zeros.dim() == 2, "qpart.", op,
                    ": packed weight, scales and zeros must be 2-D");
  TORCH_CHECK_VALUE(packed.numel() > 0, "qpart.", op, ": packed weight is empty");
  TORCH_CHECK_VALUE(kdim > 0, "qpart.", op, ": the reduction size must be positive, got ", kdim);
  const int64_t expected = qc::packed_row_bytes(kdim, static_cast<int>(bits));
  TORCH_CHECK_VALUE(packed.size(1) == expected, "qpart.", op, ": packed weight has ",
                    packed.size(1), " bytes per row but ", kdim, " columns at ", bits,
                    " bits need ", expected);
  TORCH_CHECK_VALUE(scales.sizes() == zeros.sizes() && scales.size(0) == packed.size(0),
                    "qpart.", op, ": scales and zeros must both be (", packed.size(0),
                    ", groups)");
  const int64_t groups = scales.size(1);
  TORCH_CHECK_VALUE(groups > 0 && kdim % groups == 0, "qpart.", op, ": ", groups,
                    " groups per row do not divide ", kdim, " columns");
  check_group_size(op, kdim, kdim / groups);
  check_capability(op, packed);
  return kdim / groups;
}

void check_bias(const char* op, const std::optional<Tensor>& bias, int64_t n,
                const at::Device& device) {
  if (!bias.has_value()) return;
  check_cuda(op, "bias", *bias, device);
  check_float(op, "bias", *bias);
  TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == n, "qpart.", op,
                    ": bias must have shape (", n, ",), got ", bias->sizes());
}

const uint16_t* scale_ptr(const Tensor& scales) {
  return reinterpret_cast<const uint16_t*>(scales.const_data_ptr<at::Half>());
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Shared by weight and activation quantization: a 2-D float matrix in row groups.
std::tuple<Tensor, Tensor, Tensor> quantize_matrix(const char* op, const Tensor& x2d,
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
  C10_CUDA_CHECK(qc::quantize_rows(
      x.const_data_ptr(), dtype_of(x), rows, kdim, group_size, static_cast<int>(bits),
      packed.mutable_data_ptr<uint8_t>(),
      reinterpret_cast<uint16_t*>(scales.mutable_data_ptr<at::Half>()),
      zeros.mutable_data_ptr<uint8_t>(), status.mutable_data_ptr<int>(), &host_status,
      current_stream()));
  TORCH_CHECK_VALUE((host_status & qc::kStatusNonFinite) == 0, "qpart.", op,
                    ": input contains NaN or Inf values");
  TORCH_CHECK_VALUE((host_status & qc::kStatusScaleOverflow) == 0, "qpart.", op,
                    ": a group's value range is too wide for a float16 scale at ", bits, " bits");
  return {packed, scales, zeros};
}

Tensor dequantize_matrix(const Tensor& packed, const Tensor& scales, const Tensor& zeros,
                         int64_t bits, int64_t kdim, int64_t group_size) {
  const Tensor p = packed.contiguous(), s = scales.contiguous(), z = zeros.contiguous();
  const int64_t rows = p.size(0);
  Tensor out = at::empty({rows, kdim}, p.options().dtype(at::kFloat));
  C10_CUDA_CHECK(qc::dequantize_rows(p.const_data_ptr<uint8_t>(), scale_ptr(s),
                                     z.const_data_ptr<uint8_t>(), rows, kdim, group_size,
                                     static_cast<int>(bits), out.mutable_data_ptr<float>(),
                                     current_stream()));
  return out;
}

std::tuple<Tensor, Tensor, Tensor> quantize_weight_cuda(const Tensor& weight, int64_t bits,
                                                        int64_t group_size) {
  const char* op = "quantize_weight";
  check_bits(op, bits);
  check_cuda(op, "weight", weight, weight.device());
  check_float(op, "weight", weight);
  TORCH_CHECK_VALUE(weight.dim() == 2, "qpart.", op, ": weight must be 2-D (out, in), got ",
                    weight.sizes());
  TORCH_CHECK_VALUE(weight.numel() > 0, "qpart.", op, ": weight is empty (shape ",
                    weight.sizes(), ")");
  check_group_size(op, weight.size(1), group_size);
  check_capability(op, weight);
  const c10::cuda::CUDAGuard guard(weight.device());
  return quantize_matrix(op, weight, bits, group_size);
}

Tensor dequantize_weight_cuda(const Tensor& packed, const Tensor& scales, const Tensor& zeros,
                              int64_t bits, int64_t in_features) {
  const int64_t gs = check_packed("dequantize_weight", packed, scales, zeros, bits, in_features);
  const c10::cuda::CUDAGuard guard(packed.device());
  return dequantize_matrix(packed, scales, zeros, bits, in_features, gs);
}

Tensor linear_cuda(const Tensor& input, const Tensor& packed, const Tensor& scales,
                   const Tensor& zeros, const std::optional<Tensor>& bias, int64_t bits,
                   int64_t in_features, bool int8_activations) {
  const char* op = "linear";
  TORCH_CHECK_NOT_IMPLEMENTED(!int8_activations,
                              "qpart.linear: int8_activations=True has native kernels on CPU "
                              "only; use qpart_kernels.linear(..., int8_activations=True), "
                              "which emulates it elsewhere");
  check_cuda(op, "input", input, input.device());
  check_float(op, "input", input);
  TORCH_CHECK_VALUE(input.dim() >= 1, "qpart.linear: input must have at least one dimension");
  const int64_t kdim = input.size(-1);
  TORCH_CHECK_VALUE(kdim == in_features, "qpart.linear: input has ", kdim,
                    " features in its last dimension but the weight has in_features=",
                    in_features);
  const int64_t gs = check_packed(op, packed, scales, zeros, bits, kdim);
  check_cuda(op, "packed weight", packed, input.device());
  const int64_t n = packed.size(0);
  check_bias(op, bias, n, input.device());
  const c10::cuda::CUDAGuard guard(input.device());

  std::vector<int64_t> out_shape(input.sizes().begin(), input.sizes().end());
  out_shape.back() = n;
  const int64_t m = input.numel() / kdim;
  Tensor out = at::empty({m, n}, input.options().dtype(at::kFloat));
  if (m > 0) {
    const Tensor x = input.contiguous();
    const Tensor p = packed.contiguous(), s = scales.contiguous(), z = zeros.contiguous();
    Tensor b;
    if (bias.has_value()) b = bias->to(at::kFloat).contiguous();
    C10_CUDA_CHECK(qc::linear(x.const_data_ptr(), dtype_of(x), m, kdim,
                              p.const_data_ptr<uint8_t>(), scale_ptr(s),
                              z.const_data_ptr<uint8_t>(),
                              b.defined() ? b.const_data_ptr<float>() : nullptr, n, gs,
                              static_cast<int>(bits), out.mutable_data_ptr<float>(), 1, 0, 0,
                              current_stream()));
  }
  return out.view(out_shape).to(input.scalar_type());
}

Tensor conv2d_cuda(const Tensor& input, const Tensor& packed, const Tensor& scales,
                   const Tensor& zeros, const std::optional<Tensor>& bias, int64_t bits,
                   at::IntArrayRef weight_shape, at::IntArrayRef stride, at::IntArrayRef padding,
                   at::IntArrayRef dilation, int64_t groups) {
  const char* op = "conv2d";
  check_cuda(op, "input", input, input.device());
  check_float(op, "input", input);
  TORCH_CHECK_VALUE(input.dim() == 4, "qpart.conv2d: input must be 4-D (N, C, H, W), got ",
                    input.sizes());
  TORCH_CHECK_VALUE(weight_shape.size() == 4 && weight_shape[0] >= 1 && weight_shape[1] >= 1 &&
                        weight_shape[2] >= 1 && weight_shape[3] >= 1,
                    "qpart.conv2d: weight_shape must be 4 positive ints (out, in/groups, kh, "
                    "kw), got ", weight_shape);
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
                    "qpart.conv2d: stride, padding and dilation must be pairs");
  TORCH_CHECK_VALUE(stride[0] >= 1 && stride[1] >= 1 && dilation[0] >= 1 && dilation[1] >= 1 &&
                        padding[0] >= 0 && padding[1] >= 0,
                    "qpart.conv2d: stride and dilation must be >= 1 and padding >= 0");
  qc::Conv2dShape shape{input.size(0), input.size(1), input.size(2), input.size(3),
                        weight_shape[0], weight_shape[2], weight_shape[3],
                        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                        groups};
  TORCH_CHECK_VALUE(groups >= 1 && shape.c_in % groups == 0, "qpart.conv2d: groups ", groups,
                    " must be >= 1 and divide ", shape.c_in, " input channels");
  TORCH_CHECK_VALUE(shape.c_in / groups == weight_shape[1], "qpart.conv2d: input has ",
                    shape.c_in, " channels, so ", shape.c_in / groups,
                    " per group, but the weight expects ", weight_shape[1], " per group");
  const int64_t gs = check_packed(op, packed, scales, zeros, bits, shape.k());
  check_cuda(op, "packed weight", packed, input.device());
  TORCH_CHECK_VALUE(packed.size(0) == shape.c_out, "qpart.conv2d: packed weight has ",
                    packed.size(0), " rows but weight_shape says ", shape.c_out);
  TORCH_CHECK_VALUE(shape.c_out % groups == 0, "qpart.conv2d: groups ", groups,
                    " must divide ", shape.c_out, " output channels");
  check_bias(op, bias, shape.c_out, input.device());
  const int64_t ho = shape.h_out(), wo = shape.w_out();
  TORCH_CHECK_VALUE(ho > 0 && wo > 0, "qpart.conv2d: input ", input.sizes().slice(2),
                    " is too small for kernel ", weight_shape.slice(2), " with padding ", padding,
                    " and dilation ", dilation);
  const c10::cuda::CUDAGuard guard(input.device());

  const int64_t opg = shape.c_out / groups;
  if (shape.batch == 0) {
    return at::empty({0, shape.c_out, ho, wo}, input.options());
  }
  const Tensor x = input.contiguous();
  const Tensor p = packed.contiguous(), s = scales.contiguous(), z = zeros.contiguous();
  Tensor b;
  if (bias.has_value()) b = bias->to(at::kFloat).contiguous();
  Tensor workspace = at::empty({qc::conv2d_workspace_elems(shape)}, x.options());
  // (groups, batch, ho * wo, out_per_group) in fp32, permuted to NCHW below.
  Tensor gmn = at::empty({groups, shape.batch, ho * wo, opg}, x.options().dtype(at::kFloat));
  C10_CUDA_CHECK(qc::conv2d(x.const_data_ptr(), dtype_of(x), shape,
                            p.const_data_ptr<uint8_t>(), scale_ptr(s),
                            z.const_data_ptr<uint8_t>(),
                            b.defined() ? b.const_data_ptr<float>() : nullptr, gs,
                            static_cast<int>(bits), workspace.mutable_data_ptr(),
                            gmn.mutable_data_ptr<float>(), current_stream()));
  // (g, n, p, o) -> (n, g, o, p) -> (n, c_out, ho, wo), in the input's dtype.
  return gmn.permute({1, 0, 3, 2})
      .to(input.scalar_type())
      .contiguous()
      .view({shape.batch, shape.c_out, ho, wo});
}

std::tuple<Tensor, Tensor, Tensor> quantize_activation_cuda(const Tensor& input, int64_t bits,
                                                            bool per_token) {
  const char* op = "quantize_activation";
  check_bits(op, bits);
  check_cuda(op, "input", input, input.device());
  check_float(op, "input", input);
  TORCH_CHECK_VALUE(input.numel() > 0, "qpart.", op, ": input is empty (shape ", input.sizes(), ")");
  check_capability(op, input);
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t kdim = (per_token && input.dim() >= 1) ? input.size(-1) : input.numel();
  return quantize_matrix(op, input.reshape({input.numel() / kdim, kdim}), bits, kdim);
}

Tensor dequantize_activation_cuda(const Tensor& packed, const Tensor& scales,
                                  const Tensor& zeros, int64_t bits, at::IntArrayRef shape,
                                  at::ScalarType dtype) {
  const char* op = "dequantize_activation";
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
                   "qpart.", op, ": dtype must be float32, float16 or bfloat16, got ", dtype);
  int64_t numel = 1;
  for (int64_t d : shape) {
    TORCH_CHECK_VALUE(d >= 0, "qpart.", op, ": shape ", shape, " has a negative size");
    numel *= d;
  }
  TORCH_CHECK_VALUE(numel > 0, "qpart.", op, ": shape ", shape, " is empty");
  TORCH_CHECK_VALUE(scales.dim() == 2 && scales.size(1) == 1, "qpart.", op,
                    ": scales must have shape (rows, 1), got ", scales.sizes());
  const int64_t rows = scales.size(0);
  TORCH_CHECK_VALUE(rows > 0 && numel % rows == 0, "qpart.", op, ": ", rows,
                    " rows do not divide the ", numel, " elements of ", shape);
  const int64_t kdim = numel / rows;
  check_packed(op, packed, scales, zeros, bits, kdim);
  const c10::cuda::CUDAGuard guard(packed.device());
  return dequantize_matrix(packed, scales, zeros, bits, kdim, kdim).view(shape).to(dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(qpart, CUDA, m) {
  m.impl("quantize_weight", &quantize_weight_cuda);
  m.impl("dequantize_weight", &dequantize_weight_cuda);
  m.impl("linear", &linear_cuda);
  m.impl("conv2d", &conv2d_cuda);
  m.impl("quantize_activation", &quantize_activation_cuda);
  m.impl("dequantize_activation", &dequantize_activation_cuda);
}

}  // namespace qpart
