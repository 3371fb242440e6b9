// aarch64 direct integer conv2d tile with the dot-product extension (sdot). Compiled with
// +dotprod for this file only and called only when getauxval(AT_HWCAP) reports HWCAP_ASIMDDP
// (cpu_has_dotprod). See conv2d_i8_neon_impl.h.
#if defined(__aarch64__)

#pragma GCC target("arch=armv8.2-a+dotprod")

#define QPART_I8_DOT(acc, x, w) ((acc) = vdotq_s32((acc), (x), (w)))
#define QPART_CONV_I8_ENTRY conv2d_i8_tile_neon_dot
#include "conv2d_i8_neon_impl.h"

#endif  // __aarch64__
