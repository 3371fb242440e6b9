// The ATen glue bodies of the quantize / dequantize ops (weights and activations), written
// once for every device (after torchao's shared_kernels/<op>/op_<op>-impl.h) and
// instantiated by the CPU glue (csrc/torch/ops_cpu.cpp) and the CUDA glue
// (csrc/cuda/ops_cuda.cpp) with their device policy. A body validates the arguments (same
// checks and messages on every device, op_checks.h), enters the device and runs the
// device's matrix (de)quantizer.
//
// Device (the policy) provides:
//   check_device(op, name, t)   `t`, the op's main tensor, is on the device the kernel runs on;
//   Guard(op, t)                constructed after the argument checks, alive while the kernels
//                               run: device-specific checks (e.g. the CUDA compute capability)
//                               and the current-device guard; nothing on CPU;
//   quantize_matrix(op, x2d, bits, group_size) -> (packed, scales, zeros)
//                               a 2-D float matrix quantized in row groups;
//   dequantize_matrix(packed, scales, zeros, bits, k, group_size) -> float32 [rows, k].
//
// Light headers only (no ATen/ATen.h): this is compiled into both glue layers.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <tuple>

#include "../op_checks.h"

namespace qpart {
namespace glue {

using at::Tensor;

template <typename Device>
std::tuple<Tensor, Tensor, Tensor> quantize_weight_impl(const Tensor& weight,
                                                        const c10::Scalar& bits_value,
                                                        int64_t group_size) {
  const char* op = "quantize_weight";
  const int64_t bits = op_checks::bits_arg(op, bits_value);
  Device::check_device(op, "weight", weight);
  op_checks::weight(op, weight, bits, group_size);
  const typename Device::Guard guard(op, weight);
  return Device::quantize_matrix(op, weight, bits, group_size);
}

template <typename Device>
Tensor dequantize_weight_impl(const Tensor& packed, const Tensor& scales, const Tensor& zeros,
                              const c10::Scalar& bits_value, int64_t in_features) {
  const char* op = "dequantize_weight";
  const int64_t bits = op_checks::bits_arg(op, bits_value);
  Device::check_device(op, "packed weight", packed);
  const int64_t gs = op_checks::packed(op, packed, scales, zeros, bits, in_features);
  const typename Device::Guard guard(op, packed);
  return Device::dequantize_matrix(packed, scales, zeros, bits, in_features, gs);
}

/// Activations: one quantization group per row of the last dimension (per tensor when
/// per_token is false, checked by op_checks::quantize_activation).
template <typename Device>
std::tuple<Tensor, Tensor, Tensor> quantize_activation_impl(const Tensor& input,
                                                            const c10::Scalar& bits_value,
                                                            bool per_token) {
  const char* op = "quantize_activation";
  const int64_t bits = op_checks::bits_arg(op, bits_value);
  Device::check_device(op, "input", input);
  const int64_t kdim = op_checks::quantize_activation(input, bits, per_token);
  const typename Device::Guard guard(op, input);
  return Device::quantize_matrix(op, input.reshape({input.numel() / kdim, kdim}), bits, kdim);
}

template <typename Device>
Tensor dequantize_activation_impl(const Tensor& packed, const Tensor& scales, const Tensor& zeros,
                                  const c10::Scalar& bits_value, at::IntArrayRef shape,
                                  at::ScalarType dtype) {
  const char* op = "dequantize_activation";
  const int64_t bits = op_checks::bits_arg(op, bits_value);
  Device::check_device(op, "packed", packed);
  const int64_t kdim = op_checks::dequantize_activation(packed, scales, zeros, bits, shape, dtype);
  const typename Device::Guard guard(op, packed);
  return Device::dequantize_matrix(packed, scales, zeros, bits, kdim, kdim).view(shape).to(dtype);
}

}  // namespace glue
}  // namespace qpart
