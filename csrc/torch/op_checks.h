// Argument validation of the qpart ops, shared by every ATen glue layer (CPU, CUDA).
//
// Each check raises c10::ValueError / c10::TypeError (Python ValueError / TypeError) with
// a message naming the op and the argument, matching qpart_kernels/ops/checks.py. The
// checks are device-independent; a glue layer adds `on_device` for its own device.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/Scalar.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>

namespace qpart {
namespace op_checks {

using at::Tensor;

constexpr int64_t kMinBits = 1;
constexpr int64_t kMaxBits = 8;
/// Largest conv2d stride, padding or dilation (2^31 - 1): larger ones have no use, and the
/// reference's F.conv2d (oneDNN) fails on some (e.g. an int64-max stride), so both reject them.
constexpr int64_t kMaxConvParam = 2147483647;

// ---- checked geometry ------------------------------------------------------------------
//
// Every size computed from user input goes through these helpers, so that no int64 overflow
// reaches an allocation, an index or a kernel launch. They raise the same ValueError as
// qpart_kernels/ops/checks.py (which applies the same bounds to Python's unbounded ints), so
// the native ops and the reference accept exactly the same inputs.

/// `a * b`; raises "<what> overflows int64" instead of wrapping.
inline int64_t checked_mul(const char* op, const char* what, int64_t a, int64_t b) {
  int64_t out = 0;
  TORCH_CHECK_VALUE(!__builtin_mul_overflow(a, b, &out), "qpart.", op, ": ", what, " (", a, " * ",
                    b, ") overflows int64");
  return out;
}

/// `a + b`; raises "<what> overflows int64" instead of wrapping.
inline int64_t checked_add(const char* op, const char* what, int64_t a, int64_t b) {
  int64_t out = 0;
  TORCH_CHECK_VALUE(!__builtin_add_overflow(a, b, &out), "qpart.", op, ": ", what, " (", a, " + ",
                    b, ") overflows int64");
  return out;
}

/// Bytes of one packed row of `k` codes at `bits` bits (docs/FORMAT.md), overflow-checked.
inline int64_t packed_row_bytes(const char* op, int64_t k, int64_t bits) {
  return checked_add(op, "packed row bits", checked_mul(op, "packed row bits", k, bits), 7) / 8;
}

/// One spatial dimension of a convolution: the output size of an input of `in` elements with
/// `pad` on both sides, a kernel of `kernel` taps `dil` apart and `stride`, with floor
/// semantics (a padded input smaller than the dilated kernel is rejected, never rounded up
/// to one output). Raises on int64 overflow. Returns 0 when the input is too small.
inline int64_t conv_output_size(const char* op, int64_t in, int64_t kernel, int64_t stride,
                                int64_t pad, int64_t dil) {
  const int64_t padded =
      checked_add(op, "padded input size", in, checked_mul(op, "padding", 2, pad));
  const int64_t span = checked_add(op, "dilated kernel size",
                                   checked_mul(op, "dilated kernel size", dil, kernel - 1), 1);
  if (padded < span) return 0;
  return (padded - span) / stride + 1;
}

inline void bits(const char* op, int64_t bits) {
  TORCH_CHECK_VALUE(bits >= kMinBits && bits <= kMaxBits, "qpart.", op,
                    ": bits must be in 1..8, got ", bits);
}

/// The `bits` argument of an op as the schema passes it (a Scalar, so that a Python bool or
/// float is still recognizable here): a real integer in 1..8, else TypeError / ValueError,
/// like qpart_kernels/ops/checks.py::check_bits.
inline int64_t bits_arg(const char* op, const c10::Scalar& bits_value) {
  TORCH_CHECK_TYPE(bits_value.isIntegral(/*includeBool=*/false), "qpart.", op,
                   ": bits must be an int in 1..8, got ", bits_value, " (", bits_value.type(), ")");
  const int64_t value = bits_value.toLong();
  bits(op, value);
  return value;
}

/// `t` must live on `device` (the device whose kernel runs).
inline void on_device(const char* op, const char* name, const Tensor& t, const at::Device& device) {
  TORCH_CHECK_VALUE(t.device() == device, "qpart.", op, ": ", name, " must be a ",
                    c10::DeviceTypeName(device.type()), " tensor on ", device,
                    " like the other arguments, got ", t.device());
}

inline void float_tensor(const char* op, const char* name, const Tensor& t) {
  const auto st = t.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kHalf || st == at::kBFloat16, "qpart.", op, ": ",
                   name, " must be float32, float16 or bfloat16, got ", st);
}

inline void output_dtype(const char* op, at::ScalarType dtype) {
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, "qpart.",
                   op, ": dtype must be float32, float16 or bfloat16, got ", dtype);
}

inline void group_size(const char* op, int64_t kdim, int64_t group_size) {
  TORCH_CHECK_VALUE(group_size > 0 && kdim % group_size == 0, "qpart.", op, ": group_size ",
                    group_size, " must be positive and divide the reduction size ", kdim);
  TORCH_CHECK_VALUE(group_size == kdim || group_size % 32 == 0, "qpart.", op, ": group_size ",
                    group_size, " must be a multiple of 32 (or equal the reduction size ", kdim,
                    " for one group per row)");
}

/// A packed weight of `kdim` columns (dtypes and shapes); returns its group size.
inline int64_t packed(const char* op, const Tensor& packed, const Tensor& scales,
                      const Tensor& zeros, int64_t nbits, int64_t kdim) {
  bits(op, nbits);
  on_device(op, "scales", scales, packed.device());
  on_device(op, "zeros", zeros, packed.device());
  TORCH_CHECK_TYPE(packed.scalar_type() == at::kByte, "qpart.", op,
                   ": packed weight must be uint8, got ", packed.scalar_type());
  TORCH_CHECK_TYPE(scales.scalar_type() == at::kHalf, "qpart.", op,
                   ": scales must be float16, got ", scales.scalar_type());
  TORCH_CHECK_TYPE(zeros.scalar_type() == at::kByte, "qpart.", op, ": zeros must be uint8, got ",
                   zeros.scalar_type());
  TORCH_CHECK_VALUE(packed.dim() == 2 && scales.dim() == 2 && zeros.dim() == 2, "qpart.", op,
                    ": packed weight, scales and zeros must be 2-D");
  TORCH_CHECK_VALUE(packed.numel() > 0, "qpart.", op, ": packed weight is empty");
  TORCH_CHECK_VALUE(kdim > 0, "qpart.", op, ": the reduction size must be positive, got ", kdim);
  const int64_t expected = packed_row_bytes(op, kdim, nbits);
  TORCH_CHECK_VALUE(packed.size(1) == expected, "qpart.", op, ": packed weight has ",
                    packed.size(1), " bytes per row but ", kdim, " columns at ", nbits,
                    " bits need ", expected);
  TORCH_CHECK_VALUE(scales.sizes() == zeros.sizes() && scales.size(0) == packed.size(0), "qpart.",
                    op, ": scales and zeros must both be (", packed.size(0), ", groups)");
  const int64_t groups = scales.size(1);
  TORCH_CHECK_VALUE(groups > 0 && kdim % groups == 0, "qpart.", op, ": ", groups,
                    " groups per row do not divide ", kdim, " columns");
  group_size(op, kdim, kdim / groups);
  return kdim / groups;
}

/// An optional float bias of `n` elements on `device`.
inline void bias(const char* op, const std::optional<Tensor>& bias, int64_t n,
                 const at::Device& device) {
  if (!bias.has_value()) return;
  on_device(op, "bias", *bias, device);
  float_tensor(op, "bias", *bias);
  TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == n, "qpart.", op,
                    ": bias must have shape (", n, ",), got ", bias->sizes());
}

/// A float (out, in) weight to quantize (finiteness is checked by the kernels).
inline void weight(const char* op, const Tensor& weight, int64_t nbits, int64_t gs) {
  bits(op, nbits);
  float_tensor(op, "weight", weight);
  TORCH_CHECK_VALUE(weight.dim() == 2, "qpart.", op, ": weight must be 2-D (out, in), got ",
                    weight.sizes());
  TORCH_CHECK_VALUE(weight.numel() > 0, "qpart.", op, ": weight is empty (shape ", weight.sizes(),
                    ")");
  group_size(op, weight.size(1), gs);
}

struct LinearDims {
  int64_t m, k, n, group_size;
};

/// All arguments of qpart.linear; returns the problem size.
inline LinearDims linear(const Tensor& input, const Tensor& packed_w, const Tensor& scales,
                         const Tensor& zeros, const std::optional<Tensor>& bias_t, int64_t nbits,
                         int64_t in_features) {
  const char* op = "linear";
  float_tensor(op, "input", input);
  TORCH_CHECK_VALUE(input.dim() >= 1, "qpart.linear: input must have at least one dimension");
  const int64_t kdim = input.size(-1);
  TORCH_CHECK_VALUE(kdim == in_features, "qpart.linear: input has ", kdim,
                    " features in its last dimension but the weight has in_features=", in_features);
  on_device(op, "packed weight", packed_w, input.device());
  const int64_t gs = packed(op, packed_w, scales, zeros, nbits, kdim);
  bias(op, bias_t, packed_w.size(0), input.device());
  return {input.numel() / kdim, kdim, packed_w.size(0), gs};
}

struct Conv2dDims {
  int64_t batch, c_in, h_in, w_in, c_out, kh, kw;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
  int64_t h_out, w_out, k, group_size;
};

/// All arguments of qpart.conv2d; returns the convolution's sizes.
inline Conv2dDims conv2d(const Tensor& input, const Tensor& packed_w, const Tensor& scales,
                         const Tensor& zeros, const std::optional<Tensor>& bias_t, int64_t nbits,
                         at::IntArrayRef weight_shape, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const char* op = "conv2d";
  float_tensor(op, "input", input);
  TORCH_CHECK_VALUE(input.dim() == 4, "qpart.conv2d: input must be 4-D (N, C, H, W), got ",
                    input.sizes());
  TORCH_CHECK_VALUE(weight_shape.size() == 4 && weight_shape[0] >= 1 && weight_shape[1] >= 1 &&
                        weight_shape[2] >= 1 && weight_shape[3] >= 1,
                    "qpart.conv2d: weight_shape must be 4 positive ints (out, in/groups, kh, "
                    "kw), got ",
                    weight_shape);
  TORCH_CHECK_VALUE(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
                    "qpart.conv2d: stride, padding and dilation must be pairs");
  TORCH_CHECK_VALUE(stride[0] >= 1 && stride[1] >= 1 && dilation[0] >= 1 && dilation[1] >= 1 &&
                        padding[0] >= 0 && padding[1] >= 0,
                    "qpart.conv2d: stride and dilation must be >= 1 and padding >= 0");
  for (const at::IntArrayRef pair : {stride, padding, dilation}) {
    TORCH_CHECK_VALUE(pair[0] <= kMaxConvParam && pair[1] <= kMaxConvParam,
                      "qpart.conv2d: stride, padding and dilation must be at most ", kMaxConvParam,
                      ", got stride ", stride, ", padding ", padding, ", dilation ", dilation);
  }
  Conv2dDims d{input.size(0),
               input.size(1),
               input.size(2),
               input.size(3),
               weight_shape[0],
               weight_shape[2],
               weight_shape[3],
               stride[0],
               stride[1],
               padding[0],
               padding[1],
               dilation[0],
               dilation[1],
               groups,
               0,
               0,
               0,
               0};
  TORCH_CHECK_VALUE(groups >= 1 && d.c_in % groups == 0, "qpart.conv2d: groups ", groups,
                    " must be >= 1 and divide ", d.c_in, " input channels");
  TORCH_CHECK_VALUE(d.c_in / groups == weight_shape[1], "qpart.conv2d: input has ", d.c_in,
                    " channels, so ", d.c_in / groups, " per group, but the weight expects ",
                    weight_shape[1], " per group");
  d.k = checked_mul(op, "weight row length",
                    checked_mul(op, "weight row length", weight_shape[1], d.kh), d.kw);
  on_device(op, "packed weight", packed_w, input.device());
  d.group_size = packed(op, packed_w, scales, zeros, nbits, d.k);
  TORCH_CHECK_VALUE(packed_w.size(0) == d.c_out, "qpart.conv2d: packed weight has ",
                    packed_w.size(0), " rows but weight_shape says ", d.c_out);
  TORCH_CHECK_VALUE(d.c_out % groups == 0, "qpart.conv2d: groups ", groups, " must divide ",
                    d.c_out, " output channels");
  bias(op, bias_t, d.c_out, input.device());
  d.h_out = conv_output_size(op, d.h_in, d.kh, d.stride_h, d.pad_h, d.dil_h);
  d.w_out = conv_output_size(op, d.w_in, d.kw, d.stride_w, d.pad_w, d.dil_w);
  TORCH_CHECK_VALUE(d.h_out > 0 && d.w_out > 0, "qpart.conv2d: input ", input.sizes().slice(2),
                    " is too small for kernel ", weight_shape.slice(2), " with padding ", padding,
                    " and dilation ", dilation);
  checked_mul(
      op, "output size",
      checked_mul(op, "output size", checked_mul(op, "output size", d.batch, d.c_out), d.h_out),
      d.w_out);
  return d;
}

/// qpart.conv2d's optional residual: the output's shape (N, C_out, H_out, W_out), the input's
/// dtype and device.
inline void conv2d_residual(const std::optional<Tensor>& residual, const Tensor& input,
                            const Conv2dDims& d) {
  if (!residual.has_value()) return;
  const Tensor& r = *residual;
  on_device("conv2d", "residual", r, input.device());
  TORCH_CHECK_VALUE(r.scalar_type() == input.scalar_type(), "qpart.conv2d: residual must have ",
                    "the input's dtype ", input.scalar_type(), ", got ", r.scalar_type());
  const std::vector<int64_t> want{d.batch, d.c_out, d.h_out, d.w_out};
  TORCH_CHECK_VALUE(r.sizes() == at::IntArrayRef(want), "qpart.conv2d: residual must have the ",
                    "output's shape ", at::IntArrayRef(want), ", got ", r.sizes());
}

/// Arguments of qpart.quantize_activation; returns the row length it is quantized in.
inline int64_t quantize_activation(const Tensor& input, int64_t nbits, bool per_token) {
  const char* op = "quantize_activation";
  bits(op, nbits);
  float_tensor(op, "input", input);
  TORCH_CHECK_VALUE(input.numel() > 0, "qpart.", op, ": input is empty (shape ", input.sizes(),
                    ")");
  return (per_token && input.dim() >= 1) ? input.size(-1) : input.numel();
}

/// Arguments of qpart.dequantize_activation; returns the row length.
inline int64_t dequantize_activation(const Tensor& packed_a, const Tensor& scales,
                                     const Tensor& zeros, int64_t nbits, at::IntArrayRef shape,
                                     at::ScalarType dtype) {
  const char* op = "dequantize_activation";
  output_dtype(op, dtype);
  int64_t numel = 1;
  for (int64_t d : shape) {
    TORCH_CHECK_VALUE(d >= 0, "qpart.", op, ": shape ", shape, " has a negative size");
    numel = checked_mul(op, "shape size", numel, d);
  }
  TORCH_CHECK_VALUE(numel > 0, "qpart.", op, ": shape ", shape, " is empty");
  TORCH_CHECK_VALUE(scales.dim() == 2 && scales.size(1) == 1, "qpart.", op,
                    ": scales must have shape (rows, 1), got ", scales.sizes());
  const int64_t rows = scales.size(0);
  TORCH_CHECK_VALUE(rows > 0 && numel % rows == 0, "qpart.", op, ": ", rows,
                    " rows do not divide the ", numel, " elements of ", shape);
  const int64_t kdim = numel / rows;
  packed(op, packed_a, scales, zeros, nbits, kdim);
  return kdim;
}

struct MaxPool2dDims {
  int64_t batch, channels, h_in, w_in, kh, kw, stride_h, stride_w, pad_h, pad_w, h_out, w_out;
};

/// All arguments of qpart.max_pool2d (what ATen's max_pool2d accepts for a 4-D input with
/// dilation 1 in floor mode); returns its sizes.
inline MaxPool2dDims max_pool2d(const Tensor& input, at::IntArrayRef kernel_size,
                                at::IntArrayRef stride, at::IntArrayRef padding) {
  const char* op = "max_pool2d";
  float_tensor(op, "input", input);
  TORCH_CHECK_VALUE(input.dim() == 4, "qpart.max_pool2d: input must be 4-D (N, C, H, W), got ",
                    input.sizes());
  const char* names[] = {"kernel_size", "stride", "padding"};
  const at::IntArrayRef pairs[] = {kernel_size, stride, padding};
  for (int i = 0; i < 3; ++i) {
    const int64_t low = i == 2 ? 0 : 1;
    const at::IntArrayRef p = pairs[i];
    TORCH_CHECK_VALUE(p.size() == 2 && p[0] >= low && p[1] >= low && p[0] <= kMaxConvParam &&
                          p[1] <= kMaxConvParam,
                      "qpart.max_pool2d: ", names[i], " must be two ints in ", low, "..",
                      kMaxConvParam, ", got ", p);
  }
  TORCH_CHECK_VALUE(2 * padding[0] <= kernel_size[0] && 2 * padding[1] <= kernel_size[1],
                    "qpart.max_pool2d: padding ", padding, " must be at most half the kernel size ",
                    kernel_size);
  TORCH_CHECK_VALUE(input.size(1) > 0 && input.size(2) > 0 && input.size(3) > 0,
                    "qpart.max_pool2d: input must have non-empty channels and planes, got ",
                    input.sizes());
  MaxPool2dDims d{input.size(0),
                  input.size(1),
                  input.size(2),
                  input.size(3),
                  kernel_size[0],
                  kernel_size[1],
                  stride[0],
                  stride[1],
                  padding[0],
                  padding[1],
                  0,
                  0};
  d.h_out = conv_output_size(op, d.h_in, d.kh, d.stride_h, d.pad_h, 1);
  d.w_out = conv_output_size(op, d.w_in, d.kw, d.stride_w, d.pad_w, 1);
  TORCH_CHECK_VALUE(d.h_out > 0 && d.w_out > 0, "qpart.max_pool2d: input ", input.sizes().slice(2),
                    " is too small for kernel ", kernel_size, " with padding ", padding);
  return d;
}

/// Outcome of a device quantizer: NaN/Inf in the input, or a group whose range does not fit a
/// float16 scale at `bits`, raise the same ValueError on every device.
inline void quantize_status(const char* op, int64_t bits, bool non_finite, bool scale_overflow) {
  TORCH_CHECK_VALUE(!non_finite, "qpart.", op, ": input contains NaN or Inf values");
  TORCH_CHECK_VALUE(!scale_overflow, "qpart.", op,
                    ": a group's value range is too wide for a float16 scale at ", bits, " bits");
}

}  // namespace op_checks
}  // namespace qpart
