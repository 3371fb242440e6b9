// aarch64 integer packed matmul with the dot-product extension (sdot: 16 int8 products summed
// into 4 int32 lanes per instruction). Compiled with +dotprod for this file only and called
// only when getauxval(AT_HWCAP) reports HWCAP_ASIMDDP (cpu_has_dotprod). See
// linear_i8_neon_impl.h.
#if defined(__aarch64__)

#pragma GCC target("arch=armv8.2-a+dotprod")

#define QPART_I8_DOT(acc, c, x) ((acc) = vdotq_s32((acc), (c), (x)))
#define QPART_I8_ENTRY linear_i8_neon_dot
#include "linear_i8_neon_impl.h"

#endif  // __aarch64__
