// ATen glue: registers the torch-free CPU kernels for the qpart ops (schemas are defined
// once, in qpart_kernels/ops/library.py). Validates inputs with clear errors, converts
// activations to contiguous fp32, and splits the work with at::parallel_for so that
// torch.set_num_threads governs it. The quantize / dequantize ops are the device-generic
// bodies of shared/op_quantize-impl.h (shared with the CUDA glue) with the Cpu policy below.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <optional>
#include <tuple>
#include <vector>

#include "../kernels/qpart_kernels.h"
#include "conv_i8_panel_cache.h"
#include "op_checks.h"
#include "output_pool.h"
#include "shared/op_quantize-impl.h"

namespace qpart {
namespace {

namespace k = ::qpart::kernels;
using at::Tensor;

namespace chk = ::qpart::op_checks;
const at::Device kCpu(at::kCPU);

// Output columns per parallel chunk of the packed matmul: about 32k multiply-adds at least,
// so that tiny layers (MNIST's 32 -> 10) run on the calling thread instead of paying more for
// the thread hand-off than for the work.
int64_t column_grain(int64_t m, int64_t kdim) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, m * kdim));
}

// Runs body(work) on every thread of a small-batch packed matmul over n output columns: the
// columns are handed out in chunks of `chunk` by one shared counter (k::ColumnChunks) instead
// of one static share per thread. Layers too small to split (n <= grain) run on the caller.
template <typename Body>
void parallel_column_chunks(int64_t n, int64_t chunk, int64_t grain, const Body& body) {
  k::ColumnChunks work;
  work.n = n;
  work.chunk = std::max(chunk, grain);
  const int64_t chunks = (n + work.chunk - 1) / work.chunk;
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), chunks);
  if (workers <= 1 || n <= grain) {
    work.chunk = n;
    body(work);
    return;
  }
  at::parallel_for(0, workers, 1, [&](int64_t /*begin*/, int64_t /*end*/) { body(work); });
}

const uint16_t* scale_ptr(const Tensor& scales) {
  return reinterpret_cast<const uint16_t*>(scales.const_data_ptr<at::Half>());
}

// The CPU device policy of the shared quantize / dequantize bodies (shared/op_quantize-impl.h).
struct Cpu {
  static void check_device(const char* op, const char* name, const Tensor& t) {
    chk::on_device(op, name, t, kCpu);
  }

  struct Guard {  // nothing to enter on CPU
    Guard(const char* /*op*/, const Tensor& /*t*/) {}
  };

  // Shared by weight and activation quantization: a 2-D float matrix in row groups.
  static std::tuple<Tensor, Tensor, Tensor> quantize_matrix(const char* op, const Tensor& x2d,
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
      const k::Status st =
          k::quantize_rows(src, begin, end, kdim, group_size, static_cast<int>(bits), packed_ptr,
                           scale_out, zero_out);
      if (st != k::Status::kOk) status.store(static_cast<int>(st));
    });
    const auto st = static_cast<k::Status>(status.load());
    chk::quantize_status(op, bits, st == k::Status::kNonFinite, st == k::Status::kScaleOverflow);
    return {packed, scales, zeros};
  }

  static Tensor dequantize_matrix(const Tensor& packed, const Tensor& scales, const Tensor& zeros,
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
};

// The integer paths' limits: exact int32 group sums, finite weight scales.
void check_int8(const char* op, int64_t gs, const Tensor& scales) {
  TORCH_CHECK_VALUE(gs <= k::kMaxI8GroupSize, "qpart.", op,
                    ": int8_activations=True needs groups of at most ", k::kMaxI8GroupSize,
                    " inputs (exact int32 group sums), got ", gs,
                    "; quantize the weight with a smaller group_size");
  TORCH_CHECK_VALUE(k::fold_exact(nullptr, 0, scale_ptr(scales.contiguous()), scales.numel()),
                    "qpart.", op, ": int8_activations=True needs finite weight scales");
}

Tensor linear_cpu(const Tensor& input, const Tensor& packed, const Tensor& scales,
                  const Tensor& zeros, const std::optional<Tensor>& bias,
                  const c10::Scalar& bits_value, int64_t in_features, bool int8_activations) {
  const int64_t bits = chk::bits_arg("linear", bits_value);
  chk::on_device("linear", "input", input, kCpu);
  const chk::LinearDims dims = chk::linear(input, packed, scales, zeros, bias, bits, in_features);
  const int64_t kdim = dims.k, n = dims.n, gs = dims.group_size, m = dims.m;
  if (int8_activations) check_int8("linear", gs, scales);

  std::vector<int64_t> out_shape(input.sizes().begin(), input.sizes().end());
  out_shape.back() = n;
  Tensor out = glue::pooled_empty({m, n}, input.options().dtype(at::kFloat));
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
        const k::Status st = k::quantize_activations_i8(isa, x_ptr + b * kdim, e - b, kdim, gs,
                                                        static_cast<int>(bits), q_ptr + b * kdim,
                                                        xs_ptr + b, gsum_ptr + b * groups);
        if (st != k::Status::kOk) status.store(static_cast<int>(st));
      });
      TORCH_CHECK_VALUE(status.load() == 0,
                        "qpart.linear: input contains NaN or Inf values "
                        "(int8_activations=True)");
      const int64_t chunk = k::linear_gemv_chunk(m, kdim, static_cast<int>(bits));
      if (chunk > 0) {
        parallel_column_chunks(n, chunk, column_grain(m, kdim), [&](k::ColumnChunks& work) {
          k::linear_i8_chunks(isa, q_ptr, xs_ptr, gsum_ptr, m, kdim, p.const_data_ptr<uint8_t>(),
                              scale_ptr(s), z.const_data_ptr<uint8_t>(), bias_ptr, n, gs,
                              static_cast<int>(bits), work, y);
        });
        return out.view(out_shape).to(input.scalar_type());
      }
      at::parallel_for(0, n, column_grain(m, kdim), [&](int64_t begin, int64_t end) {
        k::linear_i8(isa, q_ptr, xs_ptr, gsum_ptr, m, kdim, p.const_data_ptr<uint8_t>(),
                     scale_ptr(s), z.const_data_ptr<uint8_t>(), bias_ptr, n, gs,
                     static_cast<int>(bits), begin, end, y);
      });
      return out.view(out_shape).to(input.scalar_type());
    }
    const int64_t chunk = k::linear_gemv_chunk(m, kdim, static_cast<int>(bits));
    if (chunk > 0) {  // batch <= 8 (GEMV-style): dynamic chunks
      parallel_column_chunks(n, chunk, column_grain(m, kdim), [&](k::ColumnChunks& work) {
        k::linear_f32_chunks(x.const_data_ptr<float>(), m, kdim, p.const_data_ptr<uint8_t>(),
                             scale_ptr(s), z.const_data_ptr<uint8_t>(), bias_ptr, n, gs,
                             static_cast<int>(bits), work, y);
      });
      return out.view(out_shape).to(input.scalar_type());
    }
    at::parallel_for(0, n, column_grain(m, kdim), [&](int64_t begin, int64_t end) {
      k::linear_f32(x.const_data_ptr<float>(), m, kdim, p.const_data_ptr<uint8_t>(), scale_ptr(s),
                    z.const_data_ptr<uint8_t>(), bias_ptr, n, gs, static_cast<int>(bits), begin,
                    end, y);
    });
  }
  return out.view(out_shape).to(input.scalar_type());
}

// Integer conv2d (qpart_kernels.h): per-image scales, the int8 image, the unpacked weight
// panel (cached by content, conv_i8_panel_cache.h), then the tiles. Each output element belongs to
// one tile and the kernels are bit-identical across ISAs, so threads never change the result.
void conv2d_i8_cpu(const Tensor& input, const k::Conv2dShape& shape, const Tensor& packed,
                   const Tensor& scales, const Tensor& zeros, const std::optional<Tensor>& bias,
                   int64_t gs, int64_t bits, const k::ConvEpilogue& ep, Tensor& out) {
  if (out.numel() == 0) return;
  const k::CpuIsa isa = k::active_cpu_isa();
  const Tensor x = input.to(at::kFloat).contiguous();
  const Tensor p = packed.contiguous(), s = scales.contiguous(), z = zeros.contiguous();
  Tensor b;
  if (bias.has_value()) b = bias->to(at::kFloat).contiguous();
  const float* bias_ptr = b.defined() ? b.const_data_ptr<float>() : nullptr;
  const float* x_ptr = x.const_data_ptr<float>();
  const int nb = static_cast<int>(bits);

  // Per-image scales, then the int8 layout. With at least as many images as threads each
  // image is one pass: its scale, then its units while it is still in cache (an image's units
  // are consecutive, Conv2dI8Plan). With fewer (batch 1) an image of at least 4096 floats is
  // cut into chunks, its scale the largest of theirs (k::int8_scale), and packed once all
  // scales are known. (The floor was 32768: ResNet-18's 14 x 14 and 7 x 7 inputs were scanned
  // and packed by one thread, 25-39 us against 17-22 us split, and the thread that packed
  // them ran its tiles 10-15 % faster than the other.)
  const int64_t image = shape.c_in * shape.h_in * shape.w_in;
  const int64_t threads = at::get_num_threads();
  const int64_t chunks = shape.batch >= threads ? 1 : std::clamp<int64_t>(image / 4096, 1, threads);
  const int64_t chunk = (image + chunks - 1) / chunks;
  const k::Conv2dI8Plan plan = k::conv2d_i8_plan(shape, gs, isa, at::get_num_threads());
  Tensor qin = glue::pooled_empty({plan.input_bytes}, x.options().dtype(at::kChar));
  int8_t* q_ptr = qin.mutable_data_ptr<int8_t>();
  const int64_t image_units = plan.input_units / shape.batch;
  Tensor part_scales = at::empty({shape.batch * chunks}, x.options());
  float* ps_ptr = part_scales.mutable_data_ptr<float>();
  std::atomic<int> status{0};
  at::parallel_for(0, shape.batch * chunks, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / chunks, c0 = (i % chunks) * chunk;
      const int64_t len = std::max<int64_t>(0, std::min(chunk, image - c0));
      if (k::int8_scale(isa, x_ptr + n * image + c0, len, ps_ptr + i) != k::Status::kOk) {
        status.store(1);
      } else if (chunks == 1) {
        k::conv2d_i8_pack_input(plan, x_ptr, shape, ps_ptr, n * image_units, (n + 1) * image_units,
                                q_ptr);
      }
    }
  });
  TORCH_CHECK_VALUE(status.load() == 0,
                    "qpart.conv2d: input contains NaN or Inf values (int8_activations=True)");
  const Tensor xs = chunks == 1 ? part_scales : part_scales.view({shape.batch, chunks}).amax(1);
  const float* xs_ptr = xs.const_data_ptr<float>();
  if (chunks > 1) {
    at::parallel_for(0, plan.input_units, 1, [&](int64_t u0, int64_t u1) {
      k::conv2d_i8_pack_input(plan, x_ptr, shape, xs_ptr, u0, u1, q_ptr);
    });
  }
  const uint8_t* panel_ptr = nullptr;
  // The unpacked weight panel, from the content-verified cache when these weights were seen.
  std::shared_ptr<const glue::ConvI8PanelCache::Entry> cached;
  if (plan.panel_bytes > 0) {
    const k::Conv2dShape& ts = plan.tile_shape;  // the panel's layout follows the tiles' shape
    const uint8_t* z_ptr = z.const_data_ptr<uint8_t>();
    // A zero-folded AMX panel depends on the zero points too: they join its identity bytes.
    const bool folded = k::conv2d_i8_zero_folded(plan, shape, nb, z_ptr);
    const glue::ConvI8PanelCache::Key key{
        ts.c_out, ts.c_in / ts.groups,
        ts.kh,    ts.kw,
        bits,     plan.amx ? (folded ? 2 : 1) : (plan.lanes ? 3 : 0)};
    cached = glue::ConvI8PanelCache::instance().get(
        key, p.const_data_ptr<uint8_t>(), static_cast<size_t>(p.numel()), folded ? z_ptr : nullptr,
        folded ? static_cast<size_t>(z.numel()) : 0, static_cast<size_t>(plan.panel_bytes),
        [&](uint8_t* dst) {
          at::parallel_for(0, shape.c_out, 8, [&](int64_t c0, int64_t c1) {
            k::conv2d_i8_pack_weights(plan, shape, p.const_data_ptr<uint8_t>(), nb, z_ptr, c0, c1,
                                      dst);
          });
        },
        [](const uint8_t* a, const uint8_t* b, size_t n) {
          std::atomic<bool> same{true};
          at::parallel_for(0, static_cast<int64_t>(n), 1 << 18, [&](int64_t i0, int64_t i1) {
            if (same.load(std::memory_order_relaxed) &&
                std::memcmp(a + i0, b + i0, static_cast<size_t>(i1 - i0)) != 0)
              same.store(false, std::memory_order_relaxed);
          });
          return same.load();
        });
    panel_ptr = cached->panel.data();
  }

  float* y = out.mutable_data_ptr<float>();
  at::parallel_for(0, plan.items, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> scratch(static_cast<size_t>(std::max<int64_t>(plan.scratch_bytes, 1)));
    k::conv2d_i8_items(plan, shape, q_ptr, panel_ptr, xs_ptr, p.const_data_ptr<uint8_t>(),
                       scale_ptr(s), z.const_data_ptr<uint8_t>(), bias_ptr, gs, nb, begin, end,
                       scratch.data(), y, ep);
  });
}

Tensor conv2d_cpu(const Tensor& input, const Tensor& packed, const Tensor& scales,
                  const Tensor& zeros, const std::optional<Tensor>& bias,
                  const c10::Scalar& bits_value, at::IntArrayRef weight_shape,
                  at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                  int64_t groups, bool int8_activations, const std::optional<Tensor>& residual,
                  bool relu) {
  const int64_t bits = chk::bits_arg("conv2d", bits_value);
  chk::on_device("conv2d", "input", input, kCpu);
  const chk::Conv2dDims d = chk::conv2d(input, packed, scales, zeros, bias, bits, weight_shape,
                                        stride, padding, dilation, groups);
  chk::conv2d_residual(residual, input, d);
  // The residual and ReLU run inside the tiles for float32 outputs; other dtypes add and clamp
  // after the conversion, as a separate add and ReLU would.
  const bool fused = input.scalar_type() == at::kFloat;
  Tensor res;
  if (fused && residual.has_value()) res = residual->contiguous();
  const k::ConvEpilogue ep{res.defined() ? res.const_data_ptr<float>() : nullptr, fused && relu};
  const auto finish = [&](Tensor out) {
    if (fused) return out;
    if (residual.has_value()) out.add_(*residual);
    if (relu) out.clamp_min_(0);
    return out;
  };
  const k::Conv2dShape shape{d.batch,    d.c_in,     d.h_in,  d.w_in,  d.c_out, d.kh,    d.kw,
                             d.stride_h, d.stride_w, d.pad_h, d.pad_w, d.dil_h, d.dil_w, d.groups};
  const int64_t gs = d.group_size, ho = d.h_out, wo = d.w_out;

  Tensor out =
      glue::pooled_empty({shape.batch, shape.c_out, ho, wo}, input.options().dtype(at::kFloat));
  if (int8_activations) {
    check_int8("conv2d", gs, scales);
    conv2d_i8_cpu(input, shape, packed, scales, zeros, bias, gs, bits, ep, out);
    return finish(out.to(input.scalar_type()));
  }
  // Work items are tiles of (output channels x output pixels) of every (image, group), so
  // batch 1 with one group still spreads over the threads; each output element belongs to
  // one tile, so the result does not depend on the thread count (which only sizes the tiles
  // so that they split evenly).
  const Tensor x = input.to(at::kFloat).contiguous();
  const Tensor p = packed.contiguous(), s = scales.contiguous(), z = zeros.contiguous();
  // NaN/Inf (or huge) inputs and non-finite scales run the portable per-term tiles: the direct
  // x86 kernels fold the zero points, which would turn Inf into NaN (qpart_kernels.h).
  const bool exact = k::fold_exact(x.const_data_ptr<float>(), x.numel(), scale_ptr(s), s.numel());
  const k::Conv2dPlan plan = exact
                                 ? k::conv2d_plan(shape, at::get_num_threads())
                                 : k::conv2d_plan(shape, k::CpuIsa::kScalar, at::get_num_threads());
  if (plan.items > 0) {
    Tensor b;
    if (bias.has_value()) b = bias->to(at::kFloat).contiguous();
    const float* bias_ptr = b.defined() ? b.const_data_ptr<float>() : nullptr;
    float* y = out.mutable_data_ptr<float>();
    at::parallel_for(0, plan.items, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(static_cast<size_t>(plan.scratch_floats));
      k::conv2d_f32_items(plan, x.const_data_ptr<float>(), shape, p.const_data_ptr<uint8_t>(),
                          scale_ptr(s), z.const_data_ptr<uint8_t>(), bias_ptr, gs,
                          static_cast<int>(bits), begin, end, scratch.data(), y, ep);
    });
  }
  return finish(out.to(input.scalar_type()));
}

}  // namespace

TORCH_LIBRARY_IMPL(qpart, CPU, m) {
  m.impl("quantize_weight", &glue::quantize_weight_impl<Cpu>);
  m.impl("dequantize_weight", &glue::dequantize_weight_impl<Cpu>);
  m.impl("linear", &linear_cpu);
  m.impl("conv2d", &conv2d_cpu);
  m.impl("quantize_activation", &glue::quantize_activation_impl<Cpu>);
  m.impl("dequantize_activation", &glue::dequantize_activation_impl<Cpu>);
}

}  // namespace qpart
