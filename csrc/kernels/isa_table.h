// Internal: one table row per CPU ISA (not installed, not stable).
//
// Everything the kernel core knows about an ISA sits in its row of the table in isa_table.cpp
// (modelled on ggml's type_traits_cpu): its name, its detection predicate, its kernels and
// its layout rules and tile constants. The rows are ordered best first; the active row is
// picked once, on first use (QPART_CPU_ISA or the best supported row), and set_cpu_isa()
// swaps it. linear.cpp, linear_i8.cpp, conv2d.cpp and quantize.cpp call through a row; no
// code outside isa_table.cpp tests for a particular ISA.
//
// Every architecture's table names every ISA (so that "avx2" parses on aarch64 and is
// reported as unsupported rather than unknown), but only the rows of the architecture being
// compiled have a predicate and kernels: the others keep IsaEntryPoints{} (all null).
#pragma once

#include <cstddef>
#include <cstdint>

#include "conv2d_i8_impl.h"
#include "conv2d_impl.h"
#include "dispatch.h"
#include "max_pool2d_impl.h"
#include "qpart_kernels.h"

namespace qpart {
namespace kernels {
namespace detail {

/// The predicate and kernels of one ISA, all null on architectures that do not build it.
/// A null kernel means "the portable path" (see IsaKernels).
struct IsaEntryPoints {
  /// Whether this CPU can run the row's kernels (feature detection, cached by the callee).
  bool (*supported)();
  /// Packed matmul on float activations (group_size % 8 == 0 or == k; the caller falls back
  /// to linear_f32_scalar otherwise). Null: linear_f32_scalar.
  void (*linear_f32)(const LinearArgs&);
  /// Integer packed matmul reading q in the row's layout (i8_plane_layout). Null:
  /// linear_i8_scalar.
  void (*linear_i8)(const LinearI8Args&);
  /// One row of quantize_activations_i8 in x's order; false on NaN/Inf. Null: the scalar one.
  bool (*quantize_row_i8)(const float* x, int64_t k, int8_t* q, float* scale);
  /// One group of quantize_rows (scale, zero point, one code per byte), bit-exact with the
  /// scalar quantizer. Null: the scalar quantizer.
  Status (*quantize_group)(const float* x, int64_t n, int bits, uint16_t* scale_bits, uint8_t* zero,
                           uint8_t* codes);
  /// Direct NCHW conv2d tile kernel (tiling from conv_tile). Null: im2col + linear_f32.
  void (*conv2d_tile)(const Conv2dArgs& a, const Conv2dTile& t, float* scratch);
  /// Max |x| of n floats, false on NaN/Inf (integer conv2d scales). Null: the scalar one.
  bool (*absmax_f32)(const float* x, int64_t n, float* amax);
  /// Direct integer conv2d tile kernel (conv2d_i8_impl.h). Null: the scalar kernel.
  void (*conv2d_i8_tile)(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch);
  /// Its input packer (units of the direct layout). Null: the portable one.
  void (*conv2d_i8_pack_input)(const float* x, const Conv2dShape& s, const float* scale,
                               int64_t u_begin, int64_t u_end, int8_t* out);
  /// Its weight panel builder (output channels). Null: the portable one.
  void (*conv2d_i8_pack_weights)(const Conv2dShape& s, const uint8_t* packed, int bits,
                                 int64_t co_begin, int64_t co_end, uint8_t* panel);
  /// Depthwise integer conv2d tile (conv2d_i8_depthwise.h). Null: no depthwise path (the
  /// generic kernels above run depthwise convs too).
  void (*conv2d_i8_dw_tile)(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch);
  /// Element quantizer of the integer conv's patch matrix (im2col plans) and depthwise
  /// planes. Null: portable.
  void (*conv2d_i8_quantize_row)(const float* x, int64_t n, float scale, int8_t* out);
  /// Gather of one output row of a patch-matrix block. Null: the portable one.
  void (*conv2d_i8_patch_row)(const int8_t* const src[4], int64_t stride_w, int64_t wo,
                              int8_t* dst);
  /// Float max pool of whole NCHW planes (max_pool2d_impl.h). Null: the portable rows.
  void (*max_pool2d_planes)(const MaxPool2dShape& s, const float* x, int64_t planes, float* scratch,
                            float* y);
  /// Integer conv2d tile with the output channels in the lanes, for the convs where
  /// conv_i8_lanes_applies (it reads its own weight panel, built by the entry below). Null: the
  /// direct tile above runs them.
  void (*conv2d_i8_lanes_tile)(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch);
  void (*conv2d_i8_lanes_pack_weights)(const Conv2dShape& s, const uint8_t* packed, int bits,
                                       int64_t co_begin, int64_t co_end, uint8_t* panel);
  /// Matrix-unit integer conv2d tile for the convs where conv_i8_amx_applies (it reads its own
  /// weight panel, built by the entry below). Null: the direct tile above runs them.
  void (*conv2d_i8_amx_tile)(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch);
  void (*conv2d_i8_amx_pack_weights)(const Conv2dShape& s, const uint8_t* packed, int bits,
                                     const uint8_t* zeros, int64_t co_begin, int64_t co_end,
                                     uint8_t* panel);
};

/// Register tile of a direct conv2d kernel: kMr output channels x kNr pixels, pixel tiles
/// rounded up to `lanes` (the vector width in floats).
struct ConvTileShape {
  int64_t mr, nr, lanes;
};

/// One ISA: its key, name, layout rules, tile constants and entry points.
struct IsaKernels {
  CpuIsa isa;        // row key (the public enum)
  const char* name;  // QPART_CPU_ISA / set_cpu_isa name
  /// Layout of the int8 activations its linear_i8 reads: true = for widths 1, 2 and 4, every
  /// full chunk of 16 * (8 / bits) codes of a group in bit-plane order (see i8_plane_chunk);
  /// false = x's order.
  bool i8_plane_layout;
  /// Whether its conv2d_i8_tile applies a ConvEpilogue (Conv2dI8Args::ep) as it stores; if
  /// not, conv2d_i8_items runs conv2d_epilogue over each tile afterwards.
  bool conv_i8_tile_fuses_epilogue;
  /// Scratch floats its linear_f32 needs for m x k inputs (0 without a SIMD linear_f32).
  int64_t (*linear_scratch_floats)(int64_t m, int64_t k);
  /// Register tile of its conv2d_tile ({0, 0, 1} without one).
  ConvTileShape conv_tile;
  IsaEntryPoints fn;
};

/// The rows of the table, best first (a range for range-for).
struct IsaRows {
  const IsaKernels* first;
  size_t count;
  const IsaKernels* begin() const { return first; }
  const IsaKernels* end() const { return first + count; }
};

/// Every row, best first; the last one is the portable scalar reference.
IsaRows isa_table();

/// The row of `isa` (every CpuIsa value has one).
const IsaKernels& isa_kernels(CpuIsa isa);

/// The row of active_cpu_isa().
const IsaKernels& active_isa_kernels();

/// Layout of q for the integer kernels of `isa`: for widths 1, 2 and 4 and rows with
/// i8_plane_layout, every full chunk of C = 16 * (8 / bits) codes (counted from its group's
/// start) is reordered so that position s * 16 + i holds code (8 / bits) * i + s (bit plane s
/// of the chunk's 16 packed bytes); every other position keeps x's order. Returns C, or 0 when
/// q keeps x's order.
inline int64_t i8_plane_chunk(const IsaKernels& row, int bits) {
  if (!row.i8_plane_layout) return 0;
  return (bits == 1 || bits == 2 || bits == 4) ? 16 * (8 / bits) : 0;
}
inline int64_t i8_plane_chunk(CpuIsa isa, int bits) {
  return i8_plane_chunk(isa_kernels(isa), bits);
}

}  // namespace detail
}  // namespace kernels
}  // namespace qpart
