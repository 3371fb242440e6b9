// AVX-512 packed matmul for small batches (m <= kFusedMaxRows): float and int8 activations.
// PLACEHOLDER: forwards to the AVX2 float kernel and the scalar integer kernel until the
// AVX-512 kernels land.
#if defined(__x86_64__)

#include "../dispatch.h"

namespace qpart {
namespace kernels {
namespace detail {

void linear_f32_avx512_gemv(const LinearArgs& a) { linear_f32_avx2(a); }
void linear_i8_avx512_gemv(const LinearI8Args& a) { linear_i8_scalar(a); }

}  // namespace detail
}  // namespace kernels
}  // namespace qpart

#endif  // __x86_64__
