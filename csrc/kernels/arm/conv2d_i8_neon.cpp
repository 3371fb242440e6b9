// aarch64 direct integer conv2d tile, plain NEON (no dot-product extension): 16 int8 products
// per step via vmull_s8 / vmull_high_s8 (s16), reduced pairwise to 4 int32 lanes. See
// conv2d_i8_neon_impl.h.
#if defined(__aarch64__)

#define QPART_I8_DOT(acc, x, w)                                                  \
  do {                                                                           \
    const int32x4_t lo_ = vpaddlq_s16(vmull_s8(vget_low_s8(x), vget_low_s8(w))); \
    const int32x4_t hi_ = vpaddlq_s16(vmull_high_s8((x), (w)));                  \
    (acc) = vaddq_s32((acc), vpaddq_s32(lo_, hi_));                              \
  } while (0)
#define QPART_CONV_I8_ENTRY conv2d_i8_tile_neon
#include "conv2d_i8_neon_impl.h"

#endif  // __aarch64__
