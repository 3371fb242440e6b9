// The CPU ISA table (see isa_table.h): one row per ISA, best first. Adding an ISA means a
// CpuIsa value (qpart_kernels.h), its kernel files and their declarations (dispatch.h), and
// one row here; the dispatch (dispatch.cpp), the kernels' callers and the Python bindings
// iterate the table.
#include "isa_table.h"

#include <cstdlib>

#include "conv2d_i8_depthwise.h"
#include "conv2d_i8_impl.h"
#include "conv2d_impl.h"
#include "dispatch.h"
#include "max_pool2d_impl.h"
#include "qpart_kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

// The entry points of a row exist only where the architecture builds them; elsewhere the
// row keeps its name and rules but IsaEntryPoints{} (never supported, no kernels).
#if defined(__x86_64__)
#define QPART_X86_64_ONLY(...) __VA_ARGS__
#else
#define QPART_X86_64_ONLY(...) \
  {}
#endif
#if defined(__aarch64__)
#define QPART_AARCH64_ONLY(...) __VA_ARGS__
#else
#define QPART_AARCH64_ONLY(...) \
  {}
#endif

namespace qpart {
namespace kernels {

bool cpu_has_dotprod() {
#if defined(__aarch64__) && defined(__linux__)
  static const bool ok = [] {
    const char* env = std::getenv("QPART_NO_DOTPROD");
    if (env != nullptr && *env != '\0' && *env != '0') return false;
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
  }();
  return ok;
#else
  return false;
#endif
}

namespace detail {
namespace {

bool always() { return true; }

#if defined(__x86_64__)
// AVX2 + FMA; F16C (vcvtph2ps) is used by the integer path, and every AVX2 CPU has it.
bool cpu_has_avx2_fma() {
#if defined(__GNUC__) || defined(__clang__)
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
  }();
  return ok;
#else
  return false;
#endif
}

// The AVX-512 kernels use VNNI (vpdpbusd) and VBMI (vpermb, vpmultishiftqb) on top of F/BW/VL;
// the OS must also save the ZMM state (checked by the compiler runtime's cpu model). Ops
// without an AVX-512 kernel run AVX2 ones, so the level also requires AVX2.
bool cpu_has_avx512_kernels() {
#if defined(__GNUC__) || defined(__clang__)
  static const bool ok = [] {
    __builtin_cpu_init();
    return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
  }();
  return ok;
#else
  return false;
#endif
}

// AMX-TILE and AMX-INT8 (CPUID.7.0:EDX bits 24, 25) on top of the AVX-512 level, and the
// kernel's permission to use the tile data state (Linux: arch_prctl ARCH_REQ_XCOMP_PERM, once
// per process; refused by kernels older than 5.16 or when the OS does not enable AMX).
bool cpu_has_amx_kernels() {
  static const bool ok = [] {
    if (!cpu_has_avx512_kernels()) return false;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (((d >> 24) & 1u) == 0 || ((d >> 25) & 1u) == 0) return false;
#if defined(__linux__)
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return ok;
}

// AVX-512 has a GEMV-style kernel for small batches and a blocked GEMM for larger ones.
void linear_f32_avx512(const LinearArgs& a) {
  if (a.m <= kFusedMaxRows) return linear_f32_avx512_gemv(a);
  linear_f32_avx512_gemm(a);
}
void linear_i8_avx512(const LinearI8Args& a) {
  if (a.m <= kFusedMaxRows) return linear_i8_avx512_gemv(a);
  linear_i8_avx512_gemm(a);
}
void linear_i8_amx(const LinearI8Args& a) {
  if (a.m <= kFusedMaxRows) return linear_i8_avx512_gemv(a);
  linear_i8_amx_gemm(a);
}

// The entry points of the avx512 row, with `supported` as the predicate and the integer
// matmul and matrix-unit conv tile given: the amx row is the avx512 row with AMX tiles.
constexpr IsaEntryPoints avx512_entries(
    bool (*supported)(), void (*linear_i8)(const LinearI8Args&),
    decltype(IsaEntryPoints::conv2d_i8_amx_tile) amx_tile,
    decltype(IsaEntryPoints::conv2d_i8_amx_pack_weights) amx_pack_weights) {
  return {supported,
          linear_f32_avx512,
          linear_i8,
          quantize_row_i8_avx2,
          quantize_group_avx2,
          conv2d_tile_avx512,
          absmax_avx2,
          conv2d_i8_tile_avx512,
          conv2d_i8_pack_input_avx2,
          conv2d_i8_pack_weights_avx2,
          conv2d_i8_dw_tile_avx2,
          conv2d_i8_quantize_row_avx2,
          conv2d_i8_patch_row_avx2,
          max_pool2d_planes_avx2,
          conv2d_i8_lanes_tile_avx512,
          conv2d_i8_lanes_pack_weights_avx512,
          amx_tile,
          amx_pack_weights};
}
#endif  // defined(__x86_64__)

#if defined(__aarch64__)
// sdot (the dot-product extension) when the CPU has it, else plain NEON.
void linear_i8_neon_any(const LinearI8Args& a) {
  if (cpu_has_dotprod()) return linear_i8_neon_dot(a);
  linear_i8_neon(a);
}
void conv2d_i8_tile_neon_any(const Conv2dI8Args& a, const Conv2dI8Tile& t, void* scratch) {
  if (cpu_has_dotprod()) return conv2d_i8_tile_neon_dot(a, t, scratch);
  conv2d_i8_tile_neon(a, t, scratch);
}
#endif  // defined(__aarch64__)

int64_t no_scratch(int64_t /*m*/, int64_t /*k*/) { return 0; }

constexpr ConvTileShape kNoConvTile{0, 0, 1};

// clang-format off
const IsaKernels kIsaTable[] = {
    // AMX (Sapphire Rapids and later): the AVX-512 row plus AMX tiles in the integer conv2d
    // and the integer GEMM.
    {CpuIsa::kAmx, "amx", /*i8_plane_layout=*/false, /*conv_i8_tile_fuses_epilogue=*/true,
     avx512_linear_scratch_floats,
     {kConvAvx512Mr, kConvAvx512Nr, 16},
     QPART_X86_64_ONLY(avx512_entries(cpu_has_amx_kernels, linear_i8_amx, conv2d_i8_tile_amx,
                                      conv2d_i8_pack_weights_amx))},
    // AVX-512 F/BW/VL/VNNI/VBMI (Ice Lake, Zen 4 and later): own matmuls, AVX2 quantizers.
    {CpuIsa::kAvx512, "avx512", /*i8_plane_layout=*/false, /*conv_i8_tile_fuses_epilogue=*/true,
     avx512_linear_scratch_floats,
     {kConvAvx512Mr, kConvAvx512Nr, 16},
     QPART_X86_64_ONLY(avx512_entries(cpu_has_avx512_kernels, linear_i8_avx512, nullptr, nullptr))},
    // AVX2 + FMA (+ F16C).
    {CpuIsa::kAvx2, "avx2", /*i8_plane_layout=*/true, /*conv_i8_tile_fuses_epilogue=*/false,
     avx2_linear_scratch_floats,
     {kConvAvx2Mr, kConvAvx2Nr, 8},
     QPART_X86_64_ONLY({cpu_has_avx2_fma, linear_f32_avx2, linear_i8_avx2,
                        quantize_row_i8_avx2, quantize_group_avx2, conv2d_tile_avx2,
                        absmax_avx2, conv2d_i8_tile_avx2, conv2d_i8_pack_input_avx2,
                        conv2d_i8_pack_weights_avx2, conv2d_i8_dw_tile_avx2,
                        conv2d_i8_quantize_row_avx2,
                        conv2d_i8_patch_row_avx2, max_pool2d_planes_avx2, nullptr, nullptr,
                        nullptr, nullptr})},
    // NEON (baseline on aarch64); conv2d runs im2col + the NEON matmul; the depthwise integer
    // conv runs the portable depthwise tile (compiled for the baseline, NEON included).
    {CpuIsa::kNeon, "neon", /*i8_plane_layout=*/true, /*conv_i8_tile_fuses_epilogue=*/false,
     neon_linear_scratch_floats, kNoConvTile,
     QPART_AARCH64_ONLY({always, linear_f32_neon, linear_i8_neon_any, nullptr, nullptr,
                         nullptr, nullptr, conv2d_i8_tile_neon_any, nullptr, nullptr,
                         conv2d_i8_dw_tile_portable, nullptr, nullptr,
                         max_pool2d_planes_neon, nullptr, nullptr, nullptr, nullptr})},
    // The portable reference, always last (depthwise convs run the reference kernel too).
    {CpuIsa::kScalar, "scalar", /*i8_plane_layout=*/false, /*conv_i8_tile_fuses_epilogue=*/false,
     no_scratch, kNoConvTile,
     {always, nullptr, linear_i8_scalar, quantize_row_i8_scalar, nullptr, nullptr, nullptr, nullptr,
      nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr}},
};
// clang-format on

}  // namespace

IsaRows isa_table() { return {kIsaTable, sizeof(kIsaTable) / sizeof(kIsaTable[0])}; }

}  // namespace detail
}  // namespace kernels
}  // namespace qpart
