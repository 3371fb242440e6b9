// ATen glue: registers the torch-free CPU kernels for the qpart ops (schemas are defined
// once, in qpart_kernels/ops/library.py). Validates inputs with clear errors, converts
// activations to contiguous fp32, and splits the work with at::parallel_for so that
// torch.set_num_threads governs it.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <tuple>
#include <vector>

#include "../kernels/qpart_kernels.h"

namespace qpart {
namespace {

namespace k = ::qpart::kernels;
using at::Tensor;

void check_bits(const char* op, int64_t bits) {
  TORCH_CHECK_VALUE(bits >= k::kMinBits && bits <= k::kMaxBits, "qpart.", op,
                    ": bits must be in 1..8, got ", bits);
}

void check_cpu(const char* op, const char* name, const Tensor& t) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "qpart.", op, ": ", name,
                    " must be a CPU tensor for the CPU kernel, got ", t.device());
}

void check_float(const char* op, const char* name, const Tensor& t) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kHalf || st == at::kBFloat16, "qpart.", op,
                   ": ", name, " must be float32, float16 or bfloat16, got ", st);
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
  check_cpu(op, "packed weight", packed);
  check_cpu(op, "scales", scales);
  check_cpu(op, "zeros", zeros);
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
  const int64_t expected = k::packed_row_bytes(kdim, static_cast<int>(bits));
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
  return kdim / groups;
}

void check_bias(const char* op, const std::optional<Tensor>& bias, int64_t n) {
  if (!bias.has_value()) return;
  check_cpu(op, "bias", *bias);
  check_float(op, "bias", *bias);
  TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == n, "qpart.", op,
                    ": bias must have shape (", n, ",), got ", bias->sizes());
}

const uint16_t* scale_ptr(const Tensor& scales) {
  return reinterpret_cast<const uint16_t*>(scales.const_data_ptr<at::Half>());
}

// Shared by weight and activation quantization: a 2-D float matrix in row groups.
std::tuple<Tensor, Tensor, Tensor> quantize_matrix(const char* op, const Tensor& x2d,
                                                   int64_t bits, int64_t group_size) {
  const Tensor x = x2d.to(at::kFloat).contiguous();
  const int64_t rows = x.size(0), kdim = x.size(1), groups = kdim / group_size;
  auto byte_opts = x.options().dtype(at::kByte);
  Tensor packed = at::empty({rows, k::packed_row_bytes(kdim, static_cast<int>(bits))}, byte_opts);
  Tensor scales = at::empty({rows, groups}, x.options().dtype(at::kHalf));
  Tensor zeros = at::empty({rows, groups}, byte_opts);
  const float* src = x.const_data_ptr<float>();
  uint8_t* packed_ptr = packed.mutable_data_ptr<uint8_t>();
  uint16_t* scale_out = reinterpret_cast<uint16_t*>(scales.mutable_data_ptr<at::Half>());
  uint8_t* zero_out = zeros.mutable_data_ptr<uint8_t>();
  std::atomic<int> status{0};
  const int64_t grain = std::max<int64_t>(1, 65536 / kdim);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    const k::Status st = k::quantize_rows(src, begin, end, kdim, group_size,
                                          static_cast<int>(bits), packed_ptr, scale_out,
                                          zero_out);
    if (st != k::Status::kOk) status.store(static_cast<int>(st));
  });
  const auto st = static_cast<k::Status>(status.load());
  TORCH_CHECK_VALUE(st != k::Status::kNonFinite, "qpart.", op, ": input contains NaN or Inf values");
  TORCH_CHECK_VALUE(st != k::Status::kScaleOverflow, "qpart.", op,
                    ": a group's value range is too wide for a float16 scale at ", bits, " bits");
  return {packed, scales, zeros};
}

Tensor dequantize_matrix(const Tensor& packed, const Tensor& scales, const Tensor& zeros,
                         int64_t bits, int64_t kdim, int64_t group_size) {
  const Tensor p = packed.contiguous(), s = scales.contiguous(), z = zeros.contiguous();
  const int64_t rows = p.size(0);
  Tensor out = at::empty({rows, kdim}, p.options().dtype(at::kFloat));
  float* dst = out.mutable_data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, 65536 / kdim);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    k::dequantize_rows(p.const_data_ptr<uint8_t>(), scale_ptr(s), z.const_data_ptr<uint8_t>(),
                       begin, end, kdim, group_size, static_cast<int>(bits), dst);
  });
  return out;
}

std::tuple<Tensor, Tensor, Tensor> quantize_weight_cpu(const Tensor& weight, int64_t bits,
                                                       int64_t group_size) {
  const char* op = "quantize_weight";
  check_bits(op, bits);
  check_cpu(op, "weight", weight);
  check_float(op, "weight", weight);
  TORCH_CHECK_VALUE(weight.dim() == 2, "qpart.", op, ": weight must be 2-D (out, in), got ",
                    weight.sizes());
  TORCH_CHECK_VALUE(weight.numel() > 0, "qpart.", op, ": weight is empty (shape ",
                    weight.sizes(), ")");
  check_group_size(op, weight.size(1), group_size);
  return quantize_matrix(op, weight, bits, group_size);
}

Tensor dequantize_weight_cpu(const Tensor& packed, const Tensor& scales, const Tensor& zeros,
                             int64_t bits, int64_t in_features) {
  const int64_t gs = check_packed("dequantize_weight", packed, scales, zeros, bits, in_features);
  return dequantize_matrix(packed, scales, zeros, bits, in_features, gs);
}

Tensor linear_cpu(const Tensor& input, const Tensor& packed, const Tensor& scales,
                  const Tensor& zeros, const std::optional<Tensor>& bias, int64_t bits,
                  int64_t in_features, bool int8_activations) {
  const char* op = "linear";
  check_cpu(op, "input", input);
  check_float(op, "input", input);
  TORCH_CHECK_VALUE(input.dim() >= 1, "qpart.linear: input must have at least one dimension");
  const int64_t kdim = input.size(-1);
  TORCH_CHECK_VALUE(kdim == in_features, "qpart.linear: input has ", kdim,
                    " features in its last dimension but the weight has in_features=",
                    in_features);
  const int64_t gs = check_packed(op, packed, scales, zeros, bits, kdim);
  const int64_t n = packed.size(0);
  check_bias(op, bias, n);
  TORCH_CHECK_VALUE(!int8_activations || gs <= k::kMaxI8GroupSize, "qpart.linear: "
                    "int8_activations=True needs groups of at most ", k::kMaxI8GroupSize,
                    " inputs (exact int32 group sums), got ", gs,
                    "; quantize the weight with a smaller group_size");

  std::vector<int64_t> out_shape(input.sizes().begin(), input.sizes().end());
  out_shape.back() = n;
  const int64_t m = input.numel() / kdim;
  Tensor out = at::empty({m, n}, input.options().dtype(at::kFloat));
  if (m > 0) {
    const Tensor x = input.to(at::kFloat).contiguous();
    const Tensor p = packed.contiguous(), s = scales.contiguous(), z = zeros.contiguous();
    Tensor b;
    if (bias.has_value()) b = bias->to(at::kFloat).contiguous();
    const float* bias_ptr = b.defined() ? b.const_data_ptr<float>() : nullptr;
    float* y = out.mutable_data_ptr<float>();
    if (int8_activations) {
      // Integer path: int8 activations (quantized once per call, rows in parallel), then
      // integer dot products over the output columns in parallel.
      const k::CpuIsa isa = k::active_cpu_isa();
      const int64_t groups = kdim / gs;
      Tensor q = at::empty({m, kdim}, x.options().dtype(at::kChar));
      Tensor xs = at::empty({m}, x.options());
      Tensor gsum = at::empty({m, groups}, x.options().dtype(at::kInt));
      int8_t* q_ptr = q.mutable_data_ptr<int8_t>();
      float* xs_ptr = xs.mutable_data_ptr<float>();
      int32_t* gsum_ptr = gsum.mutable_data_ptr<int32_t>();
      const float* x_ptr = x.const_data_ptr<float>();
      std::atomic<int> status{0};
      at::parallel_for(0, m, std::max<int64_t>(1, 65536 / kdim), [&](int64_t b, int64_t e) {
        const k::Status st = k::quantize_activations_i8(
            isa, x_ptr + b * kdim, e - b, kdim, gs, static_cast<int>(bits), q_ptr + b * kdim,
            xs_ptr + b, gsum_ptr + b * groups);
        if (st != k::Status::kOk) status.store(static_cast<int>(st));
      });
      TORCH_CHECK_VALUE(status.load() == 0, "qpart.linear: input contains NaN or Inf values "
                        "(int8_activations=True)");
      at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
        k::linear_i8(isa, q_ptr, xs_ptr, gsum_ptr, m, kdim, p.const_data_ptr<uint8_t>(),
                     scale_ptr(s), z.const_data_ptr<uint8_t>(), bias_ptr, n, gs,
                     static_cast<int>(bits), begin, end, y);
      });
      return out.view(out_shape).to(input.scalar_type());
    }
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      k::linear_f32(x.const_data_ptr<float>(), m, kdim, p.const_data_ptr<uint8_t>(),
                    scale_ptr(s), z.const_data_ptr<uint8_t>(), bias_ptr, n, gs,
                    static_cast<int>(bits), begin, end, y);
    });
  }
  return out.view(out_shape).to(input.scalar_type());
}

Tensor conv2d_cpu(const Tensor& input, const Tensor& packed, const Tensor& scales,
                  const Tensor& zeros, const std::optional<Tensor>& bias, int64_t bits,
                  at::IntArrayRef weight_shape, at::IntArrayRef stride, at::IntArrayRef padding,
                  at::IntArrayRef dilation, int64_t groups) {
  const char* op = "conv2d";
  check_cpu(op, "input", input);
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
  k::Conv2dShape shape{input.size(0), input.size(1), input.size(2), input.size(3),
                       weight_shape[0], weight_shape[2], weight_shape[3],
                       stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                       groups};
  TORCH_CHECK_VALUE(groups >= 1 && shape.c_in % groups == 0, "qpart.conv2d: groups ", groups,
                    " must be >= 1 and divide ", shape.c_in, " input channels");
  TORCH_CHECK_VALUE(shape.c_in / groups == weight_shape[1], "qpart.conv2d: input has ",
                    shape.c_in, " channels, so ", shape.c_in / groups,
                    " per group, but the weight expects ", weight_shape[1], " per group");
  const int64_t gs = check_packed(op, packed, scales, zeros, bits, shape.k());
  TORCH_CHECK_VALUE(packed.size(0) == shape.c_out, "qpart.conv2d: packed weight has ",
                    packed.size(0), " rows but weight_shape says ", shape.c_out);
  TORCH_CHECK_VALUE(shape.c_out % groups == 0, "qpart.conv2d: groups ", groups,
                    " must divide ", shape.c_out, " output channels");
  check_bias(op, bias, shape.c_out);
  const int64_t ho = shape.h_out(), wo = shape.w_out();
  TORCH_CHECK_VALUE(ho > 0 && wo > 0, "qpart.conv2d: input ", input.sizes().slice(2),
                    " is too small for kernel ", weight_shape.slice(2), " with padding ", padding,
                    " and dilation ", dilation);

  Tensor out = at::empty({shape.batch, shape.c_out, ho, wo}, input.options().dtype(at::kFloat));
  const int64_t items = shape.batch * groups;
  if (items > 0) {
    const Tensor x = input.to(at::kFloat).contiguous();
    const Tensor p = packed.contiguous(), s = scales.contiguous(), z = zeros.contiguous();
    Tensor b;
    if (bias.has_value()) b = bias->to(at::kFloat).contiguous();
    const float* bias_ptr = b.defined() ? b.const_data_ptr<float>() : nullptr;
    float* y = out.mutable_data_ptr<float>();
    at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(static_cast<size_t>(k::conv2d_scratch_floats(shape)));
      k::conv2d_f32(x.const_data_ptr<float>(), shape, p.const_data_ptr<uint8_t>(), scale_ptr(s),
                    z.const_data_ptr<uint8_t>(), bias_ptr, gs, static_cast<int>(bits), begin,
                    end, scratch.data(), y);
    });
  }
  return out.to(input.scalar_type());
}

std::tuple<Tensor, Tensor, Tensor> quantize_activation_cpu(const Tensor& input, int64_t bits,
                                                           bool per_token) {
  const char* op = "quantize_activation";
  check_bits(op, bits);
  check_cpu(op, "input", input);
  check_float(op, "input", input);
  TORCH_CHECK_VALUE(input.numel() > 0, "qpart.", op, ": input is empty (shape ", input.sizes(), ")");
  const int64_t kdim = (per_token && input.dim() >= 1) ? input.size(-1) : input.numel();
  return quantize_matrix(op, input.reshape({input.numel() / kdim, kdim}), bits, kdim);
}

Tensor dequantize_activation_cpu(const Tensor& packed, const Tensor& scales, const Tensor& zeros,
                                 int64_t bits, at::IntArrayRef shape, at::ScalarType dtype) {
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
  return dequantize_matrix(packed, scales, zeros, bits, kdim, kdim).view(shape).to(dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(qpart, CPU, m) {
  m.impl("quantize_weight", &quantize_weight_cpu);
  m.impl("dequantize_weight", &dequantize_weight_cpu);
  m.impl("linear", &linear_cpu);
  m.impl("conv2d", &conv2d_cpu);
  m.impl("quantize_activation", &quantize_activation_cpu);
  m.impl("dequantize_activation", &dequantize_activation_cpu);
}

}  // namespace qpart
