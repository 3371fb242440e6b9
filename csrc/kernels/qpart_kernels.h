// QPART torch-free kernel core: raw-pointer kernels for the packed low-bit format.
//
// Everything here is plain C++17 with no torch dependency so that it builds and is
// unit-tested on its own (CMake + GoogleTest), cross-compiles for aarch64, and sits under
// a thin ATen glue layer (csrc/torch/). The packed format is documented in docs/FORMAT.md.
//
// Conventions shared by every function:
//  * A matrix of `rows` x `k` quantization codes is stored as `rows` independent bit
//    streams of `packed_row_bytes(k, bits)` bytes each. Code j of a row occupies stream
//    bits [j*bits, (j+1)*bits); stream bit i is bit (i % 8) of byte i / 8 (LSB first).
//    Padding bits at the end of a row are zero.
//  * Rows are quantized in groups of `group_size` consecutive codes (k % group_size == 0);
//    each group has an fp16 scale (stored as its IEEE binary16 bit pattern, uint16_t) and
//    a uint8 zero point in [0, 2^bits - 1]. Value = (code - zero) * scale.
//  * Functions taking [row_begin, row_end) process only those rows, so callers can split
//    the work across threads; the results never depend on the split.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace qpart {
namespace kernels {

constexpr int kMinBits = 1;
constexpr int kMaxBits = 8;

/// Number of bytes of one packed row of `k` codes at `bits` bits (ceil(k * bits / 8)).
inline int64_t packed_row_bytes(int64_t k, int bits) {
  return (k * static_cast<int64_t>(bits) + 7) / 8;
}

/// Largest code at `bits` bits (2^bits - 1).
inline int max_code(int bits) { return (1 << bits) - 1; }

// ---- CPU ISA dispatch -----------------------------------------------------------------------
//
// linear_f32 (and, through it, conv2d_f32) picks a SIMD implementation at run time: on x86-64
// AVX-512 (F, BW, VL, VNNI and VBMI, as on Ice Lake and later) or AVX2+FMA, NEON on aarch64
// (baseline), else the portable scalar code (which stays the reference). The kAvx512 level
// implies AVX2: ops without an AVX-512 kernel run their AVX2 one there. The kAmx level (AMX-TILE
// and AMX-INT8, Sapphire Rapids and later) is kAvx512 plus the AMX integer conv2d tile. The
// environment variable QPART_CPU_ISA (scalar|avx2|avx512|amx|neon|auto), read on first use, or
// set_cpu_isa()
// forces a path. Internally each ISA is one row of a table (csrc/kernels/isa_table.cpp: its
// name, detection, kernels, layout rules and tile constants); CpuIsa is the row key.

enum class CpuIsa : int { kScalar = 0, kAvx2 = 1, kNeon = 2, kAvx512 = 3, kAmx = 4 };

/// Whether `isa` is one of the x86 SIMD levels (AVX2, AVX-512 or AMX, each implying the ones
/// before).
inline bool is_x86_simd(CpuIsa isa) {
  return isa == CpuIsa::kAvx2 || isa == CpuIsa::kAvx512 || isa == CpuIsa::kAmx;
}

/// Whether this build and CPU can run `isa` (scalar: always).
bool cpu_isa_supported(CpuIsa isa);
/// The fastest supported ISA.
CpuIsa best_cpu_isa();
/// The ISA the kernels use now.
CpuIsa active_cpu_isa();
/// Forces `isa` for subsequent calls; returns false (and changes nothing) if unsupported.
/// Not synchronized with kernels running concurrently: switch between calls.
bool set_cpu_isa(CpuIsa isa);
/// "scalar", "avx2", "avx512", "amx" or "neon".
const char* cpu_isa_name(CpuIsa isa);
/// Parses a name as above ("auto" gives best_cpu_isa()); false if unknown.
bool parse_cpu_isa(const char* name, CpuIsa* isa);

// ---- fp16 helpers (IEEE binary16, round to nearest even) ---------------------------------

/// Converts a float to the bit pattern of the nearest binary16 value (ties to even).
uint16_t float_to_half_bits(float value);
/// Converts a binary16 bit pattern to float (exact).
float half_bits_to_float(uint16_t bits);

// ---- bit packing ------------------------------------------------------------------------

/// Packs `rows` x `k` codes (one per byte, each < 2^bits) into dense rows.
/// `packed` receives rows * packed_row_bytes(k, bits) bytes.
void pack_rows(const uint8_t* codes, int64_t rows, int64_t k, int bits, uint8_t* packed);

/// Unpacks dense rows back to one code per byte (`codes` receives rows * k bytes).
void unpack_rows(const uint8_t* packed, int64_t rows, int64_t k, int bits, uint8_t* codes);

// ---- quantizer ----------------------------------------------------------------------------

enum class Status : int {
  kOk = 0,
  kNonFinite = 1,      // a NaN or Inf input value
  kScaleOverflow = 2,  // a group's range is too wide for an fp16 scale
};

/// Computes the fp16 scale and zero point of one group of `n` floats at `bits` bits.
/// Range [lo, hi] = [min(0, min x), max(0, max x)]; delta = (hi - lo) / (2^bits - 1) is
/// rounded *up* to binary16 so the grid covers the range; zero = round(-lo / scale).
/// An all-zero group gets scale 0 and zero point 0.
Status group_params(const float* x, int64_t n, int bits, uint16_t* scale_bits, uint8_t* zero);

/// Quantizes rows [row_begin, row_end) of a row-major `rows` x `k` float matrix in groups
/// of `group_size` along k and writes their packed codes, scales and zero points
/// (scales/zeros are `rows` x (k / group_size), row-major). On error the outputs of the
/// failing row are unspecified and the first failing status is returned.
Status quantize_rows(const float* x, int64_t row_begin, int64_t row_end, int64_t k,
                     int64_t group_size, int bits, uint8_t* packed, uint16_t* scale_bits,
                     uint8_t* zeros);

/// Dequantizes rows [row_begin, row_end) of a packed matrix into `out` (row-major, k columns).
void dequantize_rows(const uint8_t* packed, const uint16_t* scale_bits, const uint8_t* zeros,
                     int64_t row_begin, int64_t row_end, int64_t k, int64_t group_size, int bits,
                     float* out);

// ---- packed matmul ----------------------------------------------------------------------
//
// IEEE semantics: the SIMD kernels fold the zero points, s * (sum x*code - z * sum x), which
// turns an Inf input into Inf - Inf = NaN (and can overflow on huge finite inputs) where the
// reference's per-term products x * ((code - z) * s) give +-Inf. Operands that are not
// fold_exact therefore run the portable per-term kernel (linear_f32 does this itself; conv2d
// callers pick conv2d_plan(s, CpuIsa::kScalar, ...)), so NaN/Inf give what the reference gives
// on every ISA.

/// Largest |x| the zero-point folding sums without overflow (2^60; see fold_exact).
constexpr float kFoldSafeAbs = 1152921504606846976.0f;

/// Whether the folding SIMD kernels give the reference's value for these operands: every
/// |x[i]| <= kFoldSafeAbs (so no NaN/Inf) and every fp16 scale finite.
bool fold_exact(const float* x, int64_t n, const uint16_t* scale_bits, int64_t n_scales);

/// y[m, n] = sum_k x[m, k] * W[n, k] + bias[n] for output columns n in [n_begin, n_end),
/// where W (n_total x k) is packed. x is row-major m x k, y row-major m x n_total.
/// `bias` may be null. Accumulates in fp32. Operands that are not fold_exact run the
/// portable per-term kernel whatever the ISA (IEEE semantics of the reference).
void linear_f32(const float* x, int64_t m, int64_t k, const uint8_t* packed,
                const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                int64_t n_total, int64_t group_size, int bits, int64_t n_begin, int64_t n_end,
                float* y);

/// Output columns handed out one chunk at a time to the threads of one packed matmul call
/// (small batches; see linear_gemv_chunk): each thread takes the next chunk from `next`
/// until all of [0, n) are taken, so a thread that starts late or is slowed by another
/// process takes fewer chunks instead of leaving the others waiting.
struct ColumnChunks {
  std::atomic<int64_t> next{0};  // index of the next chunk to hand out
  int64_t n = 0;                 // output columns in all
  int64_t chunk = 1;             // columns per chunk (the last one may be shorter)

  /// Claims the next chunk as [*begin, *end); false when none is left.
  bool take(int64_t* begin, int64_t* end) {
    const int64_t c = next.fetch_add(1, std::memory_order_relaxed);
    if (c * chunk >= n) return false;
    *begin = c * chunk;
    *end = (c + 1) * chunk < n ? (c + 1) * chunk : n;
    return true;
  }
};

/// Columns per chunk for dynamic hand-out when `m` rows are multiplied with packed rows of `k`
/// codes at `bits` bits: about kGemvChunkBytes of weights, a multiple of 8 columns; 0 when
/// m is beyond the GEMV-style path (m > 8: the blocked GEMM keeps a static split).
constexpr int64_t kGemvChunkBytes = 32768;
int64_t linear_gemv_chunk(int64_t m, int64_t k, int bits);

/// linear_f32 over the chunks this thread takes from `work` (every thread of the call calls it
/// once, with the same arguments; columns [0, work.n) of n_total). The per-call setup (the fold
/// check of x, the group sums of x, x's plane order) runs once per thread, not per chunk.
/// Same values as linear_f32 whatever the hand-out.
void linear_f32_chunks(const float* x, int64_t m, int64_t k, const uint8_t* packed,
                       const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                       int64_t n_total, int64_t group_size, int bits, ColumnChunks& work, float* y);

// ---- integer path: int8 activations x low-bit codes -------------------------------------
//
// Opt-in (it changes numerics): activations are quantized per row (per token), symmetric,
// scale_x[i] = max_j |x[i, j]| / 127 (0 for an all-zero row), q = clamp(rint(x / scale_x),
// -127, 127) with a true division and round-half-to-even (bit-exact across ISAs and with
// the Python reference); then
//   y[i, n] = scale_x[i] * sum_g scale_w[n, g] * (sum_{j in g} q[i, j] * code[n, j]
//                                                 - zero[n, g] * gsum[i, g]) + bias[n]
// where the inner sums are exact int32 (group_size <= kMaxI8GroupSize keeps them in range).

/// Largest group (reduction length per scale) the integer path accepts.
constexpr int64_t kMaxI8GroupSize = 65536;

/// Quantizes the m x k activations for linear_i8 with the given `isa` (q: m * k int8 in the
/// layout that ISA's kernel reads; scale: m floats; gsum: m * (k / group_size) int32, the
/// sum of q over each weight group). Returns kNonFinite if x has a NaN or Inf.
Status quantize_activations_i8(CpuIsa isa, const float* x, int64_t m, int64_t k, int64_t group_size,
                               int bits, int8_t* q, float* scale, int32_t* gsum);

/// Integer packed matmul over output columns [n_begin, n_end) (see above); q, scale and gsum
/// come from quantize_activations_i8 called with the same isa, k, group_size and bits.
/// `isa` must be supported (cpu_isa_supported).
void linear_i8(CpuIsa isa, const int8_t* q, const float* scale, const int32_t* gsum, int64_t m,
               int64_t k, const uint8_t* packed, const uint16_t* scale_bits, const uint8_t* zeros,
               const float* bias, int64_t n_total, int64_t group_size, int bits, int64_t n_begin,
               int64_t n_end, float* y);

/// linear_i8 over the chunks this thread takes from `work` (see linear_f32_chunks).
void linear_i8_chunks(CpuIsa isa, const int8_t* q, const float* scale, const int32_t* gsum,
                      int64_t m, int64_t k, const uint8_t* packed, const uint16_t* scale_bits,
                      const uint8_t* zeros, const float* bias, int64_t n_total, int64_t group_size,
                      int bits, ColumnChunks& work, float* y);

/// Whether the aarch64 kernel uses the dot-product extension (sdot) on this CPU; false
/// elsewhere. QPART_NO_DOTPROD=1 forces the plain NEON fallback.
bool cpu_has_dotprod();

/// Shape of a 2-D convolution over NCHW input, weights [c_out, c_in / groups, kh, kw]
/// packed as c_out rows of k = (c_in / groups) * kh * kw codes in (ci, r, s) order.
struct Conv2dShape {
  int64_t batch, c_in, h_in, w_in;
  int64_t c_out, kh, kw;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t groups;

  int64_t h_out() const { return (h_in + 2 * pad_h - dil_h * (kh - 1) - 1) / stride_h + 1; }
  int64_t w_out() const { return (w_in + 2 * pad_w - dil_w * (kw - 1) - 1) / stride_w + 1; }
  int64_t k() const { return (c_in / groups) * kh * kw; }
};

/// How conv2d splits its work: every (image, group) is cut into tiles of up to `co_block`
/// output channels x `px_block` output pixels; a work item is one tile, numbered
/// ((image * groups + group) * co_blocks + co_tile) * px_blocks + px_tile. Each output
/// element is computed inside exactly one tile, in an order fixed by the plan alone, so the
/// result does not depend on how the items are split across calls or threads.
struct Conv2dPlan {
  CpuIsa isa;                    // kernel family the tiles run with
  int64_t co_block, px_block;    // tile size (output channels, output pixels)
  int64_t co_blocks, px_blocks;  // tiles per (image, group) along each dimension
  int64_t items;                 // batch * groups * co_blocks * px_blocks
  int64_t scratch_floats;        // scratch one conv2d_f32_items call needs
};

/// The tiling for `isa` (default: active_cpu_isa()); `isa` must be supported to run it.
/// `threads` (how many threads will share the items) may only change the tile sizes of the
/// x86 kernels, whose values never depend on them: the result is the same for any value.
Conv2dPlan conv2d_plan(const Conv2dShape& s, CpuIsa isa, int threads = 1);
Conv2dPlan conv2d_plan(const Conv2dShape& s, int threads = 1);

/// What a convolution does to each output value after its bias, while the tile is in cache:
/// `v = v + residual[i]` (residual: an NCHW tensor of the output's shape, same index i; null:
/// none), then, if `relu`, `v = v < 0 ? 0 : v` (NaN stays NaN). Each is one float operation
/// rounded on its own, so the result is bit-identical to the convolution followed by a separate
/// add and ReLU.
struct ConvEpilogue {
  const float* residual = nullptr;
  bool relu = false;
  bool active() const { return residual != nullptr || relu; }
};

/// Applies `ep` to output channels [co0, co0 + co_n) x output pixels [p0, p0 + p_n) of image
/// `image` of y (NCHW, shape s).
void conv2d_epilogue(const ConvEpilogue& ep, const Conv2dShape& s, int64_t image, int64_t co0,
                     int64_t co_n, int64_t p0, int64_t p_n, float* y);

/// Packed conv2d for the work items [item_begin, item_end) of `plan` (see Conv2dPlan): writes
/// exactly those tiles of y (NCHW, batch x c_out x h_out x w_out), each with `ep` applied.
/// `scratch` holds plan.scratch_floats floats. `bias` may be null. x86 AVX2/AVX-512 run a
/// direct NCHW kernel (x86/conv2d_*.cpp); other ISAs run im2col + linear_f32 per tile.
void conv2d_f32_items(const Conv2dPlan& plan, const float* x, const Conv2dShape& s,
                      const uint8_t* packed, const uint16_t* scale_bits, const uint8_t* zeros,
                      const float* bias, int64_t group_size, int bits, int64_t item_begin,
                      int64_t item_end, float* scratch, float* y, const ConvEpilogue& ep = {});

/// Scratch floats conv2d_f32 needs under any ISA.
int64_t conv2d_scratch_floats(const Conv2dShape& s);

/// Convenience form with (image, group) work items, item = image * groups + group: runs all
/// tiles of those items with conv2d_plan(s) (so the same values as conv2d_f32_items).
/// `scratch` holds conv2d_scratch_floats(s) floats. `bias` may be null.
void conv2d_f32(const float* x, const Conv2dShape& s, const uint8_t* packed,
                const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                int64_t group_size, int bits, int64_t item_begin, int64_t item_end, float* scratch,
                float* y, const ConvEpilogue& ep = {});

// ---- integer conv2d: int8 activations x low-bit codes ------------------------------------
//
// Opt-in (it changes numerics), like linear_i8. Each image n is quantized as a whole, symmetric:
// scale_x[n] = max |x[n]| / 127 over its c_in * h_in * w_in values (0 for an all-zero image),
// q = clamp(rint(x / scale_x), -127, 127) with a true division and round-half-to-even (the
// linear_i8 quantizer; zero padding is q = 0, exact for a symmetric grid). With col[p, j] the
// quantized im2col column of output pixel p (j over k = (c_in / groups) * kh * kw in (ci, r, s)
// order, i.e. the packed row order), for output channel o and weight group g:
//   d[g] = sum_{j in g} col[p, j] * code[o, j] - zero[o, g] * sum_{j in g} col[p, j]   (int32)
//   a = 0.0f;  for g = 0, 1, ...:  a = a + float(d[g]) * scale_w[o, g]
//   y[n, o, p] = a * scale_x[n] + bias[o]                                (bias 0 if absent)
// with every float operation rounded on its own (no FMA) in this order. Every ISA computes
// exactly this: outputs are bit-identical to the scalar kernel's, for any tiling and thread
// count. Groups of at most kMaxI8GroupSize codes keep the int32 sums exact.
//
// A call: conv2d_i8_scales, conv2d_i8_plan, conv2d_i8_pack_input over the plan's input units
// and conv2d_i8_pack_weights over the output channels (both splittable across threads), then
// conv2d_i8_items over the work items (splittable too).

/// The int8 scale max |x| / 127 of n floats (0 if all are 0); kNonFinite (scale 0) if one
/// is NaN or Inf. The scale of a whole equals the largest of its parts' scales (a rounded
/// division by 127 keeps the order), so an image may be split across threads.
Status int8_scale(CpuIsa isa, const float* x, int64_t n, float* scale);

/// Per-image activation scales (batch floats, int8_scale of each image). kNonFinite if x has
/// a NaN or Inf.
Status conv2d_i8_scales(CpuIsa isa, const float* x, const Conv2dShape& s, float* scale);

/// How conv2d_i8 lays out its operands and splits its work. A work item is a tile of up to
/// co_block output channels x px_block output rows of one (image, group), numbered
/// ((image * groups + group) * co_blocks + co_tile) * px_blocks + px_tile.
struct Conv2dI8Plan {
  CpuIsa isa;                           // kernel family of the tiles
  bool direct;                          // SIMD direct kernel (else the portable scalar kernel)
  bool depthwise;                       // the depthwise path (conv2d_i8_depthwise.h)
  bool im2col;                          // direct kernel on the patch matrix (see tile_shape)
  bool amx;                             // the row's matrix-unit tile and its own weight panel
  bool lanes;                           // the row's channels-in-lanes tile and its own panel
  Conv2dShape tile_shape;               // the shape the tiles and the panel see: the call's,
                                        // or with im2col the 1x1 conv over the patch matrix
  int64_t im2col_rows;                  // im2col: output rows per input unit
  int64_t co_block, px_block;           // tile size (output channels, output rows)
  int64_t co_blocks, px_blocks, items;  // items = batch * groups * co_blocks * px_blocks
  int64_t input_units;                  // units of conv2d_i8_pack_input (image n's are the
                                        // n-th batch-th of them, consecutive)
  int64_t input_bytes;                  // its buffer
  int64_t panel_bytes;                  // conv2d_i8_pack_weights's buffer (0: not needed)
  int64_t scratch_bytes;                // scratch of one conv2d_i8_items call
};

/// The plan for `isa` (must be supported to run it). ISAs with a direct SIMD kernel run it on
/// the direct layout when the weight groups cover whole 4-channel blocks (one group per row, or
/// group_size % (4 * kh * kw) == 0), otherwise (e.g. groups of 128 codes of a 3x3 conv) on
/// the patch matrix (im2col: every 4 consecutive codes of a row one block, so any group size).
/// ISAs without one run the scalar kernel (same values).
/// `threads` only balances the tile sizes and the input units; results never depend on it.
Conv2dI8Plan conv2d_i8_plan(const Conv2dShape& s, int64_t group_size, CpuIsa isa, int threads = 1);

/// Quantizes input units [u_begin, u_end) (each one image's block of up to 4 channels of one
/// group; with im2col, the patch-matrix blocks of those channels for plan.im2col_rows output
/// rows) with their image's scale into `input` (plan.input_bytes, every byte written).
void conv2d_i8_pack_input(const Conv2dI8Plan& plan, const float* x, const Conv2dShape& s,
                          const float* scale, int64_t u_begin, int64_t u_end, int8_t* input);

/// Unpacks the codes of output channels [co_begin, co_end) into `panel` (plan.panel_bytes).
/// `zeros` (the call's, as conv2d_i8_items gets them): an AMX plan folds them into the panel
/// where conv2d_i8_zero_folded says so.
void conv2d_i8_pack_weights(const Conv2dI8Plan& plan, const Conv2dShape& s, const uint8_t* packed,
                            int bits, const uint8_t* zeros, int64_t co_begin, int64_t co_end,
                            uint8_t* panel);

/// Whether an AMX plan's panel holds the signed codes minus their zero point (then its tile
/// needs no activation sums): AMX plans where every code - zero of every output channel fits
/// int8 (all widths up to 7 with zeros <= 128; 8 bits only with every zero 128). The panel
/// then depends on the zeros too.
bool conv2d_i8_zero_folded(const Conv2dI8Plan& plan, const Conv2dShape& s, int bits,
                           const uint8_t* zeros);

/// Integer conv2d of work items [item_begin, item_end) of `plan`: writes exactly those tiles
/// of y (NCHW float), each with `ep` applied. `scratch` holds plan.scratch_bytes bytes; `bias`
/// may be null.
void conv2d_i8_items(const Conv2dI8Plan& plan, const Conv2dShape& s, const int8_t* input,
                     const uint8_t* panel, const float* scale, const uint8_t* packed,
                     const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                     int64_t group_size, int bits, int64_t item_begin, int64_t item_end,
                     void* scratch, float* y, const ConvEpilogue& ep = {});

/// Convenience form: the whole convolution on one thread with `isa` (allocates its buffers).
/// kNonFinite (y unspecified) if x has a NaN or Inf.
Status conv2d_i8(CpuIsa isa, const float* x, const Conv2dShape& s, const uint8_t* packed,
                 const uint16_t* scale_bits, const uint8_t* zeros, const float* bias,
                 int64_t group_size, int bits, float* y, const ConvEpilogue& ep = {});

// ---- max pool 2-D (float NCHW) -----------------------------------------------------------
//
// max_pool2d of ATen (dilation 1, floor mode) on float32 NCHW planes, with ATen's values bit
// for bit: each output is the first maximum of its window in row-major order (a later tap
// replaces the running maximum only if it is greater, so of -0.0 and +0.0 the first one wins)
// and NaN if the window holds a NaN (its payload may differ); padding is never a candidate.
// Kernels compute a horizontal maximum of each input row, then the vertical maximum of those
// rows: the first maximum of the first row holding the window's maximum is the row-major first.

/// Geometry of one plane: kernel kh x kw, strides, paddings (0 <= pad <= kernel / 2).
struct MaxPool2dShape {
  int64_t h_in, w_in;
  int64_t kh, kw, stride_h, stride_w, pad_h, pad_w;

  int64_t h_out() const { return (h_in + 2 * pad_h - kh) / stride_h + 1; }
  int64_t w_out() const { return (w_in + 2 * pad_w - kw) / stride_w + 1; }
};

/// Whether the kernels accept `s`: sizes, kernel and strides >= 1, 0 <= pad <= kernel / 2
/// (every window then holds an input element) and at least one output row and column.
bool max_pool2d_valid(const MaxPool2dShape& s);

/// Scratch floats one max_pool2d_f32 call needs (a ring of w_out-float rows, at most 2 * kh).
int64_t max_pool2d_scratch_floats(const MaxPool2dShape& s);

/// Max-pools `planes` consecutive planes of x (each h_in x w_in) into y (each h_out x w_out)
/// with `isa`'s kernel (the portable one where the row has none); `s` must be
/// max_pool2d_valid. Planes are independent, so callers split them across threads.
void max_pool2d_f32(CpuIsa isa, const MaxPool2dShape& s, const float* x, int64_t planes,
                    float* scratch, float* y);
/// The same with active_cpu_isa().
void max_pool2d_f32(const MaxPool2dShape& s, const float* x, int64_t planes, float* scratch,
                    float* y);

}  // namespace kernels
}  // namespace qpart
