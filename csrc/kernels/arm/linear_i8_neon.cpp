// aarch64 integer packed matmul, plain NEON (no dot-product extension): 16 int8 products per
// step via vmull_s8 / vmull_high_s8 (s16) and pairwise accumulation into s32 (vpadalq_s16).
// See linear_i8_neon_impl.h.
#if defined(__aarch64__)

#define QPART_I8_DOT(acc, c, x)                                                   \
  do {                                                                            \
    (acc) = vpadalq_s16((acc), vmull_s8(vget_low_s8(c), vget_low_s8(x)));        \
    (acc) = vpadalq_s16((acc), vmull_high_s8((c), (x)));                          \
  } while (0)
#define QPART_I8_ENTRY linear_i8_neon
#include "linear_i8_neon_impl.h"

#endif  // __aarch64__
